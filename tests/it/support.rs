//! Shared fixtures: a generated lake, project folders, an emulator on 127.0.0.1:0, the binary,
//! and an independent reader of the lake's Parquet files (the parquet crate, no DataFusion).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, Utc};
use cohort_bridge::emulator::{self, EmulatorConfig, EmulatorHandle};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub const BIN: &str = env!("CARGO_BIN_EXE_cohort-bridge");
pub const KEY_VAR: &str = "IT_PARTNER_API_KEY";
pub const SECRET_VAR: &str = "IT_CLIENT_SECRET";
/// Distinctive values, so a test can search every log line for them.
pub const KEY: &str = "pk-7f3a9c1e-never-log-me";
/// The workspace REST API key of `/users/track` destinations.
pub const REST_VAR: &str = "IT_REST_API_KEY";
pub const REST_KEY: &str = "rk-2c8e41d7-never-log-me";
pub const SECRET: &str = "cs-51d0b2aa-never-log-me";

/// The lake all tests read: 20,000 users, 10 days of events ending 2026-11-27.
pub const LAKE_USERS: u64 = 20_000;
pub const LAKE_END: &str = "2026-11-27";
/// The `--at` the tests pass.
pub const AT: &str = "2026-11-27T12:00:00Z";

pub fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(AT)
        .unwrap()
        .with_timezone(&Utc)
}

/// Generated once per test binary through the real `generate` command (UUID ids in no order,
/// as product lakes hold them); reused across runs when its completion marker is there.
pub fn lake() -> &'static Path {
    static LAKE: OnceLock<PathBuf> = OnceLock::new();
    LAKE.get_or_init(|| generated("uuid"))
}

/// The same lake with the ids of `generate --ids sorted` (`u000000000`…), the shape of state
/// written by releases before realistic ids (the `tests/data/state-v1` fixture).
pub fn sorted_lake() -> &'static Path {
    static LAKE: OnceLock<PathBuf> = OnceLock::new();
    LAKE.get_or_init(|| generated("sorted"))
}

fn generated(ids: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("it-lake-{LAKE_USERS}-10-7-{ids}"));
    if !dir.join("_generated.json").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(BIN)
            .args(["generate", "--users", &LAKE_USERS.to_string()])
            .args(["--days", "10", "--seed", "7", "--ids", ids])
            .args(["--end-date", LAKE_END, "--out"])
            .arg(&dir)
            .output()
            .expect("run generate");
        assert!(
            out.status.success(),
            "generate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// Copies a folder tree (e.g. the shared lake, for a test that writes into its lake).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A partner emulator on 127.0.0.1:0 on its own runtime, for as long as the value lives.
pub struct Partner {
    pub handle: EmulatorHandle,
    _runtime: tokio::runtime::Runtime,
}

impl Partner {
    pub fn start(config: EmulatorConfig) -> Partner {
        Partner::start_on("127.0.0.1:0", config)
    }

    /// On a given address (e.g. where an earlier emulator, now gone, listened).
    pub fn start_on(addr: &str, config: EmulatorConfig) -> Partner {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = EmulatorConfig {
            partner_api_key: KEY.into(),
            client_secret: SECRET.into(),
            rest_api_key: REST_KEY.into(),
            ..config
        };
        let handle = runtime
            .block_on(emulator::start(addr.parse().unwrap(), config))
            .unwrap();
        Partner {
            handle,
            _runtime: runtime,
        }
    }

    pub fn plain() -> Partner {
        Partner::start(EmulatorConfig::default())
    }

    /// Waits until a rate-limit window of length `window` has just begun (the emulator's windows
    /// are aligned to the epoch, like an hourly limit that resets on the hour).
    pub fn wait_for_window_start(window: Duration) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let into = now.as_nanos() % window.as_nanos();
        let left = window.as_nanos() - into;
        std::thread::sleep(Duration::from_nanos(left as u64) + Duration::from_millis(20));
    }

    /// Another client of the same workspace spends `n` requests of the rate-limit window.
    pub fn spend_quota(&self, n: usize) {
        let url = format!("{}/partners/cohort-bridge/cohorts", self.handle.base_url());
        let body = serde_json::json!({
            "partner_api_key": KEY, "client_secret": SECRET, "cohort_id": "someone_else",
            "name": "Another tool's cohort", "created_at": "2026-11-27T00:00:00Z",
        });
        self._runtime.block_on(async {
            let client = reqwest::Client::new();
            for _ in 0..n {
                let status = client.post(&url).json(&body).send().await.unwrap().status();
                assert!(status.is_success(), "quota spender got {status}");
            }
        });
    }

    pub fn members(&self, cohort_id: &str) -> BTreeSet<String> {
        self.handle
            .members(cohort_id)
            .unwrap_or_default()
            .into_iter()
            .collect()
    }
}

