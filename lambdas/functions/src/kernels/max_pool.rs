//! 2×2 max pools with stride 2: the larger of each column's two rows,
//! then of each pair of columns, a whole row at a time.

use pulp::{Simd, WithSimd};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use crate::onnx::f32_values;

/// Whether `spec` is a 2×2 window with stride 2, unpadded, channels first.
pub(super) fn is_2x2_s2(spec: &PoolSpec) -> bool {
    spec.data_format == DataFormat::NCHW
        && spec.kernel_shape[..] == [2, 2]
        && spec.strides.as_deref() == Some(&[2, 2])
        && spec.dilations.as_deref().unwrap_or(&[1, 1]) == [1, 1]
        && spec.padding == PaddingSpec::Valid
}

/// 2×2 max pool with stride 2 and no padding: `[N, C, H, W]` to
/// `[N, C, H/2, W/2]`, rounding down like ONNX.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPool2x2S2;

impl Op for MaxPool2x2S2 {
    fn name(&self) -> StaticName {
        "lambdex.MaxPool2x2S2".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2S2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let &[n, c, h, w] = input.shape() else {
            bail!(
                "MaxPool2x2S2 expects a rank-4 input, got {:?}",
                input.shape()
            );
        };
        let (oh, ow) = (h / 2, w / 2);
        let mut output = Tensor::zero::<f32>(&[n, c, oh, ow])?;
        if output.len() == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        let source = f32_values(&input)?;
        let mut plain = output.try_as_plain_ram_mut()?;
        let target = plain.as_slice_mut::<f32>()?;
        let mut columns = vec![0f32; 2 * ow];
        let planes = source
            .chunks_exact(h * w)
            .zip(target.chunks_exact_mut(oh * ow));
        for (plane, out_plane) in planes {
            super::simd::dispatch(PoolPlane {
                plane,
                w,
                out_plane,
                ow,
                columns: &mut columns,
            });
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

/// One channel's 2×2/2 max pool: the larger of each column's two rows into
/// `columns`, then the larger of each pair of columns.
struct PoolPlane<'a> {
    plane: &'a [f32],
    w: usize,
    out_plane: &'a mut [f32],
    ow: usize,
    columns: &'a mut [f32],
}

impl WithSimd for PoolPlane<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self {
            plane,
            w,
            out_plane,
            ow,
            columns,
        } = self;
        for (oy, out_row) in out_plane.chunks_exact_mut(ow).enumerate() {
            let top = &plane[2 * oy * w..][..2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
            for ((m, a), b) in columns.iter_mut().zip(top).zip(bottom) {
                *m = a.max(*b);
            }
            for (out, pair) in out_row.iter_mut().zip(columns.chunks_exact(2)) {
                *out = pair[0].max(pair[1]);
            }
        }
    }
}

impl TypedOp for MaxPool2x2S2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        Ok(tvec!(f32::fact([
            shape[0].to_usize()?,
            shape[1].to_usize()?,
            shape[2].to_usize()? / 2,
            shape[3].to_usize()? / 2,
        ])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::internal::*;
    use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    use super::MaxPool2x2S2;
    use crate::kernels::testing::{swapped_and_compared, tensor};

    #[test]
    fn max_pool_matches_tract_and_drops_an_odd_last_row_and_column() {
        for shape in [[1, 3, 8, 10], [2, 2, 7, 9]] {
            let mut model = TypedModel::default();
            let x = model
                .add_source("x", f32::fact(shape))
                .expect("a valid test graph");
            let pool = MaxPool {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec![2, 2],
                    padding: PaddingSpec::Valid,
                    dilations: None,
                    strides: Some(tvec![2, 2]),
                    input_channels: shape[1],
                    output_channels: shape[1],
                },
                with_index_outputs: None,
            };
            let y = model
                .wire_node("pool", pool, &[x])
                .expect("a valid test graph");
            model.select_output_outlets(&y).expect("a valid test graph");
            assert_eq!(
                swapped_and_compared(model, &[tensor(&shape, 2)]),
                1,
                "{shape:?}"
            );
        }
    }

    #[test]
    fn a_max_pool_over_a_single_row_is_empty_rather_than_a_panic() {
        // tract's own pool panics on this shape, so it cannot be the reference.
        let input = tensor(&[1, 2, 1, 5], 1).into_tvalue();
        let output = MaxPool2x2S2
            .eval_out_of_plan(tvec![input])
            .expect("evaluates")
            .expect("needs no plan");
        assert_eq!(output[0].shape(), [1, 2, 0, 2]);
    }
}
