//! The `REPORT` line Lambda writes at the end of every invocation's log:
//! written by the local Lambda, read by the coordinator (from the 4 KB tail
//! `LogType=Tail` returns) to bill each call, and by the benches.

use std::fmt::Write as _;

/// The figures of one `REPORT` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub request_id: String,
    pub duration_ms: f64,
    pub billed_duration_ms: u64,
    pub memory_size_mb: u32,
    pub max_memory_used_mb: u32,
    /// Present on a cold start.
    pub init_duration_ms: Option<f64>,
    /// `timeout` or `error` when the invocation did not finish normally.
    pub status: Option<String>,
}

impl Report {
    /// Billed duration the way Lambda bills a custom runtime
    /// (`provided.al2023`): the invocation plus, on a cold start, the init
    /// phase, rounded up to the next millisecond.
    pub fn billed_ms(duration_ms: f64, init_duration_ms: Option<f64>) -> u64 {
        let total = duration_ms + init_duration_ms.unwrap_or(0.0);
        // Durations are milliseconds of one invocation: far inside u64.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let billed = total.max(0.0).ceil() as u64;
        billed.max(1)
    }

    /// The line as AWS writes it, tab-separated, with its trailing tab.
    pub fn line(&self) -> String {
        let mut line = format!(
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
            self.request_id,
            self.duration_ms,
            self.billed_duration_ms,
            self.memory_size_mb,
            self.max_memory_used_mb
        );
        if let Some(init) = self.init_duration_ms {
            let _ = write!(line, "Init Duration: {init:.2} ms\t");
        }
        if let Some(status) = &self.status {
            let _ = write!(line, "Status: {status}\t");
        }
        line
    }

    /// The last `REPORT` line of a log (a decoded `X-Amz-Log-Result`).
    pub fn parse(log: &str) -> Option<Self> {
        let line = log
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("REPORT RequestId: "))?;
        let mut fields = line.split('\t');
        let request_id = fields.next()?.trim().to_owned();
        let (mut duration, mut billed, mut memory, mut used) = (None, None, None, None);
        let (mut init_duration_ms, mut status) = (None, None);
        for field in fields {
            let Some((key, value)) = field.split_once(": ") else {
                continue;
            };
            let number = value.split_whitespace().next().unwrap_or_default();
            match key.trim() {
                "Duration" => duration = Some(number.parse().ok()?),
                "Billed Duration" => billed = Some(number.parse().ok()?),
                "Memory Size" => memory = Some(number.parse().ok()?),
                "Max Memory Used" => used = Some(number.parse().ok()?),
                "Init Duration" => init_duration_ms = Some(number.parse().ok()?),
                "Status" => status = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        Some(Self {
            request_id,
            duration_ms: duration?,
            billed_duration_ms: billed?,
            memory_size_mb: memory?,
            max_memory_used_mb: used?,
            init_duration_ms,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(init: Option<f64>) -> Report {
        Report {
            request_id: "8f507cfc-xmpl-4697-b07a-ac58fc914c95".into(),
            duration_ms: 2.70,
            billed_duration_ms: Report::billed_ms(2.70, init),
            memory_size_mb: 128,
            max_memory_used_mb: 31,
            init_duration_ms: init,
            status: None,
        }
    }

    #[test]
    fn a_report_line_parses_back() {
        for init in [None, Some(109.86)] {
            let line = report(init).line();
            assert_eq!(
                Report::parse(&format!("END RequestId: x\n{line}\n")),
                Some(report(init))
            );
        }
    }

    #[test]
    fn parses_a_line_written_by_aws() {
        let log = "START RequestId: 1 Version: $LATEST\nEND RequestId: 1\nREPORT RequestId: 1\tDuration: 2.70 ms\tBilled Duration: 113 ms\tMemory Size: 128 MB\tMax Memory Used: 31 MB\tInit Duration: 109.86 ms\t\n";
        let report = Report::parse(log).expect("parses");
        assert_eq!(report.billed_duration_ms, 113);
        assert_eq!(report.init_duration_ms, Some(109.86));
        assert_eq!(report.max_memory_used_mb, 31);
    }

    #[test]
    fn billing_rounds_up_and_counts_the_init_phase() {
        assert_eq!(Report::billed_ms(2.01, None), 3);
        assert_eq!(Report::billed_ms(2.70, Some(109.86)), 113);
        assert_eq!(Report::billed_ms(0.0, None), 1);
    }

    #[test]
    fn a_log_without_a_complete_report_gives_none() {
        assert_eq!(Report::parse("START RequestId: 1\n"), None);
        assert_eq!(Report::parse("REPORT RequestId: 1\tDuration: 1 ms\t"), None);
    }
}
