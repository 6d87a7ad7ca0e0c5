//! The classifiers' dense convolutions over many channels and few pixels:
//! the age net's 3×3 layers, 64 to 256 channels over 14 × 14 down to 3 × 3
//! pixels (dlib's ResNet behind it).
//!
//! Channels first, one vector of pixels to a multiply (`product`), these
//! images fit no tile: 14 × 14, 7 × 7 or 3 × 3 pixels are not a whole
//! number of vectors, and tract's product, made for wide matrices, spends
//! its time on edges and packing. So this op works channels last: the
//! call's images are copied once into zero-padded `[H, W, C]` images, and
//! a tile holds a few output pixels (of any image of the batch) by a few
//! vectors of output channels; for each tap and input channel it loads one
//! vector of weights per channel vector and multiplies it by each pixel's
//! input value, broadcast. The tiles of a block of output channels run
//! over every pixel of the batch, so its weights are read once a call, not
//! once a face. The weights are constants, packed when the plan is made:
//! block by block of output channels, tap by tap and input channel by
//! input channel, the block's weights side by side (zeros past the last
//! channel), so a tile reads them in order. The outputs are written
//! channels last and turned back to `[O, H, W]`. `lambdex bench models --layers` prints the layers
//! against tract's; BENCHMARKS.md keeps the figures.

use std::sync::Arc;

use pulp::{Simd, WithSimd};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::product::fused;
use super::{Geometry, geometry, inputs_fit};
use crate::onnx::f32_values;

/// The fewest input channels taken on: the colour planes of a first layer
/// are `stem_conv`'s or tract's business.
const MIN_CHANNELS: usize = 8;

/// The widest kernel taken on: the classifiers' 3×3.
const MAX_KERNEL: usize = 3;

/// The most output pixels taken on, the age net's 14 × 14: on larger
/// images copying the image channels last and back costs more than the
/// tiles save, and tract's product, channels first, fits them well (the
/// gender net's 16 × 16 layers ran slower this way than tract's; `bench
/// models --layers`, BENCHMARKS.md).
const MAX_PIXELS: usize = 196;

/// A tile's output pixels and vectors of output channels, by SIMD width:
/// with AVX-512's 32 registers, 6 pixels by 4 vectors (64 channels) when
/// the channels are a multiple of 64, else 12 by 2 (32 channels); with 16
/// registers (AVX2) or fewer lanes, 6 by 2. Each leaves registers for the
/// weights and one broadcast value.
const WIDE_TILE: (usize, usize) = (6, 4);
const WIDE_HALF_TILE: (usize, usize) = (12, 2);
const NARROW_TILE: (usize, usize) = (6, 2);

/// A `k`×`k` convolution of `[N, C, H, W]` (C ≥ 8, k ≤ 3, at most 196
/// output pixels) by constant weights `[O, C, k, k]` and bias, the same
/// stride both ways, groups of one and explicit zero padding. Its one
/// input is the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeepConv {
    pub kernel: usize,
    pub geometry: Geometry,
    packed: Arc<Packed>,
}

/// The weights and bias, laid out for the tiles of the SIMD level the
/// plan was made at.
#[derive(Debug)]
struct Packed {
    /// Block after block of `block` output channels: tap after tap, input
    /// channel after input channel, the block's weights side by side.
    weights: Vec<f32>,
    /// One per output channel, zeros past the last up to whole blocks.
    bias: Vec<f32>,
    /// Output channels a block, a tile's: vectors × lanes.
    block: usize,
    /// The tile's output pixels.
    pixels: usize,
    channels: usize,
    outputs: usize,
}

/// Packed weights are equal when they are bit for bit the same, so that a
/// plan's ops compare as tract needs (`Eq`) whatever the values.
impl PartialEq for Packed {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        (self.block, self.pixels, self.channels, self.outputs)
            == (other.block, other.pixels, other.channels, other.outputs)
            && same(&self.weights, &other.weights)
            && same(&self.bias, &other.bias)
    }
}

impl Eq for Packed {}

impl Packed {
    /// `weights` (`[O, C, k, k]`) and `bias` (one, or one per output
    /// channel) for the tiles of this process's SIMD level.
    fn new(weights: &[f32], bias: &[f32], outputs: usize, channels: usize, k: usize) -> Self {
        let (pixels, block) = super::simd::dispatch(TileShape { outputs });
        let blocks = outputs.div_ceil(block);
        let taps = k * k;
        let mut packed = vec![0f32; blocks * taps * channels * block];
        for o in 0..outputs {
            let (b, lane) = (o / block, o % block);
            for c in 0..channels {
                for tap in 0..taps {
                    let at = ((b * taps + tap) * channels + c) * block + lane;
                    packed[at] = weights[(o * channels + c) * taps + tap];
                }
            }
        }
        let mut padded_bias = vec![0f32; blocks * block];
        for (o, value) in padded_bias.iter_mut().take(outputs).enumerate() {
            *value = if bias.len() == 1 { bias[0] } else { bias[o] };
        }
        Self {
            weights: packed,
            bias: padded_bias,
            block,
            pixels,
            channels,
            outputs,
        }
    }
}

