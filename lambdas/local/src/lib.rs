//! The local Lambda: an AWS-faithful Invoke API and one Runtime API per
//! instance, for the real function binaries and for in-process handlers.
//! It runs the functions of `lambdex-functions` (as processes or in this
//! process) for `lambdex predict`, `lambdex local-lambda`, the benches and
//! the tests; nothing that ships to AWS depends on it.
//!
//! - [`config`]: the functions (binary or in-process, environment, memory,
//!   timeout, reserved concurrency, versions and aliases) and host limits.
//! - [`invoke_api`]: the HTTP Invoke API `aws-sdk-lambda` talks to.
//! - [`engine`]: permits (429 past the reserved or account concurrency), warm
//!   and cold instances, one invocation end to end.
//! - [`instance`]: a process on its [`runtime_api`], or an
//!   [`in_process`] handler; [`invocation`] how an invocation ends.
//! - [`log`]: `START`/`END`/`REPORT` lines and the 4 KB log tail (the
//!   `REPORT` line itself is [`lambdex_proto::Report`]).
//! - [`cgroup`]: each process instance's CPU share, memory/1769 of a core.
//! - [`procstat`]: what a process used, from `/proc`: CPU time, peak memory.

pub mod cgroup;
pub mod config;
pub mod engine;
pub mod in_process;
pub mod instance;
pub mod invocation;
pub mod invoke_api;
pub mod log;
pub mod procstat;
pub mod runtime_api;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

pub use config::{
    FunctionSpec, Handler, LocalConfig, ProjectFunctions, VersionSpec, lambdex_environment,
};
pub use engine::{ApiError, Engine, InvocationType, InvokeInput, InvokeOutput};
pub use in_process::{Builtin, InProcessFunction, InProcessHandler};

/// A running local Lambda; [`LocalLambda::shutdown`] ends every instance.
#[derive(Debug)]
pub struct LocalLambda {
    address: SocketAddr,
    engine: Arc<Engine>,
    server: tokio::task::JoinHandle<()>,
}

impl LocalLambda {
    /// Serves `config` on 127.0.0.1:`port` (0 picks a free port).
    pub async fn start(config: LocalConfig, port: u16) -> std::io::Result<Self> {
        let processes = config.has_processes();
        let engine = Arc::new(Engine::new(config)?);
        if let (true, Some(reason)) = (processes, &engine.limiter.unavailable) {
            tracing::warn!("function instances run without a CPU limit: {reason}");
        }
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let address = listener.local_addr()?;
        let app = invoke_api::router(Arc::clone(&engine));
        let cancel = engine.cancel.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
        });
        Ok(Self {
            address,
            engine,
            server,
        })
    }

    /// What to give an SDK client as its `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Why instances run without a CPU limit, if they do.
    pub fn cpu_limit_unavailable(&self) -> Option<&str> {
        self.engine.limiter.unavailable.as_deref()
    }

    /// Stops taking calls, ends the calls in flight (their callers get
    /// `Runtime.ExitError`), and kills every instance.
    pub async fn shutdown(mut self) {
        self.engine.cancel.cancel();
        self.engine.tasks.close();
        self.engine.tasks.wait().await;
        self.engine.destroy_idle().await;
        let _ = (&mut self.server).await;
    }
}

impl Drop for LocalLambda {
    fn drop(&mut self) {
        // Without a shutdown: stop serving; instances die with their handles.
        self.engine.cancel.cancel();
    }
}
