//! The machine a bench runs on. Its figures hold for that CPU and SIMD
//! level only — the same face-crop binary bills several times longer on an
//! AVX2-only host than on an AVX-512 one (BENCHMARKS.md) — so the benches
//! print the host and the level our kernels ran at beside what they
//! measured.

use std::fmt;

use lambdex_functions::kernels::simd::{self, Level};
use serde::Serialize;

/// The CPU a bench ran on, as far as the OS says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`, or "unknown".
    pub cpu: String,
    pub arch: &'static str,
    /// The widest SIMD level this CPU has.
    #[serde(serialize_with = "level_name")]
    pub simd: Level,
    /// The level our kernels run at in this process: [`Machine::simd`],
    /// or lower when `LAMBDEX_SIMD` caps it.
    #[serde(serialize_with = "level_name")]
    pub kernels_at: Level,
    /// Cores this process may use.
    pub cores: usize,
}

fn level_name<S: serde::Serializer>(level: &Level, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(level.name())
}

impl Machine {
    /// This machine.
    pub fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            cpu: cpu_model(&cpuinfo).unwrap_or("unknown").to_owned(),
            arch: std::env::consts::ARCH,
            simd: Level::detected(),
            kernels_at: simd::level(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, SIMD up to {}; our kernels at {}), {} core(s)",
            self.cpu, self.arch, self.simd, self.kernels_at, self.cores
        )
    }
}

/// The first `model name` in a `/proc/cpuinfo` text (x86; arm64 kernels
/// often have none).
fn cpu_model(cpuinfo: &str) -> Option<&str> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name")
            .then(|| value.trim())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_name_is_read_from_cpuinfo() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7R13 Processor\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7R13 Processor\n";
        assert_eq!(cpu_model(cpuinfo), Some("AMD EPYC 7R13 Processor"));
        assert_eq!(cpu_model("processor\t: 0\nBogoMIPS\t: 243.75\n"), None);
        assert_eq!(cpu_model("model name\t:   \n"), None);
    }

    #[test]
    fn this_host_names_its_arch_and_at_least_one_core() {
        let host = Machine::this();
        assert_eq!(host.arch, std::env::consts::ARCH);
        assert!(host.cores >= 1);
        let shown = host.to_string();
        assert!(shown.contains(host.arch), "{shown}");
        assert!(shown.contains(&host.simd.to_string()), "{shown}");
    }
}
