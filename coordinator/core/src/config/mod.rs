//! The coordinator's settings: one TOML file, overridden by environment
//! variables, every limit and timeout a named field with a default.
//!
//! An override is `LAMBDEX__` then the path in upper case, parts joined by
//! `__`: `LAMBDEX__RETRY__MAX_ATTEMPTS=6`, `LAMBDEX__MODELS__AGE__BATCH_SIZE=8`,
//! `LAMBDEX__FETCH__ALLOW=127.0.0.0/8,::1/128` (lists split on commas).
//! (Double underscores keep them apart from the functions' own
//! `LAMBDEX_…` variables.)

mod admin;
mod breaker;
mod cost;
mod elasticsearch;
mod fetch;
mod function;
mod image;
mod jobs;
mod lambda;
mod metrics;
mod pipeline;
mod queue;
mod retry;
mod secret;

use std::collections::BTreeMap;
use std::path::Path;

use lambdex_proto::JobLimits;
use lambdex_proto::limits::MAX_IMAGES_PER_REQUEST;
use serde::{Deserialize, Serialize};

pub use admin::{AdminConfig, AdminToken, Scope};
pub use breaker::BreakerConfig;
pub use cost::CostConfig;
pub use elasticsearch::ElasticsearchConfig;
pub use fetch::FetchConfig;
pub use function::{
    BATCH_MAX_REQUEST_BYTES, DEFAULT_AGE_CHIP, DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW,
    DEFAULT_CROP_BATCH_SIZE, DEFAULT_GENDER_CHIP, FunctionConfig,
};
pub use image::ImageConfig;
pub use lambda::{Credentials, LambdaConfig};
pub use metrics::MetricsConfig;
pub use pipeline::PipelineConfig;
pub use queue::QueueConfig;
pub use retry::RetryConfig;
pub use secret::{CredentialUrl, REDACTED, Secret};

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "LAMBDEX";
/// Separator of the parts of an override's path.
pub const ENV_SEPARATOR: &str = "__";
/// Settings whose override is a comma-separated list.
const ENV_LISTS: [&str; 1] = ["fetch.allow"];
/// Everything the pipeline needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub lambda: LambdaConfig,
    pub fetch: FetchConfig,
    pub image: ImageConfig,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub pipeline: PipelineConfig,
    pub cost: CostConfig,
    pub queue: QueueConfig,
    pub elasticsearch: ElasticsearchConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    /// What a job may carry.
    pub jobs: JobLimits,
    /// The face-crop function.
    pub face_crop: FunctionConfig,
    /// The classifier models every face goes through, by name; a model's
    /// function defaults to its name.
    pub models: BTreeMap<String, FunctionConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lambda: LambdaConfig::default(),
            fetch: FetchConfig::default(),
            image: ImageConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            pipeline: PipelineConfig::default(),
            cost: CostConfig::default(),
            queue: QueueConfig::default(),
            elasticsearch: ElasticsearchConfig::default(),
            admin: AdminConfig::default(),
            metrics: MetricsConfig::default(),
            jobs: JobLimits::default(),
            face_crop: FunctionConfig {
                batch_size: Some(DEFAULT_CROP_BATCH_SIZE),
                batch_window: Some(DEFAULT_BATCH_WINDOW),
                ..FunctionConfig::named("face-crop")
            },
            // Each net reads the chip of its input size (age 64, gender 32).
            models: [("age", DEFAULT_AGE_CHIP), ("gender", DEFAULT_GENDER_CHIP)]
                .into_iter()
                .map(|(name, chip)| {
                    let mut model = FunctionConfig::named(name);
                    model.batch_size = Some(DEFAULT_BATCH_SIZE);
                    model.batch_window = Some(DEFAULT_BATCH_WINDOW);
                    model.chip_size = Some(chip);
                    (name.to_owned(), model)
                })
                .collect(),
        }
    }
}
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}
impl Config {
    /// Defaults, then `file` if given, then `LAMBDEX__…` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, None)
    }

    /// [`Config::load`] with the environment given as pairs (`None`: the
    /// process's), so tests need not touch the process's variables.
    pub fn load_with(
        file: Option<&Path>,
        environment: Option<BTreeMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        // The defaults as the first layer, so a file or a variable that sets
        // one field of `models.age` keeps the rest, and the other models.
        let defaults = config::Config::try_from(&Self::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let mut env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .list_separator(",")
            .try_parsing(true);
        for key in ENV_LISTS {
            env = env.with_list_parse_key(key);
        }
        if let Some(environment) = environment {
            env = env.source(Some(environment.into_iter().collect()));
        }
        let merged = builder.add_source(env).build()?;
        let mut config: Self = merged.try_deserialize()?;
        config.models.retain(|_, model| model.enabled);
        for (name, model) in &mut config.models {
            if model.function.is_empty() {
                model.function.clone_from(name);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot: each section its own settings,
    /// then what spans sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.models.is_empty() {
            return Err(ConfigError::invalid(
                "no models: add at least one [models.NAME]",
            ));
        }
        if !self.face_crop.enabled {
            return Err(ConfigError::invalid(
                "face_crop.enabled: every job needs the face-crop function",
            ));
        }
        if self.face_crop.crop_batch_size() > MAX_IMAGES_PER_REQUEST {
            return Err(ConfigError::invalid(format!(
                "face_crop.batch_size is over {MAX_IMAGES_PER_REQUEST}, the most images the function takes in one request"
            )));
        }
        self.face_crop.validate("face_crop")?;
        for (name, model) in &self.models {
            model.validate(&format!("models.{name}"))?;
        }
        self.fetch.validate()?;
        self.image.validate()?;
        self.retry.validate()?;
        self.breaker.validate()?;
        self.pipeline.validate()?;
        self.queue.validate()?;
        self.elasticsearch.validate()?;
        self.metrics.validate()?;
        jobs::validate(&self.jobs)?;
        self.admin.validate()
    }

    /// The effective settings as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the settings are plain TOML values")
    }

    /// The settings to show a person: as [`Self::to_toml`], with the
    /// passwords in the broker's and the cluster's URLs masked (the
    /// Elasticsearch password and API key are never serialized at all).
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.queue.url = shown.queue.url.redacted().into();
        shown.elasticsearch.url = shown.elasticsearch.url.redacted().into();
        shown.to_toml()
    }
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn the_shown_settings_hide_the_brokers_password() {
        let config = Config::load_with(
            None,
            env(&[(
                "LAMBDEX__QUEUE__URL",
                "amqps://worker:s3cret@mq.example.com/prod",
            )]),
        )
        .expect("valid");
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("amqps://worker:REDACTED@mq.example.com/prod"),
            "{shown}"
        );
    }

    #[test]
    fn no_secret_in_the_settings_is_ever_shown() {
        let config = Config::load_with(
            None,
            env(&[
                (
                    "LAMBDEX__QUEUE__URL",
                    "amqps://worker:s3cret-mq@mq.example.com/prod",
                ),
                (
                    "LAMBDEX__ELASTICSEARCH__URL",
                    "https://elastic:s3cret-url@es.example.com:9200",
                ),
                ("LAMBDEX__ELASTICSEARCH__USERNAME", "lambdex"),
                ("LAMBDEX__ELASTICSEARCH__PASSWORD", "s3cret-password"),
                ("LAMBDEX__ELASTICSEARCH__API_KEY", "s3cret-key"),
            ]),
        )
        .expect("valid");
        assert_eq!(
            config.elasticsearch.password.as_ref().map(Secret::expose),
            Some("s3cret-password")
        );
        assert_eq!(
            config.queue.url.expose(),
            "amqps://worker:s3cret-mq@mq.example.com/prod"
        );
        // Every way the settings are shown: Debug (logs, `{:?}` of any
        // struct holding them), pretty Debug, the shown TOML.
        for shown in [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{:?}", config.queue),
            format!("{:?}", config.elasticsearch),
            config.to_redacted_toml(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert!(format!("{config:?}").contains("amqps://worker:REDACTED@mq.example.com/prod"));
        // A client error names the URL without its password.
        let mut bad = config.elasticsearch.clone();
        bad.url = "http://elastic:s3cret@[not-a-host".into();
        let error = crate::sink::client(&bad).expect_err("not a URL");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn defaults_are_valid_and_print_as_toml_that_loads_back() {
        let defaults = Config::load_with(None, env(&[])).expect("defaults load");
        assert_eq!(defaults, Config::default());
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("lambdex.toml");
        std::fs::write(&path, defaults.to_toml()).expect("written");
        assert_eq!(
            Config::load_with(Some(&path), env(&[])).expect("loads"),
            defaults
        );
    }

    #[test]
    fn the_file_then_the_environment_override_the_defaults() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("lambdex.toml");
        std::fs::write(
            &path,
            r#"
[retry]
max_attempts = 7
min_delay = "50ms"

[models.age]
function = "age-avx2"
fallback = "age-baseline"
batch_size = 16
"#,
        )
        .expect("written");
        let config = Config::load_with(
            Some(&path),
            env(&[
                ("LAMBDEX__RETRY__MAX_ATTEMPTS", "9"),
                ("LAMBDEX__MODELS__AGE__BATCH_SIZE", "8"),
                ("LAMBDEX__FETCH__ALLOW", "127.0.0.0/8,::1/128"),
                ("LAMBDEX__FETCH__TIMEOUT", "2s"),
                ("LAMBDEX_MODELS_DIR", "/not/a/setting/of/ours"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.retry.max_attempts, 9);
        assert_eq!(config.retry.min_delay, Duration::from_millis(50));
        let age = &config.models["age"];
        assert_eq!(age.function, "age-avx2");
        assert_eq!(age.fallback.as_deref(), Some("age-baseline"));
        assert_eq!(age.batch_size(), 8);
        assert_eq!(config.fetch.timeout, Duration::from_secs(2));
        assert_eq!(config.fetch.allow.len(), 2);
        // What was not set keeps its default.
        assert_eq!(age.concurrency, FunctionConfig::default().concurrency);
        assert_eq!(config.models["gender"].function, "gender");
    }

    #[test]
    fn a_model_can_be_added_or_dropped() {
        let config = Config::load_with(
            None,
            env(&[
                ("LAMBDEX__MODELS__GENDER__ENABLED", "false"),
                ("LAMBDEX__MODELS__EMOTION__BATCH_SIZE", "4"),
            ]),
        )
        .expect("loads");
        let names: Vec<&str> = config.models.keys().map(String::as_str).collect();
        assert_eq!(names, ["age", "emotion"]);
        assert_eq!(config.models["emotion"].function, "emotion");
    }

    #[test]
    fn admin_tokens_are_read_from_the_file_and_checked() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("lambdex.toml");
        let digest = "ab".repeat(32);
        let load = |text: String| {
            std::fs::write(&path, text).expect("written");
            Config::load_with(Some(&path), env(&[]))
        };
        let config = load(format!(
            "[[admin.tokens]]\nname = \"support\"\nsha256 = \"{digest}\"\nscopes = [\"predict\", \"read\"]\n"
        ))
        .expect("loads");
        assert_eq!(
            config.admin.tokens,
            [AdminToken {
                name: "support".to_owned(),
                sha256: digest.clone(),
                scopes: Some([Scope::Predict, Scope::Read].into()),
            }]
        );
        assert!(config.admin.tokens[0].allows(Scope::Read));
        assert!(!config.admin.tokens[0].allows(Scope::Store));

        let error = load(
            "[[admin.tokens]]\nname = \"support\"\nsha256 = \"the-token-itself\"\nscopes = []\n"
                .to_owned(),
        )
        .expect_err("not a digest");
        assert!(error.to_string().contains("64 hex digits"), "{error}");

        // Least privilege: a token that names nothing may do nothing, and
        // one that forgets the list is refused rather than let do all.
        let error = load(format!(
            "[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{digest}\"\n"
        ))
        .expect_err("no scopes");
        assert!(
            error
                .to_string()
                .contains("\"ops\": scopes is missing: list what the token may do, from predict, store, submit, read, replay"),
            "{error}"
        );
        let error = load(format!(
            "[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{digest}\"\nscopes = [\"admin\"]\n"
        ))
        .expect_err("no such scope");
        assert!(error.to_string().contains("admin"), "{error}");
        let twice =
            format!("[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{digest}\"\nscopes = []\n");
        let error = load(format!("{twice}{twice}")).expect_err("one name twice");
        assert!(
            error.to_string().contains("two tokens are named \"ops\""),
            "{error}"
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_setting_named() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("lambdex.toml");
        std::fs::write(&path, "[retry]\nmax_atempts = 3\n").expect("written");
        let error = Config::load_with(Some(&path), env(&[])).expect_err("a typo");
        assert!(error.to_string().contains("max_atempts"), "{error}");

        let error = Config::load_with(None, env(&[("LAMBDEX__MODELS__AGE__CONCURRENCY", "0")]))
            .expect_err("zero concurrency");
        assert!(
            error.to_string().contains("models.age.concurrency"),
            "{error}"
        );

        let error = Config::load_with(None, env(&[("LAMBDEX__FETCH__TIMEOUT", "soon")]))
            .expect_err("not a duration");
        assert!(error.to_string().contains("timeout"), "{error}");

        let error = Config::load_with(None, env(&[("LAMBDEX__QUEUE__CONFIRM_TIMEOUT", "0s")]))
            .expect_err("a confirm that may never be waited for");
        assert!(
            error.to_string().contains("queue.confirm_timeout"),
            "{error}"
        );

        let error = Config::load_with(None, env(&[("LAMBDEX__FACE_CROP__BATCH_SIZE", "17")]))
            .expect_err("more images than the function takes");
        assert!(
            error
                .to_string()
                .contains("face_crop.batch_size is over 16"),
            "{error}"
        );
    }

    #[test]
    fn face_crop_shares_calls_by_default_and_can_send_each_image_alone() {
        let config = Config::load_with(None, env(&[])).expect("the defaults load");
        assert_eq!(config.face_crop.crop_batch_size(), DEFAULT_CROP_BATCH_SIZE);
        assert_eq!(config.face_crop.batch_window, Some(DEFAULT_BATCH_WINDOW));
        let config = Config::load_with(
            None,
            env(&[
                ("LAMBDEX__FACE_CROP__BATCH_SIZE", "1"),
                ("LAMBDEX__FACE_CROP__BATCH_WINDOW", "0s"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.face_crop.crop_batch_size(), 1);
        assert_eq!(config.face_crop.batch_window, Some(Duration::ZERO));
    }
}
