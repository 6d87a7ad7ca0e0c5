//! A whole BlazeFace residual block whose channel count does not change, as
//! one op: `relu(x + pointwise(depthwise(x)))`, the depthwise convolution
//! 3×3 with stride 1 and a pixel of zero padding a side, the pointwise one
//! a 1×1 convolution with a bias.
//!
//! Op by op, such a block is four passes over the whole tensor (our
//! depthwise, tract's packing of its output for the matrix product, the
//! product with its bias, our sum and ReLU); on BlazeFace-256's 128×128×24
//! layers each pass reads or writes 1.5 MB. Here the block goes a band of
//! rows at a time: every channel's depthwise rows for the band, read in
//! place from the input rows, into a small buffer, then their 1×1
//! convolution as a register-tiled product (`product`) that adds the bias
//! and the residual and applies the ReLU as each output is written. The
//! input is read once and the output written once. `lambdex bench models
//! --layers` prints the op's share; BENCHMARKS.md what it measured.

use pulp::{Simd, WithSimd};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::depthwise;
use super::product::{PackedWeights, Product, Rows, RowsMut, Then};
use super::{Geometry, is_bin, read_once, summed_then_relu};
use crate::onnx::f32_values;

/// About how many pixels of every channel one band holds: with 24
/// channels, 96 KB of depthwise output, which stays in L2 while the band
/// is finished; the quickest of the sizes from 256 to 4,096 tried.
const BAND_PIXELS: usize = 1024;

/// `relu(x + pointwise(depthwise(x)))`. Inputs: `x` `[N, C, H, W]`, the
/// depthwise weights `[C, 1, 3, 3]` and bias (one value or C), the
/// pointwise weights `[C, C]` (output channel first) and bias (C values).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResidualBlock;

/// The nodes of a residual block ending in a ReLU, if it is one
/// [`ResidualBlock`] computes and nothing else reads what lies inside it.
pub(super) struct Matched<'m> {
    /// The block's input, read by the depthwise convolution and the sum.
    x: OutletId,
    branch: Branch<'m>,
    residual_sum: &'m TypedNode,
}

/// `einsum(depthwise(x), W) + b`, the block's branch.
struct Branch<'m> {
    depthwise: &'m TypedNode,
    pointwise: &'m TypedNode,
    bias: OutletId,
    bias_sum: &'m TypedNode,
}

impl Matched<'_> {
    /// The op's inputs, in order.
    pub fn inputs(&self) -> [OutletId; 5] {
        let branch = &self.branch;
        [
            self.x,
            branch.depthwise.inputs[1],
            branch.depthwise.inputs[2],
            branch.pointwise.inputs[1],
            branch.bias,
        ]
    }

    /// The nodes the op replaces, the ReLU aside.
    pub fn inner(&self) -> [usize; 4] {
        let branch = &self.branch;
        [
            branch.depthwise.id,
            branch.pointwise.id,
            branch.bias_sum.id,
            self.residual_sum.id,
        ]
    }
}

/// Matches `max(x + (einsum(depthwise(x), W) + b), 0)`, where the
/// depthwise convolution is one [`super::Depthwise3x3`] runs with stride 1
/// and a pixel of padding a side, `W` is a constant `[C, C]` applied as
/// `NIHW,OI->NOHW`, and `b` a constant of C values.
pub(super) fn matched<'m>(
    model: &'m TypedModel,
    relu: &TypedNode,
) -> TractResult<Option<Matched<'m>>> {
    let Some(residual_sum) = summed_then_relu(model, relu)? else {
        return Ok(None);
    };
    for (x, branch) in [
        (residual_sum.inputs[0], residual_sum.inputs[1]),
        (residual_sum.inputs[1], residual_sum.inputs[0]),
    ] {
        if let Some(branch) = branch_of(model, x, branch)? {
            let out = model.outlet_fact(relu.id.into())?;
            if model.outlet_fact(x)?.shape != out.shape {
                return Ok(None);
            }
            return Ok(Some(Matched {
                x,
                branch,
                residual_sum,
            }));
        }
    }
    Ok(None)
}

