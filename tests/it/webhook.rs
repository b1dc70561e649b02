//! The `webhook` destination against a receiver written here from the README's contract: it
//! checks every body's HMAC-SHA256 signature and the secret header, applies each idempotency
//! key once, and fails some requests before or after applying them. Full and incremental syncs
//! leave it holding exactly the cohort.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::support::*;

pub const SECRET_VAR_HOOK: &str = "IT_HOOK_SECRET";
pub const HOOK_SECRET: &str = "hs-93b1-never-log-me";
pub const AUTH_VAR: &str = "IT_HOOK_AUTH";
pub const AUTH: &str = "Bearer hook-token-never-log-me";

#[derive(Default)]
pub struct Received {
    pub members: BTreeSet<String>,
    /// Body of each idempotency key applied.
    applied: HashMap<String, Bytes>,
    pub requests: u64,
    /// Requests whose key was already applied (retries of an answer that was lost).
    repeats: u64,
    /// A repeat whose body differed from the first (must never happen).
    changed_bodies: u64,
    bad_signatures: u64,
    bad_auth: u64,
    largest_batch: usize,
}

pub struct Receiver {
    pub url: String,
    pub seen: Arc<Mutex<Received>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    /// Every `fail_every`-th request fails: odd ones before applying (503), even ones after
    /// (500), so the sender retries both kinds.
    pub fn start(fail_every: u64) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Received::default()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!(
            "http://{}/hooks/cohorts?tenant=it",
            listener.local_addr().unwrap()
        );
        let state = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(answer(req, &state, fail_every).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            url,
            seen,
            _runtime: runtime,
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    state: &Mutex<Received>,
    fail_every: u64,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::from_static(b"")));
        *r.status_mut() = status;
        r
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (signature, key, auth) = (
        header("x-cohort-bridge-signature"),
        header("idempotency-key"),
        header("authorization"),
    );
    let query_ok = req.uri().query() == Some("tenant=it");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut s = state.lock().unwrap();
    s.requests += 1;
    let n = s.requests;
    if signature.as_deref() != Some(&format!("sha256={expected}")) {
        s.bad_signatures += 1;
        return reply(StatusCode::UNAUTHORIZED);
    }
    if auth.as_deref() != Some(AUTH) || !query_ok {
        s.bad_auth += 1;
        return reply(StatusCode::UNAUTHORIZED);
    }
    let Some(key) = key else {
        return reply(StatusCode::BAD_REQUEST);
    };
    if n % fail_every == 1 {
        return reply(StatusCode::SERVICE_UNAVAILABLE);
    }
    if let Some(first) = s.applied.get(&key) {
        let changed = *first != body;
        s.repeats += 1;
        s.changed_bodies += u64::from(changed);
        return reply(StatusCode::OK);
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        ["active", "mixed", "contacts"].contains(&v["cohort_id"].as_str().unwrap_or("")),
        "cohort {}",
        v["cohort_id"]
    );
    assert_eq!(
        key,
        format!(
            "{}-{}",
            v["run_id"].as_str().unwrap(),
            v["batch"].as_u64().unwrap()
        )
    );
    let ids: Vec<String> = v["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            match (
                i["user_id"].as_str(),
                i["alias_name"].as_str(),
                i["device_id"].as_str(),
                i["braze_id"].as_str(),
                i["email"].as_str().or(i["phone"].as_str()),
            ) {
                (Some(u), None, None, None, None) => u.to_owned(),
                (None, Some(n), None, None, None) => {
                    format!("alias:{n}:{}", i["alias_label"].as_str().unwrap())
                }
                (None, None, Some(d), None, None) => format!("device:{d}"),
                (None, None, None, Some(b), None) => format!("braze:{b}"),
                (None, None, None, None, Some(c)) if i["email"].is_string() => format!("email:{c}"),
                (None, None, None, None, Some(c)) => format!("phone:{c}"),
                other => panic!("an identity of one kind: {other:?} in {i}"),
            }
        })
        .collect();
    s.largest_batch = s.largest_batch.max(ids.len());
    match v["op"].as_str() {
        Some("add") => s.members.extend(ids),
        Some("remove") => {
            for id in &ids {
                s.members.remove(id);
            }
        }
        other => panic!("op {other:?}"),
    }
    s.applied.insert(key, body);
    if n.is_multiple_of(fail_every) {
        // Applied, but the answer says otherwise: the sender retries with the same key.
        return reply(StatusCode::INTERNAL_SERVER_ERROR);
    }
    reply(StatusCode::NO_CONTENT)
}

pub fn hook_project(url: &str) -> Project {
    hook_project_with(url, &[("active", ACTIVE_30D)])
}

/// A webhook project with these cohorts (the receiver checks `cohort_id` is `active`).
pub fn hook_project_with(url: &str, cohorts: &[(&str, &str)]) -> Project {
    let destination = format!(
        r#"kind = "webhook"
base_url = "{url}"
secret_env = "{SECRET_VAR_HOOK}"
header_env = {{ "Authorization" = "{AUTH_VAR}" }}
headers = {{ "X-Team" = "growth" }}
batch_size = 500
max_in_flight = 4
[destinations.braze.retry]
max_attempts = 20
initial_backoff = "5ms"
max_backoff = "50ms"
"#
    );
    Project::with_destination(lake(), &destination, cohorts)
}

pub fn run(project: &Project, at: &str) -> Run {
    project.run_with(
        &["sync", "active", "--at", at, "--no-progress"],
        &[(SECRET_VAR_HOOK, Some(HOOK_SECRET)), (AUTH_VAR, Some(AUTH))],
    )
}

