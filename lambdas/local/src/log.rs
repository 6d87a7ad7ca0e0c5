//! What an invocation leaves in its log: AWS's `START`, `END` and `REPORT`
//! lines around the function's own output, and the 4 KB tail
//! `LogType=Tail` returns.

use std::fmt::Write as _;

use lambdex_proto::Report;

/// How much of an invocation's log `LogType=Tail` returns.
pub const LOG_TAIL_BYTES: usize = 4096;

/// One invocation's log, as `LogType=Tail` sees it: `START`, the function's
/// own lines, `END`, `REPORT`.
pub fn invocation_log(version: &str, output: &str, report: &Report) -> String {
    let id = &report.request_id;
    let mut log = format!("START RequestId: {id} Version: {version}\n");
    log.push_str(output);
    if !output.is_empty() && !output.ends_with('\n') {
        log.push('\n');
    }
    let _ = writeln!(log, "END RequestId: {id}");
    log.push_str(&report.line());
    log.push('\n');
    log
}

/// The last [`LOG_TAIL_BYTES`] of `log`.
pub fn tail(log: &str) -> &[u8] {
    let bytes = log.as_bytes();
    &bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            request_id: "8f507cfc-xmpl-4697-b07a-ac58fc914c95".into(),
            duration_ms: 2.70,
            billed_duration_ms: 3,
            memory_size_mb: 128,
            max_memory_used_mb: 31,
            init_duration_ms: None,
            status: None,
        }
    }

    #[test]
    fn the_log_ends_with_a_report_that_parses_back() {
        let log = invocation_log("$LATEST", "hello\n", &report());
        assert!(log.starts_with("START RequestId: 8f507cfc"), "{log}");
        assert_eq!(Report::parse(&log), Some(report()));
    }

    #[test]
    fn the_tail_keeps_the_report_line() {
        let output = "x".repeat(10_000);
        let log = invocation_log("1", &output, &report());
        let tail = std::str::from_utf8(tail(&log)).expect("ASCII");
        assert_eq!(tail.len(), LOG_TAIL_BYTES);
        assert!(Report::parse(tail).is_some());
    }
}