/// `branch`'s nodes if it is `einsum(depthwise(x), W) + b` as [`matched`]
/// describes.
fn branch_of<'m>(
    model: &'m TypedModel,
    x: OutletId,
    branch: OutletId,
) -> TractResult<Option<Branch<'m>>> {
    let bias_sum = model.node(branch.node);
    if !is_bin(bias_sum, "Add") || !read_once(model, branch) {
        return Ok(None);
    }
    let is_const =
        |outlet: OutletId| -> TractResult<bool> { Ok(model.outlet_fact(outlet)?.konst.is_some()) };
    let (product, bias) = match (is_const(bias_sum.inputs[0])?, is_const(bias_sum.inputs[1])?) {
        (false, true) => (bias_sum.inputs[0], bias_sum.inputs[1]),
        (true, false) => (bias_sum.inputs[1], bias_sum.inputs[0]),
        _ => return Ok(None),
    };
    let pointwise = model.node(product.node);
    let Some(einsum) = pointwise.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || einsum.axes.to_string() != "NIHW,OI->NOHW"
        || pointwise.inputs.len() != 2
        || !read_once(model, product)
    {
        return Ok(None);
    }
    let depthwise = model.node(pointwise.inputs[0].node);
    let Some(conv) = depthwise.op_as::<Conv>() else {
        return Ok(None);
    };
    let Some(op) = depthwise::matched(conv, model, depthwise)? else {
        return Ok(None);
    };
    let one_pixel = Geometry {
        stride: 1,
        pad_before: [1, 1],
        pad_after: [1, 1],
    };
    if op.geometry != one_pixel
        || depthwise.inputs[0] != x
        || !read_once(model, pointwise.inputs[0])
    {
        return Ok(None);
    }
    let channels = conv.pool_spec.input_channels;
    let weights = model.outlet_fact(pointwise.inputs[1])?;
    let bias_fact = model.outlet_fact(bias)?;
    let is_f32 = |fact: &TypedFact| fact.datum_type == f32::datum_type();
    let fits = is_f32(weights)
        && weights
            .konst
            .as_ref()
            .is_some_and(|k| k.shape() == [channels, channels])
        && is_f32(bias_fact)
        && bias_fact
            .konst
            .as_ref()
            .is_some_and(|k| k.len() == channels);
    Ok(fits.then_some(Branch {
        depthwise,
        pointwise,
        bias,
        bias_sum,
    }))
}

