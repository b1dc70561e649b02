//! The `/users/track` destination (any Braze customer: membership as a custom attribute): full
//! and incremental syncs leave exactly the cohort's members with the attribute set, in
//! requests of at most 75 objects, through faults; unknown ids under update-only are dead
//! letters with the partner's error type; a refused key names its environment variable.

use std::collections::BTreeSet;

use cohort_bridge::emulator::{EmulatorConfig, FaultConfig};

use crate::support::*;

fn set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

const FAST: &str = "requests_per_second = 5000\nmax_in_flight = 8\n\
    [destinations.braze.retry]\nmax_attempts = 30\ninitial_backoff = \"5ms\"\n\
    max_backoff = \"100ms\"\nmax_elapsed = \"2m\"\n";

#[test]
fn full_and_incremental_syncs_leave_exactly_the_members_with_the_attribute() {
    // Faults of every kind, seeded: each batch is retried until acknowledged, and writing an
    // attribute twice is harmless, so the partner must end with exactly the cohort.
    let partner = Partner::start(EmulatorConfig {
        faults: FaultConfig {
            seed: 15,
            error_before_apply: 0.05,
            error_after_apply: 0.05,
            locked: 0.03,
            drop_connection: 0.03,
            ..FaultConfig::default()
        },
        ..EmulatorConfig::default()
    });
    let project = Project::users_track(&partner.handle.base_url(), FAST, &[("active", ACTIVE_30D)]);
    let first = project
        .run(&["sync", "active", "--at", AT, "--no-progress"])
        .summary();
    let expected = active_at(at());
    assert!(
        expected.len() > 1_000,
        "a multi-batch cohort: {}",
        expected.len()
    );
    assert_eq!(first["adds"], expected.len() as u64);
    assert_eq!(first["dead_letters"], 0);
    assert_eq!(first["batches"], expected.len().div_ceil(75) as u64);
    let held = set(partner.handle.attribute_true("cohort_active"));
    assert!(
        held == expected,
        "held {} vs cohort {}",
        held.len(),
        expected.len()
    );
    // Nothing in the Cohort Import API was touched.
    assert!(partner.handle.members("active").is_none());

    // A week later: who left is set to false, who joined to true, nobody else is written.
    let later = at() + chrono::Duration::days(7);
    let later_s = later.to_rfc3339();
    let before = partner.handle.stats().track_objects_applied;
    let second = project
        .run(&["sync", "active", "--at", &later_s, "--no-progress"])
        .summary();
    let now = active_at(later);
    let (joined, left) = (
        now.difference(&expected).count() as u64,
        expected.difference(&now).count() as u64,
    );
    assert!(
        joined > 0 && left > 0,
        "the fixture churns: +{joined} -{left}"
    );
    assert_eq!(
        (second["adds"].as_u64(), second["removes"].as_u64()),
        (Some(joined), Some(left))
    );
    assert!(
        set(partner.handle.attribute_true("cohort_active")) == now,
        "after the incremental sync the attribute is true for exactly the new cohort"
    );
    let profiles = partner.handle.attribute_true("cohort_active").len() as u64;
    assert_eq!(profiles, now.len() as u64);
    // Only changes were written (each at least once; faults after applying repeat some).
    let written = partner.handle.stats().track_objects_applied - before;
    assert!(
        written >= joined + left,
        "{written} objects for +{joined} -{left}"
    );
    assert!(
        written < (joined + left) * 2,
        "{written} objects for +{joined} -{left}"
    );
    let stats = partner.handle.stats();
    assert_eq!(
        stats.by_status.get(&400),
        None,
        "no request was malformed: {stats:?}"
    );
}

#[test]
fn array_membership_adds_and_removes_the_cohort_id() {
    let partner = Partner::plain();
    let project = Project::users_track(
        &partner.handle.base_url(),
        &format!("membership = \"array\"\nattribute = \"segments\"\n{FAST}"),
        &[("active", ACTIVE_30D)],
    );
    project
        .run(&["sync", "active", "--at", AT, "--no-progress"])
        .summary();
    assert!(set(partner.handle.attribute_holds("segments", "active")) == active_at(at()));
    let later = at() + chrono::Duration::days(7);
    project
        .run(&[
            "sync",
            "active",
            "--at",
            &later.to_rfc3339(),
            "--no-progress",
        ])
        .summary();
    assert!(set(partner.handle.attribute_holds("segments", "active")) == active_at(later));
}

