//! The scenarios: a world of sleeping functions, an Elasticsearch-API
//! server behind a proxy that can misbehave, real `lambdex worker`
//! processes; good jobs published, a fault injected while they drain, and
//! every message accounted for.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use lambdex::queue::amqp;
use lambdex::queue::headers::REASON_HEADER;
use lambdex_local::procstat;
use lambdex_local::{FunctionSpec, Handler, InProcessFunction, LocalConfig};
use lambdex_proto::Job;
use lambdex_tests::fakes::{Fault, Faulty, Sleeper};
use lambdex_tests::proxy::{ElasticProxy, Mode};
use lambdex_tests::services::{Elastic, RabbitNode};
use lambdex_tests::world::World;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use tokio::time::Instant;

use super::Plan;
use super::tally::{Row, Tally};

/// How long the faults last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// Seconds: the test suite's.
    Short,
    /// As production has them: a minute of Elasticsearch down, an outage
    /// longer than every retry trip together.
    Full,
}

/// One fault, or one kind of hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Three competing workers; one is SIGKILLed five times mid-run.
    KillWorkers,
    /// RabbitMQ's app stopped and started mid-run (quorum queues).
    RestartBroker,
    /// Elasticsearch down for a while.
    ElasticDown,
    /// Elasticsearch answering 429 to half of every bulk request.
    ElasticThrottled,
    /// A classifier's reserved concurrency far below the jobs in flight.
    FunctionThrottled,
    /// A classifier crashing on 1 % of its calls.
    FunctionCrashing,
    /// face-crop down for longer than every retry trip together.
    FunctionOutage,
    /// Hostile jobs among the good ones: a 100 KB URL, a huge
    /// `Retry-After`, a body dripped a byte a second, 1 GB without a
    /// length, a redirect loop, 40 MP PNGs 50 at once, bad UTF-8, bad
    /// JSON, an unknown schema version.
    HostileJobs,
}

impl Scenario {
    pub const ALL: [Self; 8] = [
        Self::KillWorkers,
        Self::RestartBroker,
        Self::ElasticDown,
        Self::ElasticThrottled,
        Self::FunctionThrottled,
        Self::FunctionCrashing,
        Self::FunctionOutage,
        Self::HostileJobs,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Self::KillWorkers => "a worker SIGKILLed 5 times (3 workers)",
            Self::RestartBroker => "RabbitMQ restarted (stop_app / start_app)",
            Self::ElasticDown => "Elasticsearch down",
            Self::ElasticThrottled => "Elasticsearch answering 429 to half the bulk items",
            Self::FunctionThrottled => "a function throttled (reserved concurrency 1)",
            Self::FunctionCrashing => "a function crashing on 1 % of calls",
            Self::FunctionOutage => "face-crop unavailable past every retry trip",
            Self::HostileJobs => "hostile jobs among good ones",
        }
    }
}

/// A fault's length at `scale`: `short` seconds or `full` seconds.
fn lasting(scale: Scale, short: u64, full: u64) -> Duration {
    Duration::from_secs(match scale {
        Scale::Short => short,
        Scale::Full => full,
    })
}

/// Settings that make a scenario's waits short enough to watch: retry
/// trips of 1, 2 and 4 s (7 s together), quick breakers and checks.
const SETTINGS: [(&str, &str); 14] = [
    ("LAMBDEX__QUEUE__PREFETCH", "16"),
    ("LAMBDEX__QUEUE__REQUEUE_FIRST_DELAY", "1s"),
    ("LAMBDEX__QUEUE__REQUEUE_MULTIPLIER", "2"),
    ("LAMBDEX__QUEUE__OUTAGE_CHECK_INTERVAL", "500ms"),
    ("LAMBDEX__RETRY__MAX_ELAPSED", "4s"),
    ("LAMBDEX__RETRY__MAX_RETRY_AFTER", "1s"),
    ("LAMBDEX__BREAKER__FAILURE_THRESHOLD", "3"),
    ("LAMBDEX__BREAKER__COOLDOWN", "2s"),
    ("LAMBDEX__FETCH__TIMEOUT", "3s"),
    ("LAMBDEX__FETCH__CONNECT_TIMEOUT", "2s"),
    ("LAMBDEX__PIPELINE__JOB_TIMEOUT", "60s"),
    ("LAMBDEX__PIPELINE__MEMORY_BUDGET", "1073741824"),
    ("LAMBDEX__ELASTICSEARCH__RETRY_MAX_DELAY", "1s"),
    ("LAMBDEX__ELASTICSEARCH__REQUEST_TIMEOUT", "5s"),
];

