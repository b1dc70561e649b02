//! Holdouts: a cohort's control group is never sent, is the same on every run and shard, is
//! recorded in `cohort_changes` as `held_out` / `held_out_left`, and changing the share moves
//! only the members the threshold says.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::incremental::{ACTIVE_7D, T1, T2, active_7d};
use crate::support::*;

const FAST: &str = "batch_size = 200\nrequests_per_second = 5000";

/// The split, transcribed from its documented formula (`src/cohort/holdout.rs`) rather than
/// called: FNV-1a over salt, 0xff, id; the SplitMix64 finaliser; below share × 2⁶⁴.
fn held(salt: &str, share: f64, id: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain([0xff]).chain(id.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h as f64) < share * 2f64.powi(64)
}

/// (treated, held out) of `active_7d(at)` at `share`.
fn split(share: f64, at: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    active_7d(at)
        .into_iter()
        .partition(|id| !held("active", share, id))
}

fn set_share(project: &Project, share: f64) {
    let file = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("holdout = "))
        .collect();
    let line = format!("holdout = {share}");
    let at = kept
        .iter()
        .position(|l| *l == "name = \"Cohort active\"")
        .unwrap();
    kept.insert(at + 1, &line);
    std::fs::write(&file, kept.join("\n") + "\n").unwrap();
}

/// Who `cohort_changes` says was held out, as of runs at or before `at`.
fn held_as_of(project: &Project, at: &str) -> BTreeSet<String> {
    let ms = at.parse::<DateTime<Utc>>().unwrap().timestamp_millis();
    let sql = format!(
        "SELECT user_id FROM (SELECT user_id, op, row_number() OVER (PARTITION BY user_id \
         ORDER BY run_at_ms DESC, committed_at_ms DESC) AS latest FROM cohort_changes \
         WHERE cohort = 'active' AND op IN ('held_out', 'held_out_left') AND run_at_ms <= {ms}) \
         WHERE latest = 1 AND op = 'held_out'"
    );
    let run = project.run(&["query", &sql, "--format", "csv"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    run.stdout().lines().skip(1).map(str::to_string).collect()
}

/// The ops recorded by runs that committed after `since`, counted.
fn ops_since(project: &Project, since: DateTime<Utc>) -> Vec<(String, u64)> {
    let ms = since.timestamp_millis();
    let sql = format!(
        "SELECT op, count(*) AS n FROM cohort_changes WHERE cohort = 'active' \
         AND committed_at_ms >= {ms} GROUP BY op ORDER BY op"
    );
    let run = project.run(&["query", &sql, "--format", "csv"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    run.stdout()
        .lines()
        .skip(1)
        .map(|l| {
            let (op, n) = l.split_once(',').unwrap();
            (op.to_string(), n.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_control_group_is_never_sent_and_is_recorded() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    set_share(&project, 0.2);

    let (treated, holdout) = split(0.2, T1);
    let share = holdout.len() as f64 / (treated.len() + holdout.len()) as f64;
    assert!(
        (0.17..0.23).contains(&share),
        "the fixture holds out ~20%: {share}"
    );
    let s = project.run(&["sync", "active", "--at", T1]).summary();
    assert_eq!(s["members"], treated.len() as u64, "{s}");
    assert_eq!(s["held_out"], holdout.len() as u64, "{s}");
    assert_eq!(s["adds"], treated.len() as u64, "{s}");
    assert!(partner.members("active") == treated);
    assert!(held_as_of(&project, T1) == holdout);

    // A day later: the partner gets the treated change only; the holdout's own change is
    // recorded (members who joined the cohort into the holdout, and who left it).
    let (treated2, holdout2) = split(0.2, T2);
    let since = Utc::now();
    let s = project.run(&["sync", "active", "--at", T2]).summary();
    assert_eq!(
        s["adds"],
        treated2.difference(&treated).count() as u64,
        "{s}"
    );
    assert_eq!(
        s["removes"],
        treated.difference(&treated2).count() as u64,
        "{s}"
    );
    assert!(partner.members("active") == treated2);
    assert!(held_as_of(&project, T2) == holdout2);
    assert!(
        held_as_of(&project, T1) == holdout,
        "history keeps the past"
    );
    let want = [
        ("add", treated2.difference(&treated).count() as u64),
        ("held_out", holdout2.difference(&holdout).count() as u64),
        (
            "held_out_left",
            holdout.difference(&holdout2).count() as u64,
        ),
        ("remove", treated.difference(&treated2).count() as u64),
    ];
    let want: Vec<(String, u64)> = want
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| (op.to_string(), *n))
        .collect();
    assert!(want.len() == 4, "the fixture moves every way: {want:?}");
    assert_eq!(ops_since(&project, since), want);
    // The partner's history is the partner's: as-of membership is the treated members.
    let as_of = project.run(&[
        "query",
        "-f",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/queries/analysis/members_as_of.sql"
        ),
        "--at",
        "2100-01-01T00:00:00Z",
        "--format",
        "csv",
    ]);
    let members: BTreeSet<String> = as_of
        .stdout()
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().to_string())
        .collect();
    assert!(members == treated2);

    // Raising the share only moves treated members into the holdout: the partner removes
    // them, nobody is added, nobody leaves the holdout.
    set_share(&project, 0.3);
    let (treated3, holdout3) = split(0.3, T2);
    assert!(holdout2.is_subset(&holdout3));
    // (At the same logical time, so the cohort is the same.)
    let since = Utc::now();
    let s = project.run(&["sync", "active", "--at", T2]).summary();
    assert_eq!(s["adds"], 0, "{s}");
    assert_eq!(
        s["removes"],
        (holdout3.len() - holdout2.len()) as u64,
        "{s}"
    );
    assert!(partner.members("active") == treated3);
    assert_eq!(
        ops_since(&project, since),
        [
            (
                "held_out".to_string(),
                (holdout3.len() - holdout2.len()) as u64
            ),
            (
                "remove".to_string(),
                (holdout3.len() - holdout2.len()) as u64
            ),
        ]
    );

    // No holdout any more: everyone held out is sent and leaves the control group.
    set_share(&project, 0.0);
    let s = project.run(&["sync", "active", "--at", T2]).summary();
    assert_eq!(s["adds"], holdout3.len() as u64, "{s}");
    assert_eq!(s["held_out"], 0, "{s}");
    assert!(partner.members("active") == active_7d(T2));
    assert!(held_as_of(&project, T2).is_empty());
    assert_eq!(partner.handle.stats().redundant_adds, 0);
}

#[test]
fn every_shard_holds_out_the_same_members() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    set_share(&project, 0.25);
    let (treated, holdout) = split(0.25, T1);
    let mut held_out = 0;
    for k in 0..3 {
        let s = project
            .run(&["sync", "active", "--at", T1, "--shard", &format!("{k}/3")])
            .summary();
        held_out += s["held_out"].as_u64().unwrap();
    }
    assert!(partner.members("active") == treated);
    assert_eq!(held_out, holdout.len() as u64);
    assert!(held_as_of(&project, T1) == holdout);
    // The dry run reports the split without writing anything.
    let s = project
        .run(&["sync", "active", "--at", T2, "--dry-run"])
        .summary();
    assert_eq!(s["held_out"], split(0.25, T2).1.len() as u64, "{s}");
}

#[test]
fn a_share_out_of_range_is_refused_naming_the_key() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("active", ACTIVE_7D)]);
    set_share(&project, 0.9);
    let run = project.run(&["sync", "active", "--at", T1]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("cohorts.active.holdout"),
        "{}",
        run.stderr()
    );
    assert!(partner.members("active").is_empty());
}
