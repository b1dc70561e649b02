//! The `customerio` destination (a Customer.io manual segment through the Track API) against
//! the emulator's Customer.io module, through the real binary: full and incremental syncs of a
//! cohort mixing external ids and emails leave the segment holding exactly the cohort, through
//! seeded faults; malformed emails are dead letters before any request; kinds Customer.io does
//! not take are refused by name; people unknown to the workspace are acknowledged and ignored
//! (the partner reports nothing per id); a refused key names its variables; a redirect to the
//! EU host is not followed and names the region; a killed run resumes without re-sending what
//! was acknowledged; the default pacing stays under the sliding 100-a-second window with no
//! 429, and 429s are honoured.

use std::collections::BTreeSet;
use std::time::Duration;

use cohort_bridge::emulator::{
    CustomerioConfig, CustomerioFaults, EmulatorConfig, FaultConfig, RateLimitConfig,
};

use crate::support::*;

pub const SITE_VAR: &str = "IT_CIO_SITE_ID";
pub const SITE: &str = "site-3b9e20-never-log-me";
pub const KEY_VAR: &str = "IT_CIO_API_KEY";
pub const CIO_KEY: &str = "cio-77d1f0-never-log-me";
/// The manual segment the tests sync (one of the emulator's by default).
pub const SEGMENT: i32 = 1;

/// An emulator whose Customer.io workspace has the tests' Site ID and key.
pub fn partner(customerio: CustomerioConfig) -> Partner {
    Partner::start(config(customerio))
}

pub fn config(customerio: CustomerioConfig) -> EmulatorConfig {
    EmulatorConfig {
        customerio: CustomerioConfig {
            site_id: SITE.into(),
            api_key: CIO_KEY.into(),
            ..customerio
        },
        ..EmulatorConfig::default()
    }
}

/// The `[destinations.braze]` body of a `customerio` destination at `base_url`.
pub fn destination(base_url: &str, extra: &str) -> String {
    format!(
        "kind = \"customerio\"\nbase_url = \"{base_url}\"\nsite_id_env = \"{SITE_VAR}\"\n\
         api_key_env = \"{KEY_VAR}\"\nsegment_id = {SEGMENT}\n{extra}"
    )
}

/// A project over the shared lake whose cohorts are (name, SQL), each identified by `user_id`
/// then `email`.
fn cio_project(base_url: &str, extra: &str, cohorts: &[(&str, &str)]) -> Project {
    let project = Project::with_destination(lake(), &destination(base_url, extra), cohorts);
    let config = project.dir.path().join("cohort-bridge.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (name, _) in cohorts {
        text = text.replace(
            &format!("[cohorts.{name}]\n"),
            &format!("[cohorts.{name}]\nidentifiers = [\"user_id\", \"email\"]\n"),
        );
    }
    std::fs::write(&config, text).unwrap();
    project
}

pub fn env() -> [(&'static str, Option<&'static str>); 2] {
    [(SITE_VAR, Some(SITE)), (KEY_VAR, Some(CIO_KEY))]
}

fn run(project: &Project, args: &[&str]) -> Run {
    project.run_with(args, &env())
}

