//! The sync core's guarantees, run the same way over every destination kind — Cohort Import,
//! `/users/track`, webhook, Klaviyo, Customer.io, files: `--dry-run` sends and writes nothing, a query that
//! suddenly returns nobody holds back its removals until allowed, shards together deliver
//! exactly what one run does, a damaged snapshot is refused by name and repaired, and (for the
//! kinds that deliver paced requests) a second run is refused while one delivers, and a stale
//! lock is taken over. Each kind is observed through its own partner: the emulator's cohort, the
//! emulator's profiles, the test receiver, the files read back with the Parquet reader.

use std::collections::BTreeSet;

use crate::support::*;
use crate::webhook::{AUTH, AUTH_VAR, HOOK_SECRET, Receiver, SECRET_VAR_HOOK};

/// Everyone on plan `pro` until December, nobody after.
const PRO_UNTIL_DEC: &str = "SELECT user_id FROM users WHERE plan = 'pro' \
    AND $run_ts < TIMESTAMP '2026-12-01T00:00:00Z'";
const T1: &str = "2026-11-27T12:00:00Z";
const T2: &str = "2026-12-02T00:00:00Z";

enum Kind {
    CohortImport(Partner),
    UsersTrack(Partner),
    Customerio(Partner),
    /// An Iterable static list (the emulator's project, unthrottled).
    Iterable(Partner),
    Webhook(Receiver),
    Klaviyo(Partner),
    /// Files in this folder.
    Files(tempfile::TempDir),
}

impl Kind {
    fn all() -> Vec<Kind> {
        let mut all = Kind::http();
        all.push(Kind::Files(tempfile::tempdir().unwrap()));
        all
    }

    /// The kinds that deliver requests (paced, so a run can be caught mid-delivery).
    fn http() -> Vec<Kind> {
        vec![
            Kind::CohortImport(Partner::plain()),
            Kind::UsersTrack(Partner::plain()),
            Kind::Customerio(Partner::start(crate::customerio::config(
                cohort_bridge::emulator::CustomerioConfig {
                    rate_limit: cohort_bridge::emulator::RateLimitConfig {
                        requests: 1_000_000,
                        window: std::time::Duration::from_secs(1),
                    },
                    ..Default::default()
                },
            ))),
            Kind::Iterable(crate::iterable::partner_with(
                crate::iterable::fast(),
                Default::default(),
            )),
            Kind::Webhook(Receiver::start(1_000_000)),
            Kind::Klaviyo(crate::klaviyo::partner(crate::klaviyo::fast())),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            Kind::CohortImport(_) => "braze",
            Kind::UsersTrack(_) => "braze_users_track",
            Kind::Customerio(_) => "customerio",
            Kind::Iterable(_) => "iterable",
            Kind::Webhook(_) => "webhook",
            Kind::Klaviyo(_) => "klaviyo",
            Kind::Files(_) => "files",
        }
    }

    /// A project whose one cohort is `active` (the receiver's cohort id) with this SQL.
    fn project(&self, sql: &str) -> Project {
        self.project_with(sql, "requests_per_second = 5000")
    }

    /// As [`Kind::project`], with these delivery keys (HTTP kinds).
    fn project_with(&self, sql: &str, delivery: &str) -> Project {
        let cohorts = [("active", sql)];
        match self {
            Kind::CohortImport(p) => Project::new(&p.handle.base_url(), delivery, &cohorts),
            Kind::UsersTrack(p) => Project::users_track(&p.handle.base_url(), delivery, &cohorts),
            Kind::Customerio(p) => Project::with_destination(
                lake(),
                &crate::customerio::destination(&p.handle.base_url(), delivery),
                &cohorts,
            ),
            Kind::Iterable(p) => Project::with_destination(
                lake(),
                &crate::iterable::destination(&p.handle.base_url(), delivery),
                &cohorts,
            ),
            Kind::Webhook(r) => Project::with_destination(
                lake(),
                &format!(
                    "kind = \"webhook\"\nbase_url = \"{}\"\nsecret_env = \"{SECRET_VAR_HOOK}\"\n\
                     header_env = {{ \"Authorization\" = \"{AUTH_VAR}\" }}\n{delivery}",
                    r.url
                ),
                &cohorts,
            ),
            Kind::Klaviyo(p) => Project::with_destination(
                lake(),
                &crate::klaviyo::destination(&p.handle.base_url(), delivery),
                &cohorts,
            ),
            Kind::Files(dir) => Project::with_destination(
                lake(),
                &format!("kind = \"files\"\nurl = \"{}\"", dir.path().display()),
                &cohorts,
            ),
        }
    }

    /// What the partner holds for cohort `active`: for files, every complete run folder's
    /// removes then adds, applied in run order.
    fn held(&self) -> BTreeSet<String> {
        match self {
            Kind::CohortImport(p) => p.members("active"),
            Kind::Iterable(p) => p
                .handle
                .iterable_members(crate::iterable::LIST)
                .unwrap_or_default()
                .user_ids
                .into_iter()
                .collect(),
            Kind::UsersTrack(p) => p
                .handle
                .attribute_true("cohort_active")
                .into_iter()
                .collect(),
            Kind::Customerio(p) => p
                .handle
                .customerio_members(crate::customerio::SEGMENT)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            Kind::Webhook(r) => r.seen.lock().unwrap().members.clone(),
            Kind::Klaviyo(p) => crate::klaviyo::held(p, "active"),
            Kind::Files(dir) => {
                let runs = super::files::run_folders(&dir.path().join("active"));
                let ids = |path: std::path::PathBuf| {
                    read_all(&path)
                        .iter()
                        .flat_map(|b| {
                            (0..b.num_rows()).map(|r| string_at(b, "external_id", r).unwrap())
                        })
                        .collect::<Vec<_>>()
                };
                let mut held = BTreeSet::new();
                for (run, _) in runs {
                    for id in ids(run.join("removes.parquet")) {
                        held.remove(&id);
                    }
                    held.extend(ids(run.join("adds.parquet")));
                }
                held
            }
        }
    }

