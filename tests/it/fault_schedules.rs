//! A property test over random fault schedules: for each of (by default) 500 schedules —
//! 5xx before and after applying, 423, 429 with assorted headers, dropped connections (before
//! and after applying), timeouts, HTML 200s (before and after applying), redirects — a sync
//! of a changing cohort (adds and removes) runs through the fault-injecting proxy. Each run
//! either leaves the partner holding exactly the cohort, or fails without committing anything
//! the partner did not apply; the next clean run converges exactly; a redirect target never
//! receives a byte.
//!
//! The same schedules run over Cohort Import (500 by default), `/users/track` and a webhook (the
//! emulator's signed receiver; 150 each), and Customer.io's manual segments (100).
//!
//! Schedules also hold an operator's actions, taken while the run delivers (the request that
//! meets one is held back while it happens): `state unlock --force` (the run is fenced off), a
//! second scheduler starting the same sync (refused while the lock is held), or both (the
//! second run takes over after the drain and finishes the fenced run's plan). Whatever they do,
//! nothing committed is ahead of the partner and the next clean run converges exactly.
//!
//! The runs call the library's `sync_cohort` in process (the real core, real HTTP over
//! loopback), so 500 schedules take a minute rather than ten. `PROPTEST_CASES=N` changes the
//! count.

use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_bridge::config::{Credentials, Secret};
use cohort_bridge::destinations;
use cohort_bridge::sync::{SyncOptions, sync_cohort};
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};

use crate::proxy::{Action, Canned, Proxy, Sink};
use crate::support::*;

/// The cohort is the users whose id ends in one of 25 hex suffixes; the two variants differ by
/// one suffix (~8% of the cohort each way), so a case's change commits as a delta on top of the
/// snapshot when the chain allows it, and as a full snapshot otherwise (every other case: two
/// deltas would exceed a tenth of the cohort): both commit paths run under faults.
const VARIANTS: [&[&str]; 2] = [
    &[
        "03", "0a", "11", "17", "1f", "25", "2c", "33", "3b", "42", "4d", "5e", "61", "6f", "7a",
        "80", "8b", "93", "a4", "b5", "c6", "d7", "e8", "f9", "fe",
    ],
    &[
        "58", "0a", "11", "17", "1f", "25", "2c", "33", "3b", "42", "4d", "5e", "61", "6f", "7a",
        "80", "8b", "93", "a4", "b5", "c6", "d7", "e8", "f9", "fe",
    ],
];

const DEST: &str = "batch_size = 20\nmax_in_flight = 3\nrequest_timeout = \"300ms\"\n\
    requests_per_second = 100000\n[destinations.braze.retry]\nmax_attempts = 3\n\
    initial_backoff = \"1ms\"\nmax_backoff = \"50ms\"\nmax_elapsed = \"5s\"\n";

fn sql(variant: usize) -> String {
    let list: Vec<String> = VARIANTS[variant].iter().map(|s| format!("'{s}'")).collect();
    format!(
        "SELECT user_id FROM users WHERE right(user_id, 2) IN ({})",
        list.join(", ")
    )
}

#[derive(Clone, Debug)]
enum Fault {
    Pass,
    Error5xxBefore,
    Error5xxAfter,
    Locked,
    TooMany(&'static [(&'static str, &'static str)]),
    DropBefore,
    DropAfter,
    Slow(u64),
    HtmlBefore,
    HtmlAfter,
    Redirect(u16),
    /// An operator's action while the run delivers.
    Operator(Op),
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// `state unlock --force`.
    Unlock,
    /// A second scheduler starts the same sync.
    SecondScheduler,
    /// Both, in that order.
    UnlockThenSecond,
}

fn fault() -> impl Strategy<Value = Fault> {
    const HEADERS: &[&[(&str, &str)]] = &[
        &[],
        &[("retry-after", "0")],
        &[("retry-after", "0.02")],
        &[("retry-after", "-1")],
        &[("retry-after", "garbage")],
        &[("retry-after", "99999999999")],
        &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")],
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "not-a-time"),
        ],
        &[
            ("x-ratelimit-remaining", "NaN"),
            ("x-ratelimit-reset", "1e400"),
        ],
    ];
    prop_oneof![
        6 => Just(Fault::Pass),
        2 => Just(Fault::Error5xxBefore),
        2 => Just(Fault::Error5xxAfter),
        1 => Just(Fault::Locked),
        2 => prop::sample::select(HEADERS).prop_map(Fault::TooMany),
        1 => Just(Fault::DropBefore),
        1 => Just(Fault::DropAfter),
        1 => (0u64..450).prop_map(Fault::Slow),
        1 => Just(Fault::HtmlBefore),
        1 => Just(Fault::HtmlAfter),
        1 => prop::sample::select(&[301u16, 302, 303, 307, 308][..]).prop_map(Fault::Redirect),
    ]
}

