//! Loading the ONNX weights into tract, with the load-time fixes these
//! particular files need, and their sha256 for provenance.
//!
//! - BlazeFace's `ConstantOfShape` nodes lack a `value` attribute; ONNX says
//!   it defaults to an f32 zero, tract 0.23 assumes f64 and then fails with
//!   "Impossible to unify F32 with F64". We add the f32 zero explicitly.
//! - The dlib nets carry `value_info` entries that pin the symbolic batch to
//!   1 ("Impossible to unify Sym(N) with Val(1)"); shapes are re-inferred
//!   from the inputs, so we drop them.
//! - The age net holds 6,667 denormal weights (gender 145). Denormal
//!   arithmetic is ~100× slower on x86; zeroing them changes no output
//!   measurably and makes the age net ~7× faster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimpleState, eval};

use crate::kernels::{self, Choice};

/// The tensors the networks take, for callers that hold inputs.
pub use tract_onnx::prelude::Tensor;

/// A model ready to run, single-threaded, and the sha256 of its file.
pub type Plan = Arc<TypedSimplePlan>;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {path} is not a model tract can run: {reason}")]
    Model { path: PathBuf, reason: String },
}

/// The file's bytes, parsed and patched, before any input shape is fixed.
#[derive(Debug)]
pub struct OnnxFile {
    pub path: PathBuf,
    pub sha256: String,
    proto: pb::ModelProto,
}

impl OnnxFile {
    /// Reads and patches `path`.
    pub fn read(path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let mut proto = tract_onnx::onnx()
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|error| model_error(path, &error))?;
        if let Some(graph) = proto.graph.as_mut() {
            patch(graph);
        }
        Ok(Self {
            path: path.to_owned(),
            sha256,
            proto,
        })
    }

    /// Builds the runnable plan for an f32 input 0 of the given shape, with
    /// the [`crate::kernels`] chosen for this CPU ([`Choice::current`]).
    pub fn plan(&self, input_shape: &[usize]) -> Result<Plan, LoadError> {
        self.plan_with(input_shape, Choice::current())
    }

    /// The same plan with tract's own kernels throughout: the reference the
    /// faster ones are checked against.
    pub fn tract_plan(&self, input_shape: &[usize]) -> Result<Plan, LoadError> {
        self.plan_with(input_shape, Choice::TRACT)
    }

    /// The plan with the `chosen` kernels wherever they apply.
    pub fn plan_with(&self, input_shape: &[usize], chosen: Choice) -> Result<Plan, LoadError> {
        let mut model = self.typed_model(input_shape)?;
        let build = || -> TractResult<Plan> {
            kernels::substitute(&mut model, chosen)?;
            model.into_optimized()?.into_runnable()
        };
        build().map_err(|error| model_error(&self.path, &error))
    }

    /// The decluttered model for an f32 input 0 of the given shape, before
    /// any kernel is chosen.
    pub fn typed_model(&self, input_shape: &[usize]) -> Result<TypedModel, LoadError> {
        let build = || -> TractResult<TypedModel> {
            let mut model = tract_onnx::onnx().model_for_proto_model(&self.proto)?;
            model.set_input_fact(0, f32::fact(input_shape).into())?;
            model.into_typed()?.into_decluttered()
        };
        build().map_err(|error| model_error(&self.path, &error))
    }
}

/// Runs a single-input `plan` on `input`.
pub fn run(plan: &Plan, input: Tensor) -> TractResult<TVec<TValue>> {
    plan.run(tvec![input.into()])
}

/// Time spent in one kind of op over a profiled run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// The op's name, as tract names it (`OptMatMul`, or one of
    /// [`crate::kernels`]' such as `lambdex.Depthwise3x3S1`).
    pub op: String,
    /// How many nodes of the plan run it.
    pub nodes: usize,
    /// Mean time per run of the plan, summed over those nodes.
    pub mean: Duration,
}

