//! What an operator or a scheduler can do to a run, and the partner still ends exact: a run
//! frozen past its lock's expiry (`kill -STOP`) and then unlocked or taken over is fenced off
//! when it wakes (exit 5, no further request, nothing committed); `state unlock --force` on a
//! live run stops it; a sync at an earlier `--at` than the last committed one is refused
//! unless `--allow-rewind`; a first sync whose plan was damaged has a way out.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::incremental::{ACTIVE_7D, T1, T2, active_7d, wait_until};
use crate::signals::{locks, signal};
use crate::support::*;

/// Slow pacing; a short request timeout keeps the drain after `unlock --force` short.
const SLOW: &str =
    "batch_size = 50\nrequests_per_second = 20\nmax_in_flight = 2\nrequest_timeout = \"2s\"";

/// A project whose runs pace themselves slowly, with a one-second lock.
fn slow_project(partner: &Partner) -> Project {
    let project = Project::new(&partner.handle.base_url(), SLOW, &[("active", ACTIVE_7D)]);
    project.set_state("lock_ttl = \"1s\"\n");
    project
}

fn go_fast(project: &Project) {
    let toml = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("requests_per_second = 20", "requests_per_second = 5000");
    std::fs::write(&toml, text).unwrap();
}

/// Starts a first sync at `T1` and returns once the partner has applied `batches` more.
fn delivering(partner: &Partner, project: &Project, batches: u64) -> std::process::Child {
    let before = partner.handle.stats().user_requests_applied;
    let child = project
        .command(&["sync", "active", "--at", T1])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("some batches applied", || {
        partner.handle.stats().user_requests_applied >= before + batches
    });
    child
}

/// Starts a slow first sync at `T1` and freezes it (SIGSTOP) once a few batches are applied,
/// then waits until its one-second lock has long expired.
fn frozen_first_sync(partner: &Partner, project: &Project) -> std::process::Child {
    let child = delivering(partner, project, 5);
    signal(child.id(), "STOP");
    std::thread::sleep(Duration::from_millis(2500));
    child
}

/// Wakes a frozen run and waits for it (bounded).
fn wake(child: std::process::Child) -> Run {
    signal(child.id(), "CONT");
    let started = Instant::now();
    let out = Run(child.wait_with_output().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the woken run ended"
    );
    out
}

/// The partner holds the cohort at `at`, and the next sync at `at` finds nothing to send.
fn assert_exact(partner: &Partner, project: &Project, at: &str) {
    assert!(
        partner.members("active") == active_7d(at),
        "the partner holds another set than the cohort at {at}"
    );
    assert_eq!(
        project.run(&["sync", "active", "--at", at]).summary()["outcome"],
        "unchanged"
    );
}

fn assert_fenced(woken: &Run) {
    assert_eq!(woken.code(), 5, "stderr:\n{}", woken.stderr());
    assert!(woken.stderr().contains("fenced off"), "{}", woken.stderr());
}

#[test]
fn a_frozen_run_unlocked_and_overtaken_is_fenced_off_when_it_wakes() {
    let partner = Partner::plain();
    let project = slow_project(&partner);
    let frozen = frozen_first_sync(&partner, &project);

    // The operator at 3 a.m.: the lock has expired, so `state unlock` needs no --force.
    let unlock = project.run(&["state", "unlock", "active"]);
    assert_eq!(unlock.code(), 0, "{}", unlock.stderr());
    // The next scheduled run finishes the frozen run's plan, then syncs T2.
    go_fast(&project);
    let next = project.run(&["sync", "active", "--at", T2]);
    assert_eq!(next.code(), 0, "{}", next.stderr());
    assert!(partner.members("active") == active_7d(T2));
    let applied = partner.handle.stats().user_requests_applied;

    let woken = wake(frozen);
    assert_fenced(&woken);
    assert_eq!(
        partner.handle.stats().user_requests_applied,
        applied,
        "the woken run sent nothing"
    );
    assert!(
        partner.members("active") == active_7d(T2),
        "the partner holds what the last committed run sent"
    );
    let state = project.cohort_state("active");
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("current.json")).unwrap()).unwrap();
    assert_eq!(
        pointer["run_id"],
        next.summary()["run_id"],
        "the frozen run committed nothing"
    );
    assert!(locks(&state).is_empty(), "no lock is held");
    assert_exact(&partner, &project, T2);
}

