//! The local Lambda's functions and limits: read from a TOML file, or the
//! project's own three functions when there is none.
//!
//! ```toml
//! account_concurrency = 1000   # AWS's default account limit
//! limit_cpu = true             # memory/1769 of a core per instance, where cgroups allow
//!
//! [functions.face-crop]
//! command = ["../target/release/face-crop"]  # relative to this file; or builtin = "face-crop"
//! environment = { LAMBDEX_MAX_FACES = "32" }
//! memory_mb = 1769
//! timeout_s = 30
//! reserved_concurrency = 4
//! aliases = { live = "1" }
//!
//! [functions.face-crop.versions.1]  # a published version: overrides of $LATEST
//! memory_mb = 1024
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::in_process::{Builtin, InProcessFunction};
use lambdex_functions::MODEL_ENV;
use lambdex_functions::classify::Task;
use lambdex_functions::kernels::simd::{self, TRACT_ISA_ENV};
use lambdex_functions::models::MODELS_DIR_ENV;

/// The unqualified version every function has.
pub const LATEST: &str = "$LATEST";
/// AWS's default concurrency limit of an account (a region).
pub const DEFAULT_ACCOUNT_CONCURRENCY: u32 = 1000;
/// AWS's default function memory size.
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// The memory size at which Lambda gives a function one full vCPU.
pub const MB_PER_VCPU: u32 = 1769;
/// AWS's default function timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an instance's init phase may take (AWS: 10 s).
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MIN_MEMORY_MB: u32 = 128;
pub const MAX_MEMORY_MB: u32 = 10_240;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(900);
/// The region in ARNs and `AWS_REGION`.
pub const DEFAULT_REGION: &str = "us-east-1";

/// What runs a function's code.
#[derive(Debug, Clone)]
pub enum Handler {
    /// A `lambda_runtime` binary (or any custom runtime), one process per
    /// instance, talking to its own Runtime API.
    Command { program: PathBuf, args: Vec<String> },
    /// A handler inside this process: no Runtime API, no separate binary.
    InProcess(Arc<dyn InProcessFunction>),
}

/// One version of a function: `$LATEST` or a published one.
#[derive(Debug, Clone)]
pub struct VersionSpec {
    pub handler: Handler,
    pub environment: BTreeMap<String, String>,
    pub memory_mb: u32,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Concurrent invocations this function may have; beyond it, 429.
    /// `None`: it shares the account's unreserved concurrency.
    pub reserved_concurrency: Option<u32>,
    pub latest: VersionSpec,
    /// Published versions by number.
    pub versions: BTreeMap<String, VersionSpec>,
    /// Alias name → version number.
    pub aliases: BTreeMap<String, String>,
}

impl FunctionSpec {
    /// A function with only `$LATEST`.
    pub fn new(handler: Handler) -> Self {
        Self {
            reserved_concurrency: None,
            latest: VersionSpec {
                handler,
                environment: BTreeMap::new(),
                memory_mb: DEFAULT_MEMORY_MB,
                timeout: DEFAULT_TIMEOUT,
            },
            versions: BTreeMap::new(),
            aliases: BTreeMap::new(),
        }
    }

    /// The version a qualifier names (none, `$LATEST`, a number or an
    /// alias), with that version's name.
    pub fn resolve(&self, qualifier: Option<&str>) -> Option<(&str, &VersionSpec)> {
        match qualifier {
            None | Some(LATEST) => Some((LATEST, &self.latest)),
            Some(name) => {
                let version = self.aliases.get(name).map_or(name, String::as_str);
                self.versions
                    .get_key_value(version)
                    .map(|(name, spec)| (name.as_str(), spec))
            }
        }
    }
}

/// Everything the local Lambda serves.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub functions: BTreeMap<String, FunctionSpec>,
    /// Concurrent invocations across all functions; beyond it, 429.
    pub account_concurrency: u32,
    /// Limit each process instance's CPU to memory/1769 of a core.
    pub limit_cpu: bool,
    pub init_timeout: Duration,
    pub region: String,
}

