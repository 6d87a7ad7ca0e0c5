//! The coordinator's settings: one TOML file, overridden by environment
//! variables, every limit and timeout a named field with a default.
//!
//! An override is `LAMBDEX__` then the path in upper case, parts joined by
//! `__`: `LAMBDEX__RETRY__MAX_ATTEMPTS=6`, `LAMBDEX__MODELS__AGE__BATCH_SIZE=8`,
//! `LAMBDEX__FETCH__ALLOW=127.0.0.0/8,::1/128` (lists split on commas).
//! (Double underscores keep them apart from the functions' own
//! `LAMBDEX_…` variables.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "LAMBDEX";
/// Separator of the parts of an override's path.
pub const ENV_SEPARATOR: &str = "__";
/// Settings whose override is a comma-separated list.
const ENV_LISTS: [&str; 1] = ["fetch.allow"];
/// What a shown password reads as.
const REDACTED: &str = "REDACTED";

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
            face_crop: FunctionConfig {
                batch_size: Some(DEFAULT_CROP_BATCH_SIZE),
                batch_window: Some(DEFAULT_BATCH_WINDOW),
                ..FunctionConfig::named("face-crop")
            },
            models: ["age", "gender"]
                .into_iter()
                .map(|name| {
                    let mut model = FunctionConfig::named(name);
                    model.batch_size = Some(DEFAULT_BATCH_SIZE);
                    model.batch_window = Some(DEFAULT_BATCH_WINDOW);
                    (name.to_owned(), model)
                })
                .collect(),
        }
    }
}

/// How the Lambda client is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LambdaConfig {
    /// The AWS region (unset: the standard chain's — `AWS_REGION`, the
    /// profile…).
    pub region: Option<String>,
    /// Another Invoke API endpoint, e.g. `http://127.0.0.1:9001` for
    /// `lambdex local-lambda` (unset: AWS's).
    pub endpoint_url: Option<String>,
    pub credentials: Credentials,
}

impl Default for LambdaConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            credentials: Credentials::Chain,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credentials {
    /// The AWS standard chain: environment, profile, web identity,
    /// container and instance roles.
    Chain,
    /// Fixed dummy credentials, for the local Lambda (which checks none).
    Local,
}

/// Downloading images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// For the whole download, body included, per attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Larger bodies are abandoned as soon as the cap is passed.
    pub max_bytes: u64,
    pub max_redirects: usize,
    /// Networks the SSRF guard lets through although they are private,
    /// loopback… (e.g. `127.0.0.0/8` for a local image server). Empty by
    /// default: only public addresses are fetched.
    pub allow: Vec<IpNet>,
    /// Attempts per download (transient errors, 5xx and 429 only).
    pub max_attempts: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_bytes: 50 * 1024 * 1024,
            max_redirects: 5,
            allow: Vec::new(),
            max_attempts: 3,
        }
    }
}

/// What is sent to the face-crop function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Images whose width × height is over this are refused before any
    /// pixel is decoded (decompression bombs).
    pub max_pixels: u64,
    /// Larger images are scaled down and re-encoded as JPEG so that the
    /// request, in base64, fits Lambda's 6 MB synchronous payload.
    pub max_request_bytes: usize,
    /// The re-encoded JPEG's quality.
    pub jpeg_quality: u8,
    /// Scaling down never goes below this long side, so faces stay large
    /// enough to detect; an image that still does not fit is refused.
    pub min_long_side: u32,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            max_pixels: lambdex_lambdas::decode::DEFAULT_MAX_PIXELS,
            max_request_bytes: 4_500_000,
            jpeg_quality: 90,
            min_long_side: 1024,
        }
    }
}

/// Retries of every remote call: exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per function call, the first included.
    pub max_attempts: usize,
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Duration,
    /// The retry budget: retries may add this fraction of a function's
    /// recent calls…
    pub budget_ratio: f32,
    /// …plus this many retries a second, whatever the traffic.
    pub budget_min_per_second: u32,
    /// The window the budget counts calls over.
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

/// The circuit breaker of each function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open it.
    pub failure_threshold: u32,
    /// How long it stays open before one probe call may try again.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// Jobs as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Jobs processed at once; more wait their turn.
    pub max_jobs_in_flight: usize,
    /// When a model fails for good: `false` fails the job, `true` stores
    /// the other models' results with status `partial`.
    pub partial_results: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_jobs_in_flight: 1000,
            partial_results: false,
        }
    }
}

/// Prices for the estimated cost of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostConfig {
    /// USD per GB-second of billed duration (AWS x86 list price, first tier).
    pub usd_per_gb_second: f64,
    /// USD per million requests.
    pub usd_per_million_requests: f64,
}

impl Default for CostConfig {
    fn default() -> Self {
        Self {
            usd_per_gb_second: 0.000_016_666_7,
            usd_per_million_requests: 0.20,
        }
    }
}

