//! One end-to-end suite, two backends: every scenario runs against the lake on local files and
//! against the same lake in a real S3-protocol server (in process, `s3.rs`), through the real
//! binary. On S3 the lake, the state area (snapshots, plans, journals, locks, run history) and
//! the ingest source are all objects; the assertions read the objects back from the server's
//! backing folder with the independent Parquet reader. Besides Cohort Import, `/users/track`
//! keeps its state on S3, and `files` writes its run folders to the same bucket.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::incremental::{ACTIVE_7D, T1, T2, active_7d, expire_locks, wait_until};
use crate::ingest::{DAY, OPEN, T0, opens};
use crate::s3::S3Server;
use crate::support::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Local,
    S3,
}

/// A project whose lake (a copy of the generated one), state area and Currents source live on
/// the chosen backend.
struct Lakehouse {
    dir: tempfile::TempDir,
    s3: Option<S3Server>,
    /// Where the backend keeps the lake's objects on disk.
    lake_dir: PathBuf,
}

impl Lakehouse {
    fn new(backend: Backend, partner_url: &str, destination_extra: &str) -> Lakehouse {
        Lakehouse::with_destination(backend, |_| {
            format!(
                r#"kind = "braze"
base_url = "{partner_url}"
partner = "cohort-bridge"
partner_api_key_env = "{KEY_VAR}"
client_secret_env = "{SECRET_VAR}"
{destination_extra}"#
            )
        })
    }

    /// `destination` writes the body of `[destinations.braze]`, given the S3 server if any.
    fn with_destination(
        backend: Backend,
        destination: impl FnOnce(Option<&S3Server>) -> String,
    ) -> Lakehouse {
        let dir = tempfile::tempdir().unwrap();
        let s3 = (backend == Backend::S3).then(|| S3Server::start(&dir.path().join("s3")));
        let (lake_dir, lake_url, source_url, options) = match &s3 {
            None => (
                dir.path().join("lake"),
                "lake".to_string(),
                "currents".to_string(),
                String::new(),
            ),
            Some(s3) => (
                s3.bucket_dir().join("lake"),
                format!("s3://{}/lake", crate::s3::BUCKET),
                format!("s3://{}/currents", crate::s3::BUCKET),
                format!("options = {}\n", s3.lake_options()),
            ),
        };
        copy_dir(lake(), &lake_dir);
        let destination = destination(s3.as_ref());
        std::fs::create_dir_all(dir.path().join("queries/cohorts")).unwrap();
        std::fs::write(dir.path().join("queries/cohorts/active.sql"), ACTIVE_7D).unwrap();
        std::fs::write(
            dir.path().join("cohort-bridge.toml"),
            format!(
                r#"[lake]
url = "{lake_url}"
{options}
[tables.users]
path = "users"

[tables.events]
path = "events"
partitions = [{{ name = "event_date", type = "date" }}]

[destinations.braze]
{destination}

[cohorts.active]
cohort_id = "active"
name = "Active in the last 7 days"

[sources.currents]
url = "{source_url}"
"#
            ),
        )
        .unwrap();
        Lakehouse { dir, s3, lake_dir }
    }