/// The members of the segment, as the emulator shows them (`email:` before an address).
fn held(partner: &Partner) -> BTreeSet<String> {
    partner
        .handle
        .customerio_members(SEGMENT)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Who was seen in the 30 days before the run; those whose id starts with `3` or `a` are known
/// by an email only (spelled with capitals and spaces, which the core normalises).
const MIXED_30D: &str = "SELECT \
    CASE WHEN substr(user_id, 1, 1) IN ('3', 'a') THEN NULL ELSE user_id END AS user_id, \
    CASE WHEN substr(user_id, 1, 1) IN ('3', 'a') \
        THEN concat(' Person.', user_id, '@Example.COM ') END AS email \
    FROM users WHERE last_seen_at >= $run_ts - INTERVAL '30 days' AND last_seen_at < $run_ts";

/// `MIXED_30D` at `at`, computed from the Parquet files without DataFusion, as the emulator
/// shows members.
fn mixed_at(at: chrono::DateTime<chrono::Utc>) -> BTreeSet<String> {
    active_at(at)
        .into_iter()
        .map(|id| {
            if id.starts_with('3') || id.starts_with('a') {
                format!("email:person.{}@example.com", id.to_lowercase())
            } else {
                id
            }
        })
        .collect()
}

const FAST: &str = "requests_per_second = 5000\nmax_in_flight = 8\nbatch_size = 300\n\
    [destinations.braze.retry]\nmax_attempts = 40\ninitial_backoff = \"5ms\"\n\
    max_backoff = \"100ms\"\nmax_elapsed = \"2m\"\n";

/// No rate limit to speak of (for tests about something else than pacing).
fn unlimited() -> RateLimitConfig {
    RateLimitConfig {
        requests: 1_000_000,
        window: Duration::from_secs(1),
    }
}

#[test]
fn full_and_incremental_syncs_of_ids_and_emails_are_exact_under_faults() {
    // Faults of every kind, seeded: each part of a batch is retried until acknowledged, and
    // adding or removing twice is harmless, so the segment must end with exactly the cohort.
    let partner = partner(CustomerioConfig {
        rate_limit: unlimited(),
        faults: FaultConfig {
            seed: 27,
            error_before_apply: 0.05,
            error_after_apply: 0.05,
            drop_connection: 0.03,
            ..FaultConfig::default()
        },
        own_faults: CustomerioFaults {
            seed: 5,
            html: 0.03,
            too_many: 0.03,
            retry_after: Some("0".into()),
            ..CustomerioFaults::default()
        },
        ..CustomerioConfig::default()
    });
    let project = cio_project(&partner.handle.base_url(), FAST, &[("active", MIXED_30D)]);
    let first = run(&project, &["sync", "active", "--at", AT, "--no-progress"]).summary();
    let expected = mixed_at(at());
    let emails = expected.iter().filter(|m| m.starts_with("email:")).count();
    assert!(
        expected.len() > 1_000 && emails > 100 && emails < expected.len() / 2,
        "a multi-batch cohort mixing kinds: {} members, {emails} emails",
        expected.len()
    );
    assert_eq!(first["adds"], expected.len() as u64, "{first}");
    assert_eq!(first["dead_letters"], 0, "{first}");
    assert_eq!(first["batches"], expected.len().div_ceil(300) as u64);
    let got = held(&partner);
    assert!(
        got == expected,
        "held {} vs cohort {}; missing {:?}, extra {:?}",
        got.len(),
        expected.len(),
        expected.difference(&got).take(3).collect::<Vec<_>>(),
        got.difference(&expected).take(3).collect::<Vec<_>>()
    );

    // A week later: the leavers removed, the joiners added, by id and by email.
    let later = at() + chrono::Duration::days(7);
    let now = mixed_at(later);
    let (joined, left) = (
        now.difference(&expected).count() as u64,
        expected.difference(&now).count() as u64,
    );
    let left_emails = expected
        .difference(&now)
        .filter(|m| m.starts_with("email:"))
        .count();
    assert!(
        joined > 0 && left > 0 && left_emails > 0,
        "the fixture churns: +{joined} -{left} ({left_emails} emails)"
    );
    let second = run(
        &project,
        &[
            "sync",
            "active",
            "--at",
            &later.to_rfc3339(),
            "--no-progress",
        ],
    )
    .summary();
    assert_eq!(
        (second["adds"].as_u64(), second["removes"].as_u64()),
        (Some(joined), Some(left)),
        "{second}"
    );
    assert!(held(&partner) == now, "after the incremental sync");
    let stats = partner.handle.customerio_stats();
    assert!(stats.max_ids_per_request <= 300, "{stats:?}");
    assert_eq!(
        stats.by_status.get(&400),
        None,
        "nothing malformed: {stats:?}"
    );
    assert_eq!(
        stats.ignored, 0,
        "every value was of its id_type: {stats:?}"
    );
    // The faults were met (and a 500 after applying makes some changes count twice).
    assert!(
        stats.by_status.contains_key(&500) && stats.dropped > 0,
        "{stats:?}"
    );
}

#[test]
fn malformed_emails_are_dead_letters_before_any_request_and_phones_are_refused_by_name() {
    let partner = partner(CustomerioConfig {
        rate_limit: unlimited(),
        ..CustomerioConfig::default()
    });
    let sql = "SELECT user_id, CAST(NULL AS VARCHAR) AS email FROM users WHERE plan = 'pro' \
        UNION ALL SELECT NULL, 'not-an-email' UNION ALL SELECT NULL, ' Someone@Example.com'";
    let project = cio_project(&partner.handle.base_url(), FAST, &[("pro", sql)]);
    let out = run(&project, &["sync", "pro", "--at", AT, "--no-progress"]);
    assert_eq!(out.code(), 3, "dead letters exit 3: {}", out.stderr());
    let s = out.summary_any();
    assert_eq!(
        (s["malformed"].as_u64(), s["dead_letters"].as_u64()),
        (Some(1), Some(1))
    );
    let mut want: BTreeSet<String> = users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .collect();
    want.insert("email:someone@example.com".into());
    assert!(held(&partner) == want, "{} held", held(&partner).len());
    // The partner never saw the malformed address: nothing was ignored, nothing refused.
    let stats = partner.handle.customerio_stats();
    assert_eq!(
        (stats.ignored, stats.by_status.get(&400)),
        (0, None),
        "{stats:?}"
    );

    // A cohort that needs phone numbers: refused by name, before anything is sent.
    let sent = partner.handle.customerio_stats().requests;
    let phones = "SELECT CAST(NULL AS VARCHAR) AS user_id, CAST(NULL AS VARCHAR) AS email, \
        '+1 415 555 0100' AS phone";
    let project = project_with_phone(&partner.handle.base_url(), phones);
    let out = run(&project, &["sync", "phones", "--at", AT, "--no-progress"]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(
        out.stderr().contains("cannot identify users by phone")
            && out.stderr().contains("customerio"),
        "{}",
        out.stderr()
    );
    assert_eq!(
        partner.handle.customerio_stats().requests,
        sent,
        "nothing was sent"
    );
}

fn project_with_phone(base_url: &str, sql: &str) -> Project {
    let project =
        Project::with_destination(lake(), &destination(base_url, FAST), &[("phones", sql)]);
    let config = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[cohorts.phones]\n",
        "[cohorts.phones]\nidentifiers = [\"user_id\", \"email\", \"phone\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    project
}

#[test]
fn people_unknown_to_the_workspace_are_acknowledged_and_ignored_silently() {
    // Customer.io documents no per-id result: unknown people are ignored and the answer is
    // `{}`. So there is nothing to dead-letter: the run succeeds, the segment lacks them, and
    // only a later `--full` (once they are identified in the workspace) adds them.
    let partner = partner(CustomerioConfig {
        rate_limit: unlimited(),
        unknown_marker: Some("ab".into()),
        ..CustomerioConfig::default()
    });
    let project = cio_project(&partner.handle.base_url(), FAST, &[("active", ACTIVE_30D)]);
    let s = run(&project, &["sync", "active", "--at", AT, "--no-progress"]).summary();
    let expected = active_at(at());
    let unknown: BTreeSet<String> = expected
        .iter()
        .filter(|u| u.contains("ab"))
        .cloned()
        .collect();
    assert!(!unknown.is_empty());
    assert_eq!(
        (s["adds"].as_u64(), s["dead_letters"].as_u64()),
        (Some(expected.len() as u64), Some(0))
    );
    let known: BTreeSet<String> = expected.difference(&unknown).cloned().collect();
    assert!(held(&partner) == known);
    assert_eq!(
        partner.handle.customerio_stats().ignored,
        unknown.len() as u64
    );
}

#[test]
fn a_refused_key_names_its_variables_and_nothing_is_committed() {
    let partner = partner(CustomerioConfig::default());
    let project = cio_project(&partner.handle.base_url(), FAST, &[("active", ACTIVE_30D)]);
    let out = project.run_with(
        &["sync", "active", "--at", AT, "--no-progress"],
        &[
            (SITE_VAR, Some(SITE)),
            (KEY_VAR, Some("cio-wrong-key-never-log-me")),
        ],
    );
    assert_eq!(out.code(), 4, "a partner rejection: {}", out.stderr());
    let err = out.stderr();
    assert!(
        err.contains("401") && err.contains(SITE_VAR) && err.contains(KEY_VAR),
        "{err}"
    );
    for secret in ["cio-wrong-key-never-log-me", SITE, CIO_KEY] {
        assert!(!err.contains(secret), "a secret was printed: {err}");
    }
    assert!(!project.cohort_state("active").join("current.json").exists());
    assert!(held(&partner).is_empty());

    // A missing variable is named before anything is sent.
    let out = project.run_with(
        &["sync", "active", "--at", AT, "--no-progress"],
        &[(SITE_VAR, None), (KEY_VAR, Some(CIO_KEY))],
    );
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(out.stderr().contains(SITE_VAR), "{}", out.stderr());
}

#[test]
fn a_redirect_to_the_eu_host_is_not_followed_and_names_the_region() {
    let partner = partner(CustomerioConfig {
        own_faults: CustomerioFaults {
            redirect: 1.0,
            ..CustomerioFaults::default()
        },
        ..CustomerioConfig::default()
    });
    let project = cio_project(&partner.handle.base_url(), FAST, &[("active", ACTIVE_30D)]);
    let out = run(&project, &["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    let err = out.stderr();
    assert!(
        err.contains("https://track-eu.customer.io") && err.contains("region = \"eu\""),
        "{err}"
    );
    assert!(held(&partner).is_empty());
}

#[test]
fn a_run_killed_mid_delivery_resumes_without_resending_acknowledged_batches() {
    use crate::incremental::kill_at;
    let partner = partner(CustomerioConfig::default());
    // Slow enough to be killed mid-delivery: 40 requests a second of 50 ids.
    let project = cio_project(
        &partner.handle.base_url(),
        "requests_per_second = 40\nmax_in_flight = 4\nbatch_size = 50",
        &[("active", MIXED_30D)],
    );
    let expected = mixed_at(at());
    let batches = expected.len().div_ceil(50) as u64;
    kill_at(
        &[15, 50],
        &project.cohort_state("active"),
        || {
            let mut cmd = project.command(&["sync", "active", "--at", AT, "--no-progress"]);
            cmd.env(SITE_VAR, SITE).env(KEY_VAR, CIO_KEY);
            cmd
        },
        || partner.handle.customerio_stats().applied,
    );
    let applied = partner.handle.customerio_stats().applied;
    assert!(applied < batches, "the runs were interrupted");
    let resumed = run(&project, &["sync", "active", "--at", AT, "--no-progress"]).summary();
    let (sent, skipped) = (
        resumed["resumed_batches"].as_u64().unwrap(),
        resumed["skipped_batches"].as_u64().unwrap(),
    );
    assert_eq!(sent + skipped, batches, "{resumed}");
    assert!(
        skipped > 0 && skipped <= applied,
        "{skipped} skipped of {applied} applied"
    );
    assert!(held(&partner) == expected);
    // Only batches answered in the instant before a kill go twice (max_in_flight per kill; a
    // batch at the boundary of the kinds is two requests).
    let stats = partner.handle.customerio_stats();
    let ids = stats.ids_added + stats.redundant_adds;
    assert!(
        ids <= expected.len() as u64 + 2 * 4 * 50,
        "{ids} ids sent for {} members",
        expected.len()
    );
}

#[test]
fn the_default_pace_stays_under_the_sliding_window_and_429s_are_honoured() {
    // The emulator enforces the documented 100 requests in any second; the destination's
    // defaults (97 a second, a burst of 2) must never meet a 429.
    let partner = partner(CustomerioConfig::default());
    let project = cio_project(
        &partner.handle.base_url(),
        "batch_size = 20",
        &[("active", ACTIVE_30D)],
    );
    let s = run(&project, &["sync", "active", "--at", AT, "--no-progress"]).summary();
    let expected = active_at(at());
    assert!(held(&partner) == expected);
    let log = partner.handle.customerio_rate_log();
    let refused = log.iter().filter(|(_, ok)| !ok).count();
    assert_eq!(refused, 0, "429s at the default pace: {s}");
    assert!(log.len() >= 300, "{} requests", log.len());
    let span = log
        .last()
        .unwrap()
        .0
        .duration_since(log[0].0)
        .unwrap()
        .as_secs_f64();
    let rate = (log.len() - 1) as f64 / span;
    assert!(rate > 85.0 && rate <= 100.0, "{rate:.1} requests a second");

    // A workspace whose limit is lower than the pace (other tools share it): 429s, honoured
    // by backing off, and the segment still ends exact.
    let partner = partner_with_limit(40);
    let project = cio_project(
        &partner.handle.base_url(),
        "batch_size = 50\n[destinations.braze.retry]\nmax_attempts = 40\n\
         initial_backoff = \"20ms\"\nmax_backoff = \"1s\"\nmax_elapsed = \"2m\"\n",
        &[("active", ACTIVE_30D)],
    );
    run(&project, &["sync", "active", "--at", AT, "--no-progress"]).summary();
    assert!(held(&partner) == expected);
    assert!(partner.handle.customerio_stats().rate_limited > 0);
}

fn partner_with_limit(per_second: u64) -> Partner {
    partner(CustomerioConfig {
        rate_limit: RateLimitConfig {
            requests: per_second,
            window: Duration::from_secs(1),
        },
        ..CustomerioConfig::default()
    })
}

#[test]
fn two_cohorts_on_one_segment_are_refused_before_anything_is_sent() {
    let partner = partner(CustomerioConfig::default());
    let project = cio_project(
        &partner.handle.base_url(),
        FAST,
        &[("one", ACTIVE_30D), ("two", ACTIVE_30D)],
    );
    let out = run(&project, &["sync", "one", "--at", AT, "--no-progress"]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    let err = out.stderr();
    assert!(
        err.contains("cohorts.one and cohorts.two")
            && err.contains("manual segment 1")
            && err.contains("a destination of its own"),
        "{err}"
    );
    assert_eq!(partner.handle.customerio_stats().requests, 0);
}