/// RabbitMQ: where the jobs come from, and what the worker does with a
/// job that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// The broker (`amqp://` or `amqps://`, user and password included).
    pub url: String,
    /// Prefix of every exchange and queue name (see [`crate::topology`]).
    pub prefix: String,
    /// Quorum queues for the jobs and the dead letters (replicated,
    /// poison-message safe); `false` declares classic durable queues, for a
    /// broker without quorum queues.
    pub quorum: bool,
    /// Deliveries a worker holds unacknowledged per lane (basic.qos): its
    /// jobs in flight, and the bound on its memory.
    pub prefetch: u16,
    /// Trips a job whose failure may pass makes through the retry queues
    /// before it is dead-lettered.
    pub requeue_attempts: u32,
    /// The delay before the first trip…
    #[serde(with = "humantime_serde")]
    pub requeue_first_delay: Duration,
    /// …multiplied by this for each later one.
    pub requeue_multiplier: u32,
    /// Reconnection backoff after the connection or a channel is lost.
    #[serde(with = "humantime_serde")]
    pub reconnect_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// On SIGTERM/SIGINT, how long in-flight jobs may take to finish; the
    /// rest are left unacknowledged, so the broker hands them to another
    /// worker.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// Publishes `lambdex enqueue` keeps awaiting confirmation at once.
    pub publish_window: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            prefix: "lambdex".to_owned(),
            quorum: true,
            prefetch: 64,
            requeue_attempts: 3,
            requeue_first_delay: Duration::from_secs(10),
            requeue_multiplier: 6,
            reconnect_min_delay: Duration::from_millis(500),
            reconnect_max_delay: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(30),
            publish_window: 1000,
        }
    }
}

impl QueueConfig {
    /// Delays between attempts at reaching a service that is down.
    pub fn reconnect_delays(&self) -> impl Iterator<Item = Duration> + use<> {
        use backon::BackoffBuilder as _;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.reconnect_min_delay)
            .with_max_delay(self.reconnect_max_delay)
            .without_max_times()
            .with_jitter()
            .build()
    }

    /// The delay of each trip through the retry queues, in order.
    pub fn requeue_delays(&self) -> Vec<Duration> {
        (0..self.requeue_attempts)
            .map(|trip| {
                self.requeue_first_delay
                    .saturating_mul(self.requeue_multiplier.saturating_pow(trip))
            })
            .collect()
    }
}

/// Elasticsearch: where the documents go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// The cluster's URL (one node or a load balancer in front of it).
    pub url: String,
    /// The index (or write alias) documents go to; the index template
    /// lambdex installs matches this name.
    pub index: String,
    /// Install the index template at start (needs the `manage_index_templates`
    /// privilege; turn off when the template is deployed from `infra/`).
    pub install_template: bool,
    /// Basic authentication, when set (best from `LAMBDEX__ELASTICSEARCH__PASSWORD`).
    pub username: Option<String>,
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// An encoded API key (the `encoded` value Elasticsearch returns),
    /// instead of a user and password.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Timeout of one request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A bulk request is sent when it holds this many documents…
    pub bulk_max_docs: usize,
    /// …or this many bytes of documents…
    pub bulk_max_bytes: usize,
    /// …or when its first document has waited this long. Short: a worker
    /// holds only `queue.prefetch` jobs, so every millisecond a document
    /// waits here is taken from its throughput.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Bulk requests in flight at once (a cluster indexes them in
    /// parallel; more than a few per worker only queues on its side).
    pub bulk_concurrency: usize,
    /// Backoff between attempts at a bulk request or at the documents it
    /// could not take yet (429, 5xx, the cluster down); it is retried until
    /// it succeeds: no job is acknowledged before its document is stored.
    #[serde(with = "humantime_serde")]
    pub retry_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9200".to_owned(),
            index: "lambdex-docs".to_owned(),
            install_template: true,
            username: None,
            password: None,
            api_key: None,
            request_timeout: Duration::from_secs(30),
            bulk_max_docs: 500,
            bulk_max_bytes: 5 * 1024 * 1024,
            flush_interval: Duration::from_millis(50),
            bulk_concurrency: 4,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(30),
        }
    }
}

