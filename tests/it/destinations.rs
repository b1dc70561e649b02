//! The sync core's guarantees, run the same way over every HTTP destination kind — Cohort
//! Import, `/users/track`, webhook: `--dry-run` sends and writes nothing, a query that suddenly
//! returns nobody holds back its removals until allowed, and shards together deliver exactly
//! what one run does. Each kind is observed through its own partner: the emulator's cohort, the
//! emulator's profiles, the test receiver.

use std::collections::BTreeSet;

use crate::support::*;
use crate::webhook::{AUTH, AUTH_VAR, HOOK_SECRET, Receiver, SECRET_VAR_HOOK, hook_project_with};

/// Everyone on plan `pro` until December, nobody after.
const PRO_UNTIL_DEC: &str = "SELECT user_id FROM users WHERE plan = 'pro' \
    AND $run_ts < TIMESTAMP '2026-12-01T00:00:00Z'";
const T1: &str = "2026-11-27T12:00:00Z";
const T2: &str = "2026-12-02T00:00:00Z";

enum Kind {
    CohortImport(Partner),
    UsersTrack(Partner),
    Webhook(Receiver),
}

impl Kind {
    fn all() -> Vec<Kind> {
        vec![
            Kind::CohortImport(Partner::plain()),
            Kind::UsersTrack(Partner::plain()),
            Kind::Webhook(Receiver::start(1_000_000)),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            Kind::CohortImport(_) => "braze",
            Kind::UsersTrack(_) => "braze_users_track",
            Kind::Webhook(_) => "webhook",
        }
    }

    /// A project whose one cohort is `active` (the receiver's cohort id) with this SQL.
    fn project(&self, sql: &str) -> Project {
        let fast = "requests_per_second = 5000";
        match self {
            Kind::CohortImport(p) => Project::new(&p.handle.base_url(), fast, &[("active", sql)]),
            Kind::UsersTrack(p) => {
                Project::users_track(&p.handle.base_url(), fast, &[("active", sql)])
            }
            Kind::Webhook(r) => hook_project_with(&r.url, &[("active", sql)]),
        }
    }

    /// What the partner holds for cohort `active`.
    fn held(&self) -> BTreeSet<String> {
        match self {
            Kind::CohortImport(p) => p.members("active"),
            Kind::UsersTrack(p) => p
                .handle
                .attribute_true("cohort_active")
                .into_iter()
                .collect(),
            Kind::Webhook(r) => r.seen.lock().unwrap().members.clone(),
        }
    }

    fn run(&self, project: &Project, args: &[&str]) -> Run {
        project.run_with(
            args,
            &[
                (KEY_VAR, Some(KEY)),
                (SECRET_VAR, Some(SECRET)),
                (REST_VAR, Some(REST_KEY)),
                (SECRET_VAR_HOOK, Some(HOOK_SECRET)),
                (AUTH_VAR, Some(AUTH)),
            ],
        )
    }
}

fn pro() -> BTreeSet<String> {
    users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .collect()
}

#[test]
fn dry_runs_send_nothing_and_write_nothing_on_every_destination() {
    for kind in Kind::all() {
        let project = kind.project(PRO_UNTIL_DEC);
        let dry = kind.run(&project, &["sync", "active", "--at", T1, "--dry-run"]);
        let s = dry.summary();
        assert_eq!(
            (s["outcome"].as_str(), s["adds"].as_u64()),
            (Some("dry_run"), Some(pro().len() as u64)),
            "{}",
            kind.name()
        );
        assert!(
            kind.held().is_empty(),
            "{}: a dry run sent something",
            kind.name()
        );
        assert!(
            project.state_files().is_empty(),
            "{}: a dry run wrote state",
            kind.name()
        );
    }
}

#[test]
fn an_empty_result_holds_back_removals_until_allowed_on_every_destination() {
    for kind in Kind::all() {
        let project = kind.project(PRO_UNTIL_DEC);
        kind.run(&project, &["sync", "active", "--at", T1])
            .summary();
        assert!(kind.held() == pro(), "{}", kind.name());

        let run = kind.run(&project, &["sync", "active", "--at", T2]);
        let held = run.summary();
        assert_eq!(
            (held["removes"].as_u64(), held["removes_held_back"].as_u64()),
            (Some(0), Some(pro().len() as u64)),
            "{}",
            kind.name()
        );
        assert!(
            run.stderr().contains("--allow-mass-removal"),
            "{}",
            kind.name()
        );
        assert!(kind.held() == pro(), "{}: nobody is removed", kind.name());

        let allowed = kind
            .run(
                &project,
                &["sync", "active", "--at", T2, "--allow-mass-removal"],
            )
            .summary();
        assert_eq!(allowed["removes"], pro().len() as u64, "{}", kind.name());
        assert!(kind.held().is_empty(), "{}: everyone removed", kind.name());
    }
}

#[test]
fn shards_together_deliver_exactly_the_cohort_on_every_destination() {
    for kind in Kind::all() {
        let project = kind.project(PRO_UNTIL_DEC);
        let mut adds = 0;
        for k in 0..3 {
            let s = kind
                .run(
                    &project,
                    &["sync", "active", "--at", T1, "--shard", &format!("{k}/3")],
                )
                .summary();
            assert_eq!(s["shard"], format!("{k}/3"), "{}", kind.name());
            adds += s["adds"].as_u64().unwrap();
        }
        assert_eq!(
            adds,
            pro().len() as u64,
            "{}: each member in exactly one shard",
            kind.name()
        );
        assert!(kind.held() == pro(), "{}", kind.name());
    }
}
