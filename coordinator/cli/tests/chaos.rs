//! The chaos suite: each scenario of `lambdex bench chaos` at its short
//! scale — real `lambdex worker` processes, RabbitMQ, noida-db, the local
//! Lambda with sleeping functions — and every message accounted for:
//! nothing lost, nothing doubled, every good job stored, and only the
//! hostile messages dead-lettered, each for its reason.
//!
//! One scenario at a time: restarting the broker would disturb any other
//! test of this binary running beside it.

use lambdex_bench::chaos::scenario::expected_reasons;
use lambdex_bench::chaos::{Plan, Row, Scale, Scenario, run_scenario};

/// The binary under test.
const LAMBDEX: &str = env!("CARGO_BIN_EXE_lambdex");

/// Good jobs per scenario: enough to keep three workers busy through a
/// fault, few enough for CI.
const JOBS: usize = 200;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(scenario: Scenario) -> Row {
    let _alone = ONE_AT_A_TIME.lock().await;
    let plan = Plan {
        jobs: JOBS,
        scale: Scale::Short,
    };
    run_scenario(LAMBDEX.as_ref(), scenario, plan)
        .await
        .unwrap_or_else(|error| panic!("{scenario:?}: {error:#}"))
}

fn assert_nothing_lost_or_doubled(scenario: Scenario, row: &Row) {
    assert_eq!(row.lost, 0, "{scenario:?}: {row:#?}");
    assert_eq!(row.duplicates, 0, "{scenario:?}: {row:#?}");
    assert_eq!(row.good_not_stored, 0, "{scenario:?}: {row:#?}");
    let reasons: Vec<(&str, usize)> = row
        .dead_lettered
        .iter()
        .map(|(reason, count)| (reason.as_str(), *count))
        .collect();
    let expected: Vec<(&str, usize)> = expected_reasons(scenario).into_iter().collect();
    assert_eq!(reasons, expected, "{scenario:?}: {row:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_five_times_loses_and_doubles_nothing() {
    let row = run(Scenario::KillWorkers).await;
    assert_nothing_lost_or_doubled(Scenario::KillWorkers, &row);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_loses_and_doubles_nothing() {
    let row = run(Scenario::RestartBroker).await;
    assert_nothing_lost_or_doubled(Scenario::RestartBroker, &row);
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_down_loses_and_doubles_nothing() {
    let row = run(Scenario::ElasticDown).await;
    assert_nothing_lost_or_doubled(Scenario::ElasticDown, &row);
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_refusing_half_of_every_bulk_loses_and_doubles_nothing() {
    let row = run(Scenario::ElasticThrottled).await;
    assert_nothing_lost_or_doubled(Scenario::ElasticThrottled, &row);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_function_is_waited_out() {
    let row = run(Scenario::FunctionThrottled).await;
    assert_nothing_lost_or_doubled(Scenario::FunctionThrottled, &row);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_crashing_now_and_then_is_retried() {
    let row = run(Scenario::FunctionCrashing).await;
    assert_nothing_lost_or_doubled(Scenario::FunctionCrashing, &row);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_down_past_every_retry_trip_dead_letters_nothing() {
    let row = run(Scenario::FunctionOutage).await;
    assert_nothing_lost_or_doubled(Scenario::FunctionOutage, &row);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_jobs_are_dead_lettered_for_their_reason_and_the_good_ones_stored() {
    let row = run(Scenario::HostileJobs).await;
    assert_nothing_lost_or_doubled(Scenario::HostileJobs, &row);
}
