//! The `iterable` destination (a cohort as the membership of an Iterable static list) through
//! the real binary against the emulator's Iterable project: full and incremental syncs of a
//! cohort whose members mix user ids and emails are exact, through faults; malformed emails
//! and userIds Iterable would refuse are dead letters before any request; item-level refusals
//! are dead letters and retried by the next run; a refused key is named; a run killed mid-
//! delivery resumes without re-sending what was acknowledged; 429s are honoured, and a run
//! paced at the partner's rate meets none.

use std::collections::BTreeSet;

use cohort_bridge::emulator::{EmulatorConfig, FaultConfig, IterableConfig, IterableMembers};

use crate::support::*;

pub const LIST: u64 = 4242;

const FAST: &str = "requests_per_second = 5000\nmax_in_flight = 8\n\
    [destinations.braze.retry]\nmax_attempts = 30\ninitial_backoff = \"5ms\"\n\
    max_backoff = \"100ms\"\nmax_elapsed = \"2m\"\n";

/// Members seen in the 30 days before the run: those whose id ends in 0–7 by user id, the
/// others by an email written untidily (spaces, capitals), which the core normalises.
const MIXED: &str = "SELECT \
    CASE WHEN right(user_id, 1) < '8' THEN user_id END AS user_id, \
    CASE WHEN right(user_id, 1) >= '8' THEN concat('  Mixed.', upper(user_id), '@Example.COM ') END AS email \
    FROM users WHERE last_seen_at >= $run_ts - INTERVAL '30 days' AND last_seen_at < $run_ts";

/// An emulated Iterable project holding our key, fast unless told otherwise.
pub fn partner_with(iterable: IterableConfig, faults: FaultConfig) -> Partner {
    Partner::start(EmulatorConfig {
        iterable: IterableConfig {
            api_key: REST_KEY.into(),
            ..iterable
        },
        faults,
        ..EmulatorConfig::default()
    })
}

pub fn fast() -> IterableConfig {
    IterableConfig {
        rate: 1e9,
        burst: 1e9,
        ..IterableConfig::default()
    }
}

/// The `[destinations.braze]` body of an Iterable destination on `base_url` (its key in the
/// variable the tests set for REST keys).
pub fn destination(base_url: &str, extra: &str) -> String {
    format!(
        "kind = \"iterable\"\nbase_url = \"{base_url}\"\napi_key_env = \"{REST_VAR}\"\n\
         list_id = {LIST}\nproject_type = \"hybrid\"\n{extra}"
    )
}

fn project(base_url: &str, extra: &str, sql: &str) -> Project {
    let project =
        Project::with_destination(lake(), &destination(base_url, extra), &[("active", sql)]);
    let path = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "name = \"Cohort active\"\n",
        "name = \"Cohort active\"\nidentifiers = [\"user_id\", \"email\"]\n",
    );
    std::fs::write(&path, text).unwrap();
    project
}

/// Replaces `from` with `to` in the project file.
fn edit(project: &Project, from: &str, to: &str) {
    let path = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} not in the project file");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

fn email_of(user_id: &str) -> String {
    format!("mixed.{}@example.com", user_id.to_lowercase())
}

/// `MIXED` at `at`: (user ids, emails).
fn mixed_at(at: chrono::DateTime<chrono::Utc>) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut ids, mut emails) = (BTreeSet::new(), BTreeSet::new());
    for u in active_at(at) {
        if u.chars().last().is_some_and(|c| c < '8') {
            ids.insert(u);
        } else {
            emails.insert(email_of(&u));
        }
    }
    (ids, emails)
}

fn held(partner: &Partner) -> (BTreeSet<String>, BTreeSet<String>) {
    let IterableMembers { emails, user_ids } =
        partner.handle.iterable_members(LIST).unwrap_or_default();
    (user_ids.into_iter().collect(), emails.into_iter().collect())
}