impl LocalConfig {
    /// Whether any function runs as a process (only those can be CPU-limited).
    pub fn has_processes(&self) -> bool {
        self.functions.values().any(|f| {
            std::iter::once(&f.latest)
                .chain(f.versions.values())
                .any(|v| matches!(v.handler, Handler::Command { .. }))
        })
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            functions: BTreeMap::new(),
            account_concurrency: DEFAULT_ACCOUNT_CONCURRENCY,
            limit_cpu: true,
            init_timeout: DEFAULT_INIT_TIMEOUT,
            region: DEFAULT_REGION.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("function {function}: {reason}")]
    Invalid { function: String, reason: String },
    #[error("{0}")]
    Setting(String),
}

/// The project's functions as the local Lambda serves them by default.
#[derive(Debug, Clone)]
pub struct ProjectFunctions {
    /// How each function runs: `None` in-process; otherwise this program,
    /// given `function face-crop|classify` (the `lambdex` binary itself).
    pub program: Option<PathBuf>,
    pub models_dir: PathBuf,
    /// Passed to every function (e.g. [`lambdex_environment`]).
    pub environment: BTreeMap<String, String>,
    pub memory_mb: u32,
    pub timeout: Duration,
}

/// This process's `LAMBDEX_*` variables: the functions' settings
/// (`LAMBDEX_MAX_FACES`, …), passed on to the project's functions, and
/// `TRACT_CPU_ISA`.
pub fn lambdex_environment() -> BTreeMap<String, String> {
    let mut environment: BTreeMap<String, String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("LAMBDEX_") || name == TRACT_ISA_ENV)
        .collect();
    // A SIMD level capped with `LAMBDEX_SIMD` caps tract's own kernels too,
    // so that a function measured at AVX2 runs wholly at AVX2, as on a host
    // without AVX-512.
    if !environment.contains_key(TRACT_ISA_ENV)
        && let Some(isa) = simd::level().tract_isa()
    {
        environment.insert(TRACT_ISA_ENV.to_owned(), isa.to_owned());
    }
    environment
}

/// Memory of the project's functions locally: one full vCPU.
pub const PROJECT_MEMORY_MB: u32 = MB_PER_VCPU;
/// Timeout of the project's functions locally.
pub const PROJECT_TIMEOUT: Duration = Duration::from_secs(30);

impl LocalConfig {
    /// `face-crop`, `age` and `gender`, run as `program` (or in-process).
    pub fn project(functions: &ProjectFunctions) -> Self {
        let models_dir = functions.models_dir.display().to_string();
        let mut config = Self::default();
        for (name, builtin) in [
            ("face-crop", Builtin::FaceCrop),
            ("age", Builtin::Classifier(Task::Age)),
            ("gender", Builtin::Classifier(Task::Gender)),
        ] {
            let mut environment = functions.environment.clone();
            environment.insert(MODELS_DIR_ENV.to_owned(), models_dir.clone());
            let handler = match &functions.program {
                None => Handler::InProcess(Arc::new(builtin)),
                Some(program) => {
                    let args = match builtin {
                        Builtin::FaceCrop => vec!["function".into(), "face-crop".into()],
                        Builtin::Classifier(task) => {
                            environment.insert(MODEL_ENV.to_owned(), task.name().to_owned());
                            vec!["function".into(), "classify".into()]
                        }
                    };
                    Handler::Command {
                        program: program.clone(),
                        args,
                    }
                }
            };
            let mut spec = FunctionSpec::new(handler);
            spec.latest.environment = environment;
            spec.latest.memory_mb = functions.memory_mb;
            spec.latest.timeout = functions.timeout;
            config.functions.insert(name.to_owned(), spec);
        }
        config
    }