/// `lambdex admin`: the HTTP trigger for ad-hoc requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Who may call `/v1`: each a name (for logs and the rate limit) and
    /// the SHA-256 of the token, in hex (`lambdex admin hash-token`). The
    /// server refuses to start without one.
    pub tokens: Vec<AdminToken>,
    /// Requests per second per token…
    pub rate_per_token: NonZeroU32,
    /// …with bursts of up to this many.
    pub burst_per_token: NonZeroU32,
    /// Largest request body: an uploaded image, or a list of jobs.
    pub max_body_bytes: usize,
    /// Most URLs one `POST /v1/jobs` takes.
    pub max_urls_per_request: usize,
    /// How long `POST /v1/predictions` waits for the pipeline before 504.
    #[serde(with = "humantime_serde")]
    pub prediction_timeout: Duration,
    /// How long each `/readyz` check may take.
    #[serde(with = "humantime_serde")]
    pub readiness_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
            rate_per_token: NonZeroU32::new(10).expect("not zero"),
            burst_per_token: NonZeroU32::new(20).expect("not zero"),
            max_body_bytes: 20 * 1024 * 1024,
            max_urls_per_request: 1000,
            prediction_timeout: Duration::from_secs(60),
            readiness_timeout: Duration::from_secs(5),
        }
    }
}

/// One admin token, stored hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
}

/// `/metrics` of `lambdex worker` (the admin trigger serves its own on
/// `admin.listen`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the worker serves `/metrics` and `/healthz` (unset: not
    /// served; each worker on a host needs its own port).
    pub listen: Option<SocketAddr>,
}

/// Crops per classify call by default: one call for most images, and well
/// under Lambda's 6 MB payload (a 96 px JPEG crop is a few KB).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Images per face-crop call by default. A call's images run one after
/// another, so it lasts about four images' time (`lambdex bench power`
/// prints it); in return the request fee, the SDK's work per call and the
/// function's fixed cost are shared four ways. At most
/// [`lambdex_lambdas::handler::MAX_IMAGES_PER_REQUEST`].
pub const DEFAULT_CROP_BATCH_SIZE: usize = 4;

/// How long an image waits for other images, and a model's crops for
/// crops of other images, to share a call by default (see
/// [`crate::batcher`]): short beside a job's round trips, long enough for a
/// busy queue to fill batches.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(20);

/// The most request bytes a shared call packs (a piece larger than this
/// still goes, alone): Lambda's 6 MiB synchronous payload less room for
/// the JSON around the base64.
pub const BATCH_MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024 - 64 * 1024;

/// One function lambdex calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionConfig {
    /// `false` drops a model (e.g. one of the defaults).
    pub enabled: bool,
    /// The Lambda function's name or ARN.
    pub function: String,
    /// A version or alias (unset: `$LATEST`).
    pub qualifier: Option<String>,
    /// Called instead while this function's breaker is open, e.g. a build
    /// for a baseline CPU (`name` or `name:qualifier`).
    pub fallback: Option<String>,
    /// Invocations a second at most (unset: no rate limit).
    pub rate_per_second: Option<NonZeroU32>,
    /// Invocations in flight at most.
    pub concurrency: usize,
    /// Per attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Crops per call for a classifier model; images per call for
    /// face_crop.
    pub batch_size: Option<usize>,
    /// How long an image (face_crop) or an image's crops (a model) wait for
    /// other images' to share a call; `0s` sends each alone.
    #[serde(with = "humantime_serde")]
    pub batch_window: Option<Duration>,
}

impl FunctionConfig {
    pub fn named(function: &str) -> Self {
        Self {
            function: function.to_owned(),
            ..Self::default()
        }
    }

    /// Crops per call (a classifier model).
    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)
    }

    /// Images per call (face_crop).
    pub fn crop_batch_size(&self) -> usize {
        self.batch_size.unwrap_or(DEFAULT_CROP_BATCH_SIZE)
    }

    /// How long an image, or a model's crops, wait to share a call.
    pub fn batch_window(&self) -> Duration {
        self.batch_window.unwrap_or(DEFAULT_BATCH_WINDOW)
    }
}

