//! A network's stem: a dense convolution of the colour planes with a wide
//! kernel, BlazeFace's first layer (5×5 with stride 2, three channels to
//! 24) and the gender net's (3×3).
//!
//! tract runs it as a matrix product over a lazily gathered im2col input
//! whose depth (3 × 5 × 5 = 75) fits its kernels badly: gathering the
//! panels was the largest symbol of a face-crop profile. Here each input
//! plane is padded and split into its `stride` column phases once, so that
//! a tap of a whole output row is one contiguous slice; a band of rows at a
//! time, those slices are copied into a small im2col matrix, which the
//! weights multiply (`product`, with the bias). `lambdex bench models
//! --layers` prints the layer against tract's; BENCHMARKS.md keeps the
//! figures.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::product::{PackedWeights, Product, Rows, RowsMut, Then};
use super::{Geometry, geometry, inputs_fit};
use crate::onnx::f32_values;

/// The most input channels this op takes on: beyond a few, the gathered
/// matrix product tract makes is deep enough to run well.
const MAX_INPUT_CHANNELS: usize = 4;

/// The widest kernel it takes on: the age net's 7×7 stem ran slower this
/// way than tract's (`bench models --layers`).
const MAX_KERNEL: usize = 5;

/// The narrowest stride it takes on: the gender net's 3×3 stride-1 stem
/// ran a little slower this way than tract's at every level measured on
/// an AVX2 host (`bench models --layers`, BENCHMARKS.md), where
/// BlazeFace's stride-2 stems run several times faster.
const MIN_STRIDE: usize = 2;

/// A `k`×`k` convolution of `[N, C, H, W]` with `C` ≤ 4, `k` ≤ 5 and a
/// stride of at least 2 the same both ways, groups of one and explicit
/// zero padding.
/// Inputs: data, weights `[O, C, k, k]`, bias (one value, or one per output
/// channel).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StemConv {
    pub kernel: usize,
    pub geometry: Geometry,
}

/// The [`StemConv`] that computes `conv`, if it is one.
pub(super) fn matched(
    conv: &Conv,
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<StemConv>> {
    let spec = &conv.pool_spec;
    let kernel = match spec.kernel_shape[..] {
        [k, l] if k == l => k,
        _ => return Ok(None),
    };
    let Some(geometry) = geometry(conv, node) else {
        return Ok(None);
    };
    let (channels, outputs) = (spec.input_channels, spec.output_channels);
    let shape_fits = conv.group == 1
        && channels <= MAX_INPUT_CHANNELS
        && kernel <= MAX_KERNEL
        && geometry.stride >= MIN_STRIDE;
    let weights = outputs * channels * kernel * kernel;
    if !shape_fits || !inputs_fit(model, node, channels, weights, outputs)? {
        return Ok(None);
    }
    Ok(Some(StemConv { kernel, geometry }))
}

impl Op for StemConv {
    fn name(&self) -> StaticName {
        format!(
            "lambdex.StemConv{0}x{0}S{1}",
            self.kernel, self.geometry.stride
        )
        .into()
    }

    op_as_typed_op!();
}

impl EvalOp for StemConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, weights, bias) = args_3!(inputs);
        let &[n, c, h, w] = input.shape() else {
            bail!("StemConv expects a rank-4 input, got {:?}", input.shape());
        };
        let (k, stride) = (self.kernel, self.geometry.stride);
        let weights = f32_values(&weights)?;
        let o = weights.len() / (c * k * k).max(1);
        let bias = match f32_values(&bias)? {
            [one] => vec![*one; o],
            each => each.to_vec(),
        };
        ensure!(
            weights.len() == o * c * k * k && bias.len() == o,
            "StemConv weights do not fit {c} input channels"
        );
        let (oh, ow) = self.geometry.output_hw(k, h, w);
        let mut output = Tensor::zero::<f32>(&[n, o, oh, ow])?;
        if output.len() == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        ensure!(
            input.len() > 0,
            "StemConv of an empty {:?} input",
            input.shape()
        );
        let source = f32_values(&input)?;
        let mut plain = output.try_as_plain_ram_mut()?;
        let target = plain.as_slice_mut::<f32>()?;
        let [top, left] = self.geometry.pad_before;
        // The padded rows the outputs read, each as `stride` phases: phase p
        // of a row holds its padded columns p, p + stride… so that tap kx
        // of output column x is phase kx % stride at x + kx / stride.
        let rows = (oh - 1) * stride + k;
        let cols = ow + (k - 1) / stride;
        let mut planes = vec![0f32; c * stride * rows * cols];
        let mut columns = Vec::new();
        let weights = PackedWeights::new(weights, o, c * k * k);
        for (image, out_image) in source
            .chunks_exact(c * h * w)
            .zip(target.chunks_exact_mut(o * oh * ow))
        {
            let mut phases = Phases {
                planes: &mut planes,
                channels: c,
                kernel: k,
                rows,
                cols,
                stride,
            };
            phases.fill(image, h, w, top, left);
            conv_image(&phases, &weights, &bias, out_image, ow, &mut columns);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

/// Every input channel's padded rows, split into column phases: channel
/// after channel, phase after phase, `rows` rows of `cols` values.
struct Phases<'a> {
    planes: &'a mut [f32],
    channels: usize,
    kernel: usize,
    rows: usize,
    cols: usize,
    stride: usize,
}

