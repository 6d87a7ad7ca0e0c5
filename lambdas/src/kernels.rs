//! Our own ops for the BlazeFace layers tract 0.23 runs slowly, all f32 and
//! channels first: 3×3 depthwise convolutions (stride 1 and 2), 2×2 max
//! pools with stride 2, and each residual sum with the ReLU after it.
//!
//! tract walks the strided layers one output at a time with bounds checks on
//! every tap (in a one-off per-layer profile of BlazeFace-256 on an AVX-512
//! core: about 13 ns per pooled value, and a stride-2 depthwise cost 5× its
//! stride-1 neighbour for a quarter of the outputs), and its sum-then-ReLU
//! took about 0.5 ns an element. `lambdex bench models` prints each network
//! with and without these kernels. Here each input row is copied once into a
//! zero-padded row, or for stride 2 split into its even and odd columns,
//! after which each tap of a whole output row is one contiguous slice; the
//! loops are compiled for AVX-512 and AVX2 as well as the baseline, and the
//! fastest the CPU has is picked at run time (`multiversion`).
//!
//! A residual block whose channels do not change (depthwise, 1×1
//! convolution, sum and ReLU) becomes one op, [`ResidualBlock`]
//! (`residual_block`), that goes over its tensor once, a band of rows at a
//! time. A first layer, a dense convolution of the colour planes, becomes
//! [`StemConv`] (`stem_conv`).
//!
//! [`substitute`] swaps the matching nodes of a decluttered model for these
//! ops before tract optimises the rest; anything else is left to tract.
//! `OnnxFile::tract_plan` builds the same model without them, the reference
//! the tests hold these kernels to.

use multiversion::multiversion;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use crate::onnx::f32_values;

mod product;
mod residual_block;
mod stem_conv;

pub use residual_block::ResidualBlock;
pub use stem_conv::StemConv;

/// Replaces every node one of this module's ops can run; returns how many
/// ops it wired in.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    // Patching renumbers nodes, so look again from the start after each.
    while let Some(patch) = next_patch(model)? {
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// A patch swapping the first node (or pair) this module has a kernel for.
fn next_patch(model: &TypedModel) -> TractResult<Option<TypedModelPatch>> {
    // Whole residual blocks first, before their depthwise convolutions and
    // sums are swapped one by one.
    for node in model.nodes() {
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
            if pool.with_index_outputs.is_some()
                || !is_max_pool_2x2_s2(&pool.pool_spec)
                || !is_f32_rank4(model.outlet_fact(node.inputs[0])?)
            {
                continue;
            }
            Box::new(MaxPool2x2S2)
        } else if let Some(conv) = node.op_as::<Conv>() {
            if let Some(op) = depthwise_3x3(conv, model, node)? {
                Box::new(op)
            } else if let Some(op) = stem_conv::matched(conv, model, node)? {
                Box::new(op)
            } else {
                continue;
            }
        } else if let Some(add) = added_then_relu(model, node)? {
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

/// If `node` is `max(x, 0)` (a ReLU) whose `x` is the sum of two f32 tensors
/// of its own shape that nothing else reads, the Add node.
fn added_then_relu<'m>(
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

fn is_max_pool_2x2_s2(spec: &PoolSpec) -> bool {
    spec.data_format == DataFormat::NCHW
        && spec.kernel_shape[..] == [2, 2]
        && spec.strides.as_deref() == Some(&[2, 2])
        && spec.dilations.as_deref().unwrap_or(&[1, 1]) == [1, 1]
        && spec.padding == PaddingSpec::Valid
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

/// The [`Depthwise3x3`] that computes `conv`, if it is one: 3×3, stride 1 or
/// 2 both ways, explicit padding of at most a pixel a side, constant weights
/// and bias.
fn depthwise_3x3(
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
            max_pool_plane(plane, w, out_plane, ow, &mut columns);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

/// One channel's 2×2/2 max pool: the larger of each column's two rows into
/// `columns`, then the larger of each pair of columns.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn max_pool_plane(plane: &[f32], w: usize, out_plane: &mut [f32], ow: usize, columns: &mut [f32]) {
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
            depthwise_plane(&rows, weights, b, out_plane, ow);
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
    fn tap(&self, r: usize, kx: usize, len: usize) -> &[f32] {
        &self.phases[kx % self.stride][r * self.cols + kx / self.stride..][..len]
    }
}

/// One channel's outputs: the bias plus each tap's weight times its slice.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn depthwise_plane(rows: &Phases, weights: &[f32], bias: f32, out_plane: &mut [f32], ow: usize) {
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

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn add_relu(sum: &mut [f32], b: &[f32]) {
    for (s, b) in sum.iter_mut().zip(b) {
        *s = (*s + b).max(0.0);
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
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::ops::math;

    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
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

    fn tensor(shape: &[usize], seed: u64) -> Tensor {
        let len = shape.iter().product();
        tract_ndarray::ArrayD::from_shape_vec(shape, values(len, seed))
            .expect("shape fits")
            .into()
    }

    /// Runs `model` on `inputs` as tract builds it, then with this module's
    /// kernels, and checks both agree; returns how many ops were swapped.
    fn swapped_and_compared(model: TypedModel, inputs: &[Tensor]) -> usize {
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
        let swapped = substitute(&mut ours).expect("swaps");
        let got = run(ours);
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                "output {i}: {g} against tract's {e}"
            );
        }
        swapped
    }

    fn depthwise_model(
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

    /// A dense convolution of `shape`'s channels into five, `k`×`k`.
    fn dense_conv_model(
        shape: [usize; 4],
        k: usize,
        stride: usize,
        padding: PaddingSpec,
    ) -> TypedModel {
        let (channels, outputs) = (shape[1], 5);
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

    #[test]
    fn a_stem_convolution_runs_as_a_banded_product_and_matches_tract() {
        // BlazeFace's (5×5, stride 2, a pixel of padding before and two
        // after), the gender net's (3×3, stride 1), odd sizes, several
        // images, rows longer than one band.
        let explicit = |before: usize, after: usize| {
            PaddingSpec::Explicit(tvec![before, before], tvec![after, after])
        };
        for (shape, k, stride, padding) in [
            ([1, 3, 16, 16], 5, 2, explicit(1, 2)),
            ([2, 3, 9, 11], 5, 2, explicit(1, 2)),
            ([1, 3, 10, 7], 3, 1, explicit(1, 1)),
            ([1, 1, 6, 9], 3, 2, PaddingSpec::Valid),
            ([1, 3, 40, 1200], 5, 2, explicit(1, 2)),
        ] {
            let model = dense_conv_model(shape, k, stride, padding.clone());
            let swapped = swapped_and_compared(model, &[tensor(&shape, 11)]);
            assert_eq!(swapped, 1, "{shape:?} {k}×{k} stride {stride} {padding:?}");
        }
    }

    #[test]
    fn a_convolution_over_many_channels_or_a_wide_kernel_is_left_to_tract() {
        for (shape, k) in [([1, 8, 10, 10], 3), ([1, 3, 20, 20], 7)] {
            let model = dense_conv_model(shape, k, 2, PaddingSpec::Valid);
            assert_eq!(
                swapped_and_compared(model, &[tensor(&shape, 11)]),
                0,
                "{shape:?} {k}×{k}"
            );
        }
    }

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
    fn a_residual_block_whose_product_is_read_elsewhere_is_left_in_pieces() {
        let shape = [1, 4, 6, 6];
        let model = residual_block_model(shape, true);
        // The depthwise convolution and the sum with its ReLU, one by one.
        assert_eq!(swapped_and_compared(model, &[tensor(&shape, 21)]), 2);
    }

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