impl Drop for Partner {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// A project folder: `cohort-bridge.toml` plus cohort SQL files, over the shared lake.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// `destination` is the body of `[destinations.braze]` after `base_url`/keys; cohorts are
    /// (name, SQL) pairs written to `queries/cohorts/NAME.sql`.
    pub fn new(base_url: &str, destination_extra: &str, cohorts: &[(&str, &str)]) -> Project {
        Project::on(lake(), base_url, destination_extra, cohorts)
    }

    /// The same over another lake.
    pub fn on(
        lake: &Path,
        base_url: &str,
        destination_extra: &str,
        cohorts: &[(&str, &str)],
    ) -> Project {
        let destination = format!(
            r#"kind = "braze"
base_url = "{base_url}"
partner = "cohort-bridge"
partner_api_key_env = "{KEY_VAR}"
client_secret_env = "{SECRET_VAR}"
{destination_extra}"#
        );
        Project::with_destination(lake, &destination, cohorts)
    }

    /// The same with `/users/track` (membership as an attribute) as the destination.
    pub fn users_track(
        base_url: &str,
        destination_extra: &str,
        cohorts: &[(&str, &str)],
    ) -> Project {
        let destination = format!(
            r#"kind = "braze_users_track"
base_url = "{base_url}"
api_key_env = "{REST_VAR}"
{destination_extra}"#
        );
        Project::with_destination(lake(), &destination, cohorts)
    }

    /// The same with a `files` destination writing under `out` (`extra`: more of its keys).
    pub fn files(out: &Path, extra: &str, cohorts: &[(&str, &str)]) -> Project {
        let destination = format!("kind = \"files\"\nurl = \"{}\"\n{extra}", out.display());
        Project::with_destination(lake(), &destination, cohorts)
    }

    /// `destination` is the whole body of `[destinations.braze]`.
    pub fn with_destination(lake: &Path, destination: &str, cohorts: &[(&str, &str)]) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("queries/cohorts")).unwrap();
        let mut toml = format!(
            r#"[lake]
url = "{lake}"

[tables.users]
path = "users"

[tables.events]
path = "events"
partitions = [{{ name = "event_date", type = "date" }}]

[destinations.braze]
{destination}
"#,
            lake = lake.display(),
        );
        for (name, sql) in cohorts {
            std::fs::write(dir.path().join(format!("queries/cohorts/{name}.sql")), sql).unwrap();
            toml.push_str(&format!(
                "\n[cohorts.{name}]\ncohort_id = \"{name}\"\nname = \"Cohort {name}\"\n"
            ));
        }
        // Each project has its own state area (the lake is shared by every test).
        toml.push_str(&format!(
            "\n[state]\nurl = \"{}\"\n",
            dir.path().join("state").display()
        ));
        std::fs::write(dir.path().join("cohort-bridge.toml"), toml).unwrap();
        Project { dir }
    }

    /// Gives the project a copy of the shared lake (for tests that write into it: `ingest`,
    /// planted events) at `lake/`, and a Currents source at `currents/`.
    pub fn own_lake_with_source(&self) {
        let dir = self.dir.path();
        copy_dir(lake(), &dir.join("lake"));
        let toml = std::fs::read_to_string(dir.join("cohort-bridge.toml"))
            .unwrap()
            .replace(&format!("url = \"{}\"", lake().display()), "url = \"lake\"")
            + "\n[sources.currents]\nurl = \"currents\"\n";
        std::fs::write(dir.join("cohort-bridge.toml"), toml).unwrap();
    }

    /// The emulator's engagement export for the lake's first `users` users into `currents/`,
    /// campaigns at `at`, then `ingest`.
    pub fn export_and_ingest(&self, users: u64, at: &str) {
        let out = self.dir.path().join("currents");
        let export = self.run(&[
            "export-engagement",
            "--out",
            out.to_str().unwrap(),
            "--users",
            &users.to_string(),
            "--at",
            at,
        ]);
        assert_eq!(export.code(), 0, "{}", export.stderr());
        let ingest = self.run(&["ingest"]);
        assert_eq!(ingest.code(), 0, "{}", ingest.stderr());
    }

    /// Runs the binary in the project folder with the secrets set.
    /// Every file under the project's state area, with its size (to show nothing changed).
    pub fn state_files(&self) -> Vec<(String, u64)> {
        fn walk(dir: &Path, out: &mut Vec<(String, u64)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push((p.display().to_string(), p.metadata().unwrap().len()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.path().join("state"), &mut out);
        out.sort();
        out
    }

    /// Appends `lines` to the project file's `[state]` section, its last.
    pub fn set_state(&self, lines: &str) {
        let toml = self.dir.path().join("cohort-bridge.toml");
        let text = std::fs::read_to_string(&toml).unwrap() + lines;
        std::fs::write(&toml, text).unwrap();
    }

    /// The state folder of one cohort at the `braze` destination.
    pub fn cohort_state(&self, cohort_id: &str) -> PathBuf {
        self.dir.path().join("state/cohorts/braze").join(cohort_id)
    }

    /// The command for running the binary in the project folder with the secrets set.
    pub fn command(&self, args: &[&str]) -> Command {
        command_in(self.dir.path(), args)
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(
            args,
            &[
                (KEY_VAR, Some(KEY)),
                (SECRET_VAR, Some(SECRET)),
                (REST_VAR, Some(REST_KEY)),
            ],
        )
    }

    /// Runs the binary with extra environment (`None` removes a variable).
    pub fn run_with(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("COHORT_BRIDGE_CONFIG");
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        Run(cmd.output().expect("run cohort-bridge"))
    }
}

/// The binary in `dir` with the partners' secrets set (and no log level or project from the
/// environment).
pub fn command_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("COHORT_BRIDGE_CONFIG")
        .env(KEY_VAR, KEY)
        .env(SECRET_VAR, SECRET)
        .env(REST_VAR, REST_KEY);
    cmd
}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().expect("exited normally")
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// The JSON summary lines on stdout.
    pub fn summaries(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect()
    }
    /// The one summary line, whatever the exit code.
    pub fn summary_any(&self) -> serde_json::Value {
        let mut s = self.summaries();
        assert_eq!(s.len(), 1, "one summary line: {}", self.stdout());
        s.remove(0)
    }

    /// Asserts success and returns the one summary.
    pub fn summary(&self) -> serde_json::Value {
        assert_eq!(self.code(), 0, "exit code; stderr:\n{}", self.stderr());
        let mut s = self.summaries();
        assert_eq!(s.len(), 1, "one summary line: {}", self.stdout());
        s.remove(0)
    }
}

