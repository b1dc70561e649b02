//! A partner (or a proxy in front of it) answering outside the script, through the real binary:
//! a 2xx that is not the documented success, redirects of every kind, 400s echoing the keys,
//! pathological rate-limit headers, slow, dripping and dropped answers, a run deadline. Every
//! case checks what the partner holds, what was committed, that no key left the process, and
//! that a clean run afterwards converges exactly.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cohort_bridge::emulator::EmulatorConfig;

use crate::proxy::{Action, Canned, Proxy, Sink};
use crate::support::*;

/// About 2% of the test lake (~390 of its UUID ids; ~1,000 if its ids were decimal).
const SQL: &str =
    "SELECT user_id FROM users WHERE right(user_id, 2) IN ('03', '17', '42', '58', '99')";
const SUFFIXES: [&str; 5] = ["03", "17", "42", "58", "99"];
const FAST: &str = "batch_size = 200\nmax_in_flight = 2\nrequest_timeout = \"1s\"\n\
    [destinations.braze.retry]\nmax_attempts = 8\ninitial_backoff = \"5ms\"\nmax_backoff = \"3s\"\nmax_elapsed = \"20s\"\n";

/// The cohort, computed from the lake's files without DataFusion.
fn expected() -> BTreeSet<String> {
    users()
        .into_iter()
        .map(|u| u.user_id)
        .filter(|id| SUFFIXES.iter().any(|s| id.ends_with(s)))
        .collect()
}

/// A hostile partner: the emulator behind a proxy whose script applies while `hostile` is set;
/// afterwards every request is forwarded.
struct Setup {
    partner: Partner,
    proxy: Proxy,
    hostile: Arc<AtomicBool>,
    project: Project,
}

fn setup(
    dest_extra: &str,
    script: impl Fn(usize, &str, &[u8]) -> Action + Send + Sync + 'static,
) -> Setup {
    let partner = Partner::plain();
    let hostile = Arc::new(AtomicBool::new(true));
    let h = hostile.clone();
    let proxy = Proxy::start(
        &partner.handle.base_url(),
        Arc::new(move |n, path, body| {
            if h.load(Ordering::SeqCst) {
                script(n, path, body)
            } else {
                Action::Forward
            }
        }),
    );
    let project = Project::new(&proxy.base_url(), dest_extra, &[("c", SQL)]);
    Setup {
        partner,
        proxy,
        hostile,
        project,
    }
}

impl Setup {
    fn sync(&self) -> Run {
        self.project
            .run(&["sync", "c", "--at", AT, "--no-progress"])
    }

    /// Turns the faults off; a clean run must then leave the partner holding exactly the cohort.
    fn converges(&self) {
        self.hostile.store(false, Ordering::SeqCst);
        let run = self.sync();
        run.summary();
        assert_eq!(
            self.partner.members("c"),
            expected(),
            "the clean run converges"
        );
    }

    fn committed(&self) -> bool {
        self.project.cohort_state("c").join("current.json").exists()
    }
}

/// No key in anything the process printed or stored.
fn assert_no_secret(run: &Run, project: &Project) {
    for (what, text) in [("stdout", run.stdout()), ("stderr", run.stderr())] {
        assert!(
            !text.contains(KEY) && !text.contains(SECRET),
            "a key reached {what}:\n{text}"
        );
    }
    for (file, _) in project.state_files() {
        let path = Path::new(&file);
        let bytes = std::fs::read(path).unwrap();
        let raw = String::from_utf8_lossy(&bytes);
        assert!(
            !raw.contains(KEY) && !raw.contains(SECRET),
            "a key is stored in {file}"
        );
        if file.ends_with(".parquet") {
            for batch in read_all(path) {
                for (i, field) in batch.schema().fields().iter().enumerate() {
                    if let Ok(col) =
                        arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
                    {
                        let s = arrow::array::AsArray::as_string::<i32>(&col);
                        for v in s.iter().flatten() {
                            assert!(
                                !v.contains(KEY) && !v.contains(SECRET),
                                "a key is stored in {file}, column {}",
                                field.name()
                            );
                        }
                    }
                }
            }
        }
    }
}