#[test]
fn a_frozen_run_whose_lock_was_taken_over_sends_nothing_when_it_wakes() {
    let partner = Partner::plain();
    let project = slow_project(&partner);
    let frozen = frozen_first_sync(&partner, &project);

    // No unlock: the next run takes the expired lock over, and releases it when done.
    go_fast(&project);
    let next = project.run(&["sync", "active", "--at", T2]);
    assert_eq!(next.code(), 0, "{}", next.stderr());
    assert!(
        next.stderr().contains("taking over an expired lock"),
        "{}",
        next.stderr()
    );
    let applied = partner.handle.stats().user_requests_applied;

    let woken = wake(frozen);
    assert_fenced(&woken);
    assert_eq!(partner.handle.stats().user_requests_applied, applied);
    assert_exact(&partner, &project, T2);
}

#[test]
fn a_run_that_wakes_while_its_successor_delivers_stops_at_once() {
    let partner = Partner::plain();
    let project = slow_project(&partner);
    let frozen = frozen_first_sync(&partner, &project);

    // The successor runs slowly too, so it is still delivering when the frozen run wakes.
    let mut next = delivering(&partner, &project, 3);
    let woken = wake(frozen);
    assert_fenced(&woken);
    let warnings = woken.stderr().matches("taken over").count();
    assert!(
        warnings <= 2,
        "the woken run stops instead of warning while it sends: {}",
        woken.stderr()
    );
    assert!(
        next.try_wait().unwrap().is_none(),
        "the woken run stopped before its successor finished"
    );
    let next = Run(next.wait_with_output().unwrap());
    assert_eq!(next.code(), 0, "{}", next.stderr());
    assert_exact(&partner, &project, T1);
}

#[test]
fn unlock_force_on_a_live_run_fences_it_off_and_the_next_sync_converges() {
    let partner = Partner::plain();
    // The default ten-minute lock: the run learns of the release from its background check
    // (every 5 s), not from its lease running out.
    let project = Project::new(&partner.handle.base_url(), SLOW, &[("active", ACTIVE_7D)]);
    let running = delivering(&partner, &project, 5);
    // Live, and its owner runs: refused without --force.
    let refused = project.run(&["state", "unlock", "active"]);
    assert_eq!(refused.code(), 5, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("fenced off"),
        "the refusal says what --force does: {}",
        refused.stderr()
    );
    let unlock = project.run(&["state", "unlock", "active", "--force"]);
    assert_eq!(unlock.code(), 0, "{}", unlock.stderr());
    let started = Instant::now();
    let out = Run(running.wait_with_output().unwrap());
    assert_fenced(&out);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the fenced run stopped within its check interval and request timeout"
    );
    assert!(
        !project.cohort_state("active").join("current.json").exists(),
        "it committed nothing"
    );
    let applied = partner.handle.stats().user_requests_applied;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(partner.handle.stats().user_requests_applied, applied);
    // The next run waits for the drain (check interval + request_timeout), then finishes the
    // fenced run's plan.
    go_fast(&project);
    let next = project.run(&["sync", "active", "--at", T1]);
    assert_eq!(next.code(), 0, "{}", next.stderr());
    assert!(partner.members("active") == active_7d(T1));
    assert_eq!(next.summary()["outcome"], "delivered");
}

