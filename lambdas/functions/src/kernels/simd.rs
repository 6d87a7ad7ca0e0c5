//! The SIMD level our kernels run at: the widest this CPU has, or a
//! lower one when `LAMBDEX_SIMD` caps it, so every path can be measured
//! on any host (an AVX-512 machine can run what an AVX2-only Lambda host
//! runs). Every kernel dispatches through [`dispatch`], which hands it
//! the level's [`pulp`] token; code inside runs with that level's target
//! features, so plain loops are vectorised for it too.
//!
//! The levels, widest first: `avx512` (x86-64-v4), `avx2` (x86-64-v3:
//! AVX2 and FMA, the floor AWS guarantees on x86 Lambda), `sse`
//! (x86-64-v2: SSE4.2, no FMA), `neon` (arm64), `scalar`.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

use pulp::WithSimd;

/// Caps the SIMD level our kernels use: `avx512`, `avx2`, `sse`, `neon`
/// or `scalar`. Unset: the widest this CPU has.
pub const SIMD_ENV: &str = "LAMBDEX_SIMD";

/// tract's switch for its own kernels' instruction sets ([`Level::tract_isa`]
/// says what caps them at a level), read once per process.
pub const TRACT_ISA_ENV: &str = "TRACT_CPU_ISA";

/// A SIMD level, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Scalar,
    Sse,
    Neon,
    Avx2,
    Avx512,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SimdError {
    #[error("{SIMD_ENV}={0:?}: not a SIMD level (avx512, avx2, sse, neon or scalar)")]
    Unknown(String),
    #[error("{SIMD_ENV}={wanted}: this CPU has at most {has}")]
    Unavailable { wanted: Level, has: Level },
}

impl Level {
    pub const ALL: [Self; 5] = [
        Self::Avx512,
        Self::Avx2,
        Self::Sse,
        Self::Neon,
        Self::Scalar,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Sse => "sse",
            Self::Neon => "neon",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|level| level.name() == name.trim().to_ascii_lowercase())
    }

    /// The widest level this CPU has.
    pub fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if pulp::x86::V4::is_available() {
                Self::Avx512
            } else if pulp::x86::V3::is_available() {
                Self::Avx2
            } else if pulp::x86::V2::is_available() {
                Self::Sse
            } else {
                Self::Scalar
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            Self::Neon
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Self::Scalar
        }
    }

    /// Every level this CPU can run, widest first.
    pub fn available() -> Vec<Self> {
        let top = Self::detected();
        Self::ALL
            .into_iter()
            .filter(|level| *level <= top && level.runs_on(top))
            .collect()
    }

    /// Whether a CPU whose widest level is `top` runs this one.
    fn runs_on(self, top: Self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Neon => top == Self::Neon,
            Self::Sse | Self::Avx2 | Self::Avx512 => top != Self::Neon && self <= top,
        }
    }

    /// The level `LAMBDEX_SIMD` asks for (the widest this CPU has when it
    /// is unset), or why it cannot be had.
    pub fn from_env() -> Result<Self, SimdError> {
        Self::from_setting(std::env::var(SIMD_ENV).ok().as_deref())
    }

    fn from_setting(setting: Option<&str>) -> Result<Self, SimdError> {
        let has = Self::detected();
        let Some(setting) = setting.filter(|text| !text.trim().is_empty()) else {
            return Ok(has);
        };
        let wanted = Self::parse(setting).ok_or_else(|| SimdError::Unknown(setting.to_owned()))?;
        if wanted.runs_on(has) {
            Ok(wanted)
        } else {
            Err(SimdError::Unavailable { wanted, has })
        }
    }

    /// `TRACT_CPU_ISA`'s edit that takes tract's own kernels down to this
    /// level (the benches run tract at the level they measure ours at).
    pub fn tract_isa(self) -> Option<&'static str> {
        match self {
            Self::Avx512 | Self::Neon => None,
            Self::Avx2 => Some("-avx512f,-avx512fp16,-avx512vnni"),
            Self::Sse | Self::Scalar => {
                Some("-avx512f,-avx512fp16,-avx512vnni,-avx,-avx2,-fma,-f16c,-avxvnni")
            }
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The level the kernels run at on this thread: the one [`with_level`]
/// set, else `LAMBDEX_SIMD`, else the widest this CPU has. A bad setting
/// falls back to the widest here; the functions' init reports it
/// ([`Level::from_env`]) before any kernel runs.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    OVERRIDE.get().unwrap_or_else(|| {
        *LEVEL.get_or_init(|| Level::from_env().unwrap_or_else(|_| Level::detected()))
    })
}

