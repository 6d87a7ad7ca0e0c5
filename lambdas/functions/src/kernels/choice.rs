//! Which of our kernels a plan uses: only those measured to beat tract's
//! own on the SIMD level the process runs at, so no CPU is ever worse off
//! than with tract alone.
//!
//! The choice is a table by level ([`Choice::measured`]), not a
//! calibration at load: timing each op at init would add tens of
//! milliseconds to every cold start, and the table is re-derived by
//! `lambdex bench models`, which measures every level this host can run
//! (`LAMBDEX_SIMD` takes a wide host down to the narrower ones) with our
//! kernels, with the chosen ones, and with tract's alone. A level no one
//! has measured (arm64's NEON) keeps tract's kernels throughout.
//! `LAMBDEX_KERNELS` overrides the table, for measuring.

use std::fmt;
use std::sync::OnceLock;

use super::simd::{self, Level};

/// `auto` (the table, the default), `ours` (every kernel that applies),
/// `tract` (tract's kernels throughout) or a comma-separated list of
/// kernels (`residual-block,stem-conv,deep-conv,depthwise,max-pool,add-relu`).
pub const KERNELS_ENV: &str = "LAMBDEX_KERNELS";

/// One of our ops, each replacing what tract would run in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// A whole residual block ([`super::ResidualBlock`]).
    ResidualBlock,
    /// A first layer's dense convolution ([`super::StemConv`]).
    StemConv,
    /// A dense 3×3 convolution over many channels and few pixels, the
    /// classifiers' ([`super::DeepConv`]).
    DeepConv,
    /// A 3×3 depthwise convolution ([`super::Depthwise3x3`]).
    Depthwise,
    /// A 2×2 max pool with stride 2 ([`super::MaxPool2x2S2`]).
    MaxPool,
    /// A sum and its ReLU ([`super::AddRelu`]).
    AddRelu,
}

impl Kernel {
    pub const ALL: [Self; 6] = [
        Self::ResidualBlock,
        Self::StemConv,
        Self::DeepConv,
        Self::Depthwise,
        Self::MaxPool,
        Self::AddRelu,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ResidualBlock => "residual-block",
            Self::StemConv => "stem-conv",
            Self::DeepConv => "deep-conv",
            Self::Depthwise => "depthwise",
            Self::MaxPool => "max-pool",
            Self::AddRelu => "add-relu",
        }
    }
}

/// The set of our kernels a plan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Choice(u8);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "{KERNELS_ENV}={0:?}: expected auto, ours, tract or a list of residual-block, stem-conv, \
     deep-conv, depthwise, max-pool and add-relu"
)]
pub struct ChoiceError(String);

impl Choice {
    /// Every kernel that applies.
    pub const OURS: Self = Self(0b11_1111);
    /// None: tract's kernels throughout.
    pub const TRACT: Self = Self(0);

    pub fn of(kernels: &[Kernel]) -> Self {
        Self(kernels.iter().fold(0, |set, kernel| set | kernel.bit()))
    }

    pub fn uses(self, kernel: Kernel) -> bool {
        self.0 & kernel.bit() != 0
    }

    /// The kernels measured to beat tract's at `level` (BENCHMARKS.md,
    /// "Kernels by SIMD level", has the figures and the command).
    pub fn measured(level: Level) -> Self {
        match level {
            Level::Avx512 => Self::OURS,
            Level::Avx2 => Self::OURS,
            Level::Sse => Self::OURS,
            // The deep convolutions' tile, one lane wide, ran the age net
            // three times slower than tract's scalar product.
            Level::Scalar => Self::of(&[
                Kernel::ResidualBlock,
                Kernel::StemConv,
                Kernel::Depthwise,
                Kernel::MaxPool,
                Kernel::AddRelu,
            ]),
            // No arm64 host has measured them.
            Level::Neon => Self::TRACT,
        }
    }

    /// What `setting` (`LAMBDEX_KERNELS`'s value) asks for at `level`.
    pub fn from_setting(setting: Option<&str>, level: Level) -> Result<Self, ChoiceError> {
        let Some(setting) = setting else {
            return Ok(Self::measured(level));
        };
        match setting.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Self::measured(level)),
            "ours" => Ok(Self::OURS),
            "tract" => Ok(Self::TRACT),
            list => list
                .split(',')
                .map(|name| {
                    Kernel::ALL
                        .into_iter()
                        .find(|kernel| kernel.name() == name.trim())
                        .ok_or_else(|| ChoiceError(setting.to_owned()))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|kernels| Self::of(&kernels)),
        }
    }

    /// `LAMBDEX_KERNELS` at this process's SIMD level, or why it is wrong.
    pub fn from_env() -> Result<Self, ChoiceError> {
        Self::from_setting(std::env::var(KERNELS_ENV).ok().as_deref(), simd::level())
    }

    /// This process's choice. A bad setting falls back to the table; the
    /// functions' init reports it ([`Choice::from_env`]) before any plan
    /// is built.
    pub fn current() -> Self {
        static CHOICE: OnceLock<Choice> = OnceLock::new();
        *CHOICE.get_or_init(|| Self::from_env().unwrap_or_else(|_| Self::measured(simd::level())))
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OURS => f.write_str("all of ours"),
            Self::TRACT => f.write_str("tract's only"),
            _ => {
                let names: Vec<String> = Kernel::ALL
                    .into_iter()
                    .filter(|kernel| self.uses(*kernel))
                    .map(|kernel| kernel.name().to_owned())
                    .collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_picks_the_table_all_of_ours_or_none() {
        for level in Level::ALL {
            let table = Choice::measured(level);
            assert_eq!(Choice::from_setting(None, level), Ok(table));
            assert_eq!(Choice::from_setting(Some(" AUTO "), level), Ok(table));
            assert_eq!(Choice::from_setting(Some("ours"), level), Ok(Choice::OURS));
            assert_eq!(
                Choice::from_setting(Some("tract"), level),
                Ok(Choice::TRACT)
            );
            assert!(Choice::from_setting(Some("fastest"), level).is_err());
            assert!(Choice::from_setting(Some("depthwise,fastest"), level).is_err());
            assert_eq!(
                Choice::from_setting(Some("depthwise, max-pool"), level),
                Ok(Choice::of(&[Kernel::Depthwise, Kernel::MaxPool]))
            );
        }
    }

    #[test]
    fn a_choice_holds_exactly_the_kernels_it_was_made_of() {
        for kernel in Kernel::ALL {
            let one = Choice::of(&[kernel]);
            for other in Kernel::ALL {
                assert_eq!(one.uses(other), other == kernel, "{kernel:?} {other:?}");
            }
            assert!(Choice::OURS.uses(kernel));
            assert!(!Choice::TRACT.uses(kernel));
        }
        assert_eq!(Choice::of(&Kernel::ALL), Choice::OURS);
    }

    #[test]
    fn a_level_no_one_measured_keeps_tracts_kernels() {
        assert_eq!(Choice::measured(Level::Neon), Choice::TRACT);
    }
}