#[test]
fn full_and_incremental_syncs_of_ids_and_emails_are_exact_through_faults() {
    // Faults of every kind, seeded: each batch is retried until acknowledged, and a list is a
    // set, so the list must end holding exactly the cohort.
    let partner = partner_with(
        fast(),
        FaultConfig {
            seed: 27,
            error_before_apply: 0.05,
            error_after_apply: 0.05,
            locked: 0.03,
            drop_connection: 0.03,
            ..FaultConfig::default()
        },
    );
    let project = project(&partner.handle.base_url(), FAST, MIXED);
    let first = project
        .run(&["sync", "active", "--at", AT, "--no-progress"])
        .summary();
    let (ids, emails) = mixed_at(at());
    let total = ids.len() + emails.len();
    assert!(
        total > 1_000 && !ids.is_empty() && !emails.is_empty(),
        "{total}"
    );
    assert_eq!(first["adds"], total as u64);
    assert_eq!(first["dead_letters"], 0);
    assert_eq!(first["batches"], total.div_ceil(1000) as u64, "{first}");
    let (held_ids, held_emails) = held(&partner);
    assert!(
        held_ids == ids,
        "{} user ids held, {} in the cohort",
        held_ids.len(),
        ids.len()
    );
    assert!(
        held_emails == emails,
        "{} emails held, {} in the cohort",
        held_emails.len(),
        emails.len()
    );
    let stats = partner.handle.iterable_stats();
    assert!(stats.max_subscribers_per_request <= 1000, "{stats:?}");
    // Emails went out as the core normalised them, never as the query wrote them.
    let u = active_at(at())
        .into_iter()
        .find(|u| u.chars().last().is_some_and(|c| c >= '8'))
        .unwrap();
    assert!(
        partner
            .handle
            .iterable_saw(&format!("email:{}", email_of(&u)))
    );
    assert!(
        !partner
            .handle
            .iterable_saw(&format!("email:  Mixed.{}@Example.COM ", u.to_uppercase()))
    );

    // A week later: who left is unsubscribed, who joined subscribed, nobody else is sent.
    let later = at() + chrono::Duration::days(7);
    let before = partner.handle.iterable_stats();
    let second = project
        .run(&[
            "sync",
            "active",
            "--at",
            &later.to_rfc3339(),
            "--no-progress",
        ])
        .summary();
    let (ids2, emails2) = mixed_at(later);
    let joined = ids2.difference(&ids).count() + emails2.difference(&emails).count();
    let left = ids.difference(&ids2).count() + emails.difference(&emails2).count();
    assert!(
        joined > 0 && left > 0,
        "the fixture churns: +{joined} -{left}"
    );
    assert_eq!(
        (second["adds"].as_u64(), second["removes"].as_u64()),
        (Some(joined as u64), Some(left as u64))
    );
    assert!(
        held(&partner) == (ids2, emails2),
        "exact after the incremental sync"
    );
    let after = partner.handle.iterable_stats();
    assert!(after.unsubscribe_requests > before.unsubscribe_requests);
    let sent = (after.succeeded - before.succeeded) as usize;
    // Each change at least once; faults after applying repeat some.
    assert!(
        sent >= joined + left && sent < 2 * (joined + left),
        "{sent} for +{joined} -{left}"
    );
    assert_eq!(after.failed, 0, "{after:?}");
}

