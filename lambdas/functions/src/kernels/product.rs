//! The matrix product our convolutions end in, `out = W · x + b` over a band
//! of pixels, with what follows it (a residual sum and a ReLU) done as each
//! output is written.
//!
//! `W` is small (at most 96 × 96 in BlazeFace) and `x` a few hundred to a
//! thousand pixels wide, so the product is a register tile: a few output
//! channels by a few vectors of pixels held in registers while every input
//! row streams past once, one broadcast weight and one fused multiply-add
//! per vector. The weights are laid out once per op run so that the tile's
//! weights for one input row are adjacent ([`PackedWeights`]); `x` is read
//! in place, with no packing. pulp compiles the tile for the best SIMD the
//! CPU has, picked at run time (AVX-512, AVX2 + FMA, or scalar), in safe
//! code. It replaced ndarray's matrix product (`matrixmultiply`, whose
//! widest kernel is AVX2) and a separate pass for the bias, residual and
//! ReLU; `lambdex bench models --layers` prints each op's share, and
//! BENCHMARKS.md what the change measured.

use pulp::{Simd, WithSimd};

/// Output channels and vectors of pixels in one tile, by SIMD width: the
/// quickest shapes of a sweep of 2–24 channels by 1–8 vectors, 4 × 4 (16
/// accumulators) for AVX-512's 32 registers, 6 × 2 for AVX2's 16.
const WIDE_TILE: (usize, usize) = (4, 4);
const NARROW_TILE: (usize, usize) = (6, 2);

/// Whether `S` runs [`WIDE_TILE`]s (16 lanes or more) or [`NARROW_TILE`]s.
fn wide<S: Simd>() -> bool {
    S::F32_LANES >= 16
}

/// `W` (`[outputs, inputs]`, row-major), laid out for the tiles of the
/// SIMD level [`Product`] will run on: for each block of a tile's output
/// channels, input row by input row, the block's weights side by side.
/// Channels past the last whole block are read from `W` as it is.
#[derive(Debug, Clone)]
pub(super) struct PackedWeights<'w> {
    blocks: Vec<f32>,
    /// Output channels per block.
    block: usize,
    rows: &'w [f32],
    outputs: usize,
    inputs: usize,
}

impl<'w> PackedWeights<'w> {
    pub fn new(weights: &'w [f32], outputs: usize, inputs: usize) -> Self {
        let block = super::simd::dispatch(TileChannels);
        Self::with_block(weights, outputs, inputs, block)
    }

    fn with_block(weights: &'w [f32], outputs: usize, inputs: usize, block: usize) -> Self {
        assert!(inputs > 0, "a product over no inputs");
        assert_eq!(weights.len(), outputs * inputs, "W is outputs × inputs");
        let whole = outputs / block * block;
        let mut blocks = vec![0f32; whole * inputs];
        for (o, row) in weights.chunks_exact(inputs).take(whole).enumerate() {
            for (i, &weight) in row.iter().enumerate() {
                blocks[(o / block * inputs + i) * block + o % block] = weight;
            }
        }
        Self {
            blocks,
            block,
            rows: weights,
            outputs,
            inputs,
        }
    }
}

/// How many output channels a tile of the SIMD level holds.
struct TileChannels;

impl WithSimd for TileChannels {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> usize {
        if wide::<S>() {
            WIDE_TILE.0
        } else {
            NARROW_TILE.0
        }
    }
}

/// Rows of a matrix, `stride` values apart, each at least as long as the
/// product's pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rows<'a> {
    pub values: &'a [f32],
    pub stride: usize,
}

impl<'a> Rows<'a> {
    fn at(&self, row: usize, from: usize, len: usize) -> &'a [f32] {
        &self.values[row * self.stride + from..][..len]
    }
}

/// The output's rows, `stride` values apart.
#[derive(Debug)]
pub(super) struct RowsMut<'a> {
    pub values: &'a mut [f32],
    pub stride: usize,
}

/// What becomes of `W · x + b` as it is written.
#[derive(Debug, Clone, Copy)]
pub(super) enum Then<'a> {
    /// Stored as it is.
    Store,
    /// `max(W · x + b + residual, 0)`, `residual` laid out as the output.
    AddResidualRelu(Rows<'a>),
}