/// A schedule: up to 24 faults, and in one case of ten an operator's action among them.
fn schedules_of_faults() -> impl Strategy<Value = Vec<Fault>> {
    let op = prop::sample::select(&[Op::Unlock, Op::SecondScheduler, Op::UnlockThenSecond][..]);
    (
        prop::collection::vec(fault(), 0..24),
        prop::option::weighted(0.1, (0usize..24, op)),
    )
        .prop_map(|(mut faults, op)| {
            if let Some((at, op)) = op {
                faults.insert(at.min(faults.len()), Fault::Operator(op));
            }
            faults
        })
}

fn action(f: &Fault, sink: &str) -> Action {
    let html = || Canned::new(200, &[("content-type", "text/html")], "<html>hi</html>");
    match f {
        Fault::Pass => Action::Forward,
        Fault::Error5xxBefore => Action::Respond(Canned::new(503, &[], "")),
        Fault::Error5xxAfter => Action::ForwardThen(Canned::new(500, &[], "{}")),
        Fault::Locked => Action::Respond(Canned::new(423, &[], "{\"message\":\"locked\"}")),
        Fault::TooMany(h) => Action::Respond(Canned::new(429, h, "")),
        Fault::DropBefore => Action::Drop,
        Fault::DropAfter => Action::ForwardThenDrop,
        Fault::Slow(ms) => Action::Delay(Duration::from_millis(*ms)),
        Fault::HtmlBefore => Action::Respond(html()),
        Fault::HtmlAfter => Action::ForwardThen(html()),
        Fault::Redirect(code) => Action::Respond(Canned::new(*code, &[("location", sink)], "")),
        // Taken by the proxy's script (see `schedules`) before this request goes on.
        Fault::Operator(_) => Action::Forward,
    }
}

/// Runs an operator's action with the binary, in the project folder, as a person or a second
/// scheduler would: an unlock at once (the request that met it waits meanwhile), a second
/// scheduler's sync in the background (returned, to be awaited).
fn operate(dir: &Path, op: Op) -> Option<std::thread::JoinHandle<String>> {
    let run = move |dir: &Path, args: &[&str]| {
        command_in(dir, args)
            .env(crate::webhook::SECRET_VAR_HOOK, crate::webhook::HOOK_SECRET)
            .env(crate::customerio::SITE_VAR, crate::customerio::SITE)
            .env(crate::customerio::KEY_VAR, crate::customerio::CIO_KEY)
            .output()
            .expect("run cohort-bridge")
    };
    let sync = [
        "sync",
        "c",
        "--at",
        AT,
        "--allow-mass-removal",
        "--no-progress",
    ];
    if matches!(op, Op::Unlock | Op::UnlockThenSecond) {
        run(dir, &["state", "unlock", "c", "--force"]);
    }
    if matches!(op, Op::SecondScheduler | Op::UnlockThenSecond) {
        let dir = dir.to_path_buf();
        // What the second scheduler said, for the message of a case that fails after it.
        return Some(std::thread::spawn(move || {
            let out = run(&dir, &sync);
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            )
        }));
    }
    None
}

/// Members per part when a case plans in parts.
const PART_IDS: usize = 300;