/// Where one run of `plan` on `input` spends its time, by op name, most
/// first: every node timed over `runs` runs (after one warm-up). Timing
/// each node adds a little to the whole; the shares are what it is for.
pub fn profile(plan: &Plan, input: &Tensor, runs: usize) -> TractResult<Vec<OpTime>> {
    let runs = runs.max(1);
    let mut state = SimpleState::new(plan)?;
    state.run(tvec![input.clone().into()])?;
    let mut spent = vec![Duration::ZERO; plan.model().nodes().len()];
    for _ in 0..runs {
        state.run_plan_with_eval(
            tvec![input.clone().into()],
            |context, op_state, node, inputs| {
                let started = Instant::now();
                let outputs = eval(context, op_state, node, inputs);
                spent[node.id] += started.elapsed();
                outputs
            },
        )?;
    }
    let mut by_op: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for node in plan.model().nodes() {
        let entry = by_op.entry(node.op().name().into_owned()).or_default();
        entry.0 += 1;
        entry.1 += spent[node.id];
    }
    let mut times: Vec<OpTime> = by_op
        .into_iter()
        .map(|(op, (nodes, total))| OpTime {
            op,
            nodes,
            mean: total / u32::try_from(runs).unwrap_or(u32::MAX),
        })
        .collect();
    times.sort_by_key(|time| std::cmp::Reverse(time.mean));
    Ok(times)
}

fn model_error(path: &Path, error: &TractError) -> LoadError {
    LoadError::Model {
        path: path.to_owned(),
        reason: format!("{error:#}"),
    }
}

/// The three load-time fixes described in the module docs.
fn patch(graph: &mut pb::GraphProto) {
    graph.value_info.clear();
    for node in &mut graph.node {
        if node.op_type == "ConstantOfShape" && !node.attribute.iter().any(|a| a.name == "value") {
            node.attribute.push(pb::AttributeProto {
                name: "value".into(),
                r#type: AttributeType::Tensor as i32,
                t: Some(pb::TensorProto {
                    dims: vec![1],
                    data_type: DataType::Float as i32,
                    float_data: vec![0.0],
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    for tensor in &mut graph.initializer {
        if tensor.data_type == DataType::Float as i32 {
            zero_denormals(tensor);
        }
    }
}

/// Sets subnormal f32 weights to zero; returns how many there were.
fn zero_denormals(tensor: &mut pb::TensorProto) -> usize {
    let mut zeroed = 0;
    for value in &mut tensor.float_data {
        if value.is_subnormal() {
            *value = 0.0;
            zeroed += 1;
        }
    }
    for chunk in tensor.raw_data.chunks_exact_mut(4) {
        let value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        if value.is_subnormal() {
            chunk.copy_from_slice(&0f32.to_le_bytes());
            zeroed += 1;
        }
    }
    zeroed
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// A model output's values, when it holds plain f32s in memory.
pub fn f32_values(tensor: &Tensor) -> TractResult<&[f32]> {
    tensor.try_as_plain_ram()?.as_slice::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroes_subnormal_weights_in_raw_and_typed_data() {
        let tiny = f32::from_bits(1);
        let mut tensor = pb::TensorProto {
            data_type: DataType::Float as i32,
            float_data: vec![1.0, tiny, -tiny],
            raw_data: [0.5f32, tiny, 2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            ..Default::default()
        };
        assert_eq!(zero_denormals(&mut tensor), 3);
        assert_eq!(tensor.float_data, vec![1.0, 0.0, 0.0]);
        let raw: Vec<f32> = tensor
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(raw, vec![0.5, 0.0, 2.0]);
    }

    #[test]
    fn gives_constant_of_shape_an_f32_zero_value_and_drops_value_info() {
        let mut graph = pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: "ConstantOfShape".into(),
                ..Default::default()
            }],
            value_info: vec![pb::ValueInfoProto::default()],
            ..Default::default()
        };
        patch(&mut graph);
        assert!(graph.value_info.is_empty());
        let value = graph.node[0]
            .attribute
            .iter()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.as_ref())
            .expect("a value attribute");
        assert_eq!(value.data_type, DataType::Float as i32);
        assert_eq!(value.float_data, vec![0.0]);
    }

    #[test]
    fn hex_is_lower_case_and_zero_padded() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
