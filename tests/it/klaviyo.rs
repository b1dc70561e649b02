//! The Klaviyo destination through the real binary against the emulator's Klaviyo side (an
//! independent reading of `docs/partners/klaviyo.md`): a cohort whose members mix external ids,
//! emails and a phone reaches the list exactly, full then incremental, through faults and
//! cancelled jobs; malformed contacts are dead letters before any request; rows the import job
//! refuses are dead letters and sent again next run; a wrong key is refused naming its
//! variable; a SIGKILL mid-delivery resumes without re-importing acknowledged batches; 429s are
//! waited out.

use std::collections::BTreeSet;
use std::time::Duration;

use cohort_bridge::emulator::{EmulatorConfig, FaultConfig, KlaviyoConfig, KlaviyoRate};

use crate::support::*;

pub const KLAVIYO_VAR: &str = "IT_KLAVIYO_API_KEY";
pub const KLAVIYO_KEY: &str = "kl-9d3e7a21-never-log-me";

/// The emulator's Klaviyo side with our key, limits no test run meets, and jobs that complete
/// in 20 ms.
pub fn fast() -> KlaviyoConfig {
    let unlimited = KlaviyoRate {
        burst: 1_000_000,
        steady: 100_000_000,
    };
    KlaviyoConfig {
        api_key: KLAVIYO_KEY.into(),
        rate: unlimited,
        lookup_rate: unlimited,
        job_delay: Duration::from_millis(20),
        ..KlaviyoConfig::default()
    }
}

pub fn partner(klaviyo: KlaviyoConfig) -> Partner {
    Partner::start(EmulatorConfig {
        klaviyo,
        ..EmulatorConfig::default()
    })
}

/// The `[destinations.braze]` body of a Klaviyo destination at `base_url`, with `extra` keys.
pub fn destination(base_url: &str, extra: &str) -> String {
    format!(
        "kind = \"klaviyo\"\nbase_url = \"{base_url}\"\napi_key_env = \"{KLAVIYO_VAR}\"\n\
         poll_interval = \"10ms\"\n{extra}"
    )
}

/// The list's members as the tests name them: external ids plain, `email:…`, `phone:…`.
pub fn held(partner: &Partner, list: &str) -> BTreeSet<String> {
    partner
        .handle
        .klaviyo_members(list)
        .unwrap_or_default()
        .into_iter()
        .map(|p| match (p.external_id, p.email, p.phone_number) {
            (Some(id), _, _) => id,
            (None, Some(e), _) => format!("email:{e}"),
            (None, None, Some(p)) => format!("phone:{p}"),
            (None, None, None) => "(no identifier)".into(),
        })
        .collect()
}

const FAST: &str = "batch_size = 500\nrequests_per_second = 5000\nmax_in_flight = 8\n\
    [destinations.braze.retry]\nmax_attempts = 30\ninitial_backoff = \"5ms\"\n\
    max_backoff = \"1500ms\"\nmax_elapsed = \"2m\"\n";

/// The users active in the 30 days before the run: those whose id starts with `3` known by an
/// email only (spelled with spaces and capitals), plus a phone to normalise, and a malformed
/// email and phone.
fn mixed() -> String {
    format!(
        "SELECT CASE WHEN substr(user_id, 1, 1) = '3' THEN NULL ELSE user_id END AS user_id, \
         CASE WHEN substr(user_id, 1, 1) = '3' THEN concat(' Mail.', user_id, '@Example.COM ') \
         END AS email, CAST(NULL AS VARCHAR) AS phone FROM ({ACTIVE_30D}) a \
         UNION ALL SELECT NULL, NULL, '+1 (415) 555-0100' \
         UNION ALL SELECT NULL, 'not-an-email', NULL \
         UNION ALL SELECT NULL, NULL, '415 555 0100'"
    )
}

