//! The state area can be damaged or out of date without losing a member: an endpoint change is
//! refused until told `--rebind` or `--new-workspace`; each state file truncated, garbled or
//! deleted stops the run with exit 2 naming the file and the `state` command that repairs it;
//! the repair converges to exactly the cohort, with no full resend and no forgotten removal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::incremental::{ACTIVE_7D, T1, T2, active_7d, wait_until};
use crate::signals::{locks, signal};
use crate::support::*;

const FAST: &str = "batch_size = 200\nrequests_per_second = 5000";
const SLOW: &str = "batch_size = 20\nrequests_per_second = 40\nmax_in_flight = 2";

fn set_config(project: &Project, from: &str, to: &str) {
    let path = project.dir.path().join("cohort-bridge.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    assert!(toml.contains(from), "{from} not in the project file");
    std::fs::write(path, toml.replace(from, to)).unwrap();
}

#[derive(Debug, Clone, Copy)]
pub enum Damage {
    Delete,
    Truncate,
    Garble,
}

pub fn damage(path: &Path, how: Damage) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match how {
        Damage::Delete => std::fs::remove_file(path).unwrap(),
        Damage::Truncate => std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap(),
        Damage::Garble => {
            let mut b = bytes.clone();
            let n = b.len();
            for x in &mut b[n / 4..n * 3 / 4] {
                *x ^= 0x5a;
            }
            std::fs::write(path, b).unwrap();
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The committed snapshot of a cohort's state, from its pointer.
fn snapshot_file(state: &Path) -> PathBuf {
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("current.json")).unwrap()).unwrap();
    state.join(pointer["snapshot"].as_str().unwrap())
}

/// Asserts a refused run: exit 2, the file and the fix named, nothing sent.
fn assert_refused(run: &Run, partner: &Partner, requests_before: u64, names: &[&str]) {
    assert_eq!(run.code(), 2, "stderr:\n{}", run.stderr());
    for n in names {
        assert!(run.stderr().contains(n), "`{n}` not in:\n{}", run.stderr());
    }
    assert_eq!(
        partner.handle.stats().requests,
        requests_before,
        "nothing was sent"
    );
}

/// Runs `args` (a sync) and checks it is refused: exit 2, naming `names`, nothing sent.
pub fn sync_refused(partner: &Partner, project: &Project, args: &[&str], names: &[&str]) -> Run {
    let requests = partner.handle.stats().requests;
    let refused = project.run(args);
    assert_refused(&refused, partner, requests, names);
    refused
}

/// The T2 sync is refused (exit 2, naming `names`, nothing sent); `state repair` then succeeds.
fn refused_then_repaired(partner: &Partner, project: &Project, names: &[&str]) -> Run {
    sync_refused(partner, project, &["sync", "active", "--at", T2], names);
    let repair = project.run(&["state", "repair", "active"]);
    assert_eq!(repair.code(), 0, "{}", repair.stderr());
    repair
}

/// A project synced at T1 (fast).
fn synced_at_t1() -> (Partner, Project) {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    project.run(&["sync", "active", "--at", T1]).summary();
    assert!(partner.members("active") == active_7d(T1));
    (partner, project)
}

/// The T2 sync converges with only the change sent (no full resend, no forgotten removal).
fn assert_incremental_t2(partner: &Partner, project: &Project) {
    let (e1, e2) = (active_7d(T1), active_7d(T2));
    let before = partner.handle.stats();
    let run = project.run(&["sync", "active", "--at", T2]).summary();
    assert_eq!(run["adds"], e2.difference(&e1).count() as u64, "{run}");
    assert_eq!(run["removes"], e1.difference(&e2).count() as u64, "{run}");
    assert!(
        partner.members("active") == e2,
        "the partner holds a different set than the cohort"
    );
    let after = partner.handle.stats();
    assert_eq!(
        after.ids_added - before.ids_added,
        e2.difference(&e1).count() as u64
    );
}

#[test]
fn an_endpoint_change_is_refused_and_rebind_keeps_what_the_partner_holds() {
    let (partner, project) = synced_at_t1();
    // The same emulator, spelled differently.
    let url = partner.handle.base_url();
    let localhost = url.replace("127.0.0.1", "localhost");
    assert_ne!(url, localhost);
    set_config(&project, &url, &localhost);
    sync_refused(
        &partner,
        &project,
        &["sync", "active", "--at", T2],
        &["sync active --rebind", "sync active --new-workspace"],
    );
    let show = project.run(&["state", "show", "active"]);
    assert_eq!(show.code(), 0, "{}", show.stderr());
    assert!(show.stdout().contains("--rebind"), "{}", show.stdout());

    let rebound = project.run(&["sync", "active", "--at", T2, "--rebind"]);
    assert_eq!(rebound.code(), 0, "{}", rebound.stderr());
    let (e1, e2) = (active_7d(T1), active_7d(T2));
    let s = rebound.summary();
    assert_eq!(s["adds"], e2.difference(&e1).count() as u64);
    assert_eq!(s["removes"], e1.difference(&e2).count() as u64);
    assert!(partner.members("active") == e2);
    assert_eq!(
        (
            partner.handle.stats().redundant_adds,
            partner.handle.stats().redundant_removes
        ),
        (0, 0)
    );
    // Bound for good: the next run needs no flag.
    assert_eq!(
        project.run(&["sync", "active", "--at", T2]).summary()["outcome"],
        "unchanged"
    );
}

#[test]
fn an_interrupted_run_for_the_old_endpoint_is_not_discarded() {
    let (partner, project) = synced_at_t1();
    set_config(&project, FAST, SLOW);
    let child = project
        .command(&["sync", "active", "--at", T2])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let applied = partner.handle.stats().user_requests_applied;
    wait_until("some incremental batches", || {
        partner.handle.stats().user_requests_applied >= applied + 5
    });
    signal(child.id(), "TERM");
    let mut child = child;
    assert_eq!(child.wait().unwrap().code(), Some(143));
    let state = project.cohort_state("active");
    assert!(state.join("pending/plan.json").exists());

    set_config(&project, SLOW, FAST);
    let url = partner.handle.base_url();
    set_config(&project, &url, &url.replace("127.0.0.1", "localhost"));
    sync_refused(
        &partner,
        &project,
        &["sync", "active", "--at", T2],
        &["interrupted run", "--rebind", "--new-workspace"],
    );
    assert!(state.join("pending/plan.json").exists(), "the plan is kept");
    let resumed = project
        .run(&["sync", "active", "--at", T2, "--rebind"])
        .summary();
    assert!(resumed["skipped_batches"].as_u64().unwrap() >= 5);
    assert_eq!(resumed["outcome"], "delivered");
    assert!(partner.members("active") == active_7d(T2));
    assert_eq!(partner.handle.stats().redundant_adds, 0);
}

#[test]
fn full_resends_every_member_and_removes_every_one_that_left() {
    let (partner, project) = synced_at_t1();
    let (e1, e2) = (active_7d(T1), active_7d(T2));
    let full = project
        .run(&["sync", "active", "--at", T2, "--full"])
        .summary();
    assert_eq!(full["adds"], e2.len() as u64);
    assert_eq!(full["removes"], e1.difference(&e2).count() as u64);
    assert!(partner.members("active") == e2);
}

#[test]
fn a_missing_or_unreadable_pointer_is_not_taken_as_an_empty_state() {
    for how in [Damage::Delete, Damage::Truncate, Damage::Garble] {
        let (partner, project) = synced_at_t1();
        let state = project.cohort_state("active");
        damage(&state.join("current.json"), how);
        let repair = refused_then_repaired(
            &partner,
            &project,
            &["current.json", "cohort-bridge state repair active"],
        );
        assert!(
            repair.stdout().contains("\"repaired\""),
            "{}",
            repair.stdout()
        );
        assert_incremental_t2(&partner, &project);
    }
}

#[test]
fn a_damaged_snapshot_is_restored_from_its_replica() {
    for how in [Damage::Delete, Damage::Truncate, Damage::Garble] {
        let (partner, project) = synced_at_t1();
        let state = project.cohort_state("active");
        let snapshot = snapshot_file(&state);
        damage(&snapshot, how);
        refused_then_repaired(
            &partner,
            &project,
            &[
                snapshot.file_name().unwrap().to_str().unwrap(),
                "cohort-bridge state repair active",
            ],
        );
        assert_incremental_t2(&partner, &project);
    }
}

/// A project synced at T1, whose T2 sync was killed (SIGKILL) after some batches: a plan, a
/// journal and a lock are left (the lock is released by `state unlock`, as it expired).
fn interrupted_at_t2(partner: Partner) -> (Partner, Project) {
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    // Its change planned whole: the lists these tests damage are `pending/adds.parquet` and
    // `pending/removes.parquet` (an open plan's parts: `pipeline`).
    project.set_state("part_ids = 0\n");
    let first = project.run(&["sync", "active", "--at", T1]);
    assert!(first.code() == 0 || first.code() == 3, "{}", first.stderr());
    set_config(&project, FAST, SLOW);
    let mut child = project
        .command(&["sync", "active", "--at", T2])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let applied = partner.handle.stats().user_requests_applied;
    let state = project.cohort_state("active");
    wait_until("some incremental batches journaled", || {
        partner.handle.stats().user_requests_applied >= applied + 8
            && files(&state.join("pending/journal")).len() >= 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
    set_config(&project, SLOW, FAST);
    // The killed run's lock is live for lock_ttl, but its owner, a process of this host, is
    // provably gone: released by hand without --force.
    assert_eq!(locks(&state).len(), 1);
    let unlock = project.run(&["state", "unlock", "active"]);
    assert_eq!(unlock.code(), 0, "{}", unlock.stderr());
    let said: serde_json::Value = serde_json::from_str(&unlock.stdout()).unwrap();
    assert_eq!(said["released"]["live"], true, "{said}");
    assert_eq!(said["released"]["owner_gone"], true, "{said}");
    assert!(locks(&state).is_empty());
    (partner, project)
}

#[test]
fn an_unreadable_plan_is_set_aside_and_the_next_sync_converges_exactly() {
    for how in [Damage::Truncate, Damage::Garble] {
        let (partner, project) = interrupted_at_t2(Partner::plain());
        let state = project.cohort_state("active");
        damage(&state.join("pending/plan.json"), how);
        refused_then_repaired(
            &partner,
            &project,
            &["plan.json", "cohort-bridge state repair active"],
        );
        assert!(!state.join("pending/plan.json").exists());
        let run = project.run(&["sync", "active", "--at", T2]);
        let s = run.summary();
        assert!(
            run.stderr().contains("re-sending every member"),
            "{}",
            run.stderr()
        );
        assert_eq!(s["adds"], active_7d(T2).len() as u64);
        assert!(
            partner.members("active") == active_7d(T2),
            "{how:?}: the partner holds a different set than the cohort"
        );
        assert_eq!(
            project.run(&["sync", "active", "--at", T2]).summary()["outcome"],
            "unchanged"
        );
    }
}

#[test]
fn a_deleted_plan_with_a_journal_is_not_forgotten() {
    let (partner, project) = interrupted_at_t2(Partner::plain());
    let state = project.cohort_state("active");
    std::fs::remove_file(state.join("pending/plan.json")).unwrap();
    refused_then_repaired(
        &partner,
        &project,
        &["plan.json", "cohort-bridge state repair active"],
    );
    project.run(&["sync", "active", "--at", T2]).summary();
    assert!(partner.members("active") == active_7d(T2));
}

#[test]
fn an_unreadable_journal_object_is_dropped_by_repair_and_its_batches_resent() {
    for how in [Damage::Truncate, Damage::Garble, Damage::Delete] {
        let (partner, project) = interrupted_at_t2(Partner::plain());
        let state = project.cohort_state("active");
        let journal = files(&state.join("pending/journal"));
        damage(&journal[0], how);
        if let Damage::Delete = how {
            // A lost journal object only means its batches are sent again.
            let s = project.run(&["sync", "active", "--at", T2]).summary();
            assert_eq!(s["outcome"], "delivered");
        } else {
            let repair = refused_then_repaired(
                &partner,
                &project,
                &["pending/journal", "cohort-bridge state repair active"],
            );
            assert!(repair.stdout().contains("journal"), "{}", repair.stdout());
            let s = project.run(&["sync", "active", "--at", T2]).summary();
            assert!(s["skipped_batches"].as_u64().unwrap() > 0, "{s}");
        }
        assert!(
            partner.members("active") == active_7d(T2),
            "{how:?}: the partner holds a different set than the cohort"
        );
    }
}

#[test]
fn an_unreadable_lock_names_unlock_force() {
    for how in [Damage::Truncate, Damage::Garble] {
        let (partner, project) = synced_at_t1();
        let state = project.cohort_state("active");
        let lock = state.join("lock-0000000007.json");
        std::fs::write(
            &lock,
            serde_json::to_vec_pretty(&serde_json::json!({
                "owner": "host:1", "run_id": "r", "acquired_at": "2026-11-27T00:00:00Z",
                "expires_at": "2099-01-01T00:00:00Z"
            }))
            .unwrap(),
        )
        .unwrap();
        damage(&lock, how);
        sync_refused(
            &partner,
            &project,
            &["sync", "active", "--at", T2],
            &[
                "lock-0000000007.json",
                "cohort-bridge state unlock active --force",
            ],
        );
        let unlock = project.run(&["state", "unlock", "active"]);
        assert_eq!(unlock.code(), 2, "{}", unlock.stderr());
        let unlock = project.run(&["state", "unlock", "active", "--force"]);
        assert_eq!(unlock.code(), 0, "{}", unlock.stderr());
        assert_incremental_t2(&partner, &project);
    }
}

#[test]
fn an_expired_lock_is_released_by_unlock_and_a_live_one_names_the_command() {
    let (partner, project) = synced_at_t1();
    let state = project.cohort_state("active");
    let lock = state.join("lock-0000000003.json");
    let info = |expires: &str| {
        serde_json::to_vec(&serde_json::json!({
            "owner": "host:1", "run_id": "r1", "acquired_at": "2026-11-27T00:00:00Z",
            "expires_at": expires
        }))
        .unwrap()
    };
    std::fs::write(&lock, info("2099-01-01T00:00:00Z")).unwrap();
    let locked = project.run(&["sync", "active", "--at", T2]);
    assert_eq!(locked.code(), 5);
    assert!(
        locked
            .stderr()
            .contains("cohort-bridge state unlock active --force"),
        "{}",
        locked.stderr()
    );
    let show = project.run(&["state", "show", "active"]);
    let shown: serde_json::Value = serde_json::from_str(&show.stdout()).unwrap();
    assert_eq!(shown["lock"]["run_id"], "r1");
    assert_eq!(shown["lock"]["expired"], false);
    assert_eq!(shown["pointer"]["members"], active_7d(T1).len() as u64);
    std::fs::write(&lock, info("2026-01-01T00:00:00Z")).unwrap();
    let unlock = project.run(&["state", "unlock", "active"]);
    assert_eq!(unlock.code(), 0, "{}", unlock.stderr());
    assert!(locks(&state).is_empty());
    assert_incremental_t2(&partner, &project);
}

fn refusing_partner() -> Partner {
    Partner::start(cohort_bridge::emulator::EmulatorConfig {
        invalid_id_marker: Some("042".into()),
        ..Default::default()
    })
}

fn refused_ids(ids: &BTreeSet<String>) -> BTreeSet<String> {
    ids.iter()
        .filter(|id| id.contains("042"))
        .cloned()
        .collect()
}

#[test]
fn unreadable_dead_letters_are_recovered_exactly() {
    let partner = refusing_partner();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    let e1 = active_7d(T1);
    let first = project.run(&["sync", "active", "--at", T1]);
    assert_eq!(first.code(), 3, "{}", first.stderr());
    let bad = refused_ids(&e1);
    assert!(!bad.is_empty());

    // A committed dead-letter file is a record only: damaged, it stops nothing, and `state
    // show` names it.
    let state = project.cohort_state("active");
    let committed = files(&state.join("dead_letters"));
    damage(&committed[0], Damage::Garble);
    let again = project.run(&["sync", "active", "--at", T1]);
    assert_eq!(again.code(), 3, "{}", again.stderr());
    let show = project.run(&["state", "show", "active"]);
    assert!(
        show.stdout()
            .contains(committed[0].file_name().unwrap().to_str().unwrap()),
        "{}",
        show.stdout()
    );
    let good: BTreeSet<String> = e1.difference(&bad).cloned().collect();
    assert!(partner.members("active") == good);
}

#[test]
fn an_unreadable_pending_dead_letter_is_dropped_and_its_batch_sent_again() {
    let partner = refusing_partner();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    set_config(&project, FAST, SLOW);
    let child = project
        .command(&["sync", "active", "--at", T1])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = project.cohort_state("active");
    wait_until("a batch refused and isolated", || {
        !files(&state.join("pending/dead")).is_empty()
    });
    signal(child.id(), "TERM");
    let mut child = child;
    assert_eq!(child.wait().unwrap().code(), Some(143));
    set_config(&project, SLOW, FAST);
    let dead = files(&state.join("pending/dead"));
    damage(&dead[0], Damage::Truncate);

    sync_refused(
        &partner,
        &project,
        &["sync", "active", "--at", T1],
        &["pending/dead", "cohort-bridge state repair active"],
    );
    let repair = project.run(&["state", "repair", "active"]);
    assert_eq!(repair.code(), 0, "{}", repair.stderr());
    let run = project.run(&["sync", "active", "--at", T1]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let e1 = active_7d(T1);
    let bad = refused_ids(&e1);
    let good: BTreeSet<String> = e1.difference(&bad).cloned().collect();
    assert!(partner.members("active") == good);
    // Every refused id is recorded (and left out of the snapshot, so retried next run).
    let next = project.run(&["sync", "active", "--at", T1]);
    assert_eq!(next.summaries()[0]["adds"], bad.len() as u64);
}

#[test]
fn state_of_a_newer_format_is_refused() {
    let (partner, project) = synced_at_t1();
    let path = project.cohort_state("active").join("current.json");
    let mut pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(pointer["format"], 2);
    pointer["format"] = serde_json::json!(99);
    std::fs::write(&path, serde_json::to_vec(&pointer).unwrap()).unwrap();
    sync_refused(
        &partner,
        &project,
        &["sync", "active", "--at", T2],
        &["current.json", "newer cohort-bridge"],
    );
}

/// `tests/data/state-v1/`: a state area written by cohort-bridge before state formats were
/// recorded (the `small` cohort synced at T1 against an emulator on another port).
const SMALL: &str = "SELECT user_id FROM users\n\
WHERE last_seen_at >= $run_ts - INTERVAL '7 days' AND last_seen_at < $run_ts\n\
AND user_id LIKE '%7'\n";

/// The `small` cohort over the sorted lake (the shape the v1 fixture was written against).
fn small(at: &str) -> BTreeSet<String> {
    let at: chrono::DateTime<chrono::Utc> = at.parse().unwrap();
    let (from, to) = (
        (at - chrono::Duration::days(7)).timestamp_micros(),
        at.timestamp_micros(),
    );
    users_of(sorted_lake())
        .into_iter()
        .filter(|u| u.last_seen_us.is_some_and(|t| t >= from && t < to))
        .map(|u| u.user_id)
        .filter(|id| id.ends_with('7'))
        .collect()
}

#[test]
fn state_written_before_formats_is_synced_incrementally() {
    let partner = Partner::plain();
    // The partner holds what the fixture says it does.
    let seed = Project::on(
        sorted_lake(),
        &partner.handle.base_url(),
        FAST,
        &[("small", SMALL)],
    );
    seed.run(&["sync", "small", "--at", T1]).summary();
    let project = Project::on(
        sorted_lake(),
        &partner.handle.base_url(),
        FAST,
        &[("small", SMALL)],
    );
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-v1"),
        &project.dir.path().join("state"),
    );
    let before = partner.handle.stats();
    // Written for another port: refused until rebound.
    let refused = project.run(&["sync", "small", "--at", T2]);
    assert_refused(&refused, &partner, before.requests, &["--rebind"]);
    let s = project
        .run(&["sync", "small", "--at", T2, "--rebind"])
        .summary();
    let (e1, e2) = (small(T1), small(T2));
    assert_eq!(s["snapshot_members"], e1.len() as u64);
    assert_eq!(s["adds"], e2.difference(&e1).count() as u64);
    assert_eq!(s["removes"], e1.difference(&e2).count() as u64);
    assert!(
        s["removes"].as_u64().unwrap() > 0,
        "the fixture must move both ways"
    );
    assert!(partner.members("small") == e2);
    let after = partner.handle.stats();
    assert_eq!(
        after.ids_added - before.ids_added,
        e2.difference(&e1).count() as u64,
        "no full resend"
    );
    let pointer: serde_json::Value = serde_json::from_slice(
        &std::fs::read(project.cohort_state("small").join("current.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pointer["format"], 2, "rewritten in the current format");
}

#[test]
fn a_shards_state_is_shown_and_repaired_with_its_shard() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    for k in 0..2 {
        let shard = format!("{k}/2");
        project
            .run(&["sync", "active", "--at", T1, "--shard", &shard])
            .summary();
    }
    assert!(partner.members("active") == active_7d(T1));
    let show = project.run(&["state", "show", "active", "--shard", "1/2"]);
    assert_eq!(show.code(), 0, "{}", show.stderr());
    let shown: serde_json::Value = serde_json::from_str(&show.stdout()).unwrap();
    assert_eq!(shown["shard"], "1/2");
    assert!(shown["pointer"]["members"].as_u64().unwrap() > 0);
    assert_eq!(shown["problems"].as_array().unwrap().len(), 0, "{shown}");

    let shard1 = project.cohort_state("active").join("shards/2/1");
    damage(&shard1.join("current.json"), Damage::Garble);
    sync_refused(
        &partner,
        &project,
        &["sync", "active", "--at", T2, "--shard", "1/2"],
        &["cohort-bridge state repair active --shard 1/2"],
    );
    // The other shard is not held up.
    project
        .run(&["sync", "active", "--at", T2, "--shard", "0/2"])
        .summary();
    let repair = project.run(&["state", "repair", "active", "--shard", "1/2"]);
    assert_eq!(repair.code(), 0, "{}", repair.stderr());
    project
        .run(&["sync", "active", "--at", T2, "--shard", "1/2"])
        .summary();
    assert!(partner.members("active") == active_7d(T2));
    let stats = partner.handle.stats();
    assert_eq!((stats.redundant_adds, stats.redundant_removes), (0, 0));
}

#[test]
fn an_unreadable_id_list_of_an_unfinished_run_is_set_aside_exactly() {
    for file in ["pending/adds.parquet", "pending/removes.parquet"] {
        let (partner, project) = interrupted_at_t2(Partner::plain());
        let state = project.cohort_state("active");
        damage(&state.join(file), Damage::Garble);
        refused_then_repaired(
            &partner,
            &project,
            &[file, "cohort-bridge state repair active"],
        );
        project.run(&["sync", "active", "--at", T2]).summary();
        assert!(
            partner.members("active") == active_7d(T2),
            "{file}: the partner holds a different set than the cohort"
        );
    }
}

#[test]
fn a_first_sync_that_died_before_its_plan_is_started_over() {
    // A first sync writes its target snapshot (its adds) before its plan, marked as not
    // committed; nothing is sent before the plan. Such a leftover is not mistaken for a lost
    // pointer.
    let (partner, project) = synced_at_t1();
    let state = project.cohort_state("active");
    let leftover = project.dir.path().join("leftover");
    copy_dir(&state.join("snapshots"), &leftover);
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::create_dir_all(state.join("pending/started")).unwrap();
    copy_dir(&leftover, &state.join("snapshots"));
    let name = files(&state.join("snapshots"))[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let run_id = name
        .strip_suffix(".replica.parquet")
        .or(name.strip_suffix(".parquet"))
        .unwrap()
        .to_string();
    std::fs::write(state.join("pending/started").join(&run_id), b"").unwrap();
    let s = project.run(&["sync", "active", "--at", T1]).summary();
    assert_eq!(s["adds"], active_7d(T1).len() as u64);
    assert!(partner.members("active") == active_7d(T1));
    // Without the mark, the same leftover is a lost pointer.
    std::fs::remove_file(state.join("current.json")).unwrap();
    let refused = project.run(&["sync", "active", "--at", T1]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(refused.stderr().contains("state repair active"));
}

#[test]
fn an_unfinished_run_written_before_formats_is_resumed() {
    // The state a killed run of the previous release leaves: its plan without `format`, its
    // journal objects without trailers, its snapshots without replicas.
    let (partner, project) = interrupted_at_t2(Partner::plain());
    let state = project.cohort_state("active");
    let plan_path = state.join("pending/plan.json");
    let mut plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan_path).unwrap()).unwrap();
    plan.as_object_mut().unwrap().remove("format").unwrap();
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
    let mut journaled = 0;
    for f in files(&state.join("pending/journal")) {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("end ")).collect();
        journaled += lines.len();
        std::fs::write(&f, lines.join("\n") + "\n").unwrap();
    }
    for f in files(&state.join("snapshots")) {
        if f.to_string_lossy().ends_with(".replica.parquet") {
            std::fs::remove_file(f).unwrap();
        }
    }
    let s = project.run(&["sync", "active", "--at", T2]).summary();
    assert_eq!(s["skipped_batches"], journaled as u64, "{s}");
    assert_eq!(s["outcome"], "delivered");
    assert!(partner.members("active") == active_7d(T2));
    // Committed in the current format, with a replica.
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("current.json")).unwrap()).unwrap();
    assert_eq!(pointer["format"], 2);
    let snapshot = snapshot_file(&state);
    assert!(
        snapshot
            .with_file_name(
                snapshot
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace(".parquet", ".replica.parquet")
            )
            .exists()
    );
}