thread_local! {
    static OVERRIDE: Cell<Option<Level>> = const { Cell::new(None) };
}

/// Runs `work` with this thread's kernels at `level` (or the nearest
/// narrower one this CPU has): how the tests hold every level's kernels
/// to tract's outputs in one process. tract runs a plan on the calling
/// thread, so a plan run inside `work` runs at `level`.
pub fn with_level<T>(level: Level, work: impl FnOnce() -> T) -> T {
    struct Restore(Option<Level>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.set(self.0);
        }
    }
    let _restore = Restore(OVERRIDE.replace(Some(level)));
    work()
}

/// Runs `op` at this process's [`level`].
#[inline]
pub fn dispatch<W: WithSimd>(op: W) -> W::Output {
    dispatch_at(level(), op)
}

/// Runs `op` at `level`, or the nearest narrower one this CPU has.
#[inline]
pub fn dispatch_at<W: WithSimd>(level: Level, op: W) -> W::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if level >= Level::Avx512
            && let Some(simd) = pulp::x86::V4::try_new()
        {
            return pulp::Simd::vectorize(simd, op);
        }
        if level >= Level::Avx2
            && let Some(simd) = pulp::x86::V3::try_new()
        {
            return pulp::Simd::vectorize(simd, op);
        }
        if level >= Level::Sse
            && level != Level::Neon
            && let Some(simd) = pulp::x86::V2::try_new()
        {
            return pulp::Simd::vectorize(simd, op);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if level == Level::Neon {
            return pulp::Arch::new().dispatch(op);
        }
    }
    pulp::Simd::vectorize(pulp::Scalar::new(), op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_names_a_level_this_cpu_runs_or_is_refused() {
        let has = Level::detected();
        assert_eq!(Level::from_setting(None), Ok(has));
        assert_eq!(Level::from_setting(Some(" ")), Ok(has));
        assert_eq!(Level::from_setting(Some("scalar")), Ok(Level::Scalar));
        assert_eq!(Level::from_setting(Some("SCALAR")), Ok(Level::Scalar));
        assert!(matches!(
            Level::from_setting(Some("avx9000")),
            Err(SimdError::Unknown(_))
        ));
        for level in Level::ALL {
            let wanted = Level::from_setting(Some(level.name()));
            assert_eq!(
                wanted.is_ok(),
                Level::available().contains(&level),
                "{level}"
            );
        }
    }

    #[test]
    fn a_thread_runs_at_the_level_it_set_until_the_work_ends() {
        let before = level();
        let inside = with_level(Level::Scalar, || {
            let nested = with_level(Level::detected(), level);
            (level(), nested)
        });
        assert_eq!(inside, (Level::Scalar, Level::detected()));
        assert_eq!(level(), before);
        let lanes = with_level(Level::Scalar, || dispatch(Lanes));
        assert_eq!(lanes, 1, "the scalar level runs one lane");
    }

    struct Lanes;

    impl WithSimd for Lanes {
        type Output = usize;

        fn with_simd<S: pulp::Simd>(self, _simd: S) -> usize {
            S::F32_LANES
        }
    }

    #[test]
    fn every_level_this_cpu_has_is_available_and_scalar_always_is() {
        let available = Level::available();
        assert_eq!(available.first(), Some(&Level::detected()));
        assert_eq!(available.last(), Some(&Level::Scalar));
    }
}