/// The tile for `outputs` channels at the SIMD level: its pixels and its
/// output channels.
struct TileShape {
    outputs: usize,
}

impl WithSimd for TileShape {
    type Output = (usize, usize);

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> (usize, usize) {
        let (pixels, vectors) = tile_shape::<S>(self.outputs);
        (pixels, vectors * S::F32_LANES)
    }
}

fn tile_shape<S: Simd>(outputs: usize) -> (usize, usize) {
    if S::F32_LANES < 16 {
        NARROW_TILE
    } else if outputs.is_multiple_of(WIDE_TILE.1 * S::F32_LANES) {
        WIDE_TILE
    } else {
        WIDE_HALF_TILE
    }
}

/// The [`DeepConv`] that computes `conv`, if it is one.
pub(super) fn matched(
    conv: &Conv,
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<DeepConv>> {
    let spec = &conv.pool_spec;
    let kernel = match spec.kernel_shape[..] {
        [k, l] if k == l && k <= MAX_KERNEL => k,
        _ => return Ok(None),
    };
    let Some(geometry) = geometry(conv, node) else {
        return Ok(None);
    };
    let (channels, outputs) = (spec.input_channels, spec.output_channels);
    let weights = outputs * channels * kernel * kernel;
    if conv.group != 1
        || channels < MIN_CHANNELS
        || !inputs_fit(model, node, channels, weights, outputs)?
    {
        return Ok(None);
    }
    // The input is `[N, C, H, W]` (`inputs_fit`); its image must be known
    // and small.
    let input = model.outlet_fact(node.inputs[0])?;
    let small = match (input.shape[2].to_usize(), input.shape[3].to_usize()) {
        (Ok(h), Ok(w)) => {
            let (oh, ow) = geometry.output_hw(kernel, h, w);
            oh * ow <= MAX_PIXELS
        }
        _ => false,
    };
    if !small {
        return Ok(None);
    }
    let konst = |slot: usize| -> TractResult<Arc<Tensor>> {
        let fact = model.outlet_fact(node.inputs[slot])?;
        fact.konst.clone().context("a constant")
    };
    let (weights, bias) = (konst(1)?, konst(2)?);
    let packed = Packed::new(
        f32_values(&weights)?,
        f32_values(&bias)?,
        outputs,
        channels,
        kernel,
    );
    Ok(Some(DeepConv {
        kernel,
        geometry,
        packed: Arc::new(packed),
    }))
}

impl Op for DeepConv {
    fn name(&self) -> StaticName {
        format!(
            "lambdex.DeepConv{0}x{0}S{1}",
            self.kernel, self.geometry.stride
        )
        .into()
    }

    op_as_typed_op!();
}

impl EvalOp for DeepConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let &[n, c, h, w] = input.shape() else {
            bail!("DeepConv expects a rank-4 input, got {:?}", input.shape());
        };
        let packed = &*self.packed;
        ensure!(
            c == packed.channels,
            "DeepConv weights take {} input channels, not {c}",
            packed.channels
        );
        let k = self.kernel;
        let (oh, ow) = self.geometry.output_hw(k, h, w);
        let mut output = Tensor::zero::<f32>(&[n, packed.outputs, oh, ow])?;
        if output.len() == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        let source = f32_values(&input)?;
        let mut plain = output.try_as_plain_ram_mut()?;
        let target = plain.as_slice_mut::<f32>()?;
        let [top, left] = self.geometry.pad_before;
        // The padded images the outputs read: what the taps reach, no more.
        // Every image of the batch is in one buffer and the tiles run over
        // all their pixels, so that each block of weights is read once a
        // call, not once a face.
        let stride = self.geometry.stride;
        let (hp, wp) = ((oh - 1) * stride + k, (ow - 1) * stride + k);
        let mut images = Images {
            values: vec![0f32; n * hp * wp * c],
            rows: hp,
            width: wp,
            channels: c,
        };
        let image_len = hp * wp * c;
        for (planes, image) in source
            .chunks_exact(c * h * w)
            .zip(images.values.chunks_exact_mut(image_len))
        {
            fill(image, planes, (h, w), (top, left), (hp, wp));
        }
        let padded_outputs = packed.bias.len();
        let plane = oh * ow;
        let mut by_pixel = vec![0f32; n * plane * padded_outputs];
        let convolved = super::simd::dispatch(Convolve {
            packed,
            images: &images,
            kernel: k,
            stride,
            output: (oh, ow),
            out: &mut by_pixel,
        });
        ensure!(
            convolved,
            "DeepConv weights were packed for another SIMD level"
        );
        // Channels last to channels first.
        for (pixels, out) in by_pixel
            .chunks_exact(plane * padded_outputs)
            .zip(target.chunks_exact_mut(packed.outputs * plane))
        {
            for (p, pixel) in pixels.chunks_exact(padded_outputs).enumerate() {
                for (o, &value) in pixel[..packed.outputs].iter().enumerate() {
                    out[o * plane + p] = value;
                }
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

/// The batch's images, each zero-padded and channels last: `[N, rows,
/// width, channels]`.
struct Images {
    values: Vec<f32>,
    rows: usize,
    width: usize,
    channels: usize,
}

/// Copies `planes` (`[C, h, w]`) into `image` (`[rows, width, C]`, zeros)
/// with `top` rows and `left` columns of zeros before; what the padded
/// image has no room for is cut.
fn fill(
    image: &mut [f32],
    planes: &[f32],
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    (rows, width): (usize, usize),
) {
    let c = planes.len() / (h * w);
    for (channel, plane) in planes.chunks_exact(h * w).enumerate() {
        for (y, row) in plane.chunks_exact(w).enumerate() {
            let py = y + top;
            if py >= rows {
                break;
            }
            for (x, &value) in row.iter().enumerate() {
                let px = x + left;
                if px >= width {
                    break;
                }
                image[(py * width + px) * c + channel] = value;
            }
        }
    }
}

/// Every output of the batch, channels last (`[N·oh·ow, blocks·block]`),
/// tile by tile. `false` if the weights were packed for another level.
struct Convolve<'a> {
    packed: &'a Packed,
    images: &'a Images,
    kernel: usize,
    stride: usize,
    /// Each image's output rows and columns.
    output: (usize, usize),
    out: &'a mut [f32],
}

impl WithSimd for Convolve<'_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> bool {
        let (pixels, vectors) = tile_shape::<S>(self.packed.outputs);
        if (pixels, vectors * S::F32_LANES) != (self.packed.pixels, self.packed.block) {
            return false;
        }
        match (pixels, vectors) {
            WIDE_TILE => self.tiles::<S, { WIDE_TILE.0 }, { WIDE_TILE.1 }>(simd),
            WIDE_HALF_TILE => self.tiles::<S, { WIDE_HALF_TILE.0 }, { WIDE_HALF_TILE.1 }>(simd),
            _ => self.tiles::<S, { NARROW_TILE.0 }, { NARROW_TILE.1 }>(simd),
        }
        true
    }
}

