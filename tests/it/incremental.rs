//! Hourly incremental syncs: only the change is sent, removals are guarded, a dry run touches
//! nothing, locks keep two runs apart, and a run killed with SIGKILL is resumed exactly.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::support::*;

pub const ACTIVE_7D: &str = "SELECT user_id FROM users\n\
WHERE last_seen_at >= $run_ts - INTERVAL '7 days' AND last_seen_at < $run_ts\n";
pub const T1: &str = "2026-11-26T12:00:00Z";
pub const T2: &str = "2026-11-27T12:00:00Z";

pub fn active_7d(at: &str) -> BTreeSet<String> {
    let at: DateTime<Utc> = at.parse().unwrap();
    let (from, to) = (
        (at - chrono::Duration::days(7)).timestamp_micros(),
        at.timestamp_micros(),
    );
    users()
        .into_iter()
        .filter(|u| u.last_seen_us.is_some_and(|t| t >= from && t < to))
        .map(|u| u.user_id)
        .collect()
}

fn fast() -> &'static str {
    "batch_size = 200\nrequests_per_second = 5000"
}

#[test]
fn an_incremental_sync_sends_exactly_the_change() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), fast(), &[("active", ACTIVE_7D)]);
    let (e1, e2) = (active_7d(T1), active_7d(T2));
    let adds: BTreeSet<_> = e2.difference(&e1).cloned().collect();
    let removes: BTreeSet<_> = e1.difference(&e2).cloned().collect();
    assert!(
        !adds.is_empty() && !removes.is_empty(),
        "the fixture must move both ways"
    );

    let first = project.run(&["sync", "active", "--at", T1]).summary();
    assert_eq!(
        (first["adds"].as_u64(), first["removes"].as_u64()),
        (Some(e1.len() as u64), Some(0))
    );
    assert!(partner.members("active") == e1);

    let second = project.run(&["sync", "active", "--at", T2]).summary();
    assert_eq!(second["outcome"], "delivered");
    assert_eq!(second["snapshot_members"], e1.len() as u64);
    assert_eq!(second["adds"], adds.len() as u64);
    assert_eq!(second["removes"], removes.len() as u64);
    assert_eq!(
        second["batches"],
        (adds.len().div_ceil(200) + removes.len().div_ceil(200)) as u64
    );
    assert!(
        partner.members("active") == e2,
        "the partner holds a different set than the cohort"
    );
    let stats = partner.handle.stats();
    assert_eq!(
        stats.ids_added,
        (e1.len() + adds.len()) as u64,
        "only the adds were sent again"
    );
    assert_eq!(stats.ids_removed, removes.len() as u64);
    assert_eq!((stats.redundant_adds, stats.redundant_removes), (0, 0));

    // Nothing changed since: nothing is sent.
    let third = project.run(&["sync", "active", "--at", T2]).summary();
    assert_eq!(third["outcome"], "unchanged");
    assert_eq!(third["requests"], 0);
    assert_eq!(partner.handle.stats().requests, stats.requests);

    // Every run is in the history, newest first.
    let history = project.run(&["runs", "--cohort", "active", "--format", "json"]);
    assert_eq!(history.code(), 0, "{}", history.stderr());
    let rows = history.summaries();
    let outcomes: Vec<&str> = rows
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["unchanged", "delivered", "delivered"]);
    assert_eq!(rows[1]["adds"], adds.len() as u64);
    assert_eq!(rows[1]["removes"], removes.len() as u64);
    assert_eq!(rows[1]["run_id"], second["run_id"]);
    assert!(
        rows.iter()
            .all(|r| r["command"] == "sync" && r["exit_code"] == 0)
    );
}

#[test]
fn a_dry_run_changes_nothing_anywhere() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), fast(), &[("active", ACTIVE_7D)]);
    project.run(&["sync", "active", "--at", T1]).summary();
    let (stats, files) = (partner.handle.stats(), project.state_files());

    let dry = project
        .run(&["sync", "active", "--at", T2, "--dry-run"])
        .summary();
    let (e1, e2) = (active_7d(T1), active_7d(T2));
    assert_eq!(dry["outcome"], "dry_run");
    assert_eq!(dry["adds"], e2.difference(&e1).count() as u64);
    assert_eq!(dry["removes"], e1.difference(&e2).count() as u64);
    let sample = dry["sample_adds"].as_array().unwrap();
    assert!(!sample.is_empty() && sample.iter().all(|id| !e1.contains(id.as_str().unwrap())));
    assert_eq!(
        partner.handle.stats().requests,
        stats.requests,
        "the partner saw nothing"
    );
    assert_eq!(project.state_files(), files, "the state is untouched");
    assert!(partner.members("active") == e1);
}