fn users_path(path: &str) -> bool {
    path.ends_with("/cohorts/users")
}

#[test]
fn a_2xx_that_is_not_the_documented_success_acknowledges_nothing() {
    for (ct, body) in [
        (
            "text/html",
            "<html><body>Down for maintenance</body></html>",
        ),
        ("application/json", ""),
        ("application/json", "{\"ok\":true}"),
    ] {
        let s = setup(FAST, move |_, path, _| {
            if users_path(path) {
                Action::Respond(Canned::new(200, &[("content-type", ct)], body))
            } else {
                Action::Forward
            }
        });
        let run = s.sync();
        assert_eq!(run.code(), 1, "{body:?}: stderr:\n{}", run.stderr());
        let err = run.stderr();
        assert!(
            err.contains("HTTP 200") && err.contains("not the documented success"),
            "{err}"
        );
        assert!(err.contains(ct), "names the content type: {err}");
        if !body.is_empty() {
            assert!(err.contains(&body[..10]), "quotes the first bytes: {err}");
        }
        assert!(
            !s.committed(),
            "nothing is committed the partner did not confirm"
        );
        assert!(s.partner.members("c").is_empty());
        s.converges();
    }
}

#[test]
fn redirects_are_never_followed_and_the_other_host_receives_nothing() {
    let sink = Sink::start();
    for code in [301u16, 302, 303, 307, 308] {
        let location = sink.url("http");
        let s = setup(FAST, move |_, _, _| {
            Action::Respond(Canned::new(code, &[("location", &location)], ""))
        });
        let run = s.sync();
        assert_eq!(run.code(), 2, "HTTP {code}: stderr:\n{}", run.stderr());
        assert!(
            run.stderr().contains(&sink.addr.to_string()),
            "names the Location host: {}",
            run.stderr()
        );
        assert!(!s.committed());
        assert_no_secret(&run, &s.project);
        s.converges();
    }
    assert_eq!(
        sink.received(),
        (0, 0),
        "the redirect target received nothing"
    );
}

/// A 400 whose message echoes the request (both keys) for one id.
#[test]
fn a_partner_echoing_the_keys_puts_them_nowhere() {
    let ids: Vec<String> = expected().into_iter().collect();
    let bad = ids[ids.len() / 3].clone();
    let marker = format!("\"{bad}\"");
    let s = setup(FAST, move |_, path, body| {
        let text = String::from_utf8_lossy(body);
        if users_path(path) && text.contains(&marker) {
            let echo = serde_json::json!({ "message": format!("invalid request: {text}") });
            Action::Respond(Canned::new(
                400,
                &[("content-type", "application/json")],
                &echo.to_string(),
            ))
        } else {
            Action::Forward
        }
    });
    let run = s.sync();
    assert_eq!(
        run.code(),
        3,
        "one id dead-lettered: stderr:\n{}",
        run.stderr()
    );
    assert!(run.stderr().contains("***") || run.stdout().contains("\"dead_letters\":1"));
    let mut want = expected();
    want.remove(&bad);
    assert_eq!(s.partner.members("c"), want);
    let history = s.project.run(&["runs", "--format", "json"]);
    assert_no_secret(&history, &s.project);
    assert_no_secret(&run, &s.project);
    // The same with logs at their most verbose.
    let traced = s.project.run_with(
        &["sync", "c", "--at", AT, "--full"],
        &[
            (KEY_VAR, Some(KEY)),
            (SECRET_VAR, Some(SECRET)),
            ("RUST_LOG", Some("trace")),
        ],
    );
    assert_no_secret(&traced, &s.project);
}

