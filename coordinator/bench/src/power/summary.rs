//! From `REPORT` lines to figures: durations per memory size, what a call
//! costs on each architecture, the cheapest size that fits, cold starts,
//! and the whole pipeline per 8M images.

use std::collections::BTreeMap;

use lambdex_proto::Report;
use serde::Serialize;

use super::cost::{Arch, CallCost, Prices, VOLUME, cold_start_share};
use super::measure::Measured;

/// The cost target per model, per 8M predictions at the best memory size.
pub const MODEL_TARGET_USD: f64 = 2.50;
/// The cost target of the whole pipeline per 8M images.
pub const PIPELINE_TARGET_USD: f64 = 8.0;

/// One function at one memory size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeFigures {
    pub memory_mb: u32,
    pub calls: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub billed_p50_ms: f64,
    pub billed_mean_ms: f64,
    pub max_memory_used_mb: u32,
    /// Whether the function stayed within its memory size (the local
    /// Lambda does not enforce it; Lambda would end the call).
    pub fits: bool,
    pub x86: CallCost,
    /// At arm64 prices, on the durations measured here (x86_64).
    pub arm64: CallCost,
    pub cold: Option<ColdFigures>,
}

/// Cold starts at one memory size.
#[derive(Debug, Clone, Serialize)]
pub struct ColdFigures {
    pub starts: usize,
    pub init_p50_ms: f64,
    pub init_max_ms: f64,
    /// Init plus the first call, billed.
    pub billed_p50_ms: f64,
    /// The share of the x86 cost that cold starts add at the rate asked.
    pub cost_share: f64,
}

/// One function at every memory size, and the cheapest that fits.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionFigures {
    pub function: String,
    pub sizes: Vec<SizeFigures>,
    pub best_memory_mb: Option<u32>,
}

impl FunctionFigures {
    pub fn best(&self) -> Option<&SizeFigures> {
        let best = self.best_memory_mb?;
        self.sizes.iter().find(|s| s.memory_mb == best)
    }
}

/// Figures of `function` from its measurements.
pub fn function_figures(
    function: &str,
    measured: &[Measured],
    prices: &Prices,
    cold_start_rate: f64,
) -> FunctionFigures {
    let sizes: Vec<SizeFigures> = measured
        .iter()
        .map(|m| size_figures(m, prices, cold_start_rate))
        .collect();
    let best_memory_mb = sizes
        .iter()
        .filter(|s| s.fits && s.calls > 0)
        .min_by(|a, b| a.x86.per_call_usd.total_cmp(&b.x86.per_call_usd))
        .map(|s| s.memory_mb);
    FunctionFigures {
        function: function.to_owned(),
        sizes,
        best_memory_mb,
    }
}

/// Nearest-rank percentile `p` (0–100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil();
    // Clamped into 1..=len, so the index is in range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let index = (rank.max(1.0) as usize).min(sorted.len()) - 1;
    sorted[index]
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values
}

fn size_figures(measured: &Measured, prices: &Prices, cold_start_rate: f64) -> SizeFigures {
    let memory_mb = measured.memory_mb;
    let warm = &measured.warm;
    let durations = sorted(warm.iter().map(|r| r.duration_ms));
    let billed = sorted(warm.iter().map(|r| r.billed_duration_ms as f64));
    let billed_mean_ms = billed.iter().sum::<f64>() / billed.len().max(1) as f64;
    let max_memory_used_mb = warm
        .iter()
        .chain(&measured.cold)
        .map(|r| r.max_memory_used_mb)
        .max()
        .unwrap_or(0);
    let x86_call = prices.call_usd(Arch::X86, memory_mb, billed_mean_ms);
    SizeFigures {
        memory_mb,
        calls: warm.len(),
        p50_ms: percentile(&durations, 50.0),
        p95_ms: percentile(&durations, 95.0),
        billed_p50_ms: percentile(&billed, 50.0),
        billed_mean_ms,
        max_memory_used_mb,
        fits: max_memory_used_mb <= memory_mb,
        x86: CallCost::of(x86_call),
        arm64: CallCost::of(prices.call_usd(Arch::Arm64, memory_mb, billed_mean_ms)),
        cold: cold_figures(&measured.cold, prices, memory_mb, x86_call, cold_start_rate),
    }
}

fn cold_figures(
    cold: &[Report],
    prices: &Prices,
    memory_mb: u32,
    warm_call_usd: f64,
    rate: f64,
) -> Option<ColdFigures> {
    let inits = sorted(cold.iter().filter_map(|r| r.init_duration_ms));
    if inits.is_empty() {
        return None;
    }
    let init_p50_ms = percentile(&inits, 50.0);
    Some(ColdFigures {
        starts: inits.len(),
        init_p50_ms,
        init_max_ms: inits[inits.len() - 1],
        billed_p50_ms: percentile(
            &sorted(cold.iter().map(|r| r.billed_duration_ms as f64)),
            50.0,
        ),
        cost_share: cold_start_share(prices, memory_mb, warm_call_usd, init_p50_ms, rate),
    })
}