/// Each function's latency: short, so the coordinator is what is measured.
const LATENCY: Duration = Duration::from_millis(10);

/// The functions of a scenario: sleepers, one of them faulty.
fn functions(scenario: Scenario, outage: &Arc<AtomicBool>) -> LocalConfig {
    let mut config = LocalConfig::default();
    for (name, sleeper) in Sleeper::project(LATENCY, 1) {
        let sleeper: Arc<dyn InProcessFunction> = Arc::new(sleeper);
        let function: Arc<dyn InProcessFunction> = match (scenario, name) {
            (Scenario::FunctionCrashing, "age") => {
                Arc::new(Faulty::crashing(sleeper, Fault::Rate(0.01)))
            }
            (Scenario::FunctionOutage, "face-crop") => {
                Arc::new(Faulty::crashing(sleeper, Fault::While(Arc::clone(outage))))
            }
            _ => sleeper,
        };
        let mut spec = FunctionSpec::new(Handler::InProcess(function));
        if (scenario, name) == (Scenario::FunctionThrottled, "age") {
            spec.reserved_concurrency = Some(1);
        }
        config.functions.insert(name.to_owned(), spec);
    }
    config
}

/// Runs `scenario` and accounts for every message.
pub async fn run(bin: &Path, scenario: Scenario, plan: Plan) -> anyhow::Result<Row> {
    let outage = Arc::new(AtomicBool::new(false));
    let bin = bin
        .to_str()
        .context("the lambdex binary's path is not UTF-8")?;
    // The broker is restarted on a node of the scenario's own: the
    // machine's serves everyone else.
    let node = if scenario == Scenario::RestartBroker {
        Some(tokio::task::spawn_blocking(RabbitNode::start).await?)
    } else {
        None
    };
    let url = node.as_ref().map(RabbitNode::url);
    let mut settings = SETTINGS.to_vec();
    if let Some(url) = &url {
        settings.push(("LAMBDEX__QUEUE__URL", url));
    }
    let mut world =
        World::with_functions(bin, Elastic::Noida, &settings, functions(scenario, &outage)).await;
    let proxy = ElasticProxy::start(&world.elastic.url()).await?;
    world.env.insert(
        "LAMBDEX__ELASTICSEARCH__URL".to_owned(),
        proxy.url().to_owned(),
    );
    let workers = if scenario == Scenario::KillWorkers {
        3
    } else {
        2
    };
    for _ in 0..workers {
        world.start_worker();
    }

    let mut tally = Tally::default();
    let started = Instant::now();
    let good = good_jobs(&world, plan.jobs);
    for job in &good {
        tally.published(&serde_json::to_vec(job)?, true);
    }
    world.publish(good).await;
    if scenario == Scenario::HostileJobs {
        publish_hostile(&world, &mut tally, plan.scale).await?;
    }

    let mut peak_memory_mb = 0;
    let deadline = started + super::patience(plan.scale);
    let watched = Watched::of(&world);
    let faults = Faults {
        proxy: &proxy,
        outage: &outage,
        node: node.as_ref(),
    };
    let fault = inject(
        scenario,
        plan.scale,
        &mut world,
        faults,
        &mut peak_memory_mb,
    );
    let watched = watch(watched, &mut tally, deadline);
    let (faulted, watched) = tokio::join!(fault, watched);
    faulted?;
    watched?;
    let drain = started.elapsed();
    for worker in &world.workers.0 {
        peak_memory_mb = peak_memory_mb.max(procstat::peak_memory_mb(worker.id()));
    }
    let row = tally.row(scenario.title(), drain, peak_memory_mb);
    world.finish().await;
    drop(node);
    Ok(row)
}