#[test]
fn a_zero_row_result_holds_back_removals_until_allowed() {
    let partner = Partner::plain();
    let sql = "SELECT user_id FROM users WHERE plan = 'pro' AND $run_ts < TIMESTAMP '2026-12-01T00:00:00Z'";
    let project = Project::new(&partner.handle.base_url(), fast(), &[("pro", sql)]);
    let pro: BTreeSet<String> = users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .collect();
    project.run(&["sync", "pro", "--at", T1]).summary();
    assert!(partner.members("pro") == pro);

    let run = project.run(&["sync", "pro", "--at", "2026-12-02T00:00:00Z"]);
    let held = run.summary();
    assert_eq!(held["members"], 0);
    assert_eq!(
        (held["removes"].as_u64(), held["removes_held_back"].as_u64()),
        (Some(0), Some(pro.len() as u64))
    );
    assert!(
        run.stderr().contains("--allow-mass-removal"),
        "the run says why: {}",
        run.stderr()
    );
    assert!(partner.members("pro") == pro, "nobody was removed");

    let allowed = project
        .run(&[
            "sync",
            "pro",
            "--at",
            "2026-12-02T00:00:00Z",
            "--allow-mass-removal",
        ])
        .summary();
    assert_eq!(allowed["removes"], pro.len() as u64);
    assert!(partner.members("pro").is_empty());
}

#[test]
fn full_repairs_a_partner_that_lost_the_cohort_and_a_new_partner_gets_everything() {
    let pro: BTreeSet<String> = users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .collect();
    let first = Partner::plain();
    let addr = first.handle.addr().to_string();
    let project = Project::new(
        &first.handle.base_url(),
        fast(),
        &[("pro", "SELECT user_id FROM users WHERE plan = 'pro'")],
    );
    project.run(&["sync", "pro", "--at", T1]).summary();
    drop(first);

    // The partner lost everything but is the same endpoint and workspace: our snapshot says it
    // holds `pro`, so a sync sends nothing; --full repairs it.
    let restarted = Partner::start_on(&addr, Default::default());
    assert_eq!(
        project.run(&["sync", "pro", "--at", T1]).summary()["outcome"],
        "unchanged"
    );
    assert!(restarted.members("pro").is_empty());
    let full = project
        .run(&["sync", "pro", "--at", T1, "--full"])
        .summary();
    assert_eq!(full["adds"], pro.len() as u64);
    assert!(restarted.members("pro") == pro);
    drop(restarted);

    // Pointed at another endpoint, the run refuses rather than start over (which would leave
    // members who left at the partner): it names --rebind and --new-workspace.
    let other = Partner::plain();
    let toml = std::fs::read_to_string(project.dir.path().join("cohort-bridge.toml")).unwrap();
    let old_url = toml
        .lines()
        .find(|l| l.starts_with("base_url"))
        .unwrap()
        .to_string();
    std::fs::write(
        project.dir.path().join("cohort-bridge.toml"),
        toml.replace(
            &old_url,
            &format!("base_url = \"{}\"", other.handle.base_url()),
        ),
    )
    .unwrap();
    let run = project.run(&["sync", "pro", "--at", T1]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("--rebind") && run.stderr().contains("--new-workspace"),
        "{}",
        run.stderr()
    );
    assert_eq!(other.handle.stats().requests, 0, "nothing was sent");
    // A new workspace gets everything, and the old state is kept aside.
    let run = project.run(&["sync", "pro", "--at", T1, "--new-workspace"]);
    assert_eq!(run.summary()["adds"], pro.len() as u64);
    assert!(other.members("pro") == pro);
    assert!(project.cohort_state("pro").join("replaced").is_dir());
    assert_eq!(
        project.run(&["sync", "pro", "--at", T1]).summary()["outcome"],
        "unchanged"
    );
}

/// Backdates every held lock in a cohort's state folder (as time would for a dead run's lock);
/// returns how many there were (released ones, the tombstones runs leave, are not counted).
pub fn expire_locks(state: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(state).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("lock-") {
            let mut info: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            if info.get("released").is_some() {
                continue;
            }
            info["expires_at"] = serde_json::json!("2026-01-01T00:00:00Z");
            std::fs::write(e.path(), serde_json::to_vec(&info).unwrap()).unwrap();
            n += 1;
        }
    }
    n
}