    /// Requests (or file runs) the partner has seen.
    fn seen(&self) -> u64 {
        match self {
            // A batch is several requests (an import and its polls): about a batch per three.
            Kind::Klaviyo(p) => p.handle.stats().requests.div_ceil(3),
            Kind::CohortImport(p)
            | Kind::UsersTrack(p)
            | Kind::Customerio(p)
            | Kind::Iterable(p) => p.handle.stats().requests,
            Kind::Webhook(r) => r.seen.lock().unwrap().requests,
            Kind::Files(dir) => std::fs::read_dir(dir.path().join("active"))
                .map(|d| d.count() as u64)
                .unwrap_or(0),
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
                (
                    crate::klaviyo::KLAVIYO_VAR,
                    Some(crate::klaviyo::KLAVIYO_KEY),
                ),
                (crate::customerio::SITE_VAR, Some(crate::customerio::SITE)),
                (crate::customerio::KEY_VAR, Some(crate::customerio::CIO_KEY)),
            ],
        )
    }

    fn spawn(&self, project: &Project, args: &[&str]) -> std::process::Child {
        project
            .command(args)
            .env(SECRET_VAR_HOOK, HOOK_SECRET)
            .env(AUTH_VAR, AUTH)
            .env(crate::klaviyo::KLAVIYO_VAR, crate::klaviyo::KLAVIYO_KEY)
            .env(crate::customerio::SITE_VAR, crate::customerio::SITE)
            .env(crate::customerio::KEY_VAR, crate::customerio::CIO_KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
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

#[test]
fn a_second_run_is_refused_while_one_delivers_on_every_destination() {
    use crate::incremental::{expire_locks, wait_until};
    for kind in Kind::http() {
        // Slow enough to be caught mid-delivery: 10-id batches at 10 a second (seconds).
        let slow = "batch_size = 10\nrequests_per_second = 10\nmax_in_flight = 2";
        let project = kind.project_with(PRO_UNTIL_DEC, slow);
        let mut first = kind.spawn(&project, &["sync", "active", "--at", T1]);
        let state = project.cohort_state("active");
        wait_until("the first run's lock and first batches", || {
            kind.seen() > 2
                && std::fs::read_dir(&state).is_ok_and(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("lock-"))
                })
        });
        let second = kind.run(&project, &["sync", "active", "--at", T1]);
        assert_eq!(second.code(), 5, "{}: {}", kind.name(), second.stderr());
        assert!(
            second.stderr().contains("is being synced by"),
            "{}: {}",
            kind.name(),
            second.stderr()
        );
        first.kill().unwrap(); // SIGKILL
        first.wait().unwrap();
        assert!(kind.held() != pro(), "{}: killed mid-delivery", kind.name());
        assert!(
            expire_locks(&state) > 0,
            "{}: the killed run's lock",
            kind.name()
        );
        let toml = project.dir.path().join("cohort-bridge.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(
            &toml,
            text.replace("requests_per_second = 10", "requests_per_second = 5000"),
        )
        .unwrap();
        let run = kind.run(&project, &["sync", "active", "--at", T1]);
        let s = run.summary();
        assert!(
            run.stderr().contains("taking over an expired lock"),
            "{}: {}",
            kind.name(),
            run.stderr()
        );
        assert!(
            s["skipped_batches"].as_u64().unwrap() > 0,
            "{}: {s}",
            kind.name()
        );
        assert!(kind.held() == pro(), "{}: resumed exactly", kind.name());
    }
}

#[test]
fn a_damaged_snapshot_is_refused_by_name_and_repaired_on_every_destination() {
    for kind in Kind::all() {
        let project = kind.project(PRO_UNTIL_DEC);
        kind.run(&project, &["sync", "active", "--at", T1])
            .summary();
        let state = project.cohort_state("active");
        let pointer: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("current.json")).unwrap()).unwrap();
        let snapshot = state.join(pointer["snapshot"].as_str().unwrap());
        let mut bytes = std::fs::read(&snapshot).unwrap();
        let n = bytes.len();
        for b in &mut bytes[n / 4..n * 3 / 4] {
            *b ^= 0x5a;
        }
        std::fs::write(&snapshot, bytes).unwrap();

        let seen = kind.seen();
        let refused = kind.run(&project, &["sync", "active", "--at", T2]);
        assert_eq!(refused.code(), 2, "{}: {}", kind.name(), refused.stderr());
        for name in [
            snapshot.file_name().unwrap().to_str().unwrap(),
            "cohort-bridge state repair active",
        ] {
            assert!(
                refused.stderr().contains(name),
                "{}: `{name}` not in {}",
                kind.name(),
                refused.stderr()
            );
        }
        assert_eq!(kind.seen(), seen, "{}: nothing was sent", kind.name());
        let repair = kind.run(&project, &["state", "repair", "active"]);
        assert_eq!(repair.code(), 0, "{}: {}", kind.name(), repair.stderr());
        // Restored from its replica: the next run sends only the change (everyone leaves).
        let s = kind
            .run(
                &project,
                &["sync", "active", "--at", T2, "--allow-mass-removal"],
            )
            .summary();
        assert_eq!(
            (s["adds"].as_u64(), s["removes"].as_u64()),
            (Some(0), Some(pro().len() as u64)),
            "{}",
            kind.name()
        );
        assert!(kind.held().is_empty(), "{}", kind.name());
    }
}