// ---- the independent reader ----

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            parquet_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
}

pub fn read_all(path: &Path) -> Vec<RecordBatch> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    builder.build().unwrap().map(|b| b.unwrap()).collect()
}

pub fn string_at(batch: &RecordBatch, column: &str, row: usize) -> Option<String> {
    let col = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column}"));
    let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
    let s = col.as_string::<i32>();
    s.is_valid(row).then(|| s.value(row).to_string())
}

/// A row of the users table, as the tests need it.
/// Everyone seen in the 30 days before the run.
pub const ACTIVE_30D: &str = "SELECT user_id FROM users \
    WHERE last_seen_at >= $run_ts - INTERVAL '30 days' AND last_seen_at < $run_ts";

/// The `ACTIVE_30D` cohort at `at`, computed from the Parquet files without DataFusion.
pub fn active_at(at: DateTime<Utc>) -> BTreeSet<String> {
    let to = at.timestamp_micros();
    let from = (at - chrono::Duration::days(30)).timestamp_micros();
    users()
        .into_iter()
        .filter(|u| u.last_seen_us.is_some_and(|t| t >= from && t < to))
        .map(|u| u.user_id)
        .collect()
}

pub struct User {
    pub user_id: String,
    pub plan: Option<String>,
    pub last_seen_us: Option<i64>,
}

pub fn users() -> Vec<User> {
    users_of(lake())
}

/// The users of a generated lake.
pub fn users_of(lake: &Path) -> Vec<User> {
    let mut files = Vec::new();
    parquet_files(&lake.join("users"), &mut files);
    let mut out = Vec::new();
    for f in files {
        for b in read_all(&f) {
            let seen = b
                .column_by_name("last_seen_at")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>()
                .clone();
            for row in 0..b.num_rows() {
                out.push(User {
                    user_id: string_at(&b, "user_id", row).expect("users.user_id is never null"),
                    plan: string_at(&b, "plan", row),
                    last_seen_us: seen.is_valid(row).then(|| seen.value(row)),
                });
            }
        }
    }
    assert_eq!(out.len() as u64, LAKE_USERS);
    out
}

/// Events of one name on the days in `[from, to)`: (user_id or None) per row.
pub fn event_user_ids(name: &str, from: NaiveDate, to: NaiveDate) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(lake().join("events")).unwrap() {
        let dir = entry.unwrap().path();
        let Some(day) = dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_prefix("event_date=")
        else {
            continue;
        };
        let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
        if day < from || day >= to {
            continue;
        }
        let mut files = Vec::new();
        parquet_files(&dir, &mut files);
        for f in files {
            for b in read_all(&f) {
                for row in 0..b.num_rows() {
                    if string_at(&b, "event_name", row).as_deref() == Some(name) {
                        out.push(string_at(&b, "user_id", row));
                    }
                }
            }
        }
    }
    out
}
