//! A sync sends while its cohort is still being sorted: the members come in parts
//! (`state.part_ids`), each planned and sent while the next is sorted (incremental runs by
//! default; full syncs too here, `state.pipeline_full_syncs`). A run killed (SIGKILL)
//! while its parts are planned leaves an open plan; the next run closes it with the parts it
//! planned alone, commits that, and sends the rest as its own change. Removals wait for the
//! close, so an interrupted run never removes anyone.

use std::collections::BTreeSet;

use crate::incremental::{ACTIVE_7D, T1, T2, active_7d, kill_at};
use crate::state::{Damage, damage, sync_refused};
use crate::support::*;

/// Batches of 10, paced so the run lasts seconds, in parts of 100 members.
const DEST: &str = "batch_size = 10\nrequests_per_second = 60\nmax_in_flight = 2";

/// A project of the cohort `active` whose syncs, full ones too, go in parts of 100 members.
fn in_parts_of_100() -> (Partner, Project) {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), DEST, &[("active", ACTIVE_7D)]);
    project.set_state("part_ids = 100\npipeline_full_syncs = true\n");
    (partner, project)
}

fn open_plan(state: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(state.join("pending/plan.json")).ok()?;
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    (plan["open"] == true).then_some(plan)
}

fn parts_planned(state: &std::path::Path) -> usize {
    let plan = open_plan(state).unwrap();
    let dir = state
        .join("pending/parts")
        .join(plan["run_id"].as_str().unwrap());
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn a_run_killed_while_its_parts_are_planned_resumes_exactly_and_removes_nothing_early() {
    let (partner, project) = in_parts_of_100();
    let state = project.cohort_state("active");
    let (e1, e2) = (active_7d(T1), active_7d(T2));
    let batches = e1.len().div_ceil(10) as u64;
    assert!(batches > 100, "fixture: {batches} batches");

    // A first sync killed after 25 batches: parts beyond the few planned were never sent.
    kill_at(
        &[25],
        &state,
        || project.command(&["sync", "active", "--at", T1]),
        || partner.handle.stats().user_requests_applied,
    );
    let plan = open_plan(&state).expect("the killed run left its plan open");
    assert_eq!(plan["format"], 5, "{plan}");
    let planned = parts_planned(&state);
    assert!(
        planned >= 1 && planned * 10 < batches as usize,
        "{planned} parts planned of {batches} batches"
    );
    let show: serde_json::Value =
        serde_json::from_str(&project.run(&["state", "show", "active"]).stdout()).unwrap();
    assert_eq!(show["plan"]["open"], true, "{show}");
    assert_eq!(show["plan"]["parts_planned"], planned, "{show}");
    let held = partner.members("active");
    assert!(
        held.is_subset(&e1) && !held.is_empty(),
        "{} held",
        held.len()
    );

    // The next run closes the plan with those parts (their batches alone), commits it, then
    // sends the rest of the cohort as its own change.
    let run = project.run(&["sync", "active", "--at", T1]);
    let summary = run.summary();
    let resumed =
        summary["resumed_batches"].as_u64().unwrap() + summary["skipped_batches"].as_u64().unwrap();
    assert!(
        resumed > 0 && resumed <= planned as u64 * 10,
        "the closed plan holds the planned parts' batches: {summary}"
    );
    assert!(
        run.stderr().contains("closed the interrupted run's plan"),
        "{}",
        run.stderr()
    );
    assert!(
        partner.members("active") == e1,
        "the partner holds the cohort"
    );
    assert!(open_plan(&state).is_none());

    // An incremental run killed mid-parts sends adds only: everyone of the old cohort is still
    // there. Its resume then converges exactly.
    let adds: BTreeSet<_> = e2.difference(&e1).cloned().collect();
    let removes: BTreeSet<_> = e1.difference(&e2).cloned().collect();
    assert!(
        adds.len() > 200 && !removes.is_empty(),
        "fixture: {} adds",
        adds.len()
    );
    let before = partner.handle.stats().user_requests_applied;
    kill_at(
        &[before + 8],
        &state,
        || project.command(&["sync", "active", "--at", T2]),
        || partner.handle.stats().user_requests_applied,
    );
    assert!(
        open_plan(&state).is_some(),
        "killed while its parts were planned"
    );
    let held = partner.members("active");
    assert!(e1.is_subset(&held), "no removal before the plan is closed");
    assert!(held.is_subset(&e1.union(&e2).cloned().collect()));
    assert!(held.len() > e1.len(), "some adds were sent");
    let resumed = project.run(&["sync", "active", "--at", T2]).summary();
    assert!(
        resumed["resumed_batches"].as_u64().unwrap() + resumed["skipped_batches"].as_u64().unwrap()
            > 0,
        "{resumed}"
    );
    assert!(partner.members("active") == e2);
    let show: serde_json::Value =
        serde_json::from_str(&project.run(&["state", "show", "active"]).stdout()).unwrap();
    assert_eq!(show["pointer"]["members"], e2.len(), "{show}");
}

#[test]
fn parts_and_a_whole_plan_send_the_same_change() {
    // The same two syncs planned whole (`part_ids = 0`) and in parts of 7 members, the second
    // committed as a delta or (`max_deltas = 0`) as a full snapshot — the base with the change
    // applied: the partner ends with the same members, the runs send the same adds and
    // removes, and the committed state is the cohort (a third run finds nothing to change).
    let mut outcomes = Vec::new();
    for (part_ids, max_deltas) in [(0, 24), (7, 24), (7, 0)] {
        let partner = Partner::plain();
        let project = Project::new(
            &partner.handle.base_url(),
            "batch_size = 50\nrequests_per_second = 5000",
            &[("active", ACTIVE_7D)],
        );
        project.set_state(&format!(
            "part_ids = {part_ids}\npipeline_full_syncs = true\nmax_deltas = {max_deltas}\n"
        ));
        let first = project.run(&["sync", "active", "--at", T1]).summary();
        // The dry run goes in parts as the sync does, and tells the same change.
        let dry = project.run(&["sync", "active", "--at", T2, "--dry-run"]);
        assert_eq!(
            dry.stderr().contains("the change computed in parts"),
            part_ids > 0,
            "{}",
            dry.stderr()
        );
        let dry = dry.summary();
        let second = project.run(&["sync", "active", "--at", T2]).summary();
        assert!(partner.members("active") == active_7d(T2));
        assert_eq!(
            (&dry["adds"], &dry["removes"], &dry["members"]),
            (&second["adds"], &second["removes"], &second["members"]),
            "{dry}"
        );
        let third = project.run(&["sync", "active", "--at", T2]).summary();
        assert_eq!(
            (&third["adds"], &third["removes"]),
            (&0.into(), &0.into()),
            "{third}"
        );
        let show: serde_json::Value =
            serde_json::from_str(&project.run(&["state", "show", "active"]).stdout()).unwrap();
        assert_eq!(show["pointer"]["members"], active_7d(T2).len(), "{show}");
        if max_deltas == 0 {
            assert!(
                show["pointer"]["deltas"].is_null(),
                "a full snapshot: {show}"
            );
        }
        let counts = |s: &serde_json::Value| {
            (
                s["members"].clone(),
                s["adds"].clone(),
                s["removes"].clone(),
            )
        };
        let told = |s: &serde_json::Value| {
            [
                "batches",
                "snapshot_members",
                "sample_adds",
                "sample_removes",
            ]
            .map(|k| s[k].clone())
        };
        outcomes.push((counts(&first), counts(&second), told(&dry)));
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert_eq!(outcomes[1], outcomes[2]);
}

#[test]
fn an_unreadable_part_of_an_open_plan_is_refused_then_set_aside_exactly() {
    let (partner, project) = in_parts_of_100();
    let state = project.cohort_state("active");
    kill_at(
        &[12],
        &state,
        || project.command(&["sync", "active", "--at", T1]),
        || partner.handle.stats().user_requests_applied,
    );
    let plan = open_plan(&state).unwrap();
    let part = state
        .join("pending/parts")
        .join(plan["run_id"].as_str().unwrap())
        .join("000000.parquet");
    damage(&part, Damage::Garble);
    sync_refused(
        &partner,
        &project,
        &["sync", "active", "--at", T1],
        &["000000.parquet", "cohort-bridge state repair active"],
    );
    // The ids the part held may have been sent and are known nowhere else (a first sync): the
    // repair refuses to guess, and says how to go on anyway.
    let repair = project.run(&["state", "repair", "active"]);
    assert_eq!(repair.code(), 2, "{}", repair.stderr());
    assert!(
        repair.stderr().contains("000000.parquet")
            && repair.stderr().contains("state repair active --force"),
        "{}",
        repair.stderr()
    );
    let repair = project.run(&["state", "repair", "active", "--force"]);
    assert_eq!(repair.code(), 0, "{}", repair.stderr());
    assert!(repair.stdout().contains("set aside"), "{}", repair.stdout());
    // The next sync re-sends every member and removes whatever the run may have sent (the
    // part's ids are members at T1: the partner ends exact).
    project.run(&["sync", "active", "--at", T1]).summary();
    assert!(partner.members("active") == active_7d(T1));
}

#[test]
fn by_default_a_first_sync_is_planned_whole_and_the_next_in_parts() {
    // A full sync's adds are the whole cohort: in parts they would be written twice (parts,
    // then the target snapshot), so only incremental runs are pipelined unless
    // `state.pipeline_full_syncs`.
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 50\nrequests_per_second = 5000",
        &[("active", ACTIVE_7D)],
    );
    project.set_state("part_ids = 7\n");
    let first = project.run(&["sync", "active", "--at", T1]);
    assert!(
        !first.stderr().contains("plan closed"),
        "{}",
        first.stderr()
    );
    let second = project.run(&["sync", "active", "--at", T2]);
    assert!(
        second.stderr().contains("plan closed"),
        "{}",
        second.stderr()
    );
    let full = project.run(&["sync", "active", "--at", T2, "--full"]);
    assert!(!full.stderr().contains("plan closed"), "{}", full.stderr());
    assert!(partner.members("active") == active_7d(T2));
}
