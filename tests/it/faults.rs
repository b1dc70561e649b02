//! A misbehaving partner: 429s, 5xx (before and after applying), 423, dropped connections and
//! slow answers are retried until the partner holds exactly the cohort.

use std::collections::BTreeSet;
use std::time::Duration;

use cohort_bridge::emulator::{EmulatorConfig, FaultConfig, RateLimitConfig};

use crate::support::*;

const PRO: &str = "SELECT user_id FROM users WHERE plan = 'pro'";

fn pro_users() -> BTreeSet<String> {
    users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .collect()
}

const FAST_RETRY: &str = "\n[destinations.braze.retry]\nmax_attempts = 30\ninitial_backoff = \"5ms\"\nmax_backoff = \"200ms\"\nmax_elapsed = \"2m\"\n";

#[test]
fn rate_limited_requests_are_retried_after_the_partner_says() {
    // 20 requests per 2 s at the partner, and another client has just spent them all; our
    // client believes it may send 1,000 per second. It must take the 429s, wait as told (and
    // then pace itself from the X-RateLimit-* headers).
    let partner = Partner::start(EmulatorConfig {
        rate_limit: RateLimitConfig {
            requests: 20,
            window: Duration::from_secs(2),
        },
        ..EmulatorConfig::default()
    });
    let dest =
        format!("batch_size = 100\nrequests_per_second = 1000\nmax_in_flight = 8{FAST_RETRY}");
    let project = Project::new(&partner.handle.base_url(), &dest, &[("pro", PRO)]);
    partner.spend_quota(20);
    let summary = project.run(&["sync", "pro", "--at", AT]).summary();

    let expected = pro_users();
    assert!(
        expected.len() > 1_500,
        "fixture: {} pro users",
        expected.len()
    );
    assert!(
        partner.members("pro") == expected,
        "the partner holds a different set than the cohort"
    );
    let stats = partner.handle.stats();
    assert!(
        stats.rate_limited > 0,
        "the test must actually hit the rate limit: {stats:?}"
    );
    assert!(summary["retries"].as_u64().unwrap() >= stats.rate_limited);
    assert_eq!(
        stats.redundant_adds, 0,
        "a 429 applies nothing, so nothing is sent twice"
    );
}

#[test]
fn server_errors_locks_and_dropped_connections_are_retried() {
    let partner = Partner::start(EmulatorConfig {
        faults: FaultConfig {
            seed: 11,
            error_before_apply: 0.15,
            error_after_apply: 0.10,
            locked: 0.10,
            drop_connection: 0.08,
            ..FaultConfig::default()
        },
        ..EmulatorConfig::default()
    });
    let dest = format!("batch_size = 50\nrequests_per_second = 5000{FAST_RETRY}");
    let project = Project::new(&partner.handle.base_url(), &dest, &[("pro", PRO)]);
    let summary = project.run(&["sync", "pro", "--at", AT]).summary();

    assert!(
        partner.members("pro") == pro_users(),
        "the partner holds a different set than the cohort"
    );
    let stats = partner.handle.stats();
    let count = |s: u16| stats.by_status.get(&s).copied().unwrap_or(0);
    assert!(
        count(500) > 0 && count(423) > 0 && stats.dropped_connections > 0,
        "faults must fire: {stats:?}"
    );
    assert!(summary["retries"].as_u64().unwrap() >= count(500) + count(423));
}

#[test]
fn a_slow_partner_times_out_and_is_retried() {
    let partner = Partner::start(EmulatorConfig {
        faults: FaultConfig {
            seed: 5,
            slow: 0.2,
            slow_delay: Duration::from_secs(3),
            ..FaultConfig::default()
        },
        ..EmulatorConfig::default()
    });
    let dest = format!(
        "batch_size = 200\nrequests_per_second = 5000\nrequest_timeout = \"400ms\"{FAST_RETRY}"
    );
    let project = Project::new(&partner.handle.base_url(), &dest, &[("pro", PRO)]);
    let run = project.run(&["sync", "pro", "--at", AT]);
    let summary = run.summary();

    assert!(
        partner.members("pro") == pro_users(),
        "the partner holds a different set than the cohort"
    );
    assert!(
        summary["retries"].as_u64().unwrap() > 0,
        "timeouts must have been retried"
    );
    assert!(
        run.stderr().contains("timed out") || run.stderr().contains("timeout"),
        "stderr: {}",
        run.stderr()
    );
    assert!(summary["seconds"].as_f64().unwrap() < 30.0);
}

#[test]
fn retries_are_bounded_and_a_dead_partner_fails_the_run() {
    // Nothing listens on this port once the emulator is gone.
    let url = {
        let partner = Partner::plain();
        partner.handle.base_url()
    };
    std::thread::sleep(Duration::from_millis(100));
    let dest = "request_timeout = \"500ms\"\n[destinations.braze.retry]\nmax_attempts = 3\ninitial_backoff = \"10ms\"\nmax_backoff = \"20ms\"\nmax_elapsed = \"5s\"\n";
    let project = Project::new(&url, dest, &[("pro", PRO)]);
    let run = project.run(&["sync", "pro", "--at", AT]);
    assert_eq!(run.code(), 1, "stderr: {}", run.stderr());
    let s = run.summaries();
    assert_eq!(s[0]["outcome"], "failed");
    assert!(
        run.stderr().contains("3 attempts") || run.stderr().contains("attempt"),
        "stderr: {}",
        run.stderr()
    );
}