    /// The Currents source folder on disk (objects of the S3 backend).
    fn currents(&self, event_type: &str, queued: &str, name: &str) -> PathBuf {
        let root = match &self.s3 {
            None => self.dir.path().join("currents"),
            Some(s3) => s3.bucket_dir().join("currents"),
        };
        let dir = root
            .join(format!("event_type={event_type}"))
            .join(format!("date={queued}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn cohort_state(&self) -> PathBuf {
        self.lake_dir.join("_cohort_bridge/cohorts/braze/active")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .args(args)
            .env_remove("COHORT_BRIDGE_CONFIG")
            .env("RUST_LOG", "debug")
            .env(KEY_VAR, KEY)
            .env(SECRET_VAR, SECRET)
            .env(REST_VAR, REST_KEY);
        if let Some(s3) = &self.s3 {
            cmd.envs(s3.env());
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        let run = Run(self.command(args).output().expect("run cohort-bridge"));
        for secret in [KEY, SECRET, REST_KEY, crate::s3::SECRET_KEY] {
            assert!(
                !run.stderr().contains(secret) && !run.stdout().contains(secret),
                "a secret reached the output of {args:?}"
            );
        }
        run
    }
}

impl Lakehouse {
    /// Prints (with `--nocapture`) how many requests of each kind the S3 server served since
    /// the last call: the figures of docs/benchmarks.md, "Object-store requests".
    fn report_requests(&self, what: &str) {
        if let Some(s3) = &self.s3 {
            let mut counts = std::collections::BTreeMap::<String, u64>::new();
            for r in s3.take_requests() {
                let op = r.split(' ').next().unwrap_or_default().to_string();
                *counts.entry(op).or_default() += 1;
            }
            let total: u64 = counts.values().sum();
            eprintln!("S3 requests, {what}: {total} {counts:?}");
        }
    }
}

/// Full then incremental sync; a race of four runs lets exactly one through; that one is
/// killed with SIGKILL mid-delivery and the next run resumes it exactly.
fn sync_scenario(backend: Backend) {
    let partner = Partner::plain();
    let fast = "batch_size = 200\nrequests_per_second = 5000";
    let house = Lakehouse::new(backend, &partner.handle.base_url(), fast);
    let (e1, e2) = (active_7d(T1), active_7d(T2));

    let first = house.run(&["sync", "active", "--at", T1]).summary();
    house.report_requests("full sync");
    assert_eq!(first["adds"], e1.len() as u64);
    assert!(partner.members("active") == e1, "{backend:?}: full sync");
    let second = house.run(&["sync", "active", "--at", T2]).summary();
    house.report_requests("incremental sync");
    assert_eq!(second["adds"], e2.difference(&e1).count() as u64);
    assert_eq!(second["removes"], e1.difference(&e2).count() as u64);
    assert!(partner.members("active") == e2, "{backend:?}: incremental");
    assert_eq!(
        house.run(&["sync", "active", "--at", T2]).summary()["outcome"],
        "unchanged"
    );

    // A slow full resend, started four times at once: one run holds the lock, three are
    // refused with exit 5.
    let toml = house.dir.path().join("cohort-bridge.toml");
    let slow = std::fs::read_to_string(&toml).unwrap().replace(
        "batch_size = 200\nrequests_per_second = 5000",
        "batch_size = 50\nrequests_per_second = 40\nmax_in_flight = 4",
    );
    std::fs::write(&toml, slow).unwrap();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            house
                .command(&["sync", "active", "--at", T2, "--full"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let applied_before = partner.handle.stats().user_requests_applied;
    let mut winners = Vec::new();
    let mut refused = 0;
    for mut child in racers {
        // A loser exits at once; the winner is still sending after a second.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(
                    status.code(),
                    Some(5),
                    "{backend:?}: a racer neither won nor lost"
                );
                refused += 1;
                break;
            }
            if Instant::now() > deadline {
                winners.push(child);
                break;
            }
            if partner.handle.stats().user_requests_applied > applied_before + 20 {
                // Someone is delivering; give the losers a moment to notice the lock.
                std::thread::sleep(Duration::from_millis(50));
                if child.try_wait().unwrap().is_none() {
                    winners.push(child);
                    break;
                }
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    assert_eq!(
        (winners.len(), refused),
        (1, 3),
        "{backend:?}: exactly one run proceeds"
    );
    let mut winner = winners.pop().unwrap();
    wait_until("the winner to deliver some batches", || {
        partner.handle.stats().user_requests_applied > applied_before + 30
    });
    winner.kill().unwrap(); // SIGKILL
    winner.wait().unwrap();
    // The killed run's lock is expired by hand (as its TTL would), then the plan resumes.
    assert_eq!(
        expire_locks(&house.cohort_state()),
        1,
        "the killed run's lock"
    );
    let fast_again = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("requests_per_second = 40", "requests_per_second = 5000");
    std::fs::write(&toml, fast_again).unwrap();
    let resumed = house.run(&["sync", "active", "--at", T2]).summary();
    assert!(
        resumed["skipped_batches"].as_u64().unwrap() > 0,
        "{backend:?}: journaled batches are skipped: {resumed}"
    );
    assert!(partner.members("active") == e2, "{backend:?}: resumed");
    let history = house.run(&["runs", "--format", "json"]).summaries();
    assert!(history.len() >= 4, "{backend:?}: run history: {history:?}");

    // Hourly syncs commit deltas on the store (their adds, removes and replicas), read back by
    // the next run.
    let t2: chrono::DateTime<chrono::Utc> = T2.parse().unwrap();
    for h in 1..=2 {
        let at = (t2 + chrono::Duration::hours(h)).to_rfc3339();
        let s = house.run(&["sync", "active", "--at", &at]).summary();
        let want = active_7d(&at);
        assert!(
            partner.members("active") == want,
            "{backend:?}: hour {h}: {s}"
        );
        let pointer: serde_json::Value = serde_json::from_slice(
            &std::fs::read(house.cohort_state().join("current.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            pointer["deltas"].as_array().map(Vec::len),
            Some(h as usize),
            "{backend:?}: {pointer}"
        );
    }
    house.report_requests("hourly delta syncs");
    let show = house.run(&["state", "show", "active"]);
    assert_eq!(show.code(), 0, "{backend:?}: {}", show.stdout());
}

/// Ingest, an idempotent rerun, a late file, a one-day backfill, and `query` over the result.
fn ingest_scenario(backend: Backend) {
    let house = Lakehouse::new(backend, "http://127.0.0.1:9", "");
    std::fs::write(
        house.currents(OPEN, "2026-11-27-10", "a.avro"),
        opens(&[("o1", T0), ("o2", T0 + DAY), ("o1", T0)]),
    )
    .unwrap();
    let s = house.run(&["ingest"]).summary();
    house.report_requests("ingest of one file");
    assert_eq!(
        (s["events_added"].as_u64(), s["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    let again = house.run(&["ingest"]).summary();
    house.report_requests("ingest rerun, nothing new");
    assert_eq!(again["files_read"], 0, "{backend:?}: a rerun reads nothing");

    std::fs::write(
        house.currents(OPEN, "2026-11-29-08", "late.avro"),
        opens(&[("late", T0 + 100)]),
    )
    .unwrap();
    let late = house.run(&["ingest"]).summary();
    house.report_requests("ingest of a late file");
    assert_eq!(late["days_written"], serde_json::json!(["2026-11-27"]));

    // The 27th is corrected at the source (o1 withdrawn); a backfill of that day only.
    std::fs::remove_file(house.currents(OPEN, "2026-11-27-10", "a.avro")).unwrap();
    std::fs::write(
        house.currents(OPEN, "2026-11-27-10", "a-fixed.avro"),
        opens(&[("o2", T0 + DAY)]),
    )
    .unwrap();
    let day28 = house
        .lake_dir
        .join("partner_events/event_date=2026-11-28/part-0.parquet");
    let before = std::fs::read(&day28).unwrap();
    let b = house
        .run(&["ingest", "--from", "2026-11-27", "--to", "2026-11-27"])
        .summary();
    house.report_requests("backfill of one day");
    assert_eq!(b["days_written"], serde_json::json!(["2026-11-27"]));
    assert_eq!(
        std::fs::read(&day28).unwrap(),
        before,
        "{backend:?}: other days untouched"
    );

    // A backfill of the 29th lists only the queue hours that can hold its events.
    let b29 = house
        .run(&["ingest", "--from", "2026-11-29", "--to", "2026-11-29"])
        .summary();
    assert_eq!(b29["files_listed"], 1, "{backend:?}: {b29}");
    if let Some(s3) = &house.s3 {
        let lists: Vec<String> = s3
            .take_requests()
            .into_iter()
            .filter(|r| r.starts_with("list_objects_v2") && r.contains("currents"))
            .collect();
        assert!(
            lists.iter().all(|l| !l.contains("date=2026-11-27")),
            "a backfill of the 29th listed earlier queue hours: {lists:#?}"
        );
    }

    let q = house.run(&[
        "query",
        "SELECT event_date, event_id FROM partner_events ORDER BY event_date, event_id",
        "--format",
        "csv",
    ]);
    assert_eq!(q.code(), 0, "{}", q.stderr());
    assert_eq!(
        q.stdout(),
        "event_date,event_id\n2026-11-27,late\n2026-11-28,o2\n",
        "{backend:?}"
    );
    // Product and partner events join in one query.
    let joined = house.run(&[
        "query",
        "SELECT count(*) AS n FROM partner_events p JOIN users u ON u.user_id = p.external_user_id",
        "--format",
        "csv",
    ]);
    assert_eq!(joined.code(), 0, "{}", joined.stderr());
    assert!(joined.stdout().starts_with("n\n"), "{}", joined.stdout());
}

#[test]
fn sync_on_local_files() {
    sync_scenario(Backend::Local);
}

#[test]
fn sync_on_s3() {
    sync_scenario(Backend::S3);
}

#[test]
fn ingest_on_local_files() {
    ingest_scenario(Backend::Local);
}

#[test]
fn ingest_on_s3() {
    ingest_scenario(Backend::S3);
}

/// `/users/track` with the lake and the state area on the backend: full, incremental, then
/// nothing to send.
fn users_track_scenario(backend: Backend) {
    let partner = Partner::plain();
    let url = partner.handle.base_url();
    let house = Lakehouse::with_destination(backend, |_| {
        format!(
            "kind = \"braze_users_track\"\nbase_url = \"{url}\"\napi_key_env = \"{REST_VAR}\"\n\
             requests_per_second = 5000"
        )
    });
    let held = || -> std::collections::BTreeSet<String> {
        partner
            .handle
            .attribute_true("cohort_active")
            .into_iter()
            .collect()
    };
    house.run(&["sync", "active", "--at", T1]).summary();
    assert!(held() == active_7d(T1), "{backend:?}: full sync");
    let second = house.run(&["sync", "active", "--at", T2]).summary();
    assert!(second["removes"].as_u64().unwrap() > 0, "{second}");
    assert!(held() == active_7d(T2), "{backend:?}: incremental");
    assert_eq!(
        house.run(&["sync", "active", "--at", T2]).summary()["outcome"],
        "unchanged"
    );
    assert!(
        house.cohort_state().join("current.json").exists(),
        "{backend:?}: the state is on the backend"
    );
}

/// `files` with every run's folder on the backend (the same S3 bucket as the lake): each run
/// folder read back from the server's objects holds exactly the change.
fn files_scenario(backend: Backend) {
    let house = Lakehouse::with_destination(backend, |s3| match s3 {
        None => "kind = \"files\"\nurl = \"drop\"\ninclude_members = true".to_string(),
        Some(s3) => format!(
            "kind = \"files\"\nurl = \"s3://{}/drop\"\noptions = {}\ninclude_members = true",
            crate::s3::BUCKET,
            s3.lake_options()
        ),
    });
    let drop = match &house.s3 {
        None => house.dir.path().join("drop/active"),
        Some(s3) => s3.bucket_dir().join("drop/active"),
    };
    let ids = |path: PathBuf| -> std::collections::BTreeSet<String> {
        read_all(&path)
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(|r| string_at(b, "external_id", r).unwrap()))
            .collect()
    };
    let (e1, e2) = (active_7d(T1), active_7d(T2));
    house.run(&["sync", "active", "--at", T1]).summary();
    house.run(&["sync", "active", "--at", T2]).summary();
    let runs = super::files::run_folders(&drop);
    assert_eq!(runs.len(), 2, "{backend:?}: one folder per run");
    assert!(ids(runs[0].0.join("adds.parquet")) == e1, "{backend:?}");
    assert!(
        ids(runs[1].0.join("adds.parquet")) == e2.difference(&e1).cloned().collect(),
        "{backend:?}"
    );
    assert!(
        ids(runs[1].0.join("removes.parquet")) == e1.difference(&e2).cloned().collect(),
        "{backend:?}"
    );
    assert!(ids(runs[1].0.join("members.parquet")) == e2, "{backend:?}");
}

#[test]
fn users_track_on_s3() {
    users_track_scenario(Backend::S3);
}

#[test]
fn files_on_local_files() {
    files_scenario(Backend::Local);
}

#[test]
fn files_on_s3() {
    files_scenario(Backend::S3);
}
