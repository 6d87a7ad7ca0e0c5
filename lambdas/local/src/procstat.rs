//! What a process has used, as Linux's `/proc` tells it: its CPU time and
//! its peak resident memory. The local Lambda reports the peak in each
//! `REPORT` line; the benches and tests read both for the coordinator and
//! for the processes they start.

use std::time::Duration;

/// `sysconf(_SC_CLK_TCK)` on Linux.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Which process: this one, or another by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    This,
    Pid(u32),
}

impl Process {
    fn path(self, file: &str) -> String {
        match self {
            Self::This => format!("/proc/self/{file}"),
            Self::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} does not read as expected")]
    Format { path: String },
}

/// The fields of `/proc/<process>/stat` after the command name (which
/// may hold spaces and parentheses): field 3 (state) is the first.
fn stat_fields(process: Process) -> Result<Vec<String>, ProcError> {
    let path = process.path("stat");
    let stat = std::fs::read_to_string(&path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })?;
    let (_, after_name) = stat.rsplit_once(')').ok_or(ProcError::Format { path })?;
    Ok(after_name.split_whitespace().map(str::to_owned).collect())
}

/// User + system CPU time the process has used.
pub fn cpu_time(process: Process) -> Result<Duration, ProcError> {
    let fields = stat_fields(process)?;
    let format = || ProcError::Format {
        path: process.path("stat"),
    };
    // Fields 14 and 15 (utime, stime), in clock ticks.
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(format)?
        .iter()
        .map(|field| field.parse::<u64>().map_err(|_| format()))
        .sum::<Result<u64, _>>()?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / CLOCK_TICKS_PER_SECOND,
    ))
}

/// Whether the process has ended: gone, or a zombie waiting to be reaped.
pub fn has_ended(pid: u32) -> bool {
    stat_fields(Process::Pid(pid)).map_or(true, |fields| {
        fields.first().is_some_and(|state| state == "Z")
    })
}

/// Peak resident set (`VmHWM`) of a process, in MB rounded up; 0 if gone.
pub fn peak_memory_mb(pid: u32) -> u32 {
    peak_memory_of(Process::Pid(pid))
}

/// Peak resident set (`VmHWM`), in MB rounded up; 0 if unknown.
pub fn peak_memory_of(process: Process) -> u32 {
    std::fs::read_to_string(process.path("status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kb: u64 = line
                    .strip_prefix("VmHWM:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                u32::try_from(kb.div_ceil(1024)).ok()
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_and_memory_and_has_not_ended() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_time(Process::This).expect("readable") > Duration::ZERO);
        assert!(peak_memory_of(Process::This) > 0);
        assert!(!has_ended(std::process::id()));
    }

    #[test]
    fn a_process_that_is_gone_has_ended_and_reads_nothing() {
        let mut child = std::process::Command::new("true").spawn().expect("runs");
        let pid = child.id();
        child.wait().expect("exits");
        assert!(has_ended(pid));
        assert_eq!(peak_memory_mb(pid), 0);
        assert!(cpu_time(Process::Pid(pid)).is_err());
    }
}
