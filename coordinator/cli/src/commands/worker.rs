//! `lambdex worker`: the pipeline, the sink and the consumer, until a
//! signal; then in-flight jobs finish (within `queue.shutdown_deadline`)
//! and their documents are flushed before the connection closes.

use std::sync::Arc;

use anyhow::Context as _;
use lambdex::config::Config;
use lambdex::pipeline::Pipeline;
use lambdex::queue::worker::Worker;
use lambdex::sink::{self, Sink};

use super::shutdown_signal;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let pipeline = Arc::new(Pipeline::new(config.clone()).await?);
    sink::install_template_when_up(
        &config.elasticsearch,
        config.queue.reconnect_delays(),
        config.queue.reconnect_max_delay,
    )
    .await
    .context("installing the index template")?;
    let (sink, sink_task) = Sink::start(&config.elasticsearch)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("signal received: finishing in-flight jobs");
            shutdown.cancel();
        }
    });
    let worker = Worker::new(config.clone(), pipeline, sink);
    if let Some(address) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("metrics.listen {address}"))?;
        tracing::info!(%address, "serving /metrics and /readyz");
        let limits = lambdex::admin::ServerLimits {
            header_read_timeout: config.metrics.header_read_timeout,
            max_connections: config.metrics.max_connections,
            shutdown_grace: config.queue.shutdown_deadline,
        };
        tokio::spawn(lambdex::admin::serve_metrics(
            listener,
            limits,
            shutdown.clone(),
            worker.health(),
        ));
    }
    worker.run(shutdown).await?;
    // Every job has its answer from the sink; let its task end.
    sink_task.await.context("the Elasticsearch sink")?;
    Ok(())
}
