//! Pricing measured durations the way Lambda bills them: each call's
//! billed duration (rounded up to the millisecond, the init phase included
//! on a cold start) times its memory size in GB, at a price per GB-second,
//! plus a fee per request. The prices, and the figures lambdex is compared
//! with, come from a TOML file ([`BUILTIN_REFERENCE`] unless replaced).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The prices and reference figures built into `lambdex`.
pub const BUILTIN_REFERENCE: &str = include_str!("../../data/power-reference.toml");

/// MB per GB in Lambda's GB-seconds.
const MB_PER_GB: f64 = 1024.0;

/// The volume every "per 8M" figure is about (the article's monthly load).
pub const VOLUME: f64 = 8_000_000.0;

/// Lambda's list prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub source: String,
    pub x86_usd_per_gb_second: f64,
    pub arm64_usd_per_gb_second: f64,
    pub usd_per_million_requests: f64,
}

/// A figure lambdex is compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceFigure {
    pub name: String,
    /// What `unit` costs.
    pub usd: f64,
    /// How many images (or requests) `usd` pays for.
    pub per_images: u64,
    pub unit: String,
    pub source: String,
}

impl ReferenceFigure {
    pub fn usd_per_volume(&self) -> f64 {
        self.usd / self.per_images as f64 * VOLUME
    }
}

/// The reference file: `[prices]` and `[[reference]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub prices: Prices,
    #[serde(default)]
    pub reference: Vec<ReferenceFigure>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {source}")]
    Parse {
        origin: String,
        source: Box<toml::de::Error>,
    },
    #[error("{origin}: {field} must be a positive number, not {value}")]
    NotPositive {
        origin: String,
        field: String,
        value: f64,
    },
}

impl Reference {
    /// The file built into `lambdex`.
    pub fn builtin() -> Result<Self, ReferenceError> {
        Self::parse(BUILTIN_REFERENCE, "the built-in reference file")
    }

    pub fn load(path: &Path) -> Result<Self, ReferenceError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReferenceError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, ReferenceError> {
        let reference: Self = toml::from_str(text).map_err(|source| ReferenceError::Parse {
            origin: origin.to_owned(),
            source: Box::new(source),
        })?;
        let prices = &reference.prices;
        let mut numbers = vec![
            (
                "prices.x86_usd_per_gb_second".to_owned(),
                prices.x86_usd_per_gb_second,
            ),
            (
                "prices.arm64_usd_per_gb_second".to_owned(),
                prices.arm64_usd_per_gb_second,
            ),
            (
                "prices.usd_per_million_requests".to_owned(),
                prices.usd_per_million_requests,
            ),
        ];
        for (i, figure) in reference.reference.iter().enumerate() {
            numbers.push((format!("reference[{i}].usd"), figure.usd));
            numbers.push((
                format!("reference[{i}].per_images"),
                figure.per_images as f64,
            ));
        }
        if let Some((field, value)) = numbers
            .into_iter()
            .find(|(_, value)| !(value.is_finite() && *value > 0.0))
        {
            return Err(ReferenceError::NotPositive {
                origin: origin.to_owned(),
                field,
                value,
            });
        }
        Ok(reference)
    }
}

/// Lambda's two architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86,
    Arm64,
}

impl Prices {
    fn usd_per_gb_second(&self, arch: Arch) -> f64 {
        match arch {
            Arch::X86 => self.x86_usd_per_gb_second,
            Arch::Arm64 => self.arm64_usd_per_gb_second,
        }
    }

    /// The duration charge of `billed_ms` at `memory_mb`, without the
    /// request fee.
    pub fn duration_usd(&self, arch: Arch, memory_mb: u32, billed_ms: f64) -> f64 {
        billed_ms / 1000.0 * f64::from(memory_mb) / MB_PER_GB * self.usd_per_gb_second(arch)
    }