#[test]
fn signed_idempotent_batches_leave_the_receiver_holding_exactly_the_cohort() {
    let receiver = Receiver::start(7);
    let project = hook_project(&receiver.url);
    let first = run(&project, AT);
    let first_summary = first.summary();
    let expected = active_at(at());
    assert_eq!(first_summary["adds"], expected.len() as u64);
    {
        let s = receiver.seen.lock().unwrap();
        assert!(
            s.members == expected,
            "receiver {} vs cohort {}",
            s.members.len(),
            expected.len()
        );
        assert_eq!((s.bad_signatures, s.bad_auth, s.changed_bodies), (0, 0, 0));
        assert!(
            s.repeats > 0,
            "answers lost after applying were retried with their key"
        );
        assert_eq!(s.largest_batch, 500);
    }
    let log = first.stderr();
    for secret in [HOOK_SECRET, "hook-token-never-log-me"] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }

    let later = (at() + chrono::Duration::days(7)).to_rfc3339();
    let second = run(&project, &later).summary();
    let now = active_at(at() + chrono::Duration::days(7));
    assert!(second["adds"].as_u64().unwrap() > 0 && second["removes"].as_u64().unwrap() > 0);
    let s = receiver.seen.lock().unwrap();
    assert!(
        s.members == now,
        "after the incremental sync: {} vs {}",
        s.members.len(),
        now.len()
    );
    assert_eq!((s.bad_signatures, s.changed_bodies), (0, 0));
}

#[test]
fn a_wrong_secret_is_refused_by_the_receiver_and_nothing_is_committed() {
    let receiver = Receiver::start(1_000_000);
    let project = hook_project(&receiver.url);
    let bad = project.run_with(
        &["sync", "active", "--at", AT, "--no-progress"],
        &[
            (SECRET_VAR_HOOK, Some("not-the-signing-secret")),
            (AUTH_VAR, Some(AUTH)),
        ],
    );
    assert_eq!(bad.code(), 4, "{}", bad.stderr());
    assert!(bad.stderr().contains(SECRET_VAR_HOOK), "{}", bad.stderr());
    assert!(receiver.seen.lock().unwrap().members.is_empty());
    assert!(receiver.seen.lock().unwrap().bad_signatures > 0);
    // The right secret: the same receiver (its URL is its identity), the same plan, delivered
    // whole.
    run(&project, AT).summary();
    assert!(receiver.seen.lock().unwrap().members == active_at(at()));
}

#[test]
fn a_run_killed_mid_delivery_resumes_with_the_same_keys() {
    use crate::incremental::kill_at;
    let receiver = Receiver::start(1_000_000);
    let project = hook_project(&receiver.url);
    // Slow enough to be killed mid-delivery: 100-id batches at 40 per second.
    let config = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "batch_size = 500",
        "batch_size = 100\nrequests_per_second = 40",
    );
    std::fs::write(&config, text).unwrap();
    let expected = active_at(at());
    kill_at(
        &[10, 40],
        &project.cohort_state("active"),
        || {
            let mut command = project.command(&["sync", "active", "--at", AT, "--no-progress"]);
            command
                .env(SECRET_VAR_HOOK, HOOK_SECRET)
                .env(AUTH_VAR, AUTH);
            command
        },
        || receiver.seen.lock().unwrap().applied.len() as u64,
    );
    let resumed = run(&project, AT).summary();
    assert!(
        resumed["skipped_batches"].as_u64().unwrap() > 0,
        "{resumed}"
    );
    let s = receiver.seen.lock().unwrap();
    assert!(
        s.members == expected,
        "{} vs {}",
        s.members.len(),
        expected.len()
    );
    // Every batch applied once; a batch answered just before a kill came again with its key
    // and the same bytes.
    assert_eq!(s.applied.len(), expected.len().div_ceil(100));
    assert_eq!((s.bad_signatures, s.changed_bodies), (0, 0));
}

#[test]
fn the_emulators_receiver_checks_signatures_and_applies_each_key_once() {
    use cohort_bridge::emulator::EmulatorConfig;
    let partner = Partner::start(EmulatorConfig {
        webhook_secret: Some(HOOK_SECRET.into()),
        ..EmulatorConfig::default()
    });
    let url = format!("{}/_webhook", partner.handle.base_url());
    let destination = format!(
        "kind = \"webhook\"\nbase_url = \"{url}\"\nsecret_env = \"{SECRET_VAR_HOOK}\"\nbatch_size = 700"
    );
    let project = Project::with_destination(lake(), &destination, &[("active", ACTIVE_30D)]);
    let s = run(&project, AT).summary();
    let report_url = format!("{}/_emulator/webhook", partner.handle.base_url());
    let report: serde_json::Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::get(report_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(
        report["members"]["active"],
        active_at(at()).len() as u64,
        "{report}"
    );
    assert_eq!(report["batches"], s["batches"], "{report}");
    assert_eq!(
        (
            report["repeats"].as_u64(),
            report["bad_signatures"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // A wrong secret is refused by the receiver.
    let bad = project.run_with(
        &["sync", "active", "--at", "2026-12-20T00:00:00Z"],
        &[
            (SECRET_VAR_HOOK, Some("wrong-secret-value")),
            (AUTH_VAR, Some(AUTH)),
        ],
    );
    assert_eq!(bad.code(), 4, "{}", bad.stderr());
}
