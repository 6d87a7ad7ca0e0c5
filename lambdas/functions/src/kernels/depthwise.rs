//! 3×3 depthwise convolutions, stride 1 or 2: each input row is copied
//! once into a zero-padded row (for stride 2, split into its even and odd
//! columns), after which each tap of a whole output row is one contiguous
//! slice.

use pulp::{Simd, WithSimd};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{Geometry, geometry, inputs_fit};
use crate::onnx::f32_values;

/// The [`Depthwise3x3`] that computes `conv`, if it is one: 3×3, stride 1 or
/// 2 both ways, explicit padding of at most a pixel a side, constant weights
/// and bias.
pub(super) fn matched(
    conv: &Conv,
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<Depthwise3x3>> {
    let spec = &conv.pool_spec;
    let channels = spec.input_channels;
    let Some(geometry) = geometry(conv, node) else {
        return Ok(None);
    };
    let shape_fits = geometry.stride <= 2
        && conv.group == channels
        && spec.output_channels == channels
        && spec.kernel_shape[..] == [3, 3]
        && geometry
            .pad_before
            .iter()
            .chain(&geometry.pad_after)
            .all(|&p| p <= 1);
    if !shape_fits || !inputs_fit(model, node, channels, channels * 9, channels)? {
        return Ok(None);
    }
    Ok(Some(Depthwise3x3 { geometry }))
}

/// Depthwise 3×3 convolution over `[N, C, H, W]` with stride 1 or 2 and
/// explicit zero padding of at most one pixel a side. Inputs: data, weights
/// `[C, 1, 3, 3]`, bias (one value, or one per channel).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Depthwise3x3 {
    /// The stride is 1 or 2.
    pub geometry: Geometry,
}

impl Op for Depthwise3x3 {
    fn name(&self) -> StaticName {
        format!("lambdex.Depthwise3x3S{}", self.geometry.stride).into()
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, kernel, bias) = args_3!(inputs);
        let &[n, c, h, w] = input.shape() else {
            bail!(
                "Depthwise3x3 expects a rank-4 input, got {:?}",
                input.shape()
            );
        };
        ensure!(
            self.geometry.stride == 1 || self.geometry.stride == 2,
            "stride {}",
            self.geometry.stride
        );
        let (oh, ow) = self.geometry.output_hw(3, h, w);
        let kernel = f32_values(&kernel)?;
        let bias = f32_values(&bias)?;
        ensure!(kernel.len() == c * 9 && (bias.len() == 1 || bias.len() == c));
        let mut output = Tensor::zero::<f32>(&[n, c, oh, ow])?;
        if output.len() == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        let source = f32_values(&input)?;
        let mut plain = output.try_as_plain_ram_mut()?;
        let target = plain.as_slice_mut::<f32>()?;
        let [top, left] = self.geometry.pad_before;
        let stride = self.geometry.stride;
        // Each padded row the outputs read, as `stride` phases: phase p holds
        // the padded columns p, p + stride, p + 2·stride… Tap kx of output
        // column x then reads phase kx % stride at x + kx / stride.
        let (rows, cols) = ((oh - 1) * stride + 3, ow + 2 / stride);
        let mut phases = vec![vec![0f32; rows * cols]; stride];
        let planes = source
            .chunks_exact(h * w)
            .zip(target.chunks_exact_mut(oh * ow));
        for (p, (plane, out_plane)) in planes.enumerate() {
            for r in 0..rows {
                let row = r
                    .checked_sub(top)
                    .filter(|&y| y < h)
                    .map(|y| &plane[y * w..][..w]);
                let at = r * cols..(r + 1) * cols;
                match &mut phases[..] {
                    [padded] => pad_row(row, left, &mut padded[at]),
                    [even, odd] => split_row(row, left, &mut even[at.clone()], &mut odd[at]),
                    _ => unreachable!("the stride is 1 or 2"),
                }
            }
            let channel = p % c;
            let weights = &kernel[channel * 9..][..9];
            let b = bias[if bias.len() == 1 { 0 } else { channel }];
            let rows = Phases {
                phases: &phases,
                cols,
                stride,
            };
            super::simd::dispatch(DepthwisePlane {
                rows: &rows,
                weights,
                bias: b,
                out_plane,
                ow,
            });
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

/// A channel's padded rows, as [`Depthwise3x3::eval`] lays them out.
struct Phases<'a> {
    phases: &'a [Vec<f32>],
    cols: usize,
    stride: usize,
}

impl Phases<'_> {
    /// What tap `kx` reads in padded row `r` for `len` output columns.
    #[inline]
    fn tap(&self, r: usize, kx: usize, len: usize) -> &[f32] {
        &self.phases[kx % self.stride][r * self.cols + kx / self.stride..][..len]
    }
}

