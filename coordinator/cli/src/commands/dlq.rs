//! `lambdex dlq`: the replay tool's command line over
//! [`lambdex::queue::dlq`].

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};

use lambdex::config::QueueConfig;
use lambdex::queue::dlq::{self, Action, DeadLetter, Filter, Summary};
use lambdex_proto::FailureClass;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Dead letters grouped by reason: count, oldest and newest failure.
    List,
    /// One dead letter (job id, or the `msg-…` id `export` gives a message
    /// that is not a job): headers, error history and payload, as JSON.
    Show { id: String },
    /// Every dead letter, one JSON object per line; the queue keeps them.
    Export {
        #[arg(long)]
        to: PathBuf,
    },
    /// Publish dead letters to the jobs exchange again, attempts reset and
    /// marked replayed; each is removed only once the broker confirmed
    /// its new copy.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// Count what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete the dead letters of a reason, after asking.
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only dead letters of this reason (a class `list` shows). Without
    /// it, every reason but `invalid_message`.
    #[arg(long)]
    reason: Option<String>,
    /// Only those that last failed at or after this time: RFC 3339, or a
    /// duration ago (`90m`, `2days`).
    #[arg(long, value_parser = dlq::parse_since)]
    since: Option<DateTime<Utc>>,
}

impl FilterArgs {
    fn filter(&self, limit: Option<u64>) -> Filter {
        Filter {
            reason: self.reason.as_deref().map(FailureClass::from),
            since: self.since,
            limit,
            first: None,
        }
    }
}

pub async fn run(config: &QueueConfig, command: Command) -> anyhow::Result<()> {
    match command {
        Command::List => {
            let counts = dlq::counts(config).await?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
                "reason",
                "count",
                "oldest failure",
                "newest failure",
            ]);
            let time =
                |time: Option<DateTime<Utc>>| time.map(|t| t.to_rfc3339()).unwrap_or_default();
            for count in &counts {
                table.add_row(vec![
                    count.reason.to_string(),
                    count.count.to_string(),
                    time(count.oldest),
                    time(count.newest),
                ]);
            }
            let total: u64 = counts.iter().map(|count| count.count).sum();
            println!("{table}");
            println!("{total} dead letters in {}", dead_queue(config));
        }
        Command::Show { id } => {
            let letter = dlq::find(config, &id).await?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
        }
        Command::Export { to } => {
            let written = export(config, &to).await?;
            eprintln!("{written} dead letters written to {}", to.display());
        }
        Command::Replay {
            filter,
            limit,
            dry_run,
        } => {
            let summary = take(config, Action::Replay, &filter.filter(limit), dry_run).await?;
            print_summary("replayed", &summary);
        }
        Command::Purge { filter, yes } => {
            if filter.reason.is_none() {
                bail!("purge needs --reason (see `lambdex dlq list`)");
            }
            let filter = filter.filter(None);
            let planned = take(config, Action::Purge, &filter, true).await?;
            if planned.taken_total() == 0 {
                println!("nothing to purge");
                return Ok(());
            }
            if !yes
                && !confirm(&format!(
                    "delete {} dead letters of reason {}? [y/N] ",
                    planned.taken_total(),
                    filter
                        .reason
                        .as_ref()
                        .map(FailureClass::as_str)
                        .unwrap_or_default()
                ))?
            {
                println!("nothing deleted");
                return Ok(());
            }
            // What was counted, not what arrived while the question waited.
            let summary = take(config, Action::Purge, &filter.as_counted(&planned), false).await?;
            print_summary("deleted", &summary);
        }
    }
    Ok(())
}

fn dead_queue(config: &QueueConfig) -> String {
    lambdex::queue::topology::Topology::new(config).dead_queue
}

fn progress_bar(verb: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} dead letters looked at, {{msg}} {verb} ({{per_sec}})"
        ))
        .expect("a valid template"),
    );
    bar
}

async fn take(
    config: &QueueConfig,
    action: Action,
    filter: &Filter,
    dry_run: bool,
) -> anyhow::Result<Summary> {
    let verb = match (action, dry_run) {
        (_, true) => "matching",
        (Action::Replay, false) => "replayed",
        (Action::Purge, false) => "deleted",
    };
    let bar = progress_bar(verb);
    let summary = dlq::take(
        config,
        action,
        filter,
        dry_run,
        |count| bar.set_length(u64::from(count)),
        |summary| {
            bar.set_position(summary.examined);
            bar.set_message(summary.taken_total().to_string());
        },
    )
    .await;
    bar.finish_and_clear();
    Ok(summary?)
}

fn print_summary(verb: &str, summary: &Summary) {
    let verb = if summary.dry_run {
        "would be taken (dry run)"
    } else {
        verb
    };
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["reason", verb]);
    for (reason, count) in &summary.taken {
        table.add_row(vec![reason.clone(), count.to_string()]);
    }
    println!("{table}");
    println!(
        "{} looked at, {} {verb}, {} left in the queue",
        summary.examined,
        summary.taken_total(),
        summary.kept
            + if summary.dry_run {
                summary.taken_total()
            } else {
                0
            }
    );
}

/// Writes every dead letter to `to` (a temporary file renamed at the end,
/// so a failed export leaves no half file).
async fn export(config: &QueueConfig, to: &Path) -> anyhow::Result<u64> {
    let dir = to
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let bar = progress_bar("written");
    let mut written = 0u64;
    let mut failed: Option<std::io::Error> = None;
    dlq::browse(
        config,
        |count| bar.set_length(u64::from(count)),
        |letter: DeadLetter| {
            if failed.is_some() {
                return;
            }
            let line = serde_json::to_string(&letter).expect("a dead letter serialises");
            match writeln!(out, "{line}") {
                Ok(()) => written += 1,
                Err(error) => failed = Some(error),
            }
            bar.inc(1);
            bar.set_message(written.to_string());
        },
    )
    .await?;
    bar.finish_and_clear();
    if let Some(error) = failed {
        return Err(error).context("writing the export");
    }
    let file = out.into_inner().context("writing the export")?;
    file.persist(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    Ok(written)
}

/// Asks on the terminal; anything but `y`/`yes` is no. Without a
/// terminal, no.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("not a terminal to ask on: pass --yes to purge without asking");
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