#[test]
fn malformed_and_refused_members_are_dead_letters_and_the_refused_are_retried() {
    // Ids ending in 4 get a userId of 60+ characters (Iterable takes 52), in 5 an email that is
    // none; identifiers holding "ab" name no user at the partner yet.
    let sql = "SELECT \
        CASE WHEN right(user_id, 1) < '4' THEN user_id \
             WHEN right(user_id, 1) = '4' THEN concat(user_id, repeat('x', 60)) END AS user_id, \
        CASE WHEN right(user_id, 1) = '5' THEN concat('not an email ', user_id) \
             WHEN right(user_id, 1) > '5' THEN concat(user_id, '@example.com') END AS email \
        FROM users WHERE last_seen_at >= $run_ts - INTERVAL '30 days' AND last_seen_at < $run_ts";
    let partner = partner_with(
        IterableConfig {
            unknown_marker: Some("ab".into()),
            ..fast()
        },
        FaultConfig::default(),
    );
    let project = project(&partner.handle.base_url(), FAST, sql);
    let run = project.run(&["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(run.code(), 3, "dead letters exit 3: {}", run.stderr());
    let summary = run.summary_any();
    let active = active_at(at());
    let last = |u: &String| u.chars().last().unwrap();
    let long: Vec<&String> = active.iter().filter(|u| last(u) == '4').collect();
    let malformed: Vec<&String> = active.iter().filter(|u| last(u) == '5').collect();
    let ids: BTreeSet<String> = active.iter().filter(|u| last(u) < '4').cloned().collect();
    let emails: BTreeSet<String> = active
        .iter()
        .filter(|u| last(u) > '5')
        .map(|u| format!("{u}@example.com"))
        .collect();
    let unknown = ids
        .iter()
        .chain(&emails)
        .filter(|i| i.contains("ab"))
        .count();
    assert!(!long.is_empty() && !malformed.is_empty() && unknown > 0);
    assert_eq!(
        summary["dead_letters"],
        (long.len() + malformed.len() + unknown) as u64,
        "{summary}"
    );
    // Neither the long userIds nor the malformed emails reached the partner.
    for u in &long {
        assert!(
            !partner
                .handle
                .iterable_saw(&format!("userId:{u}{}", "x".repeat(60)))
        );
    }
    for u in &malformed {
        assert!(
            !partner
                .handle
                .iterable_saw(&format!("email:not an email {u}"))
        );
    }
    let stats = partner.handle.iterable_stats();
    assert_eq!(
        (stats.user_ids_seen + stats.emails_seen) as usize,
        ids.len() + emails.len(),
        "only well-formed identifiers were sent"
    );
    let known = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter().filter(|i| !i.contains("ab")).cloned().collect()
    };
    assert!(held(&partner) == (known(&ids), known(&emails)));

    // The dead letters, with the reasons: ours for what was not sent, Iterable's list name for
    // what it refused.
    let mut reasons = BTreeSet::new();
    for file in std::fs::read_dir(project.cohort_state("active").join("dead_letters")).unwrap() {
        for b in read_all(&file.unwrap().path()) {
            for row in 0..b.num_rows() {
                let reason = string_at(&b, "reason", row).unwrap();
                reasons.insert(if reason.contains("notFound") {
                    "not found".to_owned()
                } else if reason.contains("at most 52") {
                    "long".to_owned()
                } else if reason.contains("email") {
                    "malformed".to_owned()
                } else {
                    reason
                });
            }
        }
    }
    assert_eq!(
        reasons,
        ["long", "malformed", "not found"].map(String::from).into(),
        "{reasons:?}"
    );

    // Letting the sync create users: the next run retries the refused, and they are held.
    edit(
        &project,
        "project_type = \"hybrid\"\n",
        "project_type = \"hybrid\"\nupdate_existing_only = false\n",
    );
    let retried = project.run(&["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(retried.code(), 3, "{}", retried.stderr());
    assert_eq!(
        retried.summary_any()["dead_letters"],
        (long.len() + malformed.len()) as u64
    );
    assert!(held(&partner) == (ids, emails));
}

#[test]
fn a_refused_key_names_its_environment_variable_and_nothing_is_sent_again() {
    let partner = partner_with(fast(), FaultConfig::default());
    let project = project(&partner.handle.base_url(), FAST, MIXED);
    let run = project.run_with(
        &["sync", "active", "--at", AT, "--no-progress"],
        &[(REST_VAR, Some("it-wrong-key-never-log-me"))],
    );
    assert_eq!(run.code(), 4, "a partner rejection: {}", run.stderr());
    let err = run.stderr();
    assert!(err.contains(REST_VAR) && err.contains("401"), "{err}");
    assert!(
        !err.contains("it-wrong-key-never-log-me"),
        "the key is never printed: {err}"
    );
    assert_eq!(partner.handle.iterable_members(LIST), None);
    let ok = project
        .run(&["sync", "active", "--at", AT, "--no-progress", "--rebind"])
        .summary();
    assert_eq!(ok["dead_letters"], 0, "{ok}");
    assert!(held(&partner) == mixed_at(at()));
}

#[test]
fn a_run_killed_mid_delivery_resumes_without_resending_acknowledged_batches() {
    use crate::incremental::kill_at;
    let partner = partner_with(fast(), FaultConfig::default());
    // The client's own pacing makes the run last a few seconds.
    let project = project(
        &partner.handle.base_url(),
        "batch_size = 100\nrequests_per_second = 40\nmax_in_flight = 4",
        MIXED,
    );
    let (ids, emails) = mixed_at(at());
    let total = ids.len() + emails.len();
    let batches = total.div_ceil(100) as u64;
    kill_at(
        &[15, 50],
        &project.cohort_state("active"),
        || project.command(&["sync", "active", "--at", AT, "--no-progress"]),
        || partner.handle.iterable_stats().subscribe_requests,
    );
    let applied = partner.handle.iterable_stats().subscribe_requests;
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
    assert!(held(&partner) == (ids, emails));
    // Only batches answered in the instant before a kill can go twice: max_in_flight per kill.
    let subscribed = partner.handle.iterable_stats().succeeded;
    assert!(
        subscribed <= (total + 2 * 4 * 100) as u64,
        "{subscribed} subscribers sent"
    );
}

#[test]
fn answers_429_are_honoured_and_a_run_paced_at_the_partners_rate_meets_none() {
    // The partner drains 20 requests/s per endpoint; a client asking 10 times that is told
    // 429, waits and converges.
    let partner = partner_with(
        IterableConfig {
            rate: 20.0,
            burst: 20.0,
            ..IterableConfig::default()
        },
        FaultConfig::default(),
    );
    let eager = project(
        &partner.handle.base_url(),
        &format!("batch_size = 200\n{FAST}"),
        MIXED,
    );
    let summary = eager
        .run(&["sync", "active", "--at", AT, "--no-progress"])
        .summary();
    assert_eq!(summary["dead_letters"], 0);
    assert!(held(&partner) == mixed_at(at()));
    assert!(
        partner.handle.iterable_stats().rate_limited > 0,
        "the partner pushed back"
    );

    // At the partner's rate (per endpoint: one pacer each), no 429 at all.
    let partner = partner_with(
        IterableConfig {
            rate: 20.0,
            burst: 20.0,
            ..IterableConfig::default()
        },
        FaultConfig::default(),
    );
    let paced = project(
        &partner.handle.base_url(),
        "batch_size = 200\nrequests_per_second = 20\nmax_in_flight = 4",
        MIXED,
    );
    let summary = paced
        .run(&["sync", "active", "--at", AT, "--no-progress"])
        .summary();
    assert_eq!(summary["dead_letters"], 0);
    assert!(held(&partner) == mixed_at(at()));
    assert_eq!(partner.handle.iterable_stats().rate_limited, 0);
    let requests = summary["requests"].as_u64().unwrap();
    assert!(requests > 20, "{requests}");
}

#[test]
fn two_cohorts_on_one_list_are_refused_by_name() {
    let partner = partner_with(fast(), FaultConfig::default());
    let project = Project::with_destination(
        lake(),
        &destination(&partner.handle.base_url(), FAST),
        &[("active", ACTIVE_30D), ("other", ACTIVE_30D)],
    );
    let run = project.run(&["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("cohorts.active and cohorts.other")
            && err.contains(&format!("the static list {LIST}")),
        "{err}"
    );
    assert_eq!(partner.handle.iterable_members(LIST), None, "nothing sent");
}