#[test]
fn a_partner_refusing_everything_trips_the_circuit_breaker() {
    let s = setup(FAST, |_, path, _| {
        if users_path(path) {
            Action::Respond(Canned::new(
                400,
                &[],
                "{\"message\":\"cohort_changes is invalid\"}",
            ))
        } else {
            Action::Forward
        }
    });
    let run = s.sync();
    assert_eq!(run.code(), 4, "stderr:\n{}", run.stderr());
    assert!(
        run.stderr().contains("cohort_changes is invalid"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("stopped splitting"),
        "{}",
        run.stderr()
    );
    // ~390 ids would cost ~780 requests to isolate one by one.
    assert!(s.proxy.requests() < 150, "{} requests", s.proxy.requests());
    assert!(!s.committed());
    s.converges();
}

fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// 429s (or a success) carrying one header pathology, for the first `n` requests to
/// `cohorts/users`.
fn header_case(
    status: u16,
    headers: Vec<(String, String)>,
    n: usize,
) -> impl Fn(usize, &str, &[u8]) -> Action + Send + Sync + 'static {
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(n));
    move |_, path, _| {
        if !users_path(path) || left.load(Ordering::SeqCst) == 0 {
            return Action::Forward;
        }
        left.fetch_sub(1, Ordering::SeqCst);
        if status == 429 {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            Action::Respond(Canned::new(429, &h, "{\"message\":\"rate limited\"}"))
        } else {
            Action::ForwardWithHeaders(headers.clone())
        }
    }
}