/// One part of the pipeline at its best memory size.
#[derive(Debug, Clone, Serialize)]
pub struct PipelinePart {
    pub function: String,
    pub memory_mb: u32,
    pub calls_per_image: f64,
    pub x86_per_8m_usd: f64,
    pub arm64_per_8m_usd: f64,
}

/// The whole pipeline per 8M images: face-crop, then each model's calls.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineFigures {
    pub parts: Vec<PipelinePart>,
    pub x86_per_8m_usd: f64,
    pub arm64_per_8m_usd: f64,
}

/// The pipeline's cost from face-crop's and every model's best size;
/// `None` unless all of them were measured and one of their sizes fits.
/// `calls_per_image` says how many calls each function gets per image
/// (face-crop 1; a model ceil(faces / batch size)).
pub fn pipeline_figures(
    functions: &[FunctionFigures],
    calls_per_image: &BTreeMap<String, f64>,
) -> Option<PipelineFigures> {
    let mut parts = Vec::with_capacity(calls_per_image.len());
    for (function, calls) in calls_per_image {
        let best = functions.iter().find(|f| &f.function == function)?.best()?;
        parts.push(PipelinePart {
            function: function.clone(),
            memory_mb: best.memory_mb,
            calls_per_image: *calls,
            x86_per_8m_usd: calls * best.x86.per_call_usd * VOLUME,
            arm64_per_8m_usd: calls * best.arm64.per_call_usd * VOLUME,
        });
    }
    Some(PipelineFigures {
        x86_per_8m_usd: parts.iter().map(|p| p.x86_per_8m_usd).sum(),
        arm64_per_8m_usd: parts.iter().map(|p| p.arm64_per_8m_usd).sum(),
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::cost::Reference;

    fn report(duration_ms: f64, memory_mb: u32, used: u32, init: Option<f64>) -> Report {
        Report {
            request_id: "r".into(),
            duration_ms,
            billed_duration_ms: Report::billed_ms(duration_ms, init),
            memory_size_mb: memory_mb,
            max_memory_used_mb: used,
            init_duration_ms: init,
            status: None,
        }
    }

    fn measured(memory_mb: u32, duration_ms: f64, used: u32) -> Measured {
        Measured {
            memory_mb,
            cold: vec![report(
                duration_ms,
                memory_mb,
                used,
                Some(4.0 * duration_ms),
            )],
            warm: (0..10)
                .map(|i| report(duration_ms + f64::from(i), memory_mb, used, None))
                .collect(),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 10.0);
        assert_eq!(percentile(&values, 95.0), 19.0);
        assert_eq!(percentile(&values, 100.0), 20.0);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn the_best_size_is_the_cheapest_that_fits() {
        let prices = Reference::builtin().expect("parses").prices;
        // Time halves with memory up to a core, as a CPU-bound function's does.
        let runs = [
            measured(128, 800.0, 140), // over its memory: Lambda would kill it
            measured(256, 400.0, 140),
            measured(512, 200.0, 140),
            measured(1024, 150.0, 140),
        ];
        let figures = function_figures("age", &runs, &prices, 0.01);
        assert!(!figures.sizes[0].fits);
        assert!(figures.sizes[1].fits);
        // 256 MB and 512 MB cost the same GB-s; 1024 MB costs more; 128
        // MB is out.
        let best = figures.best().expect("a size fits");
        assert!(matches!(best.memory_mb, 256 | 512), "{}", best.memory_mb);
        let size = &figures.sizes[3];
        assert_eq!(size.calls, 10);
        assert_eq!(size.p50_ms, 154.0);
        assert_eq!(size.p95_ms, 159.0);
        assert!((size.billed_mean_ms - 154.5).abs() < 1e-9);
        assert!(size.arm64.per_call_usd < size.x86.per_call_usd);
        let cold = size.cold.as_ref().expect("a cold start");
        assert_eq!(cold.init_p50_ms, 600.0);
        assert_eq!(cold.billed_p50_ms, 750.0);
        assert!(cold.cost_share > 0.0 && cold.cost_share < 0.05);
    }

    #[test]
    fn the_pipeline_adds_each_part_at_its_best_size_and_calls() {
        let prices = Reference::builtin().expect("parses").prices;
        let crop = function_figures("face-crop", &[measured(1024, 100.0, 60)], &prices, 0.0);
        let age = function_figures("age", &[measured(512, 20.0, 60)], &prices, 0.0);
        let calls: BTreeMap<String, f64> = [("face-crop".to_owned(), 1.0), ("age".to_owned(), 2.0)]
            .into_iter()
            .collect();
        let pipeline =
            pipeline_figures(&[crop.clone(), age.clone()], &calls).expect("both measured");
        let expected = crop.sizes[0].x86.per_8m_usd + 2.0 * age.sizes[0].x86.per_8m_usd;
        assert!((pipeline.x86_per_8m_usd - expected).abs() < 1e-9);
        assert!(pipeline.arm64_per_8m_usd < pipeline.x86_per_8m_usd);
        // Without the age model measured, there is no pipeline figure.
        assert!(pipeline_figures(&[crop], &calls).is_none());
    }
}