impl Op for ResidualBlock {
    fn name(&self) -> StaticName {
        "lambdex.ResidualBlock".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ResidualBlock {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, dw_kernel, dw_bias, pw_weights, pw_bias) = args_5!(inputs);
        let &[n, c, h, w] = input.shape() else {
            bail!(
                "ResidualBlock expects a rank-4 input, got {:?}",
                input.shape()
            );
        };
        let dw_kernel = f32_values(&dw_kernel)?;
        let dw_bias = f32_values(&dw_bias)?;
        let pw_weights = f32_values(&pw_weights)?;
        let pw_bias = f32_values(&pw_bias)?;
        ensure!(
            dw_kernel.len() == c * 9
                && (dw_bias.len() == 1 || dw_bias.len() == c)
                && pw_weights.len() == c * c
                && pw_bias.len() == c,
            "ResidualBlock weights do not fit {c} channels"
        );
        let mut output = Tensor::zero::<f32>(&[n, c, h, w])?;
        if output.len() == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        let source = f32_values(&input)?;
        let mut plain = output.try_as_plain_ram_mut()?;
        let target = plain.as_slice_mut::<f32>()?;
        let plane = h * w;
        let band = (BAND_PIXELS / w).clamp(1, h);
        // Each channel's band of depthwise rows, `band_stride` values apart.
        let band_stride = super::unaliased_stride(band * w);
        let mut depthwise = vec![0f32; c * band_stride];
        let pointwise = PackedWeights::new(pw_weights, c, c);
        let images = source
            .chunks_exact(c * plane)
            .zip(target.chunks_exact_mut(c * plane));
        for (image, out_image) in images {
            for top in (0..h).step_by(band) {
                let rows = band.min(h - top);
                for channel in 0..c {
                    let bias = dw_bias[if dw_bias.len() == 1 { 0 } else { channel }];
                    super::simd::dispatch(DepthwiseRows {
                        plane: &image[channel * plane..][..plane],
                        w,
                        top,
                        weights: &dw_kernel[channel * 9..][..9],
                        bias,
                        out: &mut depthwise[channel * band_stride..][..rows * w],
                    });
                }
                let residual = Rows {
                    values: &image[top * w..],
                    stride: plane,
                };
                Product {
                    weights: &pointwise,
                    bias: pw_bias,
                    x: Rows {
                        values: &depthwise,
                        stride: band_stride,
                    },
                    pixels: rows * w,
                    out: RowsMut {
                        values: &mut out_image[top * w..],
                        stride: plane,
                    },
                    then: Then::AddResidualRelu(residual),
                }
                .run();
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for ResidualBlock {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Rows `top..` of one channel's depthwise convolution (3×3, stride 1, a
/// pixel of zero padding a side), as many as `out` holds, each input row
/// read in place: the taps of the inner columns are three shifted slices of
/// it, the first and last columns leave out the padding. Sums in the same
/// order as [`super::depthwise`]'s `depthwise_plane` over padded rows.
/// (Summing all nine taps of a vector in registers and storing it once was
/// slower.)
struct DepthwiseRows<'a> {
    plane: &'a [f32],
    w: usize,
    top: usize,
    weights: &'a [f32],
    bias: f32,
    out: &'a mut [f32],
}

impl WithSimd for DepthwiseRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self {
            plane,
            w,
            top,
            weights,
            bias,
            out,
        } = self;
        depthwise_rows(plane, w, top, weights, bias, out);
    }
}

#[inline(always)]
fn depthwise_rows(
    plane: &[f32],
    w: usize,
    top: usize,
    weights: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    let h = plane.len() / w;
    for (i, out_row) in out.chunks_exact_mut(w).enumerate() {
        out_row.fill(bias);
        for (ky, k) in weights.chunks_exact(3).enumerate() {
            // Input row top + i + ky − 1; a padding row adds nothing.
            let Some(y) = (top + i + ky).checked_sub(1).filter(|&y| y < h) else {
                continue;
            };
            let row = &plane[y * w..][..w];
            if w == 1 {
                out_row[0] += k[1] * row[0];
                continue;
            }
            out_row[0] += k[1] * row[0] + k[2] * row[1];
            let inner = out_row[1..w - 1].iter_mut();
            for (((out, a), b), c) in inner.zip(row).zip(&row[1..]).zip(&row[2..]) {
                *out += k[0] * a + k[1] * b + k[2] * c;
            }
            out_row[w - 1] += k[0] * row[w - 2] + k[1] * row[w - 1];
        }
    }
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::cnn::PaddingSpec;
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::ops::math;

    use crate::kernels::testing::{
        depthwise_model, swapped_and_compared, swapped_and_compared_with, tensor,
    };
    use crate::kernels::{Choice, Kernel};

    /// `max(x + (einsum(depthwise(x), W) + b), 0)`, BlazeFace's residual
    /// block, with the pointwise product also an output if `product_out`.
    fn residual_block_model(shape: [usize; 4], product_out: bool) -> TypedModel {
        let channels = shape[1];
        let mut model = depthwise_model(
            shape,
            1,
            PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
            tensor(&[channels], 3),
        );
        let x = model.input_outlets().expect("an input")[0];
        let depthwise = model.output_outlets().expect("an output")[0];
        let mut konst =
            |name: &str, value: Tensor| model.add_const(name, value).expect("a valid test graph");
        let weights = konst("w", tensor(&[channels, channels], 13));
        let bias = konst("b", tensor(&[1, channels, 1, 1], 17));
        let zero = konst(
            "zero",
            tensor0(0f32)
                .broadcast_into_rank(4)
                .expect("a valid test graph"),
        );
        let mut wire = |name: &str, op: Box<dyn TypedOp>, inputs: &[OutletId]| {
            model
                .wire_node(name, op, inputs)
                .expect("a valid test graph")[0]
        };
        let einsum = EinSum::new(
            "NIHW,OI->NOHW".parse().expect("an axes mapping"),
            f32::datum_type(),
        );
        let product = wire("pointwise", Box::new(einsum), &[depthwise, weights]);
        let biased = wire("bias", Box::new(math::add()), &[product, bias]);
        let sum = wire("residual", Box::new(math::add()), &[x, biased]);
        let relu = wire("relu", Box::new(math::max()), &[sum, zero]);
        let outputs = if product_out {
            vec![relu, product]
        } else {
            vec![relu]
        };
        model
            .select_output_outlets(&outputs)
            .expect("a valid test graph");
        model
    }

    #[test]
    fn a_residual_block_becomes_one_op_that_matches_tract() {
        // One band and several (a 300-pixel row makes bands of three rows,
        // the last one short), several images, more output channels than
        // one block of the product, and channels past its last block.
        for shape in [
            [1, 24, 8, 10],
            [2, 3, 5, 7],
            [1, 4, 8, 300],
            [1, 6, 5, 18],
            [1, 5, 3, 40],
            [1, 1, 1, 1],
        ] {
            let model = residual_block_model(shape, false);
            let swapped = swapped_and_compared(model, &[tensor(&shape, 21)]);
            assert_eq!(swapped, 1, "{shape:?}");
        }
    }

    #[test]
    fn a_residual_block_left_out_of_the_choice_is_left_to_tract_or_in_pieces() {
        let shape = [1, 6, 9, 20];
        let input = [tensor(&shape, 21)];
        let compared =
            |chosen| swapped_and_compared_with(residual_block_model(shape, false), &input, chosen);
        // Without the block: its depthwise convolution, and its sum with
        // the ReLU, one by one.
        let pieces = Choice::of(&[Kernel::Depthwise, Kernel::AddRelu, Kernel::MaxPool]);
        assert_eq!(compared(pieces), 2);
        assert_eq!(compared(Choice::of(&[Kernel::AddRelu])), 1);
        assert_eq!(compared(Choice::of(&[Kernel::ResidualBlock])), 1);
        assert_eq!(compared(Choice::TRACT), 0);
    }

    #[test]
    fn a_residual_block_whose_product_is_read_elsewhere_is_left_in_pieces() {
        let shape = [1, 4, 6, 6];
        let model = residual_block_model(shape, true);
        // The depthwise convolution and the sum with its ReLU, one by one.
        assert_eq!(swapped_and_compared(model, &[tensor(&shape, 21)]), 2);
    }
}