fn mixed_at(at: chrono::DateTime<chrono::Utc>) -> BTreeSet<String> {
    let mut want: BTreeSet<String> = active_at(at)
        .into_iter()
        .map(|id| match id.starts_with('3') {
            true => format!("email:mail.{}@example.com", id.to_lowercase()),
            false => id,
        })
        .collect();
    want.insert("phone:+14155550100".into());
    want
}

fn project(partner: &Partner, extra: &str, cohort: &str, sql: &str) -> Project {
    let project = Project::with_destination(
        lake(),
        &destination(&partner.handle.base_url(), extra),
        &[(cohort, sql)],
    );
    let config = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("[cohorts.{cohort}]\n"),
        &format!("[cohorts.{cohort}]\nidentifiers = [\"user_id\", \"email\", \"phone\"]\n"),
    );
    std::fs::write(&config, text).unwrap();
    project
}

fn run(project: &Project, args: &[&str]) -> Run {
    run_with_key(project, args, KLAVIYO_KEY)
}

fn run_with_key(project: &Project, args: &[&str], key: &str) -> Run {
    project.run_with(args, &[(KLAVIYO_VAR, Some(key))])
}

fn differ(got: &BTreeSet<String>, want: &BTreeSet<String>) -> String {
    format!(
        "{} held vs {} wanted; extra {:?}, missing {:?}",
        got.len(),
        want.len(),
        got.difference(want).take(3).collect::<Vec<_>>(),
        want.difference(got).take(3).collect::<Vec<_>>()
    )
}

#[test]
fn full_and_incremental_syncs_of_mixed_identifiers_leave_exactly_the_list() {
    // Faults of every kind and a job in ten cancelled: each step is retried, a lost job is
    // imported again, and importing twice is an upsert, so the list must end exactly right.
    let partner = Partner::start(EmulatorConfig {
        faults: FaultConfig {
            seed: 27,
            error_before_apply: 0.05,
            error_after_apply: 0.05,
            locked: 0.03,
            drop_connection: 0.03,
            ..FaultConfig::default()
        },
        klaviyo: KlaviyoConfig {
            cancel_jobs: 0.1,
            seed: 3,
            ..fast()
        },
        ..EmulatorConfig::default()
    });
    let sql = mixed();
    let project = project(&partner, FAST, "vip", &sql);
    let first = run(&project, &["sync", "vip", "--at", AT, "--no-progress"]);
    // The two malformed contacts are dead letters: exit 3.
    assert_eq!(first.code(), 3, "{}", first.stderr());
    let s = first.summary_any();
    let want = mixed_at(at());
    assert!(want.len() > 1_000, "a multi-batch cohort: {}", want.len());
    assert!(want.iter().any(|m| m.starts_with("email:")));
    assert_eq!(s["malformed"], 2, "{s}");
    assert_eq!(s["adds"], want.len() as u64, "{s}");
    let got = held(&partner, "vip");
    assert!(got == want, "{}", differ(&got, &want));
    // The malformed ones never reached Klaviyo.
    let profiles = partner.handle.klaviyo_profiles();
    assert!(
        !profiles
            .iter()
            .any(|p| p.email.as_deref() == Some("not-an-email")
                || p.phone_number.as_deref().is_some_and(|p| p.contains(' '))),
        "a malformed contact was sent"
    );
    let stats = partner.handle.stats();
    assert_eq!(stats.by_status.get(&400), None, "{stats:?}");
    assert!(
        stats.by_status.contains_key(&500),
        "faults happened: {stats:?}"
    );

    // A week later: who left is removed (resolved to profile ids first), who joined imported.
    let later = at() + chrono::Duration::days(7);
    let second = run(
        &project,
        &["sync", "vip", "--at", &later.to_rfc3339(), "--no-progress"],
    );
    let s = second.summary_any();
    let now = mixed_at(later);
    let (joined, left) = (
        now.difference(&want).count() as u64,
        want.difference(&now).count() as u64,
    );
    assert!(
        joined > 0 && left > 0,
        "the fixture churns: +{joined} -{left}"
    );
    assert!(
        now.difference(&want).any(|m| m.starts_with("email:"))
            && want.difference(&now).any(|m| m.starts_with("email:")),
        "emails join and leave too"
    );
    assert_eq!(
        (s["adds"].as_u64(), s["removes"].as_u64()),
        (Some(joined), Some(left)),
        "{s}"
    );
    let got = held(&partner, "vip");
    assert!(got == now, "{}", differ(&got, &now));
    // Nobody's profile was deleted: a removal only leaves the list.
    assert!(partner.handle.klaviyo_profiles().len() >= want.union(&now).count());
}