/// The good jobs: the astronaut, each its own URL and id.
fn good_jobs(world: &World, count: usize) -> Vec<Job> {
    (0..count)
        .map(|i| {
            Job::new(
                format!("good-{i}"),
                world.images.url(&format!("astronaut.png?n={i}")),
            )
        })
        .collect()
}

/// Hostile messages, and good 40 MP images (50, or 10 at the short scale)
/// published at once.
async fn publish_hostile(world: &World, tally: &mut Tally, scale: Scale) -> anyhow::Result<()> {
    let hostile_job = |id: &str, path: &str| Job::new(id, world.images.url(path));
    let mut jobs = vec![
        hostile_job("throttled", "throttled.jpg"),
        hostile_job("drip", "drip.jpg"),
        hostile_job("gigabyte", "gigabyte.jpg"),
        hostile_job("loop", "loop.jpg"),
    ];
    // Well over jobs.max_url_bytes: refused as it arrives.
    jobs.push(Job::new(
        "long-url",
        world
            .images
            .url(&format!("astronaut.png?{}", "a".repeat(100 * 1024))),
    ));
    for job in &jobs {
        tally.published(&serde_json::to_vec(job)?, false);
    }
    let count = if scale == Scale::Full { 50 } else { 10 };
    let large: Vec<Job> = (0..count)
        .map(|i| hostile_job(&format!("40mp-{i}"), &format!("40mp.png?n={i}")))
        .collect();
    for job in &large {
        tally.published(&serde_json::to_vec(job)?, true);
    }
    jobs.extend(large);
    world.publish(jobs).await;
    let mut unknown_version =
        serde_json::to_value(Job::new("v2", world.images.url("astronaut.png")))?;
    unknown_version["schema_version"] = 2.into();
    let raw: [Vec<u8>; 3] = [
        b"{\"job_id\": \"\xff\xfe\", \"image_url\": 1}".to_vec(),
        b"{\"schema_version\": 1, \"job_id\": ".to_vec(),
        serde_json::to_vec(&unknown_version)?,
    ];
    for payload in raw {
        tally.published(&payload, false);
        world.publish_raw(&payload).await;
    }
    Ok(())
}

/// What a scenario's faults are injected through.
#[derive(Debug, Clone, Copy)]
struct Faults<'a> {
    proxy: &'a ElasticProxy,
    outage: &'a AtomicBool,
    /// The scenario's own broker, when it restarts one.
    node: Option<&'a RabbitNode>,
}

/// The scenario's fault, while the jobs drain.
async fn inject(
    scenario: Scenario,
    scale: Scale,
    world: &mut World,
    faults: Faults<'_>,
    peak_memory_mb: &mut u32,
) -> anyhow::Result<()> {
    let Faults {
        proxy,
        outage,
        node,
    } = faults;
    // Let the work get going first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    match scenario {
        Scenario::KillWorkers => {
            for _ in 0..5 {
                let Some(mut victim) = world.workers.0.pop() else {
                    bail!("no worker to kill");
                };
                *peak_memory_mb = (*peak_memory_mb).max(procstat::peak_memory_mb(victim.id()));
                victim.kill()?;
                victim.wait()?;
                world.start_worker();
                tokio::time::sleep(lasting(scale, 2, 5)).await;
            }
        }
        Scenario::RestartBroker => {
            let node = node.context("the scenario's own broker")?;
            tokio::task::block_in_place(|| node.ctl(&["stop_app"]));
            tokio::time::sleep(lasting(scale, 3, 10)).await;
            tokio::task::block_in_place(|| node.ctl(&["start_app"]));
        }
        Scenario::ElasticDown => {
            tokio::task::block_in_place(|| world.elastic.stop());
            tokio::time::sleep(lasting(scale, 5, 60)).await;
            tokio::task::block_in_place(|| world.elastic.restart());
        }
        Scenario::ElasticThrottled => {
            proxy.set(Mode::HalfThrottled);
            tokio::time::sleep(lasting(scale, 5, 60)).await;
            proxy.set(Mode::Pass);
        }
        Scenario::FunctionOutage => {
            // Longer than every retry trip (7 s) and the retries within
            // each: nothing may be dead-lettered for it.
            outage.store(true, Ordering::SeqCst);
            tokio::time::sleep(lasting(scale, 15, 120)).await;
            outage.store(false, Ordering::SeqCst);
        }
        Scenario::FunctionThrottled | Scenario::FunctionCrashing | Scenario::HostileJobs => {}
    }
    Ok(())
}

