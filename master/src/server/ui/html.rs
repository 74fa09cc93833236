//! The pages' frame and the small pieces every page uses. `maud` escapes
//! every value it is given: task names, stdout and agent attributes are
//! written by whoever submitted or joined, and are shown as text only.

use axum::response::Html;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use wasmos_proto::v1;

use super::session::Viewer;
use crate::resources::Resources;

/// The sections the navigation bar lists: (path, label).
const SECTIONS: [(&str, &str); 6] = [
    ("/", "Overview"),
    ("/ui/jobs", "Jobs"),
    ("/ui/tasks", "Tasks"),
    ("/ui/agents", "Agents"),
    ("/ui/roles", "Roles"),
    ("/ui/usage", "Usage"),
];

/// A whole page. `live_ms`: how often the script refreshes `<main>` in
/// place (0: never); with scripts off the page is simply static.
pub fn page(title: &str, viewer: Option<&Viewer>, live_ms: u32, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · wasmos" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/ui.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "wasmos" }
                    nav {
                        @for (path, label) in SECTIONS {
                            a href=(path) { (label) }
                        }
                    }
                    @if let Some(viewer) = viewer {
                        span.who {
                            (viewer.who.describe())
                            @if viewer.logged_in {
                                form.inline method="post" action="/ui/logout" {
                                    (csrf(viewer))
                                    button type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                main data-live=(live_ms) {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string())
}

/// The hidden field every form of a change carries.
pub fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A bar of `used` out of `total`, with its numbers.
pub fn bar(used: f64, total: f64, label: &str) -> Markup {
    let percent = if total > 0.0 {
        (used / total * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    };
    // The width is an attribute the stylesheet reads, not an inline
    // style: the Content-Security-Policy allows no inline style.
    let step = (percent / 5.0).round() as u32 * 5;
    html! {
        div.bar {
            div.fill data-pct=(step) {}
            span { (label) " (" (format!("{percent:.0}")) "%)" }
        }
    }
}

/// Resources as people read them: "1.5 cpus, 2.0 GiB mem, 10 GiB disk".
pub fn resources(r: &Resources) -> String {
    format!(
        "{} cpus, {} mem, {} disk",
        cpus(r.cpu_millis),
        bytes(r.mem),
        bytes(r.disk)
    )
}

pub fn resources_wire(r: Option<&v1::Resources>) -> String {
    r.and_then(|r| Resources::try_from(r).ok())
        .map_or_else(|| "-".to_string(), |r| resources(&r))
}

pub fn cpus(millis: u64) -> String {
    let cpus = millis as f64 / 1000.0;
    if millis.is_multiple_of(1000) {
        format!("{cpus:.0}")
    } else {
        format!("{cpus:.2}")
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS` (`-` for 0).
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    // RFC 3339 (`2026-12-07T00:15:29Z`) as people read it in a table.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_string()
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn time_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    format!("{}.{:03}", time(ms), ms % 1000)
}

/// A duration in milliseconds as "850 ms", "12.3 s" or "4m 05s".
pub fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// A task state as the CLI prints it: `FINISHED`, `RUNNING`.
pub fn state(state: v1::TaskState) -> &'static str {
    state
        .as_str_name()
        .strip_prefix("TASK_STATE_")
        .unwrap_or(state.as_str_name())
}

/// A failure reason as the CLI prints it (empty for none).
pub fn reason(reason: v1::Reason) -> &'static str {
    match reason {
        v1::Reason::Unspecified => "",
        r => r
            .as_str_name()
            .strip_prefix("REASON_")
            .unwrap_or(r.as_str_name()),
    }
}

/// A CSS class for a state's badge.
pub fn state_class(state: v1::TaskState) -> &'static str {
    use v1::TaskState::*;
    match state {
        Finished => "ok",
        Failed | Lost | Error => "bad",
        Killed => "warn",
        Running => "run",
        _ => "wait",
    }
}

/// A link that keeps the query string's other parameters.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

/// Percent-encodes a query value or path segment.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Text that is already HTML (the SVG the master draws itself).
pub fn trusted(svg: String) -> PreEscaped<String> {
    PreEscaped(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes_read_as_people_write_them() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_765_065_600_000), "2025-12-07 00:00:00");
        assert_eq!(time(951_782_400_000 + 3_723_000), "2000-02-29 01:02:03");
        assert_eq!(
            time_ms(951_782_400_000 + 3_723_045),
            "2000-02-29 01:02:03.045"
        );
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_340), "12.3 s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(cpus(1500), "1.50");
        assert_eq!(cpus(2000), "2");
    }

    #[test]
    fn hostile_text_is_escaped_and_queries_are_encoded() {
        let markup = html! { p { ("<script>alert(1)</script>") } }.into_string();
        assert_eq!(markup, "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>");
        assert_eq!(
            query(&[("state", "RUNNING"), ("role", ""), ("job", "a&b=c")]),
            "?state=RUNNING&job=a%26b%3Dc"
        );
    }
}