#[test]
fn a_lock_of_a_dead_process_of_this_host_is_released_without_force() {
    let partner = Partner::plain();
    let project = slow_project(&partner);
    go_fast(&project);
    project.run(&["sync", "active", "--at", T1]).summary();
    // A process that has ended: its pid is free.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let state = project.cohort_state("active");
    std::fs::write(
        state.join("lock-0000000099.json"),
        serde_json::json!({
            "owner": format!("it-host:{pid}"), "run_id": "r", "acquired_at": "2026-11-27T00:00:00Z",
            "expires_at": "2099-01-01T00:00:00Z"
        })
        .to_string(),
    )
    .unwrap();
    let env = [
        (KEY_VAR, Some(KEY)),
        (SECRET_VAR, Some(SECRET)),
        ("HOSTNAME", Some("it-host")),
    ];
    let locked = project.run_with(&["sync", "active", "--at", T2], &env);
    assert_eq!(locked.code(), 5, "{}", locked.stderr());
    let unlock = project.run_with(&["state", "unlock", "active"], &env);
    assert_eq!(unlock.code(), 0, "{}", unlock.stderr());
    // Another host's process is never taken for gone.
    std::fs::write(
        state.join("lock-0000000200.json"),
        serde_json::json!({
            "owner": format!("other-host:{pid}"), "run_id": "r2",
            "acquired_at": "2026-11-27T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"
        })
        .to_string(),
    )
    .unwrap();
    let unlock = project.run_with(&["state", "unlock", "active"], &env);
    assert_eq!(unlock.code(), 5, "{}", unlock.stderr());
}

#[test]
fn a_sync_earlier_than_the_last_committed_one_is_refused_unless_allowed() {
    let partner = Partner::plain();
    let project = slow_project(&partner);
    go_fast(&project);
    project.run(&["sync", "active", "--at", T2]).summary();
    assert!(partner.members("active") == active_7d(T2));
    let files = project.state_files();

    let rewind = project.run(&["sync", "active", "--at", T1]);
    assert_eq!(rewind.code(), 2, "{}", rewind.stderr());
    assert!(
        rewind.stderr().contains("--allow-rewind") && rewind.stderr().contains(T2),
        "{}",
        rewind.stderr()
    );
    assert!(partner.members("active") == active_7d(T2), "nothing sent");
    // Only the runs table records the refused run.
    let kept = |f: &String| !f.contains("lock-") && !f.contains("/state/runs/");
    let after: Vec<_> = project
        .state_files()
        .into_iter()
        .filter(|(f, _)| kept(f))
        .collect();
    let before: Vec<_> = files.into_iter().filter(|(f, _)| kept(f)).collect();
    assert_eq!(after, before, "nothing written");
    // A dry run shows the change without refusing (it writes and sends nothing).
    let dry = project.run(&["sync", "active", "--at", T1, "--dry-run"]);
    assert_eq!(dry.code(), 0, "{}", dry.stderr());

    let allowed = project.run(&["sync", "active", "--at", T1, "--allow-rewind"]);
    assert_eq!(allowed.code(), 0, "{}", allowed.stderr());
    // The same time again is no rewind.
    assert_exact(&partner, &project, T1);
}

#[test]
fn a_first_sync_whose_plan_was_damaged_is_repaired_to_an_exact_partner() {
    let partner = Partner::plain();
    let project = slow_project(&partner);
    let state = project.cohort_state("active");
    let mut child = delivering(&partner, &project, 5);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Its one-second lock lapses.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !state.join("current.json").exists(),
        "nothing committed yet"
    );
    std::fs::write(
        state.join("pending/plan.json"),
        b"{\"format\": 3, \"run_id\": ",
    )
    .unwrap();

    let sync = project.run(&["sync", "active", "--at", T2]);
    assert_eq!(sync.code(), 2, "{}", sync.stderr());
    assert!(
        sync.stderr().contains("cohort-bridge state repair active"),
        "{}",
        sync.stderr()
    );
    let repair = project.run(&["state", "repair", "active"]);
    assert_eq!(repair.code(), 0, "{}", repair.stderr());
    go_fast(&project);
    // Some of T1's members the killed run sent have left by T2: they must be removed.
    assert!(active_7d(T1).difference(&active_7d(T2)).next().is_some());
    let sync = project.run(&["sync", "active", "--at", T2]);
    assert_eq!(sync.code(), 0, "{}", sync.stderr());
    assert_exact(&partner, &project, T2);
}

/// A run that is woken and ended if a case stops early (no stopped process is left behind).
struct Frozen(Option<std::process::Child>);

