//! The age and gender nets (dlib's, by Cydral), run over all the crops of
//! a request.

use image::RgbImage;
use lambdex_proto::{AgeBin, AgePrediction, Gender, GenderPrediction, ModelInfo, Prediction};
use tract_onnx::prelude::*;

use crate::onnx::{self, LoadError, OnnxFile, Plan, f32_values};
use crate::resize::shrink_to;

/// dlib's per-channel means; pixels are fed as (byte − mean) / 256.
const CHANNEL_MEANS: [f32; 3] = [122.782, 117.001, 104.298];
const PIXEL_SCALE: f32 = 1.0 / 256.0;

/// How many of the most probable age bins a prediction reports.
const TOP_AGE_BINS: usize = 3;

/// Which model a classifier function serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Age,
    Gender,
}

impl Task {
    /// Every model lambdex serves, in the order documents list them.
    pub const ALL: [Self; 2] = [Self::Age, Self::Gender];

    /// The name the function and its environment use: `age` or `gender`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Age => "age",
            Self::Gender => "gender",
        }
    }

    /// The model's stable id, file name, and square input size.
    pub fn model(self) -> (&'static str, &'static str, u32) {
        match self {
            Self::Age => ("age-v1", "age-gender/age-v1.onnx", 64),
            Self::Gender => ("gender-v1", "age-gender/gender-v1.onnx", 32),
        }
    }
}

impl std::str::FromStr for Task {
    type Err = UnknownTask;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "age" => Ok(Self::Age),
            "gender" => Ok(Self::Gender),
            other => Err(UnknownTask(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown model {0:?}: expected \"age\" or \"gender\"")]
pub struct UnknownTask(pub String);

#[derive(Debug, thiserror::Error)]
#[error("classification failed: {0}")]
pub struct ClassifyError(String);

/// One classifier net, ready to run on any number of crops.
///
/// tract runs a plan whose batch axis is fixed at 1 faster per crop than
/// one whose batch axis is free, and more so as a larger batch's
/// activations outgrow the cache (`lambdex bench models`; BENCHMARKS.md).
/// So each crop runs through that plan in turn: a request carries a batch
/// to save invocations, not inference.
#[derive(Debug)]
pub struct Classifier {
    task: Task,
    plan: Plan,
    info: ModelInfo,
}

impl Classifier {
    pub fn load(task: Task, file: OnnxFile) -> Result<Self, LoadError> {
        let (id, _, side) = task.model();
        Ok(Self {
            task,
            plan: file.plan(&[1, 3, side as usize, side as usize])?,
            info: ModelInfo {
                id: id.to_owned(),
                sha256: file.sha256.clone(),
            },
        })
    }

    pub fn task(&self) -> Task {
        self.task
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The side of the square crop the net reads.
    pub fn input_size(&self) -> u32 {
        self.task.model().2
    }

    /// One prediction per face chip, in order. Chips of another size are
    /// resized to the net's input first.
    pub fn classify(&self, chips: &[RgbImage]) -> Result<Vec<Prediction>, ClassifyError> {
        chips
            .iter()
            .map(|chip| {
                let probabilities = self.infer(self.input(chip))?;
                if probabilities.is_empty() {
                    return Err(ClassifyError("the model gave no output".into()));
                }
                Ok(match self.task {
                    Task::Age => Prediction::Age(age(&probabilities)),
                    Task::Gender => Prediction::Gender(gender(&probabilities)),
                })
            })
            .collect()
    }

    /// The net's input for one chip: resized, normalised, NCHW.
    pub fn input(&self, chip: &RgbImage) -> Tensor {
        let side = self.input_size() as usize;
        let plane = side * side;
        let mut data = vec![0f32; 3 * plane];
        let chip = shrink_to(chip, self.input_size());
        for (i, pixel) in chip.pixels().enumerate() {
            for c in 0..3 {
                data[c * plane + i] = (f32::from(pixel[c]) - CHANNEL_MEANS[c]) * PIXEL_SCALE;
            }
        }
        Tensor::from_shape(&[1, 3, side, side], &data)
            .expect("the buffer has exactly 1×3×side×side values")
    }

    /// Runs the net on one crop's input; returns its output values.
    pub fn infer(&self, input: Tensor) -> Result<Vec<f32>, ClassifyError> {
        let outputs =
            onnx::run(&self.plan, input).map_err(|error| ClassifyError(format!("{error:#}")))?;
        let output = outputs
            .first()
            .ok_or_else(|| ClassifyError("the model has no output".into()))?;
        let values = f32_values(output).map_err(|error| ClassifyError(format!("{error:#}")))?;
        Ok(values.to_vec())
    }
}

/// The years each of the age net's 81 bins stands for: 0.25 (a baby), then
/// 1 to 80.
fn bin_years(bin: usize) -> f32 {
    if bin == 0 { 0.25 } else { bin as f32 }
}

/// DEX: the expected age over the bins, with the spread and the top bins.
fn age(probabilities: &[f32]) -> AgePrediction {
    let years: f32 = probabilities
        .iter()
        .enumerate()
        .map(|(bin, p)| p * bin_years(bin))
        .sum();
    let variance: f32 = probabilities
        .iter()
        .enumerate()
        .map(|(bin, p)| p * (bin_years(bin) - years).powi(2))
        .sum();
    let mut top: Vec<AgeBin> = probabilities
        .iter()
        .enumerate()
        .map(|(bin, &probability)| AgeBin {
            years: bin_years(bin),
            probability,
        })
        .collect();
    top.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    top.truncate(TOP_AGE_BINS);
    AgePrediction {
        years,
        std_dev: variance.sqrt(),
        top_bins: top,
    }
}

/// The more probable of `[female, male]`.
fn gender(probabilities: &[f32]) -> GenderPrediction {
    let (female, male) = (
        probabilities[0],
        probabilities.get(1).copied().unwrap_or(0.0),
    );
    if female >= male {
        GenderPrediction {
            label: Gender::Female,
            probability: female,
        }
    } else {
        GenderPrediction {
            label: Gender::Male,
            probability: male,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_is_the_expected_value_over_the_bins() {
        let mut p = vec![0.0; 81];
        p[20] = 0.5;
        p[40] = 0.5;
        let prediction = age(&p);
        assert!((prediction.years - 30.0).abs() < 1e-4);
        assert!((prediction.std_dev - 10.0).abs() < 1e-4);
        assert_eq!(prediction.top_bins.len(), TOP_AGE_BINS);
        assert_eq!(prediction.top_bins[0].probability, 0.5);
    }

    #[test]
    fn the_first_age_bin_is_a_quarter_year() {
        let mut p = vec![0.0; 81];
        p[0] = 1.0;
        assert_eq!(age(&p).years, 0.25);
    }

    #[test]
    fn gender_takes_the_more_probable_label() {
        assert_eq!(gender(&[0.2, 0.8]).label, Gender::Male);
        let female = gender(&[0.9, 0.1]);
        assert_eq!((female.label, female.probability), (Gender::Female, 0.9));
    }

    #[test]
    fn tasks_parse_from_their_names() {
        assert_eq!("age".parse::<Task>().ok(), Some(Task::Age));
        assert!("emotion".parse::<Task>().is_err());
    }
}
