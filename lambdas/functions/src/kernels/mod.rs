//! Our own ops for the layers tract 0.23 runs slowly (BlazeFace's, and the
//! age net's 3×3 convolutions), all f32 and channels first at their inputs
//! and outputs, one module each:
//!
//! - `depthwise`: 3×3 depthwise convolutions, stride 1 and 2 ([`Depthwise3x3`]);
//! - `max_pool`: 2×2 max pools with stride 2 ([`MaxPool2x2S2`]);
//! - `sum_relu`: a residual sum with the ReLU after it ([`AddRelu`]);
//! - `residual_block`: a whole residual block that keeps its channels
//!   (depthwise, 1×1 convolution, sum and ReLU) as one op that goes over
//!   its tensor once, a band of rows at a time ([`ResidualBlock`]);
//! - `stem_conv`: a first layer, a dense convolution of the colour planes
//!   ([`StemConv`]);
//! - `product`: the register-tiled `W · x + b` the last two end in;
//! - `deep_conv`: the classifiers' dense 3×3 convolutions over many
//!   channels and few pixels, channels last ([`DeepConv`]).
//!
//! tract walks the strided layers one output at a time with bounds checks
//! on every tap, and runs a sum and its ReLU as two passes. Here each input
//! row is copied once into a zero-padded row, or for stride 2 split into
//! its even and odd columns, after which each tap of a whole output row is
//! one contiguous slice; the loops are compiled for AVX-512, AVX2 + FMA,
//! SSE and the baseline (and NEON on arm64), and the level is picked at
//! run time (`simd`, through `pulp`); `choice` says which of the kernels a
//! plan uses at that level. `lambdex bench models` prints each network
//! with and without these kernels at every level the host runs, `--layers`
//! op by op; BENCHMARKS.md keeps the figures.
//!
//! [`substitute`] swaps the matching nodes of a decluttered model for these
//! ops before tract optimises the rest; anything else is left to tract.
//! `OnnxFile::tract_plan` builds the same model without them, the reference
//! the tests hold these kernels to.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

mod choice;
mod deep_conv;
mod depthwise;
mod max_pool;
mod product;
mod residual_block;
pub mod simd;
mod stem_conv;
mod sum_relu;

pub use choice::{Choice, ChoiceError, KERNELS_ENV, Kernel};
pub use deep_conv::DeepConv;
pub use depthwise::Depthwise3x3;
pub use max_pool::MaxPool2x2S2;
pub use residual_block::ResidualBlock;
pub use stem_conv::StemConv;
pub use sum_relu::AddRelu;

/// Replaces every node one of the `chosen` ops can run; returns how many
/// ops it wired in.
pub fn substitute(model: &mut TypedModel, chosen: Choice) -> TractResult<usize> {
    let mut replaced = 0;
    // Patching renumbers nodes, so look again from the start after each.
    while let Some(patch) = next_patch(model, chosen)? {
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// A patch swapping the first node (or pair) this module has a kernel for.
fn next_patch(model: &TypedModel, chosen: Choice) -> TractResult<Option<TypedModelPatch>> {
    // Whole residual blocks first, before their depthwise convolutions and
    // sums are swapped one by one.
    for node in model.nodes() {
        if !chosen.uses(Kernel::ResidualBlock) {
            break;
        }
        if let Some(block) = residual_block::matched(model, node)? {
            // The block becomes one op on its input and weights, in place
            // of the ReLU.
            let mut patch = TypedModelPatch::default();
            let inputs = patch.taps(model, &block.inputs())?;
            let wire = patch.wire_node(&node.name, ResidualBlock, &inputs)?;
            patch.shunt_outside(model, node.id.into(), wire[0])?;
            patch.obliterate(node.id)?;
            for inner in block.inner() {
                patch.obliterate(inner)?;
            }
            return Ok(Some(patch));
        }
    }
    for node in model.nodes() {
        let op: Box<dyn TypedOp> = if let Some(pool) = node.op_as::<MaxPool>() {
            if !chosen.uses(Kernel::MaxPool)
                || pool.with_index_outputs.is_some()
                || !max_pool::is_2x2_s2(&pool.pool_spec)
                || !is_f32_rank4(model.outlet_fact(node.inputs[0])?)
            {
                continue;
            }
            Box::new(MaxPool2x2S2)
        } else if let Some(conv) = node.op_as::<Conv>() {
            if let Some(op) =
                depthwise::matched(conv, model, node)?.filter(|_| chosen.uses(Kernel::Depthwise))
            {
                Box::new(op)
            } else if let Some(op) =
                stem_conv::matched(conv, model, node)?.filter(|_| chosen.uses(Kernel::StemConv))
            {
                Box::new(op)
            } else if chosen.uses(Kernel::DeepConv)
                && let Some(op) = deep_conv::matched(conv, model, node)?
            {
                // It holds its weights and bias, packed: its one input is
                // the data.
                return Ok(Some(TypedModelPatch::replace_single_op(
                    model,
                    node,
                    &node.inputs[..1],
                    op,
                )?));
            } else {
                continue;
            }
        } else if let Some(add) =
            sum_relu::matched(model, node)?.filter(|_| chosen.uses(Kernel::AddRelu))
        {
            // The pair becomes one op on the Add's inputs, in place of the Max.
            let mut patch = TypedModelPatch::default();
            let inputs = patch.taps(model, &add.inputs)?;
            let wire = patch.wire_node(&node.name, AddRelu, &inputs)?;
            patch.shunt_outside(model, node.id.into(), wire[0])?;
            patch.obliterate(node.id)?;
            patch.obliterate(add.id)?;
            return Ok(Some(patch));
        } else {
            continue;
        };
        return Ok(Some(TypedModelPatch::replace_single_op(
            model,
            node,
            &node.inputs,
            op,
        )?));
    }
    Ok(None)
}

/// The distance, in values, to give rows of `len` f32 values that a
/// product reads together: a whole number of cache lines, and an odd one,
/// so that successive rows fall in different sets of the L1 cache. Rows a
/// multiple of 4 KB apart (a 1,024-pixel band) all map to one set, and a
/// tile reading 24 or 75 of them at once evicts its own inputs on an
/// 8-way L1 (4K aliasing).
fn unaliased_stride(len: usize) -> usize {
    const LINE: usize = 64 / std::mem::size_of::<f32>();
    let lines = len.div_ceil(LINE);
    (lines | 1) * LINE
}

/// If `node` is `max(s, 0)` (a ReLU) where `s` is an `Add` that nothing
/// else reads, the Add node.
fn summed_then_relu<'m>(
    model: &'m TypedModel,
    node: &TypedNode,
) -> TractResult<Option<&'m TypedNode>> {
    if !is_bin(node, "Max") {
        return Ok(None);
    }
    let sum = match (
        is_zero(model, node.inputs[0])?,
        is_zero(model, node.inputs[1])?,
    ) {
        (false, true) => node.inputs[0],
        (true, false) => node.inputs[1],
        _ => return Ok(None),
    };
    let add = model.node(sum.node);
    Ok((is_bin(add, "Add") && read_once(model, sum)).then_some(add))
}

