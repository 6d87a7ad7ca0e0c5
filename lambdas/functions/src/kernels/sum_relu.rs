//! A residual sum and the ReLU after it, `max(a + b, 0)`, in one pass over
//! the sum.

use pulp::{Simd, WithSimd};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::summed_then_relu;
use crate::onnx::f32_values;

/// If `node` is `max(x, 0)` (a ReLU) whose `x` is the sum of two f32 tensors
/// of its own shape that nothing else reads, the Add node.
pub(super) fn matched<'m>(
    model: &'m TypedModel,
    node: &TypedNode,
) -> TractResult<Option<&'m TypedNode>> {
    let Some(add) = summed_then_relu(model, node)? else {
        return Ok(None);
    };
    let out = model.outlet_fact(node.id.into())?;
    for input in &add.inputs {
        let fact = model.outlet_fact(*input)?;
        if fact.datum_type != f32::datum_type() || fact.konst.is_some() || fact.shape != out.shape {
            return Ok(None);
        }
    }
    Ok(Some(add))
}

/// `max(a + b, 0)` for two f32 tensors of the same shape: a residual sum and
/// its ReLU in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddRelu;

impl Op for AddRelu {
    fn name(&self) -> StaticName {
        "lambdex.AddRelu".into()
    }

    op_as_typed_op!();
}

impl EvalOp for AddRelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        ensure!(
            a.shape() == b.shape(),
            "AddRelu of {:?} and {:?}",
            a.shape(),
            b.shape()
        );
        // The sum overwrites `a`, which is not copied when this op is its
        // last reader.
        let mut sum = a.into_tensor();
        let mut plain = sum.try_as_plain_ram_mut()?;
        add_relu(plain.as_slice_mut::<f32>()?, f32_values(&b)?);
        Ok(tvec!(sum.into_tvalue()))
    }
}

impl TypedOp for AddRelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

fn add_relu(sum: &mut [f32], b: &[f32]) {
    super::simd::dispatch(SumRelu { sum, b });
}

struct SumRelu<'a> {
    sum: &'a mut [f32],
    b: &'a [f32],
}

impl WithSimd for SumRelu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        for (s, b) in self.sum.iter_mut().zip(self.b) {
            *s = (*s + b).max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::math;

    use crate::kernels::testing::{swapped_and_compared, tensor};

    #[test]
    fn a_sum_then_relu_becomes_one_op_unless_the_sum_is_read_elsewhere() {
        let shape = [1, 4, 5, 6];
        let build = |sum_is_output: bool| {
            let mut model = TypedModel::default();
            let a = model
                .add_source("a", f32::fact(shape))
                .expect("a valid test graph");
            let b = model
                .add_source("b", f32::fact(shape))
                .expect("a valid test graph");
            let zero = model
                .add_const(
                    "zero",
                    tensor0(0f32)
                        .broadcast_into_rank(4)
                        .expect("a valid test graph"),
                )
                .expect("a valid test graph");
            let sum = model
                .wire_node("sum", math::add(), &[a, b])
                .expect("a valid test graph");
            let relu = model
                .wire_node("relu", math::max(), &[sum[0], zero])
                .expect("a valid test graph");
            let outputs = if sum_is_output {
                vec![relu[0], sum[0]]
            } else {
                relu.to_vec()
            };
            model
                .select_output_outlets(&outputs)
                .expect("a valid test graph");
            model
        };
        let inputs = [tensor(&shape, 4), tensor(&shape, 9)];
        assert_eq!(swapped_and_compared(build(false), &inputs), 1);
        assert_eq!(swapped_and_compared(build(true), &inputs), 0);
    }
}