/// Whether the state holds an open plan (a run interrupted while its parts were planned).
fn open_plan(state: &Path) -> bool {
    std::fs::read_to_string(state.join("pending/plan.json"))
        .is_ok_and(|t| t.contains("\"open\": true") || t.contains("\"open\":true"))
}

fn expected(variant: usize) -> BTreeSet<String> {
    users()
        .into_iter()
        .map(|u| u.user_id)
        .filter(|id| VARIANTS[variant].iter().any(|s| id.ends_with(s)))
        .collect()
}

/// How two id sets differ, briefly.
fn differ(got: &BTreeSet<String>, want: &BTreeSet<String>) -> Option<String> {
    if got == want {
        return None;
    }
    let missing: Vec<_> = want.difference(got).take(3).collect();
    let extra: Vec<_> = got.difference(want).take(3).collect();
    Some(format!(
        "{} ids, want {}: missing {} (e.g. {missing:?}), extra {} (e.g. {extra:?})",
        got.len(),
        want.len(),
        want.difference(got).count(),
        got.difference(want).count()
    ))
}

/// The committed membership (or `None` when nothing is committed): the pointer's snapshot with
/// its deltas applied in order, read here with plain sets.
fn committed(state: &Path) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(state.join("current.json")).ok()?;
    let pointer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |file: &serde_json::Value| {
        let mut out = BTreeSet::new();
        for b in read_all(&state.join(file.as_str().unwrap())) {
            for row in 0..b.num_rows() {
                out.insert(string_at(&b, "user_id", row).unwrap());
            }
        }
        out
    };
    let mut out = ids(&pointer["snapshot"]);
    for d in pointer["deltas"].as_array().into_iter().flatten() {
        for id in ids(&d["removes"]) {
            out.remove(&id);
        }
        out.extend(ids(&d["adds"]));
    }
    Some(out)
}

/// The ids the unfinished plan may have added and removed (empty without one): its lists, or an
/// open plan's parts.
fn pending_lists(state: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let ids = |path: &Path| {
        let mut out = BTreeSet::new();
        for b in read_all(path) {
            for row in 0..b.num_rows() {
                out.insert(string_at(&b, "user_id", row).unwrap());
            }
        }
        out
    };
    let Ok(text) = std::fs::read_to_string(state.join("pending/plan.json")) else {
        return Default::default();
    };
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    if plan["open"] == true {
        let mut adds = BTreeSet::new();
        let dir = state
            .join("pending/parts")
            .join(plan["run_id"].as_str().unwrap());
        for part in std::fs::read_dir(dir).into_iter().flatten() {
            adds.extend(ids(&part.unwrap().path()));
        }
        return (adds, BTreeSet::new());
    }
    let list = |key: &str| ids(&state.join(plan[key].as_str().unwrap()));
    (list("adds_file"), list("removes_file"))
}

