//! The last 15 minutes of each role's share, and of tasks ended: a small
//! sampler beside the actor (`/metrics` keeps no history) and the SVG
//! chart the overview draws from it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::html::encode;
use crate::server::handle::ActorHandle;

/// How often a sample is taken, and how many are kept (15 minutes).
pub const EVERY: Duration = Duration::from_secs(5);
const KEPT: usize = 180;

/// One role at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Share {
    /// Its dominant share of the cluster.
    pub dominant: f64,
    /// What weighted DRF would give it against the others' demand.
    pub fair: f64,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub roles: BTreeMap<String, Share>,
    /// Terminal updates sent to frameworks since the master started.
    pub ended: u64,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Takes one sample from the actor (one short query).
    pub async fn sample(&self, actor: &ActorHandle) {
        let Ok((roles, ended)) = actor
            .query(|core, metrics| {
                let fair = core.allocator().fair_shares();
                let roles = core
                    .allocator()
                    .roles()
                    .into_iter()
                    .map(|r| {
                        let share = Share {
                            dominant: r.weighted_share * r.weight,
                            fair: fair.roles.get(&r.name).copied().unwrap_or(0.0),
                        };
                        (r.name.to_string(), share)
                    })
                    .collect();
                (roles, metrics.ended_total())
            })
            .await
        else {
            return;
        };
        self.push(Sample {
            at: Instant::now(),
            roles,
            ended,
        });
    }

    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().expect("not poisoned");
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Tasks ended a second over the last two samples (none before two).
    pub fn tasks_per_second(&self) -> Option<f64> {
        let samples = self.samples.lock().expect("not poisoned");
        let (before, last) = (samples.iter().nth_back(1)?, samples.back()?);
        let seconds = last.at.duration_since(before.at).as_secs_f64();
        (seconds > 0.0).then(|| last.ended.saturating_sub(before.ended) as f64 / seconds)
    }

    /// The chart of each role's dominant share (solid) against its fair
    /// share (dashed), oldest on the left; an SVG the page embeds.
    pub fn chart(&self) -> String {
        let samples: Vec<Sample> = self
            .samples
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect();
        chart(&samples)
    }
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const PALETTE: [&str; 6] = [
    "#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2",
];

/// Draws `samples` (pure, so tests can read what it drew).
pub fn chart(samples: &[Sample]) -> String {
    let mut roles: Vec<&String> = samples.iter().flat_map(|s| s.roles.keys()).collect();
    roles.sort();
    roles.dedup();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="dominant share of each role against its fair share, last 15 minutes">"#
    );
    for y in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let py = HEIGHT - y * HEIGHT;
        let _ = write!(
            svg,
            r##"<line x1="0" x2="{WIDTH}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="2" y="{:.1}" font-size="10" fill="#666">{:.0}%</text>"##,
            (py - 2.0).max(10.0),
            y * 100.0
        );
    }
    let step = WIDTH / (KEPT - 1) as f64;
    let offset = KEPT.saturating_sub(samples.len()) as f64 * step;
    for (i, role) in roles.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        for (dashed, pick) in [
            (false, (|s: &Share| s.dominant) as fn(&Share) -> f64),
            (true, |s: &Share| s.fair),
        ] {
            let points: Vec<String> = samples
                .iter()
                .enumerate()
                .filter_map(|(x, s)| {
                    let share = pick(s.roles.get(*role)?).clamp(0.0, 1.0);
                    Some(format!(
                        "{:.1},{:.1}",
                        offset + x as f64 * step,
                        HEIGHT - share * HEIGHT
                    ))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let dash = if dashed {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            };
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} data-role="{}" points="{}"/>"#,
                encode(role),
                points.join(" ")
            );
        }
    }
    // The legend: each role's name in its colour, top right.
    for (i, role) in roles.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{:.0}" y="{}" font-size="11" text-anchor="end" fill="{}">{}</text>"#,
            WIDTH - 6.0,
            14 + 13 * i,
            PALETTE[i % PALETTE.len()],
            escape(role)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `text` safe inside an element or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_each_role_twice_and_names_no_role_unescaped() {
        let t = Instant::now();
        let sample = |dominant| Sample {
            at: t,
            roles: BTreeMap::from([
                (
                    "batch".to_string(),
                    Share {
                        dominant,
                        fair: 0.5,
                    },
                ),
                (
                    "<x>\"".to_string(),
                    Share {
                        dominant: 0.1,
                        fair: 0.5,
                    },
                ),
            ]),
            ended: 0,
        };
        let svg = chart(&[sample(0.2), sample(0.6)]);
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains(r#"data-role="batch""#));
        assert!(svg.contains("%3Cx%3E%22"), "{svg}");
        assert!(svg.contains(">&lt;x&gt;&quot;</text>"), "the legend: {svg}");
        assert!(!svg.contains("<x>"));
        // The newest sample is at the right edge, at 60% of the height up.
        assert!(svg.contains(&format!("{WIDTH:.1},{:.1}", HEIGHT - 0.6 * HEIGHT)));
    }

    #[test]
    fn tasks_a_second_come_from_the_last_two_samples() {
        let history = History::default();
        let t = Instant::now();
        let at = |ended, secs| Sample {
            at: t + Duration::from_secs(secs),
            roles: BTreeMap::new(),
            ended,
        };
        history.push(at(100, 0));
        assert_eq!(history.tasks_per_second(), None);
        history.push(at(600, 5));
        assert_eq!(history.tasks_per_second(), Some(100.0));
    }
}