#[test]
fn rows_the_import_refuses_are_dead_letters_and_sent_again_next_run() {
    // Rows whose identifier contains "ab" fail in the job (an import error per row).
    let partner = partner(KlaviyoConfig {
        invalid_marker: Some("ab".into()),
        ..fast()
    });
    let project = project(&partner, FAST, "active", ACTIVE_30D);
    let first = run(&project, &["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(first.code(), 3, "dead letters exit 3: {}", first.stderr());
    let s = first.summary_any();
    let expected = active_at(at());
    let refused: BTreeSet<String> = expected
        .iter()
        .filter(|u| u.contains("ab"))
        .cloned()
        .collect();
    assert!(refused.len() > 5, "fixture: {} refused", refused.len());
    assert_eq!(s["dead_letters"], refused.len() as u64, "{s}");
    let want: BTreeSet<String> = expected.difference(&refused).cloned().collect();
    let got = held(&partner, "active");
    assert!(got == want, "{}", differ(&got, &want));
    // The dead letters carry Klaviyo's import error.
    let dir = project.cohort_state("active").join("dead_letters");
    let mut letters = Vec::new();
    for file in std::fs::read_dir(&dir).unwrap() {
        for b in read_all(&file.unwrap().path()) {
            for r in 0..b.num_rows() {
                letters.push((
                    string_at(&b, "user_id", r).unwrap(),
                    string_at(&b, "reason", r).unwrap(),
                ));
            }
        }
    }
    assert_eq!(letters.len(), refused.len());
    assert!(
        letters
            .iter()
            .all(|(u, why)| refused.contains(u) && why.contains("invalid")),
        "{:?}",
        &letters[..3.min(letters.len())]
    );
    // The next run sends them again (they are not members Klaviyo holds), and only them.
    let (jobs, _) = partner.handle.klaviyo_counts();
    let again = run(&project, &["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(again.code(), 3, "{}", again.stderr());
    let s = again.summary_any();
    assert_eq!(s["adds"], refused.len() as u64, "{s}");
    assert_eq!(s["dead_letters"], refused.len() as u64, "{s}");
    assert!(partner.handle.klaviyo_counts().0 > jobs, "imported again");
}

#[test]
fn a_wrong_key_is_refused_naming_its_variable_and_never_shown() {
    let partner = partner(fast());
    let project = project(&partner, FAST, "active", ACTIVE_30D);
    let wrong = "kl-wrong-00000000-never-log-me";
    let run = run_with_key(&project, &["sync", "active", "--at", AT], wrong);
    assert_eq!(run.code(), 4, "{}", run.stderr());
    let err = run.stderr();
    assert!(err.contains("401") && err.contains(KLAVIYO_VAR), "{err}");
    assert!(!err.contains(wrong) && !err.contains(KLAVIYO_KEY), "{err}");
    assert!(held(&partner, "active").is_empty());
}

#[test]
fn aliases_and_device_ids_are_refused_by_name_before_planning() {
    let partner = partner(fast());
    let project = project(
        &partner,
        FAST,
        "devices",
        "SELECT CAST(NULL AS VARCHAR) AS user_id, user_id AS device_id FROM users LIMIT 5",
    );
    let config = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "identifiers = [\"user_id\", \"email\", \"phone\"]",
        "identifiers = [\"user_id\", \"device_id\"]",
    );
    std::fs::write(&config, text).unwrap();
    let run = run(&project, &["sync", "devices", "--at", AT]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("(klaviyo) cannot identify users by device_id"),
        "{}",
        run.stderr()
    );
    assert_eq!(partner.handle.stats().requests, 0, "nothing was sent");
}

#[test]
fn a_run_killed_mid_delivery_resumes_without_importing_acknowledged_batches_again() {
    use crate::incremental::kill_at;
    let partner = partner(KlaviyoConfig {
        job_delay: Duration::from_millis(50),
        ..fast()
    });
    // Slow enough to be caught: 100-id batches, 20 requests a second per endpoint.
    let dest = "batch_size = 100\nrequests_per_second = 20\nmax_in_flight = 4";
    let project = project(&partner, dest, "active", ACTIVE_30D);
    let expected = active_at(at());
    let batches = expected.len().div_ceil(100) as u64;
    assert!(batches > 30, "fixture: {batches} batches");
    kill_at(
        &[8, 18],
        &project.cohort_state("active"),
        || {
            let mut c = project.command(&["sync", "active", "--at", AT]);
            c.env(KLAVIYO_VAR, KLAVIYO_KEY)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            c
        },
        || partner.handle.klaviyo_counts().0 as u64,
    );
    let jobs_before = partner.handle.klaviyo_counts().0 as u64;
    assert!(jobs_before < batches, "the runs were interrupted");
    let toml = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("requests_per_second = 20", "requests_per_second = 5000"),
    )
    .unwrap();
    let resumed = run(&project, &["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(resumed.code(), 0, "{}", resumed.stderr());
    let s = resumed.summary();
    let (sent, skipped) = (
        s["resumed_batches"].as_u64().unwrap(),
        s["skipped_batches"].as_u64().unwrap(),
    );
    assert_eq!(sent + skipped, batches, "{s}");
    assert!(skipped > 0, "journaled batches are skipped: {s}");
    let jobs = partner.handle.klaviyo_counts().0 as u64;
    // Only batches in flight at a kill (at most max_in_flight each time), or acknowledged in
    // the journal's last few milliseconds before it, are imported twice.
    assert!(
        jobs <= batches + 2 * (4 + 2),
        "{jobs} jobs for {batches} batches: acknowledged batches were imported again"
    );
    let got = held(&partner, "active");
    assert!(got == expected, "{}", differ(&got, &expected));
}

#[test]
fn rate_limits_are_waited_out() {
    // Each endpoint allows 4 requests a second; the client asks for 50: the 429s' Retry-After
    // holds it back, and the list still ends exact.
    let partner = partner(KlaviyoConfig {
        rate: KlaviyoRate {
            burst: 4,
            steady: 100_000,
        },
        ..fast()
    });
    let dest = "batch_size = 200\nrequests_per_second = 50\nmax_in_flight = 8";
    let project = project(&partner, dest, "active", ACTIVE_30D);
    let run = run(&project, &["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(partner.handle.stats().rate_limited > 0, "the limit was met");
    let expected = active_at(at());
    let got = held(&partner, "active");
    assert!(got == expected, "{}", differ(&got, &expected));
}

#[test]
fn at_the_default_rate_no_request_meets_a_429() {
    // The documented limits (burst 10/s, steady 150/m per endpoint) and the kind's defaults:
    // imports and their polls, each endpoint paced on its own.
    let partner = partner(KlaviyoConfig {
        rate: KlaviyoRate {
            burst: 10,
            steady: 150,
        },
        ..fast()
    });
    let project = project(&partner, "batch_size = 500", "active", ACTIVE_30D);
    let run = run(&project, &["sync", "active", "--at", AT, "--no-progress"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let log = partner.handle.klaviyo_rate_log();
    assert!(log.iter().any(|e| e.endpoint == "import"));
    assert!(log.iter().all(|e| e.allowed), "a 429 at the default rate");
    let expected = active_at(at());
    assert!(held(&partner, "active") == expected);
}
