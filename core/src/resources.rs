//! Resource bundles and their exact arithmetic.
//!
//! CPUs travel on the wire as `f64` cores but are kept here as integer
//! millicores, so that offered + used + free always adds up to the total
//! exactly, however many times resources are split and returned.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

use serde::Serialize;

/// Millicores per core.
pub const MILLIS_PER_CPU: u64 = 1000;

/// A bundle of cpus (millicores), memory (bytes) and disk (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Resources {
    /// CPU share in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub mem: u64,
    /// Disk in bytes.
    pub disk: u64,
}

/// Why a resource bundle from the outside was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ResourceError {
    #[error("cpus must be a finite number >= 0, got {0}")]
    BadCpus(f64),
    #[error("{0}")]
    Syntax(String),
}

impl Resources {
    /// No resources at all.
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        mem: 0,
        disk: 0,
    };

    /// More than anything can hold: what an overflowing sum counts as.
    pub const MAX: Resources = Resources {
        cpu_millis: u64::MAX,
        mem: u64::MAX,
        disk: u64::MAX,
    };

    /// A bundle from cores and bytes, for code and tests.
    ///
    /// ```
    /// use wasmos_core::Resources;
    /// let r = Resources::new(1.5, 4 << 30, 0);
    /// assert_eq!(r.cpu_millis, 1500);
    /// ```
    pub fn new(cpus: f64, mem: u64, disk: u64) -> Resources {
        Resources::from_parts(cpus, mem, disk).expect("valid cpus")
    }

    /// A bundle from cores and bytes as they come off the wire: refuses
    /// negative, NaN and infinite cpus. Rounds cpus to the nearest millicore.
    pub fn from_parts(cpus: f64, mem: u64, disk: u64) -> Result<Resources, ResourceError> {
        if !cpus.is_finite() || !(0.0..=1e12).contains(&cpus) {
            return Err(ResourceError::BadCpus(cpus));
        }
        Ok(Resources {
            cpu_millis: (cpus * MILLIS_PER_CPU as f64).round() as u64,
            mem,
            disk,
        })
    }

    /// CPUs in cores.
    pub fn cpus(&self) -> f64 {
        self.cpu_millis as f64 / MILLIS_PER_CPU as f64
    }

    /// True when every resource is zero.
    pub fn is_zero(&self) -> bool {
        *self == Resources::ZERO
    }

    /// True when `self` fits inside `other` in every resource.
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.cpu_millis <= other.cpu_millis && self.mem <= other.mem && self.disk <= other.disk
    }

    /// `self - other`, or `None` if some resource would go negative.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_sub(other.cpu_millis)?,
            mem: self.mem.checked_sub(other.mem)?,
            disk: self.disk.checked_sub(other.disk)?,
        })
    }

    /// `self + other`, or `None` if some resource would overflow.
    pub fn checked_add(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_add(other.cpu_millis)?,
            mem: self.mem.checked_add(other.mem)?,
            disk: self.disk.checked_add(other.disk)?,
        })
    }

    /// `self - other`, clamping each resource at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            mem: self.mem.saturating_sub(other.mem),
            disk: self.disk.saturating_sub(other.disk),
        }
    }

    /// The smaller of the two in each resource.
    pub fn min(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.min(other.cpu_millis),
            mem: self.mem.min(other.mem),
            disk: self.disk.min(other.disk),
        }
    }

    /// The first resource in which `self` exceeds `other`, for error messages.
    pub fn first_excess(&self, other: &Resources) -> Option<&'static str> {
        if self.cpu_millis > other.cpu_millis {
            Some("cpus")
        } else if self.mem > other.mem {
            Some("mem")
        } else if self.disk > other.disk {
            Some("disk")
        } else {
            None
        }
    }

    /// The dominant share of `self` in `total`: the largest fraction of any
    /// one resource. Resources the cluster has none of are ignored.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        fn frac(a: u64, t: u64) -> f64 {
            if t == 0 { 0.0 } else { a as f64 / t as f64 }
        }
        frac(self.cpu_millis, total.cpu_millis)
            .max(frac(self.mem, total.mem))
            .max(frac(self.disk, total.disk))
    }

    /// Parses `cpus:4,mem:8GiB,disk:10GiB` (any subset, any order).
    ///
    /// ```
    /// use wasmos_core::Resources;
    /// let r = Resources::parse("cpus:4,mem:8GiB").unwrap();
    /// assert_eq!(r, Resources::new(4.0, 8 << 30, 0));
    /// assert!(Resources::parse("cpu:4").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Resources, ResourceError> {
        let mut out = Resources::ZERO;
        let text = text.trim();
        if text.is_empty() {
            return Err(ResourceError::Syntax(
                "empty resources: expected e.g. cpus:4,mem:8GiB".into(),
            ));
        }
        for part in text.split(',') {
            let (name, value) = part.split_once(':').ok_or_else(|| {
                ResourceError::Syntax(format!(
                    "`{part}` is not NAME:VALUE (expected e.g. cpus:4,mem:8GiB)"
                ))
            })?;
            match name.trim() {
                "cpus" => {
                    let cpus: f64 = value.trim().parse().map_err(|_| {
                        ResourceError::Syntax(format!("cpus `{value}` is not a number"))
                    })?;
                    out.cpu_millis = Resources::from_parts(cpus, 0, 0)?.cpu_millis;
                }
                "mem" => out.mem = parse_size(value).map_err(ResourceError::Syntax)?,
                "disk" => out.disk = parse_size(value).map_err(ResourceError::Syntax)?,
                other => {
                    return Err(ResourceError::Syntax(format!(
                        "unknown resource `{other}`: expected cpus, mem or disk"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// Parses a byte size: `512MiB`, `4GiB`, `1.5GB`, `100KB`, `4096` (bytes).
///
/// ```
/// assert_eq!(wasmos_core::resources::parse_size("4GiB"), Ok(4 << 30));
/// assert_eq!(wasmos_core::resources::parse_size("2MB"), Ok(2_000_000));
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "size `{text}` has an unknown unit `{unit}`: use B, KB, MB, GB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("size `{text}` does not start with a number (e.g. 512MiB)"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("size `{text}` is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Formats bytes for people: `512MiB`, `1.5GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpus:{},mem:{}", self.cpus(), format_size(self.mem))?;
        if self.disk > 0 {
            write!(f, ",disk:{}", format_size(self.disk))?;
        }
        Ok(())
    }
}

/// Addition that must not overflow, in every build: sums of what clients
/// declare are checked first (`checked_add`), and the master's caps on what
/// an agent may claim keep the cluster's totals far below `u64::MAX`. An
/// overflow here is a bug worth a loud panic, never a silent wrap.
impl Add for Resources {
    type Output = Resources;
    fn add(self, other: Resources) -> Resources {
        self.checked_add(&other)
            .unwrap_or_else(|| panic!("resource overflow: {self:?} + {other:?}"))
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, other: Resources) {
        *self = *self + other;
    }
}

/// Subtraction that must not underflow: callers check `fits_in` first, and
/// an underflow is an accounting bug worth a loud panic in tests.
impl Sub for Resources {
    type Output = Resources;
    fn sub(self, other: Resources) -> Resources {
        self.checked_sub(&other)
            .unwrap_or_else(|| panic!("resource underflow: {self:?} - {other:?}"))
    }
}

impl SubAssign for Resources {
    fn sub_assign(&mut self, other: Resources) {
        *self = *self - other;
    }
}

impl From<&Resources> for wasmos_proto::v1::Resources {
    fn from(r: &Resources) -> Self {
        wasmos_proto::v1::Resources {
            cpus: r.cpus(),
            mem: r.mem,
            disk: r.disk,
        }
    }
}

impl TryFrom<&wasmos_proto::v1::Resources> for Resources {
    type Error = ResourceError;
    fn try_from(r: &wasmos_proto::v1::Resources) -> Result<Self, ResourceError> {
        Resources::from_parts(r.cpus, r.mem, r.disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_exact_millicores() {
        let a = Resources::new(0.1, 0, 0);
        let mut sum = Resources::ZERO;
        for _ in 0..10 {
            sum += a;
        }
        assert_eq!(sum, Resources::new(1.0, 0, 0));
    }

    #[test]
    fn bad_cpus_are_refused() {
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            assert!(Resources::from_parts(bad, 0, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_sizes_and_bundles() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
        assert_eq!(
            Resources::parse("mem:1GiB, cpus:0.5,disk:2GB").unwrap(),
            Resources::new(0.5, 1 << 30, 2_000_000_000)
        );
        assert!(Resources::parse("cpus:-1").is_err());
        assert!(Resources::parse("cpus").is_err());
        assert!(Resources::parse("").is_err());
    }

    #[test]
    fn dominant_share_takes_the_largest_fraction() {
        let total = Resources::new(9.0, 18, 0);
        assert_eq!(Resources::new(3.0, 1, 0).dominant_share(&total), 1.0 / 3.0);
        assert_eq!(Resources::new(1.0, 4, 0).dominant_share(&total), 4.0 / 18.0);
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(
            Resources::new(4.0, 8 << 30, 0).to_string(),
            "cpus:4,mem:8GiB"
        );
    }
}
