//! What a job cost: every invocation's `REPORT` line (from the log tail),
//! failed attempts included since Lambda bills them too, summed per
//! function and priced. A call shared with other images (see
//! [`crate::pipeline::batcher`]) counts in `requests` whole, but only the job's share
//! of its billed time and request fee counts in `billed_ms`, `gb_seconds`
//! and the cost.

use std::collections::BTreeMap;
use std::sync::Mutex;

use lambdex_proto::Report;
use lambdex_proto::{Billing, FunctionBilling};

use crate::config::CostConfig;

/// MB per GB in Lambda's GB-seconds.
const MB_PER_GB: f64 = 1024.0;

/// The `REPORT` lines of one job's invocations, each with the job's share
/// of it (1 unless the call was shared).
#[derive(Debug, Default)]
pub struct Meter(Mutex<Vec<(String, Report, f64)>>);

impl Meter {
    pub fn record(&self, function: &str, report: Report) {
        self.record_share(function, report, 1.0);
    }

    /// A call this job shared: `share` of it is the job's.
    pub fn record_share(&self, function: &str, report: Report, share: f64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((function.to_owned(), report, share));
    }

    /// Every report recorded so far, whole, leaving the meter empty.
    pub fn take(&self) -> Vec<(String, Report)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .map(|(function, report, _)| (function, report))
            .collect()
    }

    /// The bill at `prices`; `None` when no invocation reported.
    pub fn billing(&self, prices: &CostConfig) -> Option<Billing> {
        let reports = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if reports.is_empty() {
            return None;
        }
        let mut functions: BTreeMap<&str, FunctionBilling> = BTreeMap::new();
        let mut fees = 0.0;
        for (function, report, share) in reports.iter() {
            let entry = functions
                .entry(function)
                .or_insert_with(|| FunctionBilling {
                    function: function.clone(),
                    requests: 0,
                    billed_ms: 0,
                    memory_mb: report.memory_size_mb,
                    gb_seconds: 0.0,
                });
            entry.requests += 1;
            entry.billed_ms += (report.billed_duration_ms as f64 * share).round() as u64;
            entry.memory_mb = entry.memory_mb.max(report.memory_size_mb);
            entry.gb_seconds += share * report.billed_duration_ms as f64 / 1000.0
                * (f64::from(report.memory_size_mb) / MB_PER_GB);
            fees += share;
        }
        let functions: Vec<FunctionBilling> = functions.into_values().collect();
        let requests = functions.iter().map(|f| f.requests).sum::<u32>();
        let gb_seconds = functions.iter().map(|f| f.gb_seconds).sum::<f64>();
        Some(Billing {
            billed_ms: functions.iter().map(|f| f.billed_ms).sum(),
            estimated_cost_usd: gb_seconds * prices.usd_per_gb_second
                + fees * prices.usd_per_million_requests / 1e6,
            requests,
            gb_seconds,
            functions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(billed: u64, memory: u32) -> Report {
        Report {
            request_id: "r".into(),
            duration_ms: billed as f64,
            billed_duration_ms: billed,
            memory_size_mb: memory,
            max_memory_used_mb: 40,
            init_duration_ms: None,
            status: None,
        }
    }

    #[test]
    fn sums_per_function_and_prices_at_the_configured_rates() {
        let meter = Meter::default();
        assert!(meter.billing(&CostConfig::default()).is_none());
        meter.record("face-crop", report(100, 2048));
        meter.record("age", report(10, 1024));
        meter.record("age", report(30, 1024));
        let billing = meter
            .billing(&CostConfig {
                usd_per_gb_second: 1.0,
                usd_per_million_requests: 1e6,
            })
            .expect("billed");
        assert_eq!(billing.requests, 3);
        assert_eq!(billing.billed_ms, 140);
        let age = &billing.functions[0];
        assert_eq!(
            (age.function.as_str(), age.requests, age.billed_ms),
            ("age", 2, 40)
        );
        // 0.1 s × 2 GB + 0.04 s × 1 GB, and 3 requests at 1 USD each.
        assert!((billing.gb_seconds - 0.24).abs() < 1e-9);
        assert!((billing.estimated_cost_usd - 3.24).abs() < 1e-9);
    }

    #[test]
    fn a_shared_call_counts_whole_in_requests_but_bills_only_the_share() {
        let meter = Meter::default();
        meter.record_share("age", report(40, 1024), 0.25);
        let billing = meter
            .billing(&CostConfig {
                usd_per_gb_second: 1.0,
                usd_per_million_requests: 1e6,
            })
            .expect("billed");
        assert_eq!((billing.requests, billing.billed_ms), (1, 10));
        // A quarter of 0.04 s × 1 GB, and a quarter of the 1 USD fee.
        assert!((billing.gb_seconds - 0.01).abs() < 1e-9);
        assert!((billing.estimated_cost_usd - 0.26).abs() < 1e-9);
        assert_eq!(meter.take().len(), 1);
        assert!(meter.billing(&CostConfig::default()).is_none());
    }
}