/// `out[o][p] = then(Σᵢ W[o][i]·x[i][p] + bias[o])` for the first `pixels`
/// pixels of every row: [`Product::run`] computes it.
#[derive(Debug)]
pub(super) struct Product<'a> {
    pub weights: &'a PackedWeights<'a>,
    pub bias: &'a [f32],
    pub x: Rows<'a>,
    pub pixels: usize,
    pub out: RowsMut<'a>,
    pub then: Then<'a>,
}

impl Product<'_> {
    /// At this process's SIMD level ([`super::simd::level`]).
    pub fn run(self) {
        super::simd::dispatch(self);
    }
}

impl WithSimd for Product<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let packed = &self.weights.blocks;
        if wide::<S>() {
            self.tiles::<S, { WIDE_TILE.0 }, { WIDE_TILE.1 }>(simd, packed);
        } else {
            self.tiles::<S, { NARROW_TILE.0 }, { NARROW_TILE.1 }>(simd, packed);
        }
    }
}

impl Product<'_> {
    /// Whole `OUT`-channel blocks by whole `VECTORS`-vector tiles, then the
    /// pixels past the last tile, then the channels past the last block.
    #[inline(always)]
    fn tiles<S: Simd, const OUT: usize, const VECTORS: usize>(self, simd: S, packed: &[f32]) {
        let Self {
            weights,
            bias,
            x,
            pixels,
            out:
                RowsMut {
                    values: out,
                    stride: out_stride,
                },
            then,
        } = self;
        assert_eq!(bias.len(), weights.outputs, "one bias per output channel");
        assert_eq!(
            weights.block, OUT,
            "the weights are packed for this SIMD level"
        );
        let inputs = weights.inputs;
        let lanes = S::F32_LANES;
        let tile_pixels = VECTORS * lanes;
        let whole_pixels = pixels / tile_pixels * tile_pixels;
        let zero = simd.splat_f32s(0.0);
        let blocked = packed.len() / inputs;
        for (block, block_weights) in packed.chunks_exact(OUT * inputs).enumerate() {
            for from in (0..whole_pixels).step_by(tile_pixels) {
                let sums = tile::<S, OUT, VECTORS>(simd, block_weights, x, from);
                for (o, sums) in sums.iter().enumerate() {
                    let channel = block * OUT + o;
                    let b = simd.splat_f32s(bias[channel]);
                    let dst = &mut out[channel * out_stride + from..][..tile_pixels];
                    let (dst, _) = S::as_mut_simd_f32s(dst);
                    for (v, (dst, &sum)) in dst.iter_mut().zip(sums).enumerate() {
                        let value = simd.add_f32s(sum, b);
                        *dst = match then {
                            Then::Store => value,
                            Then::AddResidualRelu(residual) => {
                                let at = residual.at(channel, from + v * lanes, lanes);
                                let (r, _) = S::as_simd_f32s(at);
                                simd.max_f32s(simd.add_f32s(value, r[0]), zero)
                            }
                        };
                    }
                }
            }
        }
        // What no tile covered, one value at a time, summed in the same order.
        for (channel, row) in weights.rows.chunks_exact(inputs).enumerate() {
            let first = if channel < blocked { whole_pixels } else { 0 };
            for p in first..pixels {
                let mut sum = 0f32;
                for (i, &weight) in row.iter().enumerate() {
                    sum = weight.mul_add(x.values[i * x.stride + p], sum);
                }
                let value = sum + bias[channel];
                out[channel * out_stride + p] = match then {
                    Then::Store => value,
                    Then::AddResidualRelu(residual) => {
                        (value + residual.at(channel, p, 1)[0]).max(0.0)
                    }
                };
            }
        }
    }
}

/// Whether `S` has a fused multiply-add instruction. pulp's SSE level
/// (`x86::V2`, the only x86 level with four lanes) has none and computes a
/// fused one lane by lane in software, which made the SSE product several
/// times slower than the scalar one (BENCHMARKS.md); there a tile
/// multiplies, then adds.
#[inline(always)]
pub(super) fn fused<S: Simd>() -> bool {
    !(cfg!(target_arch = "x86_64") && S::F32_LANES == 4)
}