/// Starts `command` once per threshold and kills it (SIGKILL) as soon as `applied()` reaches the
/// threshold, then expires the killed run's lock in `state` as the scheduler's timeout would
/// (it would block the next run for 10 minutes).
pub fn kill_at(
    thresholds: &[u64],
    state: &std::path::Path,
    mut command: impl FnMut() -> std::process::Command,
    applied: impl Fn() -> u64,
) {
    for &threshold in thresholds {
        let mut child = command().spawn().unwrap();
        wait_until("more batches applied", || applied() >= threshold);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        expire_locks(state);
    }
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_second_run_of_the_same_cohort_is_refused_and_a_stale_lock_taken_over() {
    // The client's own pacing (requests_per_second) makes the run last a few seconds.
    let partner = Partner::plain();
    let dest = "batch_size = 50\nrequests_per_second = 20\nmax_in_flight = 2";
    let project = Project::new(&partner.handle.base_url(), dest, &[("active", ACTIVE_7D)]);
    let mut first = project
        .command(&["sync", "active", "--at", T1])
        .spawn()
        .unwrap();
    let state = project.cohort_state("active");
    wait_until("the first run's lock", || {
        std::fs::read_dir(&state).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("lock-"))
        })
    });
    let second = project.run(&["sync", "active", "--at", T1]);
    assert_eq!(second.code(), 5, "stderr: {}", second.stderr());
    assert!(
        second.stderr().contains("is being synced by"),
        "{}",
        second.stderr()
    );
    let history = project.run(&["runs", "--format", "json"]).summaries();
    assert_eq!(
        history[0]["outcome"], "locked",
        "the refused run is in the history: {history:?}"
    );
    assert_eq!(history[0]["exit_code"], 5);
    first.kill().unwrap();
    first.wait().unwrap();

    // The killed run's lock is still there; once it has expired, a new run takes over and
    // finishes the cohort.
    assert!(expire_locks(&state) > 0, "a killed run leaves its lock");
    let fast_project = std::fs::read_to_string(project.dir.path().join("cohort-bridge.toml"))
        .unwrap()
        .replace("requests_per_second = 20", "requests_per_second = 5000");
    std::fs::write(project.dir.path().join("cohort-bridge.toml"), fast_project).unwrap();
    let run = project.run(&["sync", "active", "--at", T1]);
    run.summary();
    assert!(
        run.stderr().contains("taking over an expired lock"),
        "{}",
        run.stderr()
    );
    assert!(partner.members("active") == active_7d(T1));
}

#[test]
fn runs_killed_mid_delivery_resume_without_resending_acknowledged_batches() {
    // The client's own pacing (requests_per_second) makes the run last a few seconds.
    let partner = Partner::plain();
    let dest = "batch_size = 50\nrequests_per_second = 40\nmax_in_flight = 4";
    let project = Project::new(&partner.handle.base_url(), dest, &[("active", ACTIVE_7D)]);
    let expected = active_7d(T1);
    let batches = expected.len().div_ceil(50) as u64;
    assert!(batches > 40, "fixture: {batches} batches");

    // Killed three times at different points of the delivery, each time resumed by the next
    // run, which is killed in turn.
    kill_at(
        &[15, 40, 65],
        &project.cohort_state("active"),
        || project.command(&["sync", "active", "--at", T1]),
        || partner.handle.stats().user_requests_applied,
    );
    let applied = partner.handle.stats().user_requests_applied;
    assert!(applied < batches, "the runs were interrupted");

    let resumed = project.run(&["sync", "active", "--at", T1]).summary();
    let (sent, skipped) = (
        resumed["resumed_batches"].as_u64().unwrap(),
        resumed["skipped_batches"].as_u64().unwrap(),
    );
    assert_eq!(sent + skipped, batches);
    assert!(
        skipped > 0 && skipped <= applied,
        "journaled batches are skipped: {skipped} of {applied} applied"
    );
    assert!(
        partner.members("active") == expected,
        "the partner holds a different set than the cohort"
    );
    let stats = partner.handle.stats();
    // Only batches acknowledged in the instant before a kill (in flight, not yet journaled)
    // can be sent twice: at most max_in_flight of them per kill.
    assert!(
        stats.redundant_adds <= 3 * 4 * 50,
        "{} ids re-sent",
        stats.redundant_adds
    );
    assert_eq!(
        resumed["outcome"], "delivered",
        "the resumed plan was the whole change, and it was delivered by this run"
    );
}