impl Default for FunctionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            function: String::new(),
            qualifier: None,
            fallback: None,
            rate_per_second: None,
            concurrency: 1000,
            timeout: Duration::from_secs(30),
            batch_size: None,
            batch_window: None,
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

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.models.is_empty() {
            return invalid("no models: add at least one [models.NAME]".to_owned());
        }
        if !self.face_crop.enabled {
            return invalid("face_crop.enabled: every job needs the face-crop function".to_owned());
        }
        let max_images = lambdex_lambdas::handler::MAX_IMAGES_PER_REQUEST;
        if self.face_crop.crop_batch_size() > max_images {
            return invalid(format!(
                "face_crop.batch_size is over {max_images}, the most images the function takes in one request"
            ));
        }
        let functions = std::iter::once(("face_crop".to_owned(), &self.face_crop)).chain(
            self.models
                .iter()
                .map(|(name, model)| (format!("models.{name}"), model)),
        );
        for (path, function) in functions {
            if function.function.trim().is_empty() {
                return invalid(format!("{path}.function is empty"));
            }
            if function.concurrency == 0 {
                return invalid(format!("{path}.concurrency must be at least 1"));
            }
            if function.timeout.is_zero() {
                return invalid(format!("{path}.timeout must be more than 0"));
            }
            if function.batch_size == Some(0) {
                return invalid(format!("{path}.batch_size must be at least 1"));
            }
        }
        if self.retry.max_attempts == 0 || self.fetch.max_attempts == 0 {
            return invalid("retry.max_attempts and fetch.max_attempts must be at least 1".into());
        }
        if self.retry.min_delay > self.retry.max_delay {
            return invalid("retry.min_delay is over retry.max_delay".into());
        }
        if !(0.0..=1000.0).contains(&self.retry.budget_ratio) {
            return invalid("retry.budget_ratio must be between 0 and 1000".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.retry.budget_window) {
            return invalid("retry.budget_window must be between 1s and 60s".into());
        }
        if self.breaker.failure_threshold == 0 {
            return invalid("breaker.failure_threshold must be at least 1".into());
        }
        if self.pipeline.max_jobs_in_flight == 0 {
            return invalid("pipeline.max_jobs_in_flight must be at least 1".into());
        }
        if !(1..=100).contains(&self.image.jpeg_quality) {
            return invalid("image.jpeg_quality must be between 1 and 100".into());
        }
        // base64 turns 3 bytes into 4; Lambda takes 6 MB, JSON included.
        if self.image.max_request_bytes > 6 * 1024 * 1024 / 4 * 3 {
            return invalid(
                "image.max_request_bytes is over what fits Lambda's 6 MB payload in base64 (4,718,592)"
                    .into(),
            );
        }
        if self.queue.prefetch == 0 || self.queue.publish_window == 0 {
            return invalid("queue.prefetch and queue.publish_window must be at least 1".into());
        }
        if self.queue.prefix.trim().is_empty() || self.elasticsearch.index.trim().is_empty() {
            return invalid("queue.prefix and elasticsearch.index must not be empty".into());
        }
        if self.queue.requeue_attempts > 0 && self.queue.requeue_first_delay.is_zero() {
            return invalid("queue.requeue_first_delay must be more than 0".into());
        }
        if self.queue.reconnect_min_delay > self.queue.reconnect_max_delay
            || self.elasticsearch.retry_min_delay > self.elasticsearch.retry_max_delay
        {
            return invalid(
                "queue.reconnect_min_delay / elasticsearch.retry_min_delay is over its max_delay"
                    .into(),
            );
        }
        if self.elasticsearch.bulk_max_docs == 0
            || self.elasticsearch.bulk_max_bytes == 0
            || self.elasticsearch.bulk_concurrency == 0
        {
            return invalid(
                "elasticsearch.bulk_max_docs, bulk_max_bytes and bulk_concurrency must be at least 1"
                    .into(),
            );
        }
        if self.elasticsearch.password.is_some() && self.elasticsearch.username.is_none() {
            return invalid("elasticsearch.password is set without elasticsearch.username".into());
        }
        for token in &self.admin.tokens {
            if token.name.trim().is_empty() {
                return invalid("admin.tokens: a token has an empty name".into());
            }
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(format!(
                    "admin.tokens {:?}: sha256 must be 64 hex digits (`lambdex admin hash-token`)",
                    token.name
                ));
            }
        }
        if self.admin.max_body_bytes == 0 || self.admin.max_urls_per_request == 0 {
            return invalid(
                "admin.max_body_bytes and admin.max_urls_per_request must be at least 1".into(),
            );
        }
        if self.fetch.timeout.is_zero() || self.fetch.connect_timeout.is_zero() {
            return invalid("fetch.timeout and fetch.connect_timeout must be more than 0".into());
        }
        Ok(())
    }

    /// The effective settings as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the settings are plain TOML values")
    }

    /// The settings to show a person: as [`Self::to_toml`], with the
    /// broker's password masked (the Elasticsearch secrets are never
    /// serialized at all).
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if let Ok(mut url) = url::Url::parse(&shown.queue.url)
            && url.password().is_some()
            && url.set_password(Some(REDACTED)).is_ok()
        {
            shown.queue.url = url.to_string();
        }
        shown.to_toml()
    }
}

#[cfg(test)]
mod tests {
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
        std::fs::write(
            &path,
            format!("[[admin.tokens]]\nname = \"support\"\nsha256 = \"{digest}\"\n"),
        )
        .expect("written");
        let config = Config::load_with(Some(&path), env(&[])).expect("loads");
        assert_eq!(
            config.admin.tokens,
            [AdminToken {
                name: "support".to_owned(),
                sha256: digest
            }]
        );
        std::fs::write(
            &path,
            "[[admin.tokens]]\nname = \"support\"\nsha256 = \"the-token-itself\"\n",
        )
        .expect("written");
        let error = Config::load_with(Some(&path), env(&[])).expect_err("not a digest");
        assert!(error.to_string().contains("64 hex digits"), "{error}");
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
