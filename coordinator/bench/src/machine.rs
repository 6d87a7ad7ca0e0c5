//! The machine a bench runs on. Its figures hold for that CPU only — the
//! same face-crop binary bills several times longer on an AVX2-only host
//! than on an AVX-512 one (BENCHMARKS.md) — so the benches print the host
//! beside what they measured.

use std::fmt;

use serde::Serialize;

/// The CPU a bench ran on, as far as the OS says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`, or "unknown".
    pub cpu: String,
    pub arch: &'static str,
    /// The widest vector instructions the kernels can pick at run time.
    pub simd: Simd,
    /// Cores this process may use.
    pub cores: usize,
}

/// The widest SIMD level that tract and our kernels (multiversion, pulp)
/// choose from at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Simd {
    Avx512,
    Avx2Fma,
    /// x86_64 without AVX2 and FMA: the kernels fall back to SSE.
    Sse,
    Neon,
    Other,
}

impl Simd {
    /// This CPU's level.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                Self::Avx512
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                Self::Avx2Fma
            } else {
                Self::Sse
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            Self::Neon
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Self::Other
        }
    }
}

impl fmt::Display for Simd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Avx512 => "AVX-512",
            Self::Avx2Fma => "AVX2 and FMA, no AVX-512",
            Self::Sse => "SSE only",
            Self::Neon => "NEON",
            Self::Other => "no SIMD the kernels know",
        })
    }
}

impl Machine {
    /// This machine.
    pub fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            cpu: cpu_model(&cpuinfo).unwrap_or("unknown").to_owned(),
            arch: std::env::consts::ARCH,
            simd: Simd::detect(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {}), {} core(s)",
            self.cpu, self.arch, self.simd, self.cores
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