#[test]
fn refused_ids_are_dead_lettered_and_retried_next_run() {
    let partner = Partner::start(cohort_bridge::emulator::EmulatorConfig {
        invalid_id_marker: Some("042".into()),
        ..Default::default()
    });
    let project = Project::new(
        &partner.handle.base_url(),
        fast(),
        &[("pro", "SELECT user_id FROM users WHERE plan = 'pro'")],
    );
    let pro: BTreeSet<String> = users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .collect();
    let bad: BTreeSet<String> = pro
        .iter()
        .filter(|id| id.contains("042"))
        .cloned()
        .collect();
    assert!(
        !bad.is_empty() && bad.len() < 100,
        "fixture: {} refused ids",
        bad.len()
    );

    let run = project.run(&["sync", "pro", "--at", T1]);
    assert_eq!(
        run.code(),
        3,
        "exit 3: committed with dead letters; stderr: {}",
        run.stderr()
    );
    let summary = &run.summaries()[0];
    assert_eq!(summary["outcome"], "delivered");
    assert_eq!(summary["dead_letters"], bad.len() as u64);
    let good: BTreeSet<String> = pro.difference(&bad).cloned().collect();
    assert!(
        partner.members("pro") == good,
        "every other id was delivered"
    );
    // The membership history records what the partner took, not the refused ids.
    let history = project
        .run(&[
            "query",
            "SELECT count(*) AS n FROM cohort_changes WHERE op = 'add'",
            "--format",
            "csv",
        ])
        .stdout();
    assert_eq!(history, format!("n\n{}\n", good.len()));

    // The dead letters, as Parquet, with the partner's reason.
    let dir = project.cohort_state("pro").join("dead_letters");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1);
    let mut recorded = BTreeSet::new();
    for b in read_all(&files[0]) {
        for row in 0..b.num_rows() {
            recorded.insert(string_at(&b, "user_id", row).unwrap());
            assert!(
                string_at(&b, "reason", row)
                    .unwrap()
                    .contains("is not a valid external id")
            );
            assert_eq!(string_at(&b, "change", row).as_deref(), Some("add"));
        }
    }
    assert!(recorded == bad);

    // Left out of the snapshot, so the next run tries exactly them again.
    let again = project.run(&["sync", "pro", "--at", T1]);
    assert_eq!(again.code(), 3);
    let again = &again.summaries()[0];
    assert_eq!(again["adds"], bad.len() as u64);
    assert_eq!(again["removes"], 0);
    assert_eq!(again["dead_letters"], bad.len() as u64);
    // That change was small enough for a delta, but refused ids make the run compact: a
    // full snapshot without them, so a third run tries exactly them once more.
    let pointer: serde_json::Value = serde_json::from_slice(
        &std::fs::read(project.cohort_state("pro").join("current.json")).unwrap(),
    )
    .unwrap();
    assert!(pointer.get("deltas").is_none(), "{pointer}");
    assert_eq!(pointer["members"], good.len() as u64);
    let third = project.run(&["sync", "pro", "--at", T1]);
    assert_eq!(third.summaries()[0]["adds"], bad.len() as u64);
    assert!(partner.members("pro") == good);
}

#[test]
fn an_interrupted_incremental_run_rebuilds_a_missing_target_snapshot() {
    let partner = Partner::plain();
    let dest = "batch_size = 20\nrequests_per_second = 40\nmax_in_flight = 2";
    let project = Project::new(&partner.handle.base_url(), dest, &[("active", ACTIVE_7D)]);
    let fast = std::fs::read_to_string(project.dir.path().join("cohort-bridge.toml"))
        .unwrap()
        .replace("requests_per_second = 40", "requests_per_second = 5000");
    let slow = std::fs::read_to_string(project.dir.path().join("cohort-bridge.toml")).unwrap();
    std::fs::write(project.dir.path().join("cohort-bridge.toml"), &fast).unwrap();
    project.run(&["sync", "active", "--at", T1]).summary();
    std::fs::write(project.dir.path().join("cohort-bridge.toml"), &slow).unwrap();

    let applied_before = partner.handle.stats().user_requests_applied;
    let mut child = project
        .command(&["sync", "active", "--at", T2])
        .spawn()
        .unwrap();
    wait_until("some incremental batches applied", || {
        partner.handle.stats().user_requests_applied >= applied_before + 5
    });
    child.kill().unwrap();
    child.wait().unwrap();

    // As if the crash came before the target snapshot was written.
    let state = project.cohort_state("active");
    let plan: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.join("pending/plan.json")).expect("a pending plan"),
    )
    .unwrap();
    let target = state.join(plan["target_snapshot"].as_str().unwrap());
    let _ = std::fs::remove_file(&target);
    // As an operator would for a dead run.
    let unlock = project.run(&["state", "unlock", "active"]);
    assert_eq!(unlock.code(), 0, "{}", unlock.stderr());

    std::fs::write(project.dir.path().join("cohort-bridge.toml"), &fast).unwrap();
    let resumed = project.run(&["sync", "active", "--at", T2]).summary();
    assert!(resumed["skipped_batches"].as_u64().unwrap() > 0);
    assert!(
        partner.members("active") == active_7d(T2),
        "the partner holds a different set than the cohort"
    );
    // The rebuilt snapshot is right: a third run at T2 finds nothing to send.
    assert_eq!(
        project.run(&["sync", "active", "--at", T2]).summary()["outcome"],
        "unchanged"
    );
}