/// Whether one node, and no model output, reads `outlet`.
fn read_once(model: &TypedModel, outlet: OutletId) -> bool {
    model.node(outlet.node).outputs[outlet.slot]
        .successors
        .len()
        == 1
        && !model.outputs.contains(&outlet)
}

/// Whether `node` is the binary op `name` (`Add`, `Max`…) of two wires.
fn is_bin(node: &TypedNode, name: &str) -> bool {
    node.op_as::<TypedBinOp>()
        .is_some_and(|op| op.0.name() == name)
        && node.inputs.len() == 2
}

/// Whether `outlet` is a constant f32 zero.
fn is_zero(model: &TypedModel, outlet: OutletId) -> TractResult<bool> {
    let fact = model.outlet_fact(outlet)?;
    Ok(match &fact.konst {
        Some(k) => k.len() == 1 && k.datum_type() == f32::datum_type() && k.is_all_zero()?,
        None => false,
    })
}

fn is_f32_rank4(fact: &TypedFact) -> bool {
    fact.datum_type == f32::datum_type() && fact.rank() == 4
}

/// What a convolution our kernels take on has in common: f32, channels
/// first, unquantised, the same stride both ways, explicit padding (or
/// none), no dilation, a bias input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// The same both ways.
    pub stride: usize,
    /// Padding before the rows and the columns.
    pub pad_before: [usize; 2],
    /// Padding after the rows and the columns.
    pub pad_after: [usize; 2],
}

impl Geometry {
    /// The output's height and width for a `kernel`×`kernel` window over
    /// `h`×`w`, rounding down like ONNX.
    fn output_hw(&self, kernel: usize, h: usize, w: usize) -> (usize, usize) {
        let out = |len: usize| {
            if len < kernel {
                0
            } else {
                (len - kernel) / self.stride + 1
            }
        };
        (
            out(h + self.pad_before[0] + self.pad_after[0]),
            out(w + self.pad_before[1] + self.pad_after[1]),
        )
    }
}

/// `conv`'s [`Geometry`], if it has one.
fn geometry(conv: &Conv, node: &TypedNode) -> Option<Geometry> {
    let spec = &conv.pool_spec;
    let stride = match spec.strides.as_deref() {
        None => 1,
        Some(&[s, t]) if s == t && s >= 1 => s,
        Some(_) => return None,
    };
    let (pad_before, pad_after) = match &spec.padding {
        PaddingSpec::Explicit(before, after) if before.len() == 2 && after.len() == 2 => {
            ([before[0], before[1]], [after[0], after[1]])
        }
        PaddingSpec::Valid => ([0, 0], [0, 0]),
        _ => return None,
    };
    let plain = conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && spec.data_format == DataFormat::NCHW
        && spec.dilations.as_deref().unwrap_or(&[1, 1]) == [1, 1]
        && node.inputs.len() == 3;
    plain.then_some(Geometry {
        stride,
        pad_before,
        pad_after,
    })
}