/// Where a scenario's outcomes are.
#[derive(Debug, Clone)]
struct Watched {
    amqp_url: String,
    dead_queue: String,
    elastic_url: String,
    index: String,
}

impl Watched {
    fn of(world: &World) -> Self {
        Self {
            amqp_url: world.config.queue.url.expose().to_owned(),
            dead_queue: world.topology().dead_queue,
            elastic_url: world.elastic.url(),
            index: world.config.elasticsearch.index.clone(),
        }
    }
}

/// Takes the dead letters and counts the documents until every message
/// has an outcome or `deadline` passes.
async fn watch(watched: Watched, tally: &mut Tally, deadline: Instant) -> anyhow::Result<()> {
    let mut connection = None;
    loop {
        // The broker may be restarting: reconnect as the workers do.
        if connection.is_none() {
            connection = reconnect(&watched.amqp_url).await;
        }
        if let Some((_, channel)) = &connection {
            match take_dead_letters(channel, &watched.dead_queue, tally).await {
                Ok(()) => {}
                Err(_) => connection = None,
            }
        }
        if let Ok(stored) = stored_job_ids(&watched).await {
            tally.stored(stored);
        }
        if tally.settled() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some((connection, _)) = connection {
        let _ = connection.close(200, "done").await;
    }
    Ok(())
}

async fn reconnect(url: &str) -> Option<(lapin::Connection, lapin::Channel)> {
    let config = lambdex::config::QueueConfig {
        url: url.into(),
        ..lambdex::config::QueueConfig::default()
    };
    let connection = amqp::connect(&config, "lambdex chaos").await.ok()?;
    let channel = connection.create_channel().await.ok()?;
    Some((connection, channel))
}

/// Takes (gets and acknowledges) every dead letter ready now.
async fn take_dead_letters(
    channel: &lapin::Channel,
    queue: &str,
    tally: &mut Tally,
) -> Result<(), lapin::Error> {
    while let Some(message) = channel.basic_get(queue, BasicGetOptions::default()).await? {
        let delivery = message.delivery;
        let reason = amqp::header_text(delivery.properties.headers().as_ref(), REASON_HEADER)
            .unwrap_or_else(|| "unknown".to_owned());
        tally.dead_letter(&delivery.data, reason);
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

/// The job ids of every result in the scenario's index (not the failed
/// documents the worker keeps for dead-lettered jobs: those count as
/// their dead letters).
async fn stored_job_ids(watched: &Watched) -> anyhow::Result<Vec<String>> {
    let url = format!(
        "{}/{}/_search?size=10000",
        watched.elastic_url, watched.index
    );
    let response = reqwest_client().get(url).send().await?;
    if !response.status().is_success() {
        return Ok(Vec::new());
    }
    let body: serde_json::Value = response.json().await?;
    Ok(body["hits"]["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .filter(|hit| hit["_source"]["status"] != "failed")
                .filter_map(|hit| hit["_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

fn reqwest_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// The reasons a row's dead letters may have, by scenario: anything else
/// is a job dead-lettered that should not have been.
pub fn expected_reasons(scenario: Scenario) -> BTreeMap<&'static str, usize> {
    match scenario {
        Scenario::HostileJobs => BTreeMap::from([
            ("fetch_status", 1),
            ("fetch_timeout", 1),
            ("image_too_large", 1),
            ("too_many_redirects", 1),
            ("invalid_message", 4),
        ]),
        _ => BTreeMap::new(),
    }
}