#[test]
fn unknown_ids_under_update_only_are_dead_letters_with_the_partners_type() {
    // Ids containing "ab" have no profile at the partner: update-only objects naming them are
    // item-level errors in a success response.
    let partner = Partner::start(EmulatorConfig {
        unknown_id_marker: Some("ab".into()),
        ..EmulatorConfig::default()
    });
    let project = Project::users_track(&partner.handle.base_url(), FAST, &[("active", ACTIVE_30D)]);
    let run = project.run(&["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(run.code(), 3, "dead letters exit 3: {}", run.stderr());
    let summary = run.summary_any();
    let expected = active_at(at());
    let unknown: BTreeSet<String> = expected
        .iter()
        .filter(|u| u.contains("ab"))
        .cloned()
        .collect();
    assert!(!unknown.is_empty() && unknown.len() < expected.len() / 2);
    assert_eq!(summary["dead_letters"], unknown.len() as u64);
    let known: BTreeSet<String> = expected.difference(&unknown).cloned().collect();
    assert!(set(partner.handle.attribute_true("cohort_active")) == known);

    // The dead letters, as Parquet: each refused id with the partner's error type.
    let mut recorded = BTreeSet::new();
    for file in std::fs::read_dir(project.cohort_state("active").join("dead_letters")).unwrap() {
        for b in read_all(&file.unwrap().path()) {
            for row in 0..b.num_rows() {
                recorded.insert(string_at(&b, "user_id", row).unwrap());
                let reason = string_at(&b, "reason", row).unwrap();
                assert!(reason.contains("_update_existing_only"), "{reason}");
                assert_eq!(string_at(&b, "change", row).as_deref(), Some("add"));
            }
        }
    }
    assert!(
        recorded == unknown,
        "{} recorded, {} unknown",
        recorded.len(),
        unknown.len()
    );

    // Without update-only, the next run retries them and creates their profiles.
    let project2 = Project::users_track(
        &partner.handle.base_url(),
        &format!("update_existing_only = false\n{FAST}"),
        &[("active", ACTIVE_30D)],
    );
    std::fs::remove_dir_all(project2.dir.path().join("state")).ok();
    copy_dir(
        &project.dir.path().join("state"),
        &project2.dir.path().join("state"),
    );
    let retried = project2
        .run(&["sync", "active", "--at", AT, "--no-progress"])
        .summary();
    assert_eq!(retried["dead_letters"], 0, "{retried}");
    assert!(set(partner.handle.attribute_true("cohort_active")) == expected);
}

#[test]
fn a_refused_key_names_its_environment_variable_and_nothing_is_committed() {
    let partner = Partner::plain();
    let project = Project::users_track(&partner.handle.base_url(), FAST, &[("active", ACTIVE_30D)]);
    let run = project.run_with(
        &["sync", "active", "--at", AT, "--no-progress"],
        &[(REST_VAR, Some("rk-wrong-key-never-log-me"))],
    );
    assert_eq!(run.code(), 4, "a partner rejection: {}", run.stderr());
    let err = run.stderr();
    assert!(err.contains(REST_VAR) && err.contains("401"), "{err}");
    assert!(
        !err.contains("rk-wrong-key-never-log-me"),
        "the key is never printed: {err}"
    );
    assert!(partner.handle.attribute_true("cohort_active").is_empty());

    // The key names the workspace: a corrected key is a change of workspace until the user
    // says it is the same one; then the same plan is delivered whole.
    let refused = project.run(&["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("--rebind"),
        "{}",
        refused.stderr()
    );
    let ok = project
        .run(&["sync", "active", "--at", AT, "--no-progress", "--rebind"])
        .summary();
    // The interrupted plan is finished (its batches count as resumed), nothing more to send.
    assert_eq!(
        ok["resumed_batches"],
        active_at(at()).len().div_ceil(75) as u64,
        "{ok}"
    );
    assert!(set(partner.handle.attribute_true("cohort_active")) == active_at(at()));
}

#[test]
fn a_run_killed_mid_delivery_resumes_without_resending_acknowledged_batches() {
    use crate::incremental::kill_at;
    // The client's own pacing makes the run last a few seconds.
    let partner = Partner::plain();
    let project = Project::users_track(
        &partner.handle.base_url(),
        "requests_per_second = 40\nmax_in_flight = 4",
        &[("active", ACTIVE_30D)],
    );
    let expected = active_at(at());
    let batches = expected.len().div_ceil(75) as u64;
    kill_at(
        &[15, 50],
        &project.cohort_state("active"),
        || project.command(&["sync", "active", "--at", AT, "--no-progress"]),
        || partner.handle.stats().track_requests_applied,
    );
    let applied = partner.handle.stats().track_requests_applied;
    assert!(applied < batches, "the runs were interrupted");
    let resumed = project
        .run(&["sync", "active", "--at", AT, "--no-progress"])
        .summary();
    let (sent, skipped) = (
        resumed["resumed_batches"].as_u64().unwrap(),
        resumed["skipped_batches"].as_u64().unwrap(),
    );
    assert_eq!(sent + skipped, batches);
    assert!(
        skipped > 0 && skipped <= applied,
        "{skipped} skipped of {applied} applied"
    );
    assert!(set(partner.handle.attribute_true("cohort_active")) == expected);
    // Only batches answered in the instant before a kill can go twice: max_in_flight per kill.
    let objects = partner.handle.stats().track_objects_applied;
    assert!(
        objects <= expected.len() as u64 + 2 * 4 * 75,
        "{objects} objects written"
    );
}