impl Phases<'_> {
    /// Copies `image` (`[C, h, w]`) in, zeros where the padding is.
    fn fill(&mut self, image: &[f32], h: usize, w: usize, top: usize, left: usize) {
        self.planes.fill(0.0);
        let phase_len = self.rows * self.cols;
        for (plane, phases) in image
            .chunks_exact(h * w)
            .zip(self.planes.chunks_exact_mut(self.stride * phase_len))
        {
            for r in 0..self.rows {
                let Some(row) = r
                    .checked_sub(top)
                    .filter(|&y| y < h)
                    .map(|y| &plane[y * w..][..w])
                else {
                    continue;
                };
                for (x, &value) in row.iter().enumerate() {
                    let padded = x + left;
                    let (phase, col) = (padded % self.stride, padded / self.stride);
                    if col < self.cols {
                        phases[phase * phase_len + r * self.cols + col] = value;
                    }
                }
            }
        }
    }

    /// What tap `kx` of input channel `channel` reads in padded row `r`,
    /// for `len` output columns.
    fn tap(&self, channel: usize, r: usize, kx: usize, len: usize) -> &[f32] {
        let phase = channel * self.stride + kx % self.stride;
        &self.planes[(phase * self.rows + r) * self.cols + kx / self.stride..][..len]
    }
}

/// Every output channel of one image (`[O, oh, ow]`), a band of rows at a
/// time: the band's taps are copied, slice by slice, into the rows of a
/// small matrix (input channel × tap by band pixel, an im2col that stays
/// in L2), then multiplied by the weights (`[O, C·k·k]`) with the bias.
fn conv_image(
    phases: &Phases,
    weights: &PackedWeights,
    bias: &[f32],
    out: &mut [f32],
    ow: usize,
    columns: &mut Vec<f32>,
) {
    let (channels, k) = (phases.channels, phases.kernel);
    let taps = channels * k * k;
    let outputs = bias.len();
    let plane = out.len() / outputs;
    let oh = plane / ow;
    let band = (BAND_PIXELS / ow).clamp(1, oh);
    // One row of the matrix per tap, `row_stride` values apart.
    let row_stride = super::unaliased_stride(band * ow);
    columns.resize(taps * row_stride, 0.0);
    for top in (0..oh).step_by(band) {
        let rows = band.min(oh - top);
        let pixels = rows * ow;
        for channel in 0..channels {
            for ky in 0..k {
                for kx in 0..k {
                    let row = &mut columns[((channel * k + ky) * k + kx) * row_stride..][..pixels];
                    for (oy, chunk) in row.chunks_exact_mut(ow).enumerate() {
                        let r = (top + oy) * phases.stride + ky;
                        chunk.copy_from_slice(phases.tap(channel, r, kx, ow));
                    }
                }
            }
        }
        Product {
            weights,
            bias,
            x: Rows {
                values: &columns[..taps * row_stride],
                stride: row_stride,
            },
            pixels,
            out: RowsMut {
                values: &mut out[top * ow..],
                stride: plane,
            },
            then: Then::Store,
        }
        .run();
    }
}

/// About how many output pixels one band holds: BlazeFace-256's 75 taps
/// of a 1,024-pixel band make a 300 KB matrix, which stays in L2.
const BAND_PIXELS: usize = 1024;

impl TypedOp for StemConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let outputs = inputs[1].shape[0].to_usize()?;
        let (oh, ow) =
            self.geometry
                .output_hw(self.kernel, shape[2].to_usize()?, shape[3].to_usize()?);
        Ok(tvec!(f32::fact([shape[0].to_usize()?, outputs, oh, ow])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::cnn::PaddingSpec;

    use crate::kernels::testing::{dense_conv_model, swapped_and_compared, tensor};

    #[test]
    fn a_stem_convolution_runs_as_a_banded_product_and_matches_tract() {
        // BlazeFace's (5×5, stride 2, a pixel of padding before and two
        // after), a 3×3, odd sizes, several images, rows longer than one
        // band.
        let explicit = |before: usize, after: usize| {
            PaddingSpec::Explicit(tvec![before, before], tvec![after, after])
        };
        for (shape, k, stride, padding) in [
            ([1, 3, 16, 16], 5, 2, explicit(1, 2)),
            ([2, 3, 9, 11], 5, 2, explicit(1, 2)),
            ([1, 3, 10, 7], 3, 2, explicit(1, 1)),
            ([1, 1, 6, 9], 3, 2, PaddingSpec::Valid),
            ([1, 3, 40, 1200], 5, 2, explicit(1, 2)),
        ] {
            let model = dense_conv_model(shape, 5, k, stride, padding.clone());
            let swapped = swapped_and_compared(model, &[tensor(&shape, 11)]);
            assert_eq!(swapped, 1, "{shape:?} {k}×{k} stride {stride} {padding:?}");
        }
    }

    #[test]
    fn a_convolution_over_many_channels_a_wide_kernel_or_stride_1_is_left_to_tract() {
        for (shape, k, stride) in [
            ([1, 6, 10, 10], 3, 2),
            ([1, 3, 20, 20], 7, 2),
            // The gender net's stem.
            ([1, 3, 10, 7], 3, 1),
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