/// One channel's outputs: the bias plus each tap's weight times its slice.
struct DepthwisePlane<'a> {
    rows: &'a Phases<'a>,
    weights: &'a [f32],
    bias: f32,
    out_plane: &'a mut [f32],
    ow: usize,
}

impl WithSimd for DepthwisePlane<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self {
            rows,
            weights,
            bias,
            out_plane,
            ow,
        } = self;
        for (oy, out_row) in out_plane.chunks_exact_mut(ow).enumerate() {
            out_row.fill(bias);
            for (ky, k) in weights.chunks_exact(3).enumerate() {
                let r = oy * rows.stride + ky;
                let (t0, t1, t2) = (rows.tap(r, 0, ow), rows.tap(r, 1, ow), rows.tap(r, 2, ow));
                for (((out, a), b), c) in out_row.iter_mut().zip(t0).zip(t1).zip(t2) {
                    *out += k[0] * a + k[1] * b + k[2] * c;
                }
            }
        }
    }
}

/// Writes `left` zeros (0 or 1), `row`, then zeros, cut to `padded`'s length.
/// A row outside the input is all zeros.
fn pad_row(row: Option<&[f32]>, left: usize, padded: &mut [f32]) {
    padded.fill(0.0);
    if let Some(row) = row {
        let len = row.len().min(padded.len().saturating_sub(left));
        padded[left..][..len].copy_from_slice(&row[..len]);
    }
}

/// Writes the padded row's (see [`pad_row`]) columns 0, 2, 4… to `even` and
/// 1, 3, 5… to `odd`, as far as they reach.
fn split_row(row: Option<&[f32]>, left: usize, even: &mut [f32], odd: &mut [f32]) {
    even.fill(0.0);
    odd.fill(0.0);
    let Some(row) = row else { return };
    // The pair (row[2i], row[2i + 1]) sits at padded columns 2i + left and
    // the one after.
    let (first, second) = if left == 0 {
        (even, odd)
    } else {
        (odd, &mut even[1..])
    };
    let pairs = row.chunks_exact(2);
    if let [last] = pairs.remainder()
        && let Some(slot) = first.get_mut(row.len() / 2)
    {
        *slot = *last;
    }
    for ((f, s), pair) in first.iter_mut().zip(second.iter_mut()).zip(pairs) {
        *f = pair[0];
        *s = pair[1];
    }
}

impl TypedOp for Depthwise3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let (oh, ow) = self
            .geometry
            .output_hw(3, shape[2].to_usize()?, shape[3].to_usize()?);
        Ok(tvec!(f32::fact([
            shape[0].to_usize()?,
            shape[1].to_usize()?,
            oh,
            ow
        ])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::cnn::PaddingSpec;

    use crate::kernels::testing::{depthwise_model, swapped_and_compared, tensor};

    #[test]
    fn depthwise_matches_tract_for_each_stride_padding_and_parity() {
        let explicit = |before: usize, after: usize| {
            PaddingSpec::Explicit(tvec![before, before], tvec![after, after])
        };
        for shape in [[1, 3, 8, 10], [2, 4, 7, 9], [1, 2, 3, 3], [1, 2, 1, 2]] {
            for (stride, padding) in [
                (1, explicit(1, 1)),
                (1, PaddingSpec::Valid),
                (2, explicit(0, 1)),
                (2, explicit(1, 1)),
                (2, PaddingSpec::Explicit(tvec![1, 0], tvec![0, 1])),
                (2, PaddingSpec::Valid),
            ] {
                let bias = tensor(&[shape[1]], 3);
                let model = depthwise_model(shape, stride, padding.clone(), bias);
                let input = tensor(&shape, 11);
                let swapped = swapped_and_compared(model, &[input]);
                assert_eq!(swapped, 1, "{shape:?} stride {stride} {padding:?}");
            }
        }
    }

    #[test]
    fn depthwise_takes_a_single_bias_and_leaves_other_convolutions_to_tract() {
        let one_bias = depthwise_model([1, 3, 6, 6], 2, PaddingSpec::Valid, tensor(&[], 5));
        assert_eq!(
            swapped_and_compared(one_bias, &[tensor(&[1, 3, 6, 6], 1)]),
            1
        );
        let wide_padding = PaddingSpec::Explicit(tvec![2, 2], tvec![2, 2]);
        let too_padded = depthwise_model([1, 3, 6, 6], 1, wide_padding, tensor(&[3], 5));
        assert_eq!(
            swapped_and_compared(too_padded, &[tensor(&[1, 3, 6, 6], 1)]),
            0
        );
    }
}