fn pair(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[test]
fn absurd_waits_end_the_request_at_once_quoting_what_the_partner_asked() {
    let day_ms = (epoch() + 86_400) * 1000;
    for (status, headers) in [
        (429, vec![pair("retry-after", u64::MAX)]),
        (429, vec![pair("retry-after", "86400")]),
        (
            429,
            vec![
                pair("x-ratelimit-remaining", 0),
                pair("x-ratelimit-reset", u64::MAX),
            ],
        ),
        (
            429,
            vec![
                pair("x-ratelimit-remaining", 0),
                pair("x-ratelimit-reset", day_ms),
            ],
        ),
        // A success that says the window is spent for a day: the next request refuses to wait.
        (
            201,
            vec![
                pair("x-ratelimit-remaining", 0),
                pair("x-ratelimit-reset", epoch() + 86_400),
            ],
        ),
    ] {
        let s = setup(FAST, header_case(status, headers.clone(), 1_000));
        let started = Instant::now();
        let run = s.sync();
        let took = started.elapsed();
        assert_eq!(run.code(), 1, "{headers:?}: stderr:\n{}", run.stderr());
        assert!(took < Duration::from_secs(15), "{headers:?}: took {took:?}");
        let err = run.stderr();
        assert!(
            err.contains("longer than retry.max_backoff"),
            "{headers:?}: {err}"
        );
        let quoted = &headers.last().unwrap().1;
        assert!(err.contains(quoted.as_str()), "quotes {quoted}: {err}");
        assert!(!s.committed() || status == 201);
        s.converges();
    }
}

#[test]
fn garbage_negative_and_millisecond_headers_neither_panic_nor_stall() {
    let soon_ms = (epoch() + 2) * 1000;
    for headers in [
        vec![pair("retry-after", "soon")],
        vec![pair("retry-after", "-30")],
        vec![pair("retry-after", "NaN")],
        vec![
            pair("x-ratelimit-remaining", "-5"),
            pair("x-ratelimit-reset", "-1e308"),
        ],
        vec![
            pair("x-ratelimit-remaining", "0"),
            pair("x-ratelimit-reset", "yesterday"),
        ],
        vec![
            pair("x-ratelimit-remaining", "0"),
            pair("x-ratelimit-reset", soon_ms),
        ],
    ] {
        let s = setup(FAST, header_case(429, headers.clone(), 2));
        let started = Instant::now();
        let run = s.sync();
        assert_eq!(run.code(), 0, "{headers:?}: stderr:\n{}", run.stderr());
        assert!(started.elapsed() < Duration::from_secs(15), "{headers:?}");
        assert_eq!(s.partner.members("c"), expected(), "{headers:?}");
    }
}

#[test]
fn slow_dripping_and_dropped_answers_are_retried_until_exact() {
    // One of each, on the first requests (later ones, retries included, pass).
    let s = setup(FAST, |n, path, _| match (users_path(path), n) {
        (true, 1) => Action::Drip(Duration::from_millis(30)),
        (true, 2) => Action::Delay(Duration::from_millis(1500)),
        (true, 3) => Action::Drop,
        (true, 4) => Action::ForwardThenDrop,
        (true, 5) => Action::ForwardThen(Canned::new(503, &[], "")),
        _ => Action::Forward,
    });
    let run = s.sync();
    assert_eq!(run.code(), 0, "stderr:\n{}", run.stderr());
    assert_eq!(s.partner.members("c"), expected());
    assert!(run.summary()["retries"].as_u64().unwrap() >= 5);
}

#[test]
fn a_run_past_its_deadline_stops_cleanly_and_the_next_resumes() {
    let dest = "batch_size = 20\nmax_in_flight = 1\ndeadline = \"2s\"\n";
    let s = setup(dest, |_, path, _| {
        if users_path(path) {
            Action::Delay(Duration::from_millis(200))
        } else {
            Action::Forward
        }
    });
    let started = Instant::now();
    let run = s.sync();
    assert_eq!(run.code(), 1, "stderr:\n{}", run.stderr());
    assert!(run.stderr().contains("deadline"), "{}", run.stderr());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!s.committed());
    assert!(!s.partner.members("c").is_empty(), "some batches went out");
    s.hostile.store(false, Ordering::SeqCst);
    let summary = s.sync().summary();
    assert!(
        summary["resumed_batches"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(s.partner.members("c"), expected());
    assert_eq!(
        s.partner.handle.stats().redundant_adds,
        0,
        "acknowledged batches are not re-sent"
    );
}

#[test]
fn values_that_would_overflow_or_stall_are_refused_by_the_loader_and_check() {
    let partner = Partner::start(EmulatorConfig::default());
    for (extra, key) in [
        ("requests_per_second = 1e-30", "requests_per_second"),
        ("requests_per_second = 1e300", "requests_per_second"),
        ("request_timeout = \"100000h\"", "request_timeout"),
        ("deadline = \"0s\"", "deadline"),
        (
            "[destinations.braze.retry]\nmax_backoff = \"1000000h\"",
            "retry.max_backoff",
        ),
        (
            "[destinations.braze.retry]\nmax_attempts = 4000000000",
            "retry.max_attempts",
        ),
    ] {
        let project = Project::new(&partner.handle.base_url(), extra, &[("c", SQL)]);
        for cmd in [&["check"][..], &["sync", "c", "--at", AT][..]] {
            let run = project.run(cmd);
            assert_eq!(run.code(), 2, "{extra} / {cmd:?}: {}", run.stderr());
            let out = format!("{}{}", run.stdout(), run.stderr());
            assert!(
                out.contains(key) && out.contains("between"),
                "{extra}: {out}"
            );
        }
    }
    // A huge lock TTL (the [state] table is the project's last).
    let project = Project::new(&partner.handle.base_url(), "", &[("c", SQL)]);
    let file = project.dir.path().join("cohort-bridge.toml");
    let toml = std::fs::read_to_string(&file).unwrap() + "lock_ttl = \"100000000h\"\n";
    std::fs::write(&file, toml).unwrap();
    let run = project.run(&["sync", "c", "--at", AT]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(run.stderr().contains("state.lock_ttl"), "{}", run.stderr());
    assert!(partner.members("c").is_empty());
}

#[test]
fn check_warns_about_plain_http_to_another_host() {
    let project = Project::new("http://rest.iad-01.braze.example", "", &[("c", SQL)]);
    let run = project.run(&["check"]);
    let out = format!("{}{}", run.stdout(), run.stderr());
    assert!(
        out.contains("not this machine") && out.contains("https://"),
        "{out}"
    );
}