/// The sums of one tile: `OUT` output channels of `VECTORS` vectors of
/// pixels from `from`, over every input row. `weights` is the block's
/// packed weights, `OUT` a row.
#[inline(always)]
fn tile<S: Simd, const OUT: usize, const VECTORS: usize>(
    simd: S,
    weights: &[f32],
    x: Rows,
    from: usize,
) -> [[S::f32s; VECTORS]; OUT] {
    let zero = simd.splat_f32s(0.0);
    let mut sums = [[zero; VECTORS]; OUT];
    for (i, block) in weights.chunks_exact(OUT).enumerate() {
        let (row, _) = S::as_simd_f32s(x.at(i, from, VECTORS * S::F32_LANES));
        let values: [S::f32s; VECTORS] = std::array::from_fn(|v| row[v]);
        for (sums, &weight) in sums.iter_mut().zip(block) {
            let weight = simd.splat_f32s(weight);
            for (sum, &value) in sums.iter_mut().zip(&values) {
                *sum = if fused::<S>() {
                    simd.mul_add_e_f32s(weight, value, *sum)
                } else {
                    simd.add_f32s(simd.mul_f32s(weight, value), *sum)
                };
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible value in [-1, 1).
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect()
    }

    use crate::kernels::simd::{Level, with_level};

    #[test]
    fn every_simd_level_matches_plain_sums_whatever_the_remainders() {
        // Whole tiles only; pixels and channels past them on both tile
        // shapes; a product deeper than wide (the stem's 75 taps); one value.
        for (outputs, inputs, pixels) in [
            (24, 24, 1024),
            (6, 6, 144),
            (24, 75, 70),
            (13, 7, 65),
            (1, 1, 1),
        ] {
            let stride = pixels + 3;
            let w = values(outputs * inputs, 1);
            let bias = values(outputs, 2);
            let x = values(inputs * stride, 3);
            let residual = values(outputs * stride, 4);
            for with_residual in [false, true] {
                let expected: Vec<f32> = (0..outputs * stride)
                    .map(|at| {
                        let (o, p) = (at / stride, at % stride);
                        if p >= pixels {
                            return f32::NAN;
                        }
                        let sum: f32 = (0..inputs)
                            .map(|i| w[o * inputs + i] * x[i * stride + p])
                            .sum::<f32>()
                            + bias[o];
                        if with_residual {
                            (sum + residual[at]).max(0.0)
                        } else {
                            sum
                        }
                    })
                    .collect();
                let check = |got: &[f32], level: &str| {
                    for (at, (&got, &want)) in got.iter().zip(&expected).enumerate() {
                        if want.is_nan() {
                            assert!(got.is_nan(), "{level}: wrote past the pixels at {at}");
                        } else {
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{level} {outputs}×{inputs}×{pixels}, residual {with_residual}: \
                                 {got} against {want} at {at}"
                            );
                        }
                    }
                };
                let then = if with_residual {
                    Then::AddResidualRelu(Rows {
                        values: &residual,
                        stride,
                    })
                } else {
                    Then::Store
                };
                let x = Rows { values: &x, stride };
                let mut got = vec![f32::NAN; outputs * stride];
                // Runs the product on `weights` as `run` says, then checks it.
                let mut check_run =
                    |weights: &PackedWeights, level: &str, run: &dyn Fn(Product)| {
                        got.fill(f32::NAN);
                        run(Product {
                            weights,
                            bias: &bias,
                            x,
                            pixels,
                            out: RowsMut {
                                values: &mut got,
                                stride,
                            },
                            then,
                        });
                        check(&got, level);
                    };
                // Every level this CPU runs, each with weights packed for it.
                for level in Level::available() {
                    with_level(level, || {
                        let packed = PackedWeights::new(&w, outputs, inputs);
                        check_run(&packed, level.name(), &|product| product.run());
                    });
                }
            }
        }
    }
}
