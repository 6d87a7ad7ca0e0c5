//! `lambdex bench chaos`: the queue path under the faults production
//! brings — workers killed, the broker restarted, Elasticsearch down or
//! busy, functions throttled, crashing or gone, hostile jobs — each
//! scenario a few thousand jobs through real `lambdex worker` processes,
//! real RabbitMQ, an Elasticsearch-API server and the local Lambda (its
//! functions sleepers, so the run measures the coordinator, not the
//! models). Every scenario accounts for every message it published:
//! stored, dead-lettered (by reason), lost, or seen twice.
//!
//! - [`scenario`]: what each scenario does, and when.
//! - [`tally`]: the accounting of every published message.
//!
//! The chaos suite (`coordinator/cli/tests/chaos.rs`) runs the same
//! scenarios at [`Scale::Short`] and asserts nothing is lost or doubled.

pub mod scenario;
pub mod tally;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

pub use scenario::{Scale, Scenario};
pub use tally::Row;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios to run, comma-separated (default: all of them).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Good jobs each scenario publishes.
    #[arg(long, default_value_t = 3000)]
    jobs: usize,
    /// `full`: the faults as long as production has them (a minute of
    /// Elasticsearch down…); `short`: seconds, as the test suite runs them.
    #[arg(long, value_enum, default_value = "full")]
    scale: Scale,
    /// Print the rows as JSON lines too.
    #[arg(long)]
    json: bool,
}

/// One scenario's settings: how many jobs, at what scale.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub jobs: usize,
    pub scale: Scale,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let bin = std::env::current_exe().context("finding this program")?;
    let scenarios = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenario.clone()
    };
    let plan = Plan {
        jobs: args.jobs,
        scale: args.scale,
    };
    let mut rows = Vec::new();
    for scenario in scenarios {
        eprintln!("chaos: {} ({} good jobs)…", scenario.title(), args.jobs);
        let row = run_scenario(&bin, scenario, plan).await?;
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        }
        rows.push(row);
    }
    println!("{}", table(&rows));
    Ok(())
}

/// Runs one scenario with workers of `bin` (the `lambdex` binary).
pub async fn run_scenario(bin: &Path, scenario: Scenario, plan: Plan) -> anyhow::Result<Row> {
    scenario::run(&PathBuf::from(bin), scenario, plan).await
}

/// The rows as the README shows them.
pub fn table(rows: &[Row]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "scenario",
        "published",
        "stored",
        "dead-lettered (reasons)",
        "lost",
        "duplicates",
        "time to drain",
        "worker peak memory",
    ]);
    for row in rows {
        let reasons = row
            .dead_lettered
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect::<Vec<_>>()
            .join(", ");
        table.add_row(vec![
            row.scenario.clone(),
            row.published.to_string(),
            row.stored.to_string(),
            format!("{} ({reasons})", row.dead_total()),
            row.lost.to_string(),
            row.duplicates.to_string(),
            format!("{:.1} s", row.drain.as_secs_f64()),
            format!("{} MB", row.peak_memory_mb),
        ]);
    }
    table
}

/// How long a scenario may take before what is not accounted for counts
/// as lost.
pub fn patience(scale: Scale) -> Duration {
    match scale {
        Scale::Short => Duration::from_secs(180),
        Scale::Full => Duration::from_secs(900),
    }
}
