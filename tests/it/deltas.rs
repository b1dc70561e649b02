//! Incremental syncs commit deltas (state format 3) instead of rewriting the snapshot: hourly
//! runs grow a chain, a full snapshot comes back after `state.max_deltas` (compaction), a run
//! killed mid-delivery resumes exactly, and `state repair` rebuilds a lost pointer with its
//! chain and restores a damaged delta file from its replica.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};

use crate::incremental::{ACTIVE_7D, T1, active_7d, expire_locks, wait_until};
use crate::support::*;

fn hour(h: i64) -> String {
    let t: DateTime<Utc> = T1.parse().unwrap();
    (t + Duration::hours(h)).to_rfc3339()
}

fn pointer(state: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(state.join("current.json")).unwrap()).unwrap()
}

fn snapshot_files(state: &Path) -> BTreeSet<String> {
    std::fs::read_dir(state.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// A project whose state keeps at most `max_deltas` deltas.
fn project(base_url: &str, dest: &str, max_deltas: u32) -> Project {
    let project = Project::new(base_url, dest, &[("active", ACTIVE_7D)]);
    let file = project.dir.path().join("cohort-bridge.toml");
    let toml = std::fs::read_to_string(&file).unwrap().replace(
        "[state]\n",
        &format!("[state]\nmax_deltas = {max_deltas}\n"),
    );
    std::fs::write(&file, toml).unwrap();
    project
}

/// Syncs hour `h` and checks the partner holds the cohort and the change was exactly sent.
fn sync_hour(project: &Project, partner: &Partner, h: i64) -> serde_json::Value {
    let (before, now) = (active_7d(&hour(h - 1)), active_7d(&hour(h)));
    let s = project.run(&["sync", "active", "--at", &hour(h)]).summary();
    assert_eq!(
        s["adds"],
        now.difference(&before).count() as u64,
        "hour {h}"
    );
    assert_eq!(
        s["removes"],
        before.difference(&now).count() as u64,
        "hour {h}"
    );
    assert!(
        partner.members("active") == now,
        "hour {h}: the partner differs"
    );
    s
}

#[test]
fn hourly_syncs_commit_deltas_then_compact() {
    let partner = Partner::plain();
    let project = project(
        &partner.handle.base_url(),
        "batch_size = 200\nrequests_per_second = 5000",
        3,
    );
    let state = project.cohort_state("active");
    let first = project.run(&["sync", "active", "--at", &hour(0)]).summary();
    let base = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(pointer(&state)["format"], 2);
    // The fixture must change by well under a tenth of the cohort per hour.
    let (h0, h1) = (active_7d(&hour(0)), active_7d(&hour(1)));
    let churn = h0.symmetric_difference(&h1).count();
    assert!(
        churn > 0 && churn * 30 < h0.len(),
        "fixture churn {churn} of {}",
        h0.len()
    );

    let mut runs = Vec::new();
    for h in 1..=3 {
        let s = sync_hour(&project, &partner, h);
        runs.push(s["run_id"].as_str().unwrap().to_string());
        let p = pointer(&state);
        assert_eq!(p["format"], 3);
        assert_eq!(p["snapshot"], format!("snapshots/{base}.parquet"));
        let deltas: Vec<&str> = p["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["run_id"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, runs);
        assert_eq!(p["members"], active_7d(&hour(h)).len() as u64);
    }
    // No full snapshot of a delta run; the base and every delta, each with its replica.
    let mut expected: BTreeSet<String> =
        [format!("{base}.parquet"), format!("{base}.replica.parquet")].into();
    for r in &runs {
        for kind in ["adds", "removes"] {
            expected.insert(format!("{r}.{kind}.parquet"));
            expected.insert(format!("{r}.{kind}.replica.parquet"));
        }
    }
    assert_eq!(snapshot_files(&state), expected);

    // The chain is full: the next run writes a full snapshot and drops the deltas.
    let s = sync_hour(&project, &partner, 4);
    let compacted = s["run_id"].as_str().unwrap().to_string();
    let p = pointer(&state);
    assert_eq!(p["format"], 2);
    assert!(p.get("deltas").is_none(), "{p}");
    assert_eq!(
        snapshot_files(&state),
        [
            format!("{compacted}.parquet"),
            format!("{compacted}.replica.parquet")
        ]
        .into()
    );
    sync_hour(&project, &partner, 5);
    assert_eq!(pointer(&state)["deltas"].as_array().unwrap().len(), 1);
    // Reading the chain back: the same hour again is unchanged, and nothing is re-sent.
    let again = project.run(&["sync", "active", "--at", &hour(5)]).summary();
    assert_eq!(again["outcome"], "unchanged");
    assert_eq!(partner.handle.stats().redundant_adds, 0);
    let show = project.run(&["state", "show", "active"]);
    assert_eq!(show.code(), 0, "{}", show.stderr());
    assert!(show.stdout().contains("\"deltas\""), "{}", show.stdout());
}

#[test]
fn a_lost_pointer_and_a_damaged_delta_are_repaired_with_the_chain() {
    let partner = Partner::plain();
    let project = project(
        &partner.handle.base_url(),
        "batch_size = 200\nrequests_per_second = 5000",
        24,
    );
    let state = project.cohort_state("active");
    project.run(&["sync", "active", "--at", &hour(0)]).summary();
    for h in 1..=2 {
        sync_hour(&project, &partner, h);
    }
    let before = pointer(&state);
    assert_eq!(before["deltas"].as_array().unwrap().len(), 2);

    // current.json lost: the sync refuses, repair rebuilds it with both deltas.
    std::fs::remove_file(state.join("current.json")).unwrap();
    let refused = project.run(&["sync", "active", "--at", &hour(3)]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    let repaired = project.run(&["state", "repair", "active"]);
    assert_eq!(repaired.code(), 0, "{}", repaired.stderr());
    let after = pointer(&state);
    for key in ["run_id", "snapshot", "members", "deltas"] {
        assert_eq!(after[key], before[key], "{key}");
    }
    // Nothing is sent twice and nothing is forgotten.
    assert_eq!(
        project.run(&["sync", "active", "--at", &hour(2)]).summary()["outcome"],
        "unchanged"
    );
    sync_hour(&project, &partner, 3);

    // A delta file damaged: the sync stops naming it; repair restores it from its replica.
    let p = pointer(&state);
    let adds = p["deltas"][0]["adds"].as_str().unwrap().to_string();
    std::fs::write(state.join(&adds), b"PAR1 not parquet").unwrap();
    let stopped = project.run(&["sync", "active", "--at", &hour(4)]);
    assert_eq!(stopped.code(), 2, "{}", stopped.stderr());
    let name = Path::new(&adds).file_name().unwrap().to_str().unwrap();
    assert!(stopped.stderr().contains(name), "{}", stopped.stderr());
    let show = project.run(&["state", "show", "active"]);
    assert!(show.stdout().contains(name), "{}", show.stdout());
    let repaired = project.run(&["state", "repair", "active"]);
    assert_eq!(repaired.code(), 0, "{}", repaired.stderr());
    assert!(
        repaired.stdout().contains("from its replica"),
        "{}",
        repaired.stdout()
    );
    sync_hour(&project, &partner, 4);
    assert_eq!(partner.handle.stats().redundant_adds, 0);
}

#[test]
fn a_delta_run_killed_mid_delivery_resumes_exactly() {
    let partner = Partner::plain();
    let dest = "batch_size = 2\nrequests_per_second = 40\nmax_in_flight = 2";
    let project = project(&partner.handle.base_url(), dest, 24);
    let file = project.dir.path().join("cohort-bridge.toml");
    // The change planned whole (a run in parts is killed and resumed in `pipeline`).
    let slow = std::fs::read_to_string(&file).unwrap() + "part_ids = 0\n";
    let fast = slow.replace("requests_per_second = 40", "requests_per_second = 5000");
    std::fs::write(&file, &fast).unwrap();
    project.run(&["sync", "active", "--at", &hour(0)]).summary();
    std::fs::write(&file, &slow).unwrap();

    let applied = partner.handle.stats().user_requests_applied;
    let mut child = project
        .command(&["sync", "active", "--at", &hour(1)])
        .spawn()
        .unwrap();
    wait_until("some delta batches applied", || {
        partner.handle.stats().user_requests_applied >= applied + 5
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let state = project.cohort_state("active");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("pending/plan.json")).unwrap()).unwrap();
    assert_eq!(plan["format"], 3, "{plan}");
    assert!(plan["chain"]["deltas"].is_array(), "{plan}");
    expire_locks(&state);

    std::fs::write(&file, &fast).unwrap();
    let resumed = project.run(&["sync", "active", "--at", &hour(1)]).summary();
    assert!(
        resumed["skipped_batches"].as_u64().unwrap() > 0,
        "{resumed}"
    );
    assert!(partner.members("active") == active_7d(&hour(1)));
    assert_eq!(pointer(&state)["deltas"].as_array().unwrap().len(), 1);
    // Nothing of the run is left pending (empty folders may stay on a local filesystem, and so
    // may the staging file of a put the kill interrupted: object_store's local store writes
    // `NAME#N` and renames it, and no list or read ever shows such a file).
    let left: Vec<_> = project
        .state_files()
        .into_iter()
        .filter(|(path, _)| path.contains("/pending/") && !path.contains('#'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    sync_hour(&project, &partner, 2);
}