impl Convolve<'_> {
    /// Block of output channels by block, each over every tile of `P`
    /// output pixels of the batch (the last tile repeats its last pixel
    /// to fill up).
    #[inline(always)]
    fn tiles<S: Simd, const P: usize, const V: usize>(self, simd: S) {
        let Self {
            packed,
            images,
            kernel,
            stride,
            output: (oh, ow),
            out,
        } = self;
        let (block, c) = (packed.block, packed.channels);
        let padded_outputs = packed.bias.len();
        let total = out.len() / padded_outputs;
        let image_len = images.rows * images.width * c;
        let block_weights = kernel * kernel * c * block;
        for (b, weights) in packed.weights.chunks_exact(block_weights).enumerate() {
            let bias = &packed.bias[b * block..][..block];
            for first in (0..total).step_by(P) {
                // Where each pixel's top-left tap is in the padded images.
                let starts: [usize; P] = std::array::from_fn(|p| {
                    let pixel = (first + p).min(total - 1);
                    let (image, at) = (pixel / (oh * ow), pixel % (oh * ow));
                    let (oy, ox) = (at / ow, at % ow);
                    image * image_len + (oy * stride * images.width + ox * stride) * c
                });
                let sums = tile::<S, P, V>(simd, weights, bias, images, kernel, starts);
                for (p, sums) in sums.iter().enumerate().take(total - first) {
                    let dst = &mut out[(first + p) * padded_outputs + b * block..][..block];
                    let (dst, _) = S::as_mut_simd_f32s(dst);
                    dst.copy_from_slice(sums);
                }
            }
        }
    }
}