    /// One call billed `billed_ms` at `memory_mb`, request fee included.
    pub fn call_usd(&self, arch: Arch, memory_mb: u32, billed_ms: f64) -> f64 {
        self.duration_usd(arch, memory_mb, billed_ms) + self.usd_per_million_requests / 1e6
    }
}

/// What a call costs, and a million and [`VOLUME`] of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CallCost {
    pub per_call_usd: f64,
    pub per_million_usd: f64,
    pub per_8m_usd: f64,
}

impl CallCost {
    pub fn of(per_call_usd: f64) -> Self {
        Self {
            per_call_usd,
            per_million_usd: per_call_usd * 1e6,
            per_8m_usd: per_call_usd * VOLUME,
        }
    }
}

/// The share of the cost that cold starts add when `rate` of the calls
/// start cold, each paying `init_ms` more at `memory_mb`.
pub fn cold_start_share(
    prices: &Prices,
    memory_mb: u32,
    warm_call_usd: f64,
    init_ms: f64,
    rate: f64,
) -> f64 {
    let added = rate * prices.duration_usd(Arch::X86, memory_mb, init_ms.ceil());
    added / (warm_call_usd + added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        Reference::builtin()
            .expect("the built-in file parses")
            .prices
    }

    #[test]
    fn a_call_is_its_gb_seconds_plus_the_request_fee() {
        let prices = prices();
        // 100 ms at 1024 MB: 0.1 GB-s.
        let usd = prices.call_usd(Arch::X86, 1024, 100.0);
        assert!(
            (usd - (0.1 * 0.000_016_666_7 + 0.2e-6)).abs() < 1e-15,
            "{usd}"
        );
        let arm = prices.call_usd(Arch::Arm64, 1024, 100.0);
        assert!(arm < usd);
        // 8M calls of nothing still cost the request fee: $1.60.
        let fee_only = CallCost::of(prices.call_usd(Arch::X86, 128, 0.0));
        assert!((fee_only.per_8m_usd - 1.6).abs() < 1e-9);
        assert!((fee_only.per_million_usd - 0.2).abs() < 1e-9);
    }

    #[test]
    fn cold_starts_add_their_init_at_the_given_rate() {
        let prices = prices();
        let warm = prices.call_usd(Arch::X86, 1024, 100.0);
        assert_eq!(cold_start_share(&prices, 1024, warm, 500.0, 0.0), 0.0);
        // Every call cold with an init as long as the call: the init is
        // the duration charge again, so a bit under half of the total.
        let share = cold_start_share(&prices, 1024, warm, 100.0, 1.0);
        let duration = prices.duration_usd(Arch::X86, 1024, 100.0);
        assert!((share - duration / (warm + duration)).abs() < 1e-12);
        assert!(share > 0.4 && share < 0.5, "{share}");
    }

    #[test]
    fn the_reference_file_scales_every_figure_to_8m_images() {
        let reference = Reference::builtin().expect("parses");
        let xception = reference
            .reference
            .iter()
            .find(|f| f.name.contains("Xception (Keras"))
            .expect("the article's Xception figure");
        assert!((xception.usd_per_volume() - 413.0).abs() < 1e-9);
        let hosted = reference
            .reference
            .iter()
            .find(|f| f.per_images == 1000)
            .expect("a hosted API figure");
        assert!(hosted.usd_per_volume() >= 6400.0);
        assert!(reference.reference.iter().all(|f| !f.source.is_empty()));
    }

    #[test]
    fn a_bad_reference_file_names_the_field() {
        let text = BUILTIN_REFERENCE.replace(
            "x86_usd_per_gb_second = 0.0000166667",
            "x86_usd_per_gb_second = -1.0",
        );
        let error = Reference::parse(&text, "test.toml").expect_err("refused");
        assert!(
            error.to_string().contains("prices.x86_usd_per_gb_second"),
            "{error}"
        );
        let error = Reference::parse("[prices]\nsource = 1", "test.toml").expect_err("refused");
        assert!(error.to_string().starts_with("test.toml"), "{error}");
    }
}