/// Whether the committed pointer names deltas.
fn has_deltas(state: &Path) -> bool {
    std::fs::read_to_string(state.join("current.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|p| p["deltas"].as_array().is_some_and(|d| !d.is_empty()))
}

/// The destinations the schedules run over, each observed through the emulator's own view.
#[derive(Clone, Copy, Debug)]
enum Kind {
    CohortImport,
    UsersTrack,
    Webhook,
    Klaviyo,
    Customerio,
    Iterable,
}

impl Kind {
    fn project(self, proxy: &str) -> Project {
        let cohorts = [("c", sql(0))];
        let cohorts: Vec<(&str, &str)> = cohorts.iter().map(|(n, q)| (*n, q.as_str())).collect();
        match self {
            Kind::CohortImport => Project::new(proxy, DEST, &cohorts),
            Kind::UsersTrack => Project::users_track(proxy, DEST, &cohorts),
            Kind::Iterable => Project::with_destination(
                lake(),
                &crate::iterable::destination(proxy, DEST),
                &cohorts,
            ),
            Kind::Webhook => Project::with_destination(
                lake(),
                &format!(
                    "kind = \"webhook\"\nbase_url = \"{proxy}/_webhook\"\nsecret_env = \"{}\"\n{DEST}",
                    crate::webhook::SECRET_VAR_HOOK
                ),
                &cohorts,
            ),
            Kind::Klaviyo => Project::with_destination(
                lake(),
                &crate::klaviyo::destination(proxy, DEST),
                &cohorts,
            ),
            Kind::Customerio => Project::with_destination(
                lake(),
                &crate::customerio::destination(proxy, DEST),
                &cohorts,
            ),
        }
    }

    fn credentials(self) -> Credentials {
        match self {
            Kind::CohortImport => {
                destinations::braze_cohorts::credentials(Secret::new(KEY), Secret::new(SECRET))
            }
            Kind::UsersTrack => destinations::braze_users_track::credentials(Secret::new(REST_KEY)),
            Kind::Iterable => destinations::iterable::credentials(Secret::new(REST_KEY)),
            Kind::Webhook => destinations::webhook::credentials(
                Secret::new(crate::webhook::HOOK_SECRET),
                Vec::new(),
            ),
            Kind::Klaviyo => {
                destinations::klaviyo::credentials(Secret::new(crate::klaviyo::KLAVIYO_KEY))
            }
            Kind::Customerio => destinations::customerio::credentials(
                Secret::new(crate::customerio::SITE),
                Secret::new(crate::customerio::CIO_KEY),
            ),
        }
    }

    /// What the partner holds for cohort `c`.
    fn held(self, partner: &Partner) -> BTreeSet<String> {
        let held = match self {
            Kind::CohortImport => return partner.members("c"),
            Kind::UsersTrack => partner.handle.attribute_true("cohort_c"),
            Kind::Webhook => partner.handle.webhook_members("c"),
            Kind::Klaviyo => return crate::klaviyo::held(partner, "c"),
            Kind::Customerio => partner
                .handle
                .customerio_members(crate::customerio::SEGMENT)
                .unwrap_or_default(),
            Kind::Iterable => {
                partner
                    .handle
                    .iterable_members(crate::iterable::LIST)
                    .unwrap_or_default()
                    .user_ids
            }
        };
        held.into_iter().collect()
    }
}

/// Cohort Import runs the most schedules (the other kinds share its core and sender, and
/// differ in their requests and their acknowledgement rules).
#[test]
fn random_fault_schedules_never_commit_what_the_partner_did_not_apply() {
    schedules(Kind::CohortImport, 500);
}

#[test]
fn random_fault_schedules_on_users_track() {
    schedules(Kind::UsersTrack, 150);
}

#[test]
fn random_fault_schedules_on_iterable() {
    schedules(Kind::Iterable, 100);
}

#[test]
fn random_fault_schedules_on_a_webhook() {
    schedules(Kind::Webhook, 150);
}

#[test]
fn random_fault_schedules_on_klaviyo() {
    schedules(Kind::Klaviyo, 100);
}

#[test]
fn random_fault_schedules_on_customerio() {
    schedules(Kind::Customerio, 100);
}

fn schedules(kind: Kind, default_cases: u32) {
    let partner = Partner::start(cohort_bridge::emulator::EmulatorConfig {
        webhook_secret: Some(crate::webhook::HOOK_SECRET.into()),
        klaviyo: crate::klaviyo::fast(),
        iterable: cohort_bridge::emulator::IterableConfig {
            api_key: REST_KEY.into(),
            ..crate::iterable::fast()
        },
        // The schedules test faults, not pacing: no rate limit to speak of.
        ..crate::customerio::config(cohort_bridge::emulator::CustomerioConfig {
            rate_limit: cohort_bridge::emulator::RateLimitConfig {
                requests: 1_000_000,
                window: Duration::from_secs(1),
            },
            ..Default::default()
        })
    });
    let sink = Sink::start();
    let schedule: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
    let operators: Arc<Mutex<Vec<std::thread::JoinHandle<String>>>> = Arc::default();
    let project_dir: Arc<Mutex<Option<std::path::PathBuf>>> = Arc::default();
    let sink_url = sink.url("https");
    let (s, ops, dir, sink_to) = (
        schedule.clone(),
        operators.clone(),
        project_dir.clone(),
        sink_url.clone(),
    );
    let proxy = Proxy::start(
        &partner.handle.base_url(),
        Arc::new(move |_, _, _| {
            let Some(fault) = s.lock().unwrap().pop_front() else {
                return Action::Forward;
            };
            if let Fault::Operator(op) = fault
                && let Some(dir) = dir.lock().unwrap().clone()
                && let Some(second) = operate(&dir, op)
            {
                ops.lock().unwrap().push(second);
            }
            action(&fault, &sink_to)
        }),
    );
    let project = kind.project(&proxy.base_url());
    // A drain after `unlock --force` lasts the check interval and the request timeout.
    let toml = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&toml).unwrap() + "lock_ttl = \"1s\"\n";
    std::fs::write(&toml, &text).unwrap();
    *project_dir.lock().unwrap() = Some(project.dir.path().to_path_buf());
    let sql_file = project.dir.path().join("queries/cohorts/c.sql");
    // Every other case plans its change whole (`state.part_ids = 0`); the others in parts of
    // PART_IDS members, each sent while the next is sorted (a cohort of ~1,950: 7 parts; full
    // syncs too, `state.pipeline_full_syncs`), so faults interrupt runs between and within
    // parts and leave open plans to resume.
    let whole =
        cohort_bridge::destinations::parse_config(&(text.clone() + "part_ids = 0\n"), &toml)
            .unwrap();
    let config = cohort_bridge::destinations::parse_config(
        &format!("{text}part_ids = {PART_IDS}\npipeline_full_syncs = true\n"),
        &toml,
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lake = runtime
        .block_on(cohort_bridge::project::open_lake(&config))
        .unwrap();
    let creds = kind.credentials();
    let options = SyncOptions {
        allow_mass_removal: true,
        ..SyncOptions::at(at())
    };
    let in_parts = Cell::new(true);
    let sync = || {
        let config = if in_parts.get() { &config } else { &whole };
        runtime.block_on(sync_cohort(config, &lake, "c", &creds, options))
    };
    let expected = [expected(0), expected(1)];
    let state = project.cohort_state("c");

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let mut runner = TestRunner::new(Cases {
        cases,
        // State carries over from case to case, so a shrunk rerun would not start where the
        // failing case did: report the case as it failed.
        max_shrink_iters: 0,
        failure_persistence: None,
        ..Cases::default()
    });
    let variant = Cell::new(0usize);
    let (ok, failed, deltas) = (Cell::new(0u32), Cell::new(0u32), Cell::new(0u32));
    let (operated, fenced, left_open) = (Cell::new(0u32), Cell::new(0u32), Cell::new(0u32));
    let last = std::cell::RefCell::new(String::new());
    let result = runner.run(&schedules_of_faults(), |faults| {
        *last.borrow_mut() = format!("{faults:?}");
        // Each case moves the cohort to the other variant: adds and removes.
        let v = 1 - variant.get();
        variant.set(v);
        in_parts.set(!in_parts.get());
        std::fs::write(&sql_file, sql(v)).unwrap();
        let before = std::fs::read(state.join("current.json")).ok();
        *schedule.lock().unwrap() = faults.iter().cloned().collect();
        let run = sync();
        if faults.iter().any(|f| matches!(f, Fault::Operator(_))) {
            operated.set(operated.get() + 1);
        }
        if matches!(run, Err(cohort_bridge::error::Error::Locked(_))) {
            fenced.set(fenced.get() + 1);
        }
        if open_plan(&state) {
            left_open.set(left_open.get() + 1);
        }
        // The operators' actions finish (a second scheduler's sync runs to its end).
        // A request that met an operator's action may still be in the proxy's hands (the run
        // gave up on it): wait for it, or its second scheduler would start after this drain
        // and hold the lock the clean run needs.
        let mut seconds = Vec::new();
        loop {
            proxy.wait_idle();
            let taken: Vec<_> = operators.lock().unwrap().drain(..).collect();
            if taken.is_empty() {
                break;
            }
            for t in taken {
                seconds.push(t.join().unwrap());
            }
        }
        schedule.lock().unwrap().clear();
        proxy.wait_idle();
        let holds = kind.held(&partner);
        match &run {
            Ok(_) => {
                ok.set(ok.get() + 1);
                if has_deltas(&state) {
                    deltas.set(deltas.get() + 1);
                }
                if let Some(d) = differ(&holds, &expected[v]) {
                    prop_assert!(false, "a run that succeeded left the partner off: {}", d);
                }
            }
            Err(e) => {
                failed.set(failed.get() + 1);
                let after = std::fs::read(state.join("current.json")).ok();
                if after != before {
                    let snapshot = committed(&state).unwrap_or_default();
                    // A run that resumed an open plan commits its parts, then sends its own
                    // change, which may fail in turn: the partner is then between the
                    // committed snapshot and that plan's target, never outside it.
                    let (adds, removes) = pending_lists(&state);
                    let least: BTreeSet<String> = snapshot.difference(&removes).cloned().collect();
                    let most: BTreeSet<String> = snapshot.union(&adds).cloned().collect();
                    if !(least.is_subset(&holds) && holds.is_subset(&most)) {
                        prop_assert!(
                            false,
                            "a failed run ({}) committed what the partner does not hold: {} (pending plan: {} adds, {} removes)",
                            e,
                            differ(&holds, &snapshot).unwrap_or_default(),
                            adds.len(),
                            removes.len()
                        );
                    }
                }
            }
        }
        if let Some(snapshot) = committed(&state) {
            // Whatever happened, the committed snapshot is never ahead of the partner.
            prop_assert!(
                run.is_err() || snapshot == holds,
                "committed {} ids, partner holds {}",
                snapshot.len(),
                holds.len()
            );
        }
        let clean = sync();
        prop_assert!(
            clean.is_ok(),
            "the clean run failed: {:?} (the faulty run: {:?}; a second scheduler's run: {:?})",
            clean.err(),
            run.err(),
            seconds
        );
        if let Some(d) = differ(&kind.held(&partner), &expected[v]) {
            prop_assert!(
                false,
                "the clean run did not converge: {} (the faulty run: {:?}, then {:?})",
                d,
                run.err(),
                clean.ok()
            );
        }
        let snapshot = committed(&state).unwrap_or_default();
        if let Some(d) = differ(&snapshot, &expected[v]) {
            prop_assert!(false, "the committed snapshot is off: {}", d);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{kind:?}: {e}\nthe schedule: {}", last.borrow());
    }
    assert_eq!(
        sink.received(),
        (0, 0),
        "a redirect target received something"
    );
    eprintln!(
        "{kind:?}: {} runs ok, {} failed ({} leaving a plan open mid-parts); {} schedules with an operator's action, {} runs fenced off or refused",
        ok.get(),
        failed.get(),
        left_open.get(),
        operated.get(),
        fenced.get()
    );
    assert!(
        cases < 100 || left_open.get() > 0,
        "no run was interrupted while its parts were planned"
    );
    // The schedules must exercise both outcomes, and both kinds of commit, and operators. A
    // run fails for a fault before its operator's unlock is noticed in most schedules (the
    // unlock is always noticed at the commit), so fenced runs are only required of the long run.
    assert!(
        cases < 100 || operated.get() > 0,
        "no schedule held an operator's action"
    );
    assert!(
        cases < 400 || fenced.get() > 0,
        "{} schedules with an operator's action, no run fenced off",
        operated.get()
    );
    assert!(
        ok.get() > 0 && failed.get() > 0,
        "ok {} failed {}",
        ok.get(),
        failed.get()
    );
    assert!(
        deltas.get() > 0 && deltas.get() < ok.get(),
        "{} of {} successful runs committed a delta",
        deltas.get(),
        ok.get()
    );
}