impl Frozen {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }

    fn take(mut self) -> std::process::Child {
        self.0.take().expect("the frozen run")
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            signal(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What an operator or a second scheduler does while a run is frozen.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// `state unlock` (refused while the lock is live and its owner runs).
    Unlock,
    /// `state unlock --force`.
    UnlockForce,
    /// Another scheduler's sync at `T1` (false) or `T2` (true), run to its end.
    Second(bool),
    /// Time passing (milliseconds).
    Wait(u64),
}

/// Random schedules of operator actions around a run frozen with SIGSTOP and woken with
/// SIGCONT, through the real binary: whatever the order, every command ends with a documented
/// exit, the partner holds what the last successful run delivered at every step (a fenced run
/// sends nothing), and a clean sync converges exactly. `FENCING_CASES=N` sets the count.
#[test]
fn random_operator_schedules_around_a_frozen_run_keep_the_partner_exact() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as Cases, TestRunner};

    let step = prop_oneof![
        Just(Step::Unlock),
        Just(Step::UnlockForce),
        any::<bool>().prop_map(Step::Second),
        (100u64..1500).prop_map(Step::Wait),
    ];
    let strategy = (3u64..20, prop::collection::vec(step, 1..5), 0u64..2000);
    let cases = std::env::var("FENCING_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut runner = TestRunner::new(Cases {
        cases,
        max_shrink_iters: 0,
        failure_persistence: None,
        ..Cases::default()
    });
    let result = runner.run(&strategy, |(stop_after, steps, frozen_ms)| {
        let partner = Partner::plain();
        let project = slow_project(&partner);
        let fast = project.dir.path().join("fast.toml");
        let toml = std::fs::read_to_string(project.dir.path().join("cohort-bridge.toml")).unwrap();
        std::fs::write(
            &fast,
            toml.replace("requests_per_second = 20", "requests_per_second = 5000"),
        )
        .unwrap();
        let fast = fast.to_str().unwrap();
        let frozen = Frozen(Some(
            project
                .command(&["sync", "active", "--at", T1])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        wait_until("batches applied", || {
            partner.handle.stats().user_requests_applied >= stop_after
        });
        signal(frozen.id(), "STOP");
        // What the partner must hold: nothing committed yet, so no expectation.
        let mut expected: Option<std::collections::BTreeSet<String>> = None;
        for step in &steps {
            match *step {
                Step::Unlock | Step::UnlockForce => {
                    let mut args = vec!["state", "unlock", "active"];
                    if matches!(step, Step::UnlockForce) {
                        args.push("--force");
                    }
                    let out = project.run(&args);
                    prop_assert!(
                        [0, 5].contains(&out.code()),
                        "{step:?}: exit {}: {}",
                        out.code(),
                        out.stderr()
                    );
                }
                Step::Second(later) => {
                    let at = if later { T2 } else { T1 };
                    let out = project.run(&["--config", fast, "sync", "active", "--at", at]);
                    // 0 delivered, 5 locked (the frozen run's lock is live), 2 a rewind.
                    prop_assert!(
                        [0, 2, 5].contains(&out.code()),
                        "{step:?}: exit {}: {}",
                        out.code(),
                        out.stderr()
                    );
                    if out.code() == 0 {
                        expected = Some(active_7d(at));
                    }
                }
                Step::Wait(ms) => std::thread::sleep(Duration::from_millis(ms)),
            }
            if let Some(want) = &expected {
                prop_assert!(partner.members("active") == *want, "after {step:?}");
            }
        }
        std::thread::sleep(Duration::from_millis(frozen_ms));
        let woken = wake(frozen.take());
        match woken.code() {
            0 => expected = Some(active_7d(T1)),
            5 => prop_assert!(
                woken.stderr().contains("fenced off") || woken.stderr().contains("being synced by"),
                "{}",
                woken.stderr()
            ),
            code => prop_assert!(false, "the woken run exited {code}: {}", woken.stderr()),
        }
        if let Some(want) = &expected {
            prop_assert!(
                partner.members("active") == *want,
                "the woken run ({}) left the partner off",
                woken.code()
            );
        }
        // A clean run converges (after any drain), and the next finds nothing to do.
        let clean = project.run(&["--config", fast, "sync", "active", "--at", T2]);
        prop_assert_eq!(clean.code(), 0, "{}", clean.stderr());
        prop_assert!(partner.members("active") == active_7d(T2));
        let again = project.run(&["--config", fast, "sync", "active", "--at", T2]);
        prop_assert_eq!(&again.summary()["outcome"], "unchanged");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