    /// The project's functions with the local defaults ([`PROJECT_MEMORY_MB`],
    /// [`PROJECT_TIMEOUT`]) and this process's `LAMBDEX_*` settings.
    pub fn project_defaults(program: Option<PathBuf>, models_dir: PathBuf) -> Self {
        Self::project(&ProjectFunctions {
            program,
            models_dir,
            environment: lambdex_environment(),
            memory_mb: PROJECT_MEMORY_MB,
            timeout: PROJECT_TIMEOUT,
        })
    }

    /// Reads a TOML file (see the module docs).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map_err(|error| match error {
            FromTomlError::Parse(source) => ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            },
            FromTomlError::Invalid(error) => error,
        })
    }

    /// Parses TOML; relative command paths are taken from `base`.
    fn from_toml(text: &str, base: &Path) -> Result<Self, FromTomlError> {
        let file: FileConfig = toml::from_str(text).map_err(FromTomlError::Parse)?;
        let init_timeout = match file.init_timeout_s {
            None => DEFAULT_INIT_TIMEOUT,
            Some(seconds) if seconds > 0.0 && seconds <= MAX_TIMEOUT.as_secs_f64() => {
                Duration::from_secs_f64(seconds)
            }
            Some(seconds) => {
                return Err(FromTomlError::Invalid(ConfigError::Invalid {
                    function: "(all)".to_owned(),
                    reason: format!(
                        "init_timeout_s {seconds} is outside 0–{} s",
                        MAX_TIMEOUT.as_secs()
                    ),
                }));
            }
        };
        let mut config = Self {
            account_concurrency: file
                .account_concurrency
                .unwrap_or(DEFAULT_ACCOUNT_CONCURRENCY),
            limit_cpu: file.limit_cpu.unwrap_or(true),
            init_timeout,
            region: file.region.unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            functions: BTreeMap::new(),
        };
        for (name, function) in file.functions {
            let spec = function
                .into_spec(&name, base)
                .map_err(|reason| ConfigError::Invalid {
                    function: name.clone(),
                    reason,
                })
                .map_err(FromTomlError::Invalid)?;
            config.functions.insert(name, spec);
        }
        Ok(config)
    }
}

enum FromTomlError {
    Parse(toml::de::Error),
    Invalid(ConfigError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    account_concurrency: Option<u32>,
    limit_cpu: Option<bool>,
    init_timeout_s: Option<f64>,
    region: Option<String>,
    #[serde(default)]
    functions: BTreeMap<String, FunctionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionFile {
    reserved_concurrency: Option<u32>,
    // `$LATEST`'s settings (serde cannot flatten with deny_unknown_fields).
    command: Option<Vec<String>>,
    builtin: Option<String>,
    environment: Option<BTreeMap<String, String>>,
    memory_mb: Option<u32>,
    timeout_s: Option<f64>,
    #[serde(default)]
    versions: BTreeMap<String, VersionFile>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    command: Option<Vec<String>>,
    builtin: Option<String>,
    environment: Option<BTreeMap<String, String>>,
    memory_mb: Option<u32>,
    timeout_s: Option<f64>,
}

impl FunctionFile {
    fn into_spec(self, name: &str, base: &Path) -> Result<FunctionSpec, String> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("a function name is letters, digits, '-' and '_'".into());
        }
        let latest = VersionFile {
            command: self.command,
            builtin: self.builtin,
            environment: self.environment,
            memory_mb: self.memory_mb,
            timeout_s: self.timeout_s,
        };
        let latest_handler = handler(latest.command.clone(), latest.builtin.clone(), base)?.ok_or(
            "needs `command` (a program and its arguments) or `builtin` (face-crop, age or gender)",
        )?;
        let latest = latest.apply(
            &VersionSpec {
                handler: latest_handler,
                environment: BTreeMap::new(),
                memory_mb: DEFAULT_MEMORY_MB,
                timeout: DEFAULT_TIMEOUT,
            },
            base,
        )?;
        let mut versions = BTreeMap::new();
        for (number, version) in self.versions {
            if number.parse::<u32>().map_or(true, |n| n == 0) {
                return Err(format!(
                    "version {number:?}: published versions are numbered 1, 2, …"
                ));
            }
            let spec = version
                .apply(&latest, base)
                .map_err(|reason| format!("version {number}: {reason}"))?;
            versions.insert(number, spec);
        }
        for (alias, version) in &self.aliases {
            if alias == LATEST || alias.parse::<u64>().is_ok() {
                return Err(format!(
                    "alias {alias:?}: an alias name cannot be a version"
                ));
            }
            if !versions.contains_key(version) {
                return Err(format!(
                    "alias {alias} points at version {version}, which is not published here"
                ));
            }
        }
        Ok(FunctionSpec {
            reserved_concurrency: self.reserved_concurrency,
            latest,
            versions,
            aliases: self.aliases,
        })
    }
}

