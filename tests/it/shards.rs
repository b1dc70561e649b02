//! `sync --shard K/N`: N runs, each with its own plan, journal, lock and snapshot, together
//! deliver exactly what one unsharded run does; a killed shard resumes alone; changing the
//! shard count adopts what the partner holds instead of re-sending or forgetting it.

use std::collections::BTreeSet;

use crate::incremental::{ACTIVE_7D, T1, T2, active_7d, expire_locks, wait_until};
use crate::support::*;

const FAST: &str = "batch_size = 200\nrequests_per_second = 5000";

/// Runs shards 0..n of `active` at `at` in parallel; returns their summaries.
fn run_shards(project: &Project, n: u32, at: &str) -> Vec<serde_json::Value> {
    let children: Vec<_> = (0..n)
        .map(|k| {
            project
                .command(&["sync", "active", "--at", at, "--shard", &format!("{k}/{n}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| Run(c.wait_with_output().unwrap()).summary())
        .collect()
}

#[test]
fn shards_together_deliver_exactly_the_unsharded_change() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    let (e1, e2) = (active_7d(T1), active_7d(T2));
    let adds = e2.difference(&e1).count() as u64;
    let removes = e1.difference(&e2).count() as u64;

    let first = run_shards(&project, 3, T1);
    let members: Vec<u64> = first
        .iter()
        .map(|s| s["members"].as_u64().unwrap())
        .collect();
    assert_eq!(members.iter().sum::<u64>(), e1.len() as u64, "{members:?}");
    assert!(
        members.iter().all(|m| *m > e1.len() as u64 / 5),
        "uneven: {members:?}"
    );
    for (k, s) in first.iter().enumerate() {
        assert_eq!(s["shard"], format!("{k}/3"));
    }
    assert!(
        partner.members("active") == e1,
        "the partner holds a different set"
    );

    let second = run_shards(&project, 3, T2);
    let sum = |key: &str| second.iter().map(|s| s[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("adds"), sum("removes")), (adds, removes));
    assert!(
        partner.members("active") == e2,
        "the partner holds a different set"
    );
    let stats = partner.handle.stats();
    assert_eq!(
        stats.ids_added,
        e1.len() as u64 + adds,
        "nothing sent twice"
    );
    assert_eq!(stats.ids_removed, removes);
    assert_eq!((stats.redundant_adds, stats.redundant_removes), (0, 0));

    // Each shard has its own state; the history names the shard.
    let state = project.cohort_state("active");
    for k in 0..3 {
        assert!(state.join(format!("shards/3/{k}/current.json")).exists());
    }
    assert!(!state.join("current.json").exists());
    let history = project.run(&["runs", "--format", "json"]).summaries();
    let commands: BTreeSet<&str> = history
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        commands,
        BTreeSet::from(["sync --shard 0/3", "sync --shard 1/3", "sync --shard 2/3"])
    );
}

#[test]
fn changing_the_shard_count_adopts_what_the_partner_holds() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    let (e1, e2) = (active_7d(T1), active_7d(T2));
    let adds = e2.difference(&e1).count() as u64;
    let removes = e1.difference(&e2).count() as u64;

    project.run(&["sync", "active", "--at", T1]).summary();
    // Now two shards: each starts from its part of the unsharded snapshot, so only the change
    // is sent and the removals are not forgotten.
    let shards = run_shards(&project, 2, T2);
    assert_eq!(
        shards
            .iter()
            .map(|s| s["adds"].as_u64().unwrap())
            .sum::<u64>(),
        adds
    );
    assert!(
        partner.members("active") == e2,
        "the partner holds a different set"
    );
    // And back to one run: it adopts the two shards' newer snapshots.
    let back = project.run(&["sync", "active", "--at", T1]).summary();
    assert_eq!(
        (back["adds"].as_u64(), back["removes"].as_u64()),
        (Some(removes), Some(adds))
    );
    assert!(
        partner.members("active") == e1,
        "the partner holds a different set"
    );
    let stats = partner.handle.stats();
    assert_eq!((stats.redundant_adds, stats.redundant_removes), (0, 0));
    assert_eq!(stats.ids_added, e1.len() as u64 + adds + removes);

    // A newer layout that did not finish (one shard of four ran) leaves the partner's state
    // unknown for the other parts: refused, naming the way out.
    project
        .run(&["sync", "active", "--at", T2, "--shard", "1/4"])
        .summary();
    let refused = project.run(&["sync", "active", "--at", T2]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("also ran 4 shards") && refused.stderr().contains("--shard K/N"),
        "{}",
        refused.stderr()
    );
    for k in [0, 2, 3] {
        project
            .run(&["sync", "active", "--at", T2, "--shard", &format!("{k}/4")])
            .summary();
    }
    assert!(partner.members("active") == e2);
    let unchanged = project.run(&["sync", "active", "--at", T2]).summary();
    assert_eq!(unchanged["outcome"], "unchanged", "{unchanged}");
}

#[test]
fn a_killed_shard_resumes_alone() {
    // Each shard gets half of 40 requests/s: the run lasts long enough to be killed.
    let partner = Partner::plain();
    let dest = "batch_size = 20\nrequests_per_second = 40\nmax_in_flight = 2";
    let project = Project::new(&partner.handle.base_url(), dest, &[("active", ACTIVE_7D)]);
    let expected = active_7d(T1);
    let mut child = project
        .command(&["sync", "active", "--at", T1, "--shard", "0/2"])
        .spawn()
        .unwrap();
    wait_until("some batches of shard 0", || {
        partner.handle.stats().user_requests_applied >= 10
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let shard0 = project.cohort_state("active").join("shards/2/0");
    assert!(
        shard0.join("pending/plan.json").exists(),
        "the killed shard left its plan"
    );
    assert!(expire_locks(&shard0) > 0, "the killed shard left its lock");

    // Shard 1 is not held up by shard 0's lock or plan.
    let fast = std::fs::read_to_string(project.dir.path().join("cohort-bridge.toml"))
        .unwrap()
        .replace("requests_per_second = 40", "requests_per_second = 5000");
    std::fs::write(project.dir.path().join("cohort-bridge.toml"), fast).unwrap();
    let one = project
        .run(&["sync", "active", "--at", T1, "--shard", "1/2"])
        .summary();
    assert_eq!(
        (one["resumed_batches"].as_u64(), one["outcome"].as_str()),
        (Some(0), Some("delivered"))
    );

    let zero = project
        .run(&["sync", "active", "--at", T1, "--shard", "0/2"])
        .summary();
    assert!(zero["skipped_batches"].as_u64().unwrap() > 0, "{zero}");
    assert_eq!(
        zero["outcome"], "delivered",
        "the resumed plan was the whole change, delivered by this run"
    );
    assert!(
        partner.members("active") == expected,
        "the partner holds a different set"
    );
    assert!(
        partner.handle.stats().redundant_adds <= 2 * 20,
        "at most the batches in flight"
    );
}
