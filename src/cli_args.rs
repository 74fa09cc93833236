//! Parsers for flag values shared by subcommands: `R=W`, `R=RESOURCES`,
//! `k=v`, sizes and durations. Each error says what a good value looks like.

use std::time::Duration;

use wasmos_master::Resources;

/// `KEY=VALUE`, split at the first `=`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// `ROLE=WEIGHT`, e.g. `batch=2`.
pub fn role_weight(text: &str) -> Result<(String, f64), String> {
    let (role, weight) =
        key_value(text).map_err(|_| format!("`{text}` is not ROLE=WEIGHT (e.g. batch=2)"))?;
    let weight: f64 = weight
        .parse()
        .map_err(|_| format!("weight `{weight}` of role {role} is not a number"))?;
    if !weight.is_finite() || weight <= 0.0 {
        return Err(format!("weight of role {role} must be > 0, got {weight}"));
    }
    Ok((role, weight))
}

/// `ROLE=RESOURCES`, e.g. `batch=cpus:4,mem:8GiB`.
pub fn role_resources(text: &str) -> Result<(String, Resources), String> {
    let (role, resources) = key_value(text)
        .map_err(|_| format!("`{text}` is not ROLE=RESOURCES (e.g. batch=cpus:4,mem:8GiB)"))?;
    let resources = Resources::parse(&resources).map_err(|e| format!("role {role}: {e}"))?;
    Ok((role, resources))
}

/// A byte size: `512MiB`, `4GiB`, `100MB`, `4096`.
pub fn size(text: &str) -> Result<u64, String> {
    wasmos_master::resources::parse_size(text)
}

/// A duration: `200ms`, `5s`, `1m`, `1h 30m`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 500ms, 5s or 2m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flag_values() {
        assert_eq!(role_weight("batch=2"), Ok(("batch".into(), 2.0)));
        assert!(role_weight("batch=-1").is_err());
        assert!(role_weight("batch").is_err());
        assert_eq!(
            role_resources("b=cpus:4,mem:8GiB").unwrap().1,
            Resources::new(4.0, 8 << 30, 0)
        );
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(duration("soon").is_err());
        assert_eq!(
            key_value("zone=eu-1=x"),
            Ok(("zone".into(), "eu-1=x".into()))
        );
    }
}