/// Whether `node`'s input is an f32 `[N, channels, H, W]` and its weights
/// and bias f32 constants of `weights` values and of one or `outputs`.
fn inputs_fit(
    model: &TypedModel,
    node: &TypedNode,
    channels: usize,
    weights: usize,
    outputs: usize,
) -> TractResult<bool> {
    let input = model.outlet_fact(node.inputs[0])?;
    let is_f32_const = |outlet: OutletId, lens: &[usize]| -> TractResult<bool> {
        let fact = model.outlet_fact(outlet)?;
        Ok(fact.datum_type == f32::datum_type()
            && fact.konst.as_ref().is_some_and(|k| lens.contains(&k.len())))
    };
    Ok(is_f32_rank4(input)
        && input.shape[1].to_usize().ok() == Some(channels)
        && is_f32_const(node.inputs[1], &[weights])?
        && is_f32_const(node.inputs[2], &[1, outputs])?)
}

/// What the kernels' tests share: deterministic tensors, small graphs, and
/// the check that a swapped plan gives tract's own outputs.
#[cfg(test)]
pub(crate) mod testing {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    use super::{Choice, substitute};
    use crate::onnx::f32_values;

    /// Deterministic values in [-1, 1).
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    pub(crate) fn tensor(shape: &[usize], seed: u64) -> Tensor {
        let len = shape.iter().product();
        tract_ndarray::ArrayD::from_shape_vec(shape, values(len, seed))
            .expect("shape fits")
            .into()
    }

    /// Runs `model` on `inputs` as tract builds it, then with all of this
    /// module's kernels, and checks both agree; returns how many ops were
    /// swapped.
    pub(crate) fn swapped_and_compared(model: TypedModel, inputs: &[Tensor]) -> usize {
        swapped_and_compared_with(model, inputs, Choice::OURS)
    }

    /// The same with the `chosen` kernels.
    pub(crate) fn swapped_and_compared_with(
        model: TypedModel,
        inputs: &[Tensor],
        chosen: Choice,
    ) -> usize {
        swapped_and_compared_within(model, inputs, chosen, 1e-5)
    }

    /// The same, each output within `tolerance` of tract's (relative, or
    /// absolute below 1): sums of thousands of products, added in another
    /// order, differ in more than the last bits.
    pub(crate) fn swapped_and_compared_within(
        model: TypedModel,
        inputs: &[Tensor],
        chosen: Choice,
        tolerance: f32,
    ) -> usize {
        let run = |model: TypedModel| -> Vec<f32> {
            let plan = model
                .into_optimized()
                .expect("optimises")
                .into_runnable()
                .expect("plans");
            let inputs = inputs.iter().map(|t| t.clone().into_tvalue()).collect();
            let outputs = plan.run(inputs).expect("runs");
            f32_values(&outputs[0]).expect("f32 output").to_vec()
        };
        let expected = run(model.clone());
        let mut ours = model;
        let swapped = substitute(&mut ours, chosen).expect("swaps");
        let got = run(ours);
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                (g - e).abs() <= tolerance * e.abs().max(1.0),
                "output {i}: {g} against tract's {e}"
            );
        }
        swapped
    }

    pub(crate) fn depthwise_model(
        shape: [usize; 4],
        stride: usize,
        padding: PaddingSpec,
        bias: Tensor,
    ) -> TypedModel {
        let channels = shape[1];
        let mut model = TypedModel::default();
        let x = model
            .add_source("x", f32::fact(shape))
            .expect("a valid test graph");
        let k = model
            .add_const("k", tensor(&[channels, 1, 3, 3], 7))
            .expect("a valid test graph");
        let b = model.add_const("b", bias).expect("a valid test graph");
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 3],
                padding,
                dilations: None,
                strides: Some(tvec![stride, stride]),
                input_channels: channels,
                output_channels: channels,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: channels,
            q_params: None,
        };
        let y = model
            .wire_node("conv", conv, &[x, k, b])
            .expect("a valid test graph");
        model.select_output_outlets(&y).expect("a valid test graph");
        model
    }

    /// A dense convolution of `shape`'s channels into `outputs`, `k`×`k`.
    pub(crate) fn dense_conv_model(
        shape: [usize; 4],
        outputs: usize,
        k: usize,
        stride: usize,
        padding: PaddingSpec,
    ) -> TypedModel {
        let channels = shape[1];
        let mut model = TypedModel::default();
        let x = model
            .add_source("x", f32::fact(shape))
            .expect("a valid test graph");
        let w = model
            .add_const("w", tensor(&[outputs, channels, k, k], 7))
            .expect("a valid test graph");
        let b = model
            .add_const("b", tensor(&[outputs], 3))
            .expect("a valid test graph");
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![k, k],
                padding,
                dilations: None,
                strides: Some(tvec![stride, stride]),
                input_channels: channels,
                output_channels: outputs,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let y = model
            .wire_node("conv", conv, &[x, w, b])
            .expect("a valid test graph");
        model.select_output_outlets(&y).expect("a valid test graph");
        model
    }
}