impl VersionFile {
    /// `base` with this file's settings on top.
    fn apply(self, base_spec: &VersionSpec, base: &Path) -> Result<VersionSpec, String> {
        let memory_mb = self.memory_mb.unwrap_or(base_spec.memory_mb);
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&memory_mb) {
            return Err(format!(
                "memory_mb {memory_mb} is outside Lambda's {MIN_MEMORY_MB}–{MAX_MEMORY_MB} MB"
            ));
        }
        let timeout = match self.timeout_s {
            None => base_spec.timeout,
            Some(seconds) if seconds > 0.0 && seconds <= MAX_TIMEOUT.as_secs_f64() => {
                Duration::from_secs_f64(seconds)
            }
            Some(seconds) => {
                return Err(format!(
                    "timeout_s {seconds} is outside Lambda's 0–{} s",
                    MAX_TIMEOUT.as_secs()
                ));
            }
        };
        let handler =
            handler(self.command, self.builtin, base)?.unwrap_or_else(|| base_spec.handler.clone());
        let mut environment = base_spec.environment.clone();
        environment.extend(self.environment.unwrap_or_default());
        Ok(VersionSpec {
            handler,
            environment,
            memory_mb,
            timeout,
        })
    }
}

fn handler(
    command: Option<Vec<String>>,
    builtin: Option<String>,
    base: &Path,
) -> Result<Option<Handler>, String> {
    match (command, builtin) {
        (Some(_), Some(_)) => Err("give `command` or `builtin`, not both".into()),
        (Some(command), None) => {
            let mut parts = command.into_iter();
            let program = parts.next().ok_or("`command` is empty")?;
            let program = Path::new(&program);
            // A bare name is looked up on PATH; a path is taken from the file.
            let program = if program.components().count() > 1 {
                base.join(program)
            } else {
                program.to_owned()
            };
            Ok(Some(Handler::Command {
                program,
                args: parts.collect(),
            }))
        }
        (None, Some(name)) => {
            let builtin: Builtin = name.parse()?;
            Ok(Some(Handler::InProcess(Arc::new(builtin))))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_simd_level_caps_tracts_kernels_in_the_functions_too() {
        // An explicit TRACT_CPU_ISA is passed on as it is.
        let explicit = std::env::var(TRACT_ISA_ENV).ok();
        for level in simd::Level::available() {
            let environment = simd::with_level(level, lambdex_environment);
            let expected = explicit
                .clone()
                .or_else(|| level.tract_isa().map(str::to_owned));
            assert_eq!(environment.get(TRACT_ISA_ENV), expected.as_ref(), "{level}");
        }
    }

    fn parse(text: &str) -> Result<LocalConfig, String> {
        LocalConfig::from_toml(text, Path::new("/etc/lambdex")).map_err(|error| match error {
            FromTomlError::Parse(error) => error.to_string(),
            FromTomlError::Invalid(error) => error.to_string(),
        })
    }

    #[test]
    fn a_full_file_resolves_versions_and_aliases() {
        let config = parse(
            r#"
            account_concurrency = 50
            [functions.echo]
            command = ["bin/echo", "--loud"]
            environment = { A = "1" }
            memory_mb = 512
            timeout_s = 2.5
            reserved_concurrency = 3
            aliases = { live = "2" }
            [functions.echo.versions.1]
            [functions.echo.versions.2]
            memory_mb = 1024
            environment = { B = "2" }
            "#,
        )
        .expect("valid");
        assert_eq!(config.account_concurrency, 50);
        let echo = &config.functions["echo"];
        assert_eq!(echo.reserved_concurrency, Some(3));
        let (name, latest) = echo.resolve(None).expect("latest");
        assert_eq!((name, latest.memory_mb), (LATEST, 512));
        assert_eq!(latest.timeout, Duration::from_millis(2500));
        let Handler::Command { program, args } = &latest.handler else {
            panic!("a command");
        };
        assert_eq!(program, Path::new("/etc/lambdex/bin/echo"));
        assert_eq!(args, &["--loud"]);
        let (name, live) = echo.resolve(Some("live")).expect("the alias");
        assert_eq!((name, live.memory_mb), ("2", 1024));
        assert_eq!(live.environment.len(), 2, "inherits A, adds B");
        assert_eq!(echo.resolve(Some("1")).expect("v1").1.memory_mb, 512);
        assert!(echo.resolve(Some("3")).is_none());
        assert!(echo.resolve(Some("dev")).is_none());
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            ("[functions.x]\nmemory_mb = 256", "needs `command`"),
            (
                "[functions.x]\nbuiltin = \"age\"\ncommand = [\"a\"]",
                "not both",
            ),
            ("[functions.x]\nbuiltin = \"nose\"", "nose"),
            ("[functions.x]\nbuiltin = \"age\"\nmemory_mb = 64", "64"),
            ("[functions.x]\nbuiltin = \"age\"\ntimeout_s = 901", "901"),
            (
                "[functions.x]\nbuiltin = \"age\"\naliases = { live = \"1\" }",
                "not published",
            ),
            (
                "[functions.x]\nbuiltin = \"age\"\nmemroy_mb = 1",
                "memroy_mb",
            ),
            ("[functions.\"a b\"]\nbuiltin = \"age\"", "letters"),
            ("init_timeout_s = -1", "init_timeout_s -1"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn the_example_file_in_infra_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/local-lambda.toml");
        let config = LocalConfig::from_file(&path).expect("valid");
        assert_eq!(config.functions.len(), 3);
        let crop = &config.functions["face-crop"];
        assert_eq!(crop.reserved_concurrency, Some(8));
        let (version, live) = crop.resolve(Some("live")).expect("the alias");
        assert_eq!((version, live.memory_mb), ("1", MB_PER_VCPU));
        let Handler::Command { program, .. } = &live.handler else {
            panic!("a command");
        };
        assert!(program.ends_with("target/release/face-crop"), "{program:?}");
        assert_eq!(
            config.functions["gender"].latest.environment[MODEL_ENV],
            "gender"
        );
    }

    #[test]
    fn the_project_functions_run_as_the_given_program() {
        let config = LocalConfig::project(&ProjectFunctions {
            program: Some(PathBuf::from("/usr/bin/lambdex")),
            models_dir: PathBuf::from("/models"),
            environment: BTreeMap::from([("LAMBDEX_MAX_FACES".to_owned(), "3".to_owned())]),
            memory_mb: PROJECT_MEMORY_MB,
            timeout: PROJECT_TIMEOUT,
        });
        assert_eq!(
            config.functions.keys().collect::<Vec<_>>(),
            ["age", "face-crop", "gender"]
        );
        let age = &config.functions["age"].latest;
        assert_eq!(age.environment[MODEL_ENV], "age");
        assert_eq!(age.environment[MODELS_DIR_ENV], "/models");
        assert_eq!(age.environment["LAMBDEX_MAX_FACES"], "3");
        assert!(
            matches!(&age.handler, Handler::Command { args, .. } if args == &["function", "classify"])
        );
    }
}
