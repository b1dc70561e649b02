//! Full syncs deliver exactly the cohort, in requests of at most 1,000 ids.

use std::collections::BTreeSet;

use chrono::{Duration, NaiveDate};

use crate::support::*;

const ACTIVE_30D: &str = "-- everyone seen in the 30 days before the run\n\
SELECT user_id FROM users\n\
WHERE last_seen_at >= $run_ts - INTERVAL '30 days' AND last_seen_at < $run_ts\n";

#[test]
fn full_sync_delivers_exactly_the_cohort() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 1000\nrequests_per_second = 5000",
        &[("active", ACTIVE_30D)],
    );
    let summary = project
        .run(&["sync", "active", "--at", AT, "--no-progress"])
        .summary();

    // The same cohort, computed from the Parquet files without DataFusion.
    let to = at().timestamp_micros();
    let from = (at() - Duration::days(30)).timestamp_micros();
    let expected: BTreeSet<String> = users()
        .into_iter()
        .filter(|u| u.last_seen_us.is_some_and(|t| t >= from && t < to))
        .map(|u| u.user_id)
        .collect();
    assert!(
        expected.len() > 3_000,
        "the fixture should give a multi-batch cohort, got {}",
        expected.len()
    );

    let held = partner.members("active");
    assert_eq!(held.len(), expected.len());
    assert!(
        held == expected,
        "the partner holds a different set than the cohort"
    );
    assert_eq!(
        partner.handle.cohort_name("active").as_deref(),
        Some("Cohort active")
    );

    let stats = partner.handle.stats();
    assert!(
        stats.max_ids_per_request <= 1_000,
        "a request carried {} ids",
        stats.max_ids_per_request
    );
    assert_eq!(
        stats.redundant_adds, 0,
        "no id is sent twice on a clean run"
    );
    assert_eq!(stats.ids_added, expected.len() as u64);

    assert_eq!(summary["outcome"], "delivered");
    assert_eq!(summary["members"], expected.len() as u64);
    assert_eq!(summary["batches"], expected.len().div_ceil(1000) as u64);
    // One request creates the cohort, one per batch.
    assert_eq!(
        summary["requests"],
        summary["batches"].as_u64().unwrap() + 1
    );
    assert_eq!(summary["retries"], 0);
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn nulls_are_skipped_and_duplicates_removed() {
    let partner = Partner::plain();
    let sql = "SELECT user_id FROM events\n\
               WHERE event_name = 'purchase'\n  AND event_date >= $run_date - INTERVAL '5 days' AND event_date < $run_date\n";
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 250\nrequests_per_second = 5000",
        &[("buyers", sql)],
    );
    let summary = project.run(&["sync", "buyers", "--at", AT]).summary();

    let run_date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    let rows = event_user_ids("purchase", run_date - Duration::days(5), run_date);
    let nulls = rows.iter().filter(|r| r.is_none()).count() as u64;
    let expected: BTreeSet<String> = rows.iter().flatten().cloned().collect();
    assert!(
        nulls > 0 && (expected.len() as u64) < rows.len() as u64 - nulls,
        "fixture needs NULLs and duplicates"
    );

    assert!(
        partner.members("buyers") == expected,
        "the partner holds a different set than the cohort"
    );
    assert_eq!(summary["rows"], rows.len() as u64);
    assert_eq!(summary["nulls_skipped"], nulls);
    assert_eq!(summary["members"], expected.len() as u64);
    assert_eq!(
        summary["duplicates_removed"],
        rows.len() as u64 - nulls - expected.len() as u64
    );
    assert!(partner.handle.stats().max_ids_per_request <= 250);
}

#[test]
fn several_cohorts_in_one_run_and_a_rerun_renames_without_loss() {
    let partner = Partner::plain();
    let pro = "SELECT user_id FROM users WHERE plan = 'pro'";
    let project = Project::new(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("active", ACTIVE_30D), ("pro", pro)],
    );
    let run = project.run(&["sync", "active", "pro", "--at", AT, "--log-format", "json"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let summaries = run.summaries();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0]["cohort"], "active");
    assert_eq!(summaries[1]["cohort"], "pro");
    // --log-format json: every stderr line is a JSON object.
    for line in run.stderr().lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    let expected: BTreeSet<String> = users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .collect();
    assert!(partner.members("pro") == expected);

    // A second full sync of the same cohort: still exactly the cohort.
    let again = project.run(&["sync", "pro", "--at", AT]).summary();
    assert_eq!(again["members"], expected.len() as u64);
    assert!(partner.members("pro") == expected);
    assert_eq!(partner.handle.stats().cohorts_created, 2);
}
