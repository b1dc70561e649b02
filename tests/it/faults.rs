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
    // The partner's Retry-After (up to the 2 s window) must fit in one wait.
    let dest = format!(
        "batch_size = 100\nrequests_per_second = 1000\nmax_in_flight = 8{}",
        FAST_RETRY.replace("max_backoff = \"200ms\"", "max_backoff = \"3s\"")
    );
    let project = Project::new(&partner.handle.base_url(), &dest, &[("pro", PRO)]);
    Partner::wait_for_window_start(Duration::from_secs(2));
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
fn a_rate_limited_sync_uses_the_whole_limit_without_429s() {
    // The partner allows 100 requests per 1 s window; our client believes it may send 1,000/s.
    // Paced by the X-RateLimit-* headers (and counting its own requests in flight against
    // Remaining), it must use at least 95% of the limit over the whole windows of the run and
    // never be answered 429 after its first second.
    const R: usize = 100;
    let partner = Partner::start(EmulatorConfig {
        rate_limit: RateLimitConfig {
            requests: R as u64,
            window: Duration::from_secs(1),
        },
        ..EmulatorConfig::default()
    });
    let dest = "batch_size = 40\nrequests_per_second = 1000\nmax_in_flight = 8";
    let all = "SELECT user_id FROM users";
    let project = Project::new(&partner.handle.base_url(), dest, &[("all", all)]);
    let summary = project.run(&["sync", "all", "--at", AT]).summary();

    let expected: BTreeSet<String> = users().into_iter().map(|u| u.user_id).collect();
    assert!(
        partner.members("all") == expected,
        "the partner holds a different set"
    );
    let log = partner.handle.rate_log();
    assert!(log.len() > 4 * R, "fixture: only {} requests", log.len());
    assert_eq!(log.len() as u64, summary["requests"].as_u64().unwrap());
    let first = log[0].0;
    let late_429s: Vec<_> = log
        .iter()
        .filter(|(t, allowed)| {
            !allowed && t.duration_since(first).unwrap() > Duration::from_secs(1)
        })
        .collect();
    assert!(
        late_429s.is_empty(),
        "{} requests answered 429 after the first second",
        late_429s.len()
    );
    // Requests let through per window, for the windows wholly inside the delivery of batches:
    // from the first batch (`log[1]`; `log[0]` creates the cohort, and on a loaded machine —
    // the whole suite runs at once on two cores — the batches' encoder may start a window
    // later) to the last.
    let window_of =
        |t: &std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (w_first, w_last) = (window_of(&log[1].0), window_of(&log[log.len() - 1].0));
    let mut per_window = std::collections::BTreeMap::new();
    for (t, allowed) in &log {
        *per_window.entry(window_of(t)).or_insert(0usize) += usize::from(*allowed);
    }
    let inner: Vec<usize> = (w_first + 1..w_last)
        .map(|w| per_window.get(&w).copied().unwrap_or(0))
        .collect();
    assert!(
        inner.len() >= 3,
        "fixture: the run spans only {} whole windows",
        inner.len()
    );
    // At least 95% of the limit over the whole windows, and no window far below it.
    let carried: usize = inner.iter().sum();
    assert!(
        carried * 100 >= inner.len() * R * 95,
        "{carried} requests in {} windows of {R}: {inner:?}",
        inner.len()
    );
    assert!(
        inner.iter().all(|n| n * 100 >= R * 90),
        "a window fell below 90%: {inner:?}"
    );
    eprintln!("requests per whole 1 s window (limit {R}): {inner:?}");
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