/// The sums of one tile: `P` pixels (their top-left taps at `starts`) by
/// `V` vectors of output channels, over every tap and input channel.
#[inline(always)]
fn tile<S: Simd, const P: usize, const V: usize>(
    simd: S,
    weights: &[f32],
    bias: &[f32],
    images: &Images,
    kernel: usize,
    starts: [usize; P],
) -> [[S::f32s; V]; P] {
    let c = images.channels;
    let block = V * S::F32_LANES;
    let (bias, _) = S::as_simd_f32s(bias);
    let mut sums: [[S::f32s; V]; P] = [std::array::from_fn(|v| bias[v]); P];
    for ky in 0..kernel {
        for kx in 0..kernel {
            let tap = ky * kernel + kx;
            let offset = (ky * images.width + kx) * c;
            let rows: [&[f32]; P] =
                std::array::from_fn(|p| &images.values[starts[p] + offset..][..c]);
            let tap_weights = &weights[tap * c * block..][..c * block];
            for (i, channel) in tap_weights.chunks_exact(block).enumerate() {
                let (w, _) = S::as_simd_f32s(channel);
                let w: [S::f32s; V] = std::array::from_fn(|v| w[v]);
                for (sums, row) in sums.iter_mut().zip(&rows) {
                    let x = simd.splat_f32s(row[i]);
                    for (sum, &w) in sums.iter_mut().zip(&w) {
                        *sum = if fused::<S>() {
                            simd.mul_add_e_f32s(w, x, *sum)
                        } else {
                            simd.add_f32s(simd.mul_f32s(w, x), *sum)
                        };
                    }
                }
            }
        }
    }
    sums
}

impl TypedOp for DeepConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let (oh, ow) =
            self.geometry
                .output_hw(self.kernel, shape[2].to_usize()?, shape[3].to_usize()?);
        let dims: [TDim; 4] = [
            shape[0].clone(),
            self.packed.outputs.into(),
            oh.into(),
            ow.into(),
        ];
        Ok(tvec!(f32::fact(dims)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::cnn::PaddingSpec;

    use crate::kernels::Choice;
    use crate::kernels::simd::{Level, with_level};
    use crate::kernels::testing::{
        dense_conv_model, swapped_and_compared, swapped_and_compared_within, tensor,
    };

    fn explicit(before: usize, after: usize) -> PaddingSpec {
        PaddingSpec::Explicit(tvec![before, before], tvec![after, after])
    }

    #[test]
    fn a_deep_convolution_matches_tract_at_every_level() {
        // The age net's layers (64 to 256 channels over 14 × 14 to 3 × 3
        // pixels, stride 1 and 2), 32 channels into 64, channel counts no
        // block divides, uneven padding, two images, a 1 × 1.
        for (shape, outputs, k, stride, padding) in [
            ([1, 64, 14, 14], 64, 3, 1, explicit(1, 1)),
            ([1, 64, 14, 14], 128, 3, 2, PaddingSpec::Valid),
            ([2, 128, 7, 7], 128, 3, 1, explicit(1, 1)),
            ([1, 128, 7, 7], 256, 3, 2, PaddingSpec::Valid),
            ([1, 256, 3, 3], 256, 3, 1, explicit(1, 1)),
            ([1, 32, 12, 12], 64, 3, 1, explicit(1, 1)),
            ([1, 9, 5, 7], 13, 3, 1, explicit(1, 1)),
            (
                [1, 8, 6, 9],
                7,
                3,
                2,
                PaddingSpec::Explicit(tvec![0, 1], tvec![2, 0]),
            ),
            ([1, 8, 6, 6], 7, 1, 1, PaddingSpec::Valid),
        ] {
            for level in Level::available() {
                let swapped = with_level(level, || {
                    let model = dense_conv_model(shape, outputs, k, stride, padding.clone());
                    // Up to 2,304 products a sum, in another order than
                    // tract's.
                    swapped_and_compared_within(model, &[tensor(&shape, 11)], Choice::OURS, 1e-4)
                });
                assert_eq!(swapped, 1, "{shape:?} → {outputs}, {k}×{k}, at {level:?}");
            }
        }
    }

    #[test]
    fn colour_planes_wide_kernels_and_large_images_are_left_to_tract_or_the_stem() {
        for (shape, k, stride) in [
            // The gender net's 16 × 16 and 32 × 32 layers.
            ([1, 32, 18, 18], 3, 1),
            ([1, 32, 34, 34], 3, 1),
            // The age net's stem.
            ([1, 3, 20, 20], 7, 2),
            // The gender net's stem.
            ([1, 3, 10, 7], 3, 1),
            ([1, 6, 10, 10], 3, 1),
            ([1, 8, 10, 10], 5, 1),
        ] {
            let model = dense_conv_model(shape, 5, k, stride, PaddingSpec::Valid);
            assert_eq!(
                swapped_and_compared(model, &[tensor(&shape, 11)]),
                0,
                "{shape:?} {k}×{k}"
            );
        }
    }
}
