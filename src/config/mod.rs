//! The project file (`cohort-bridge.toml`): types with documented defaults, loading, validation
//! that lists every problem with the key at fault, and secrets resolved from environment variables.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

mod campaign;
mod cohort;
mod conflicts;
mod destination;
mod engine;
pub mod kind;
mod units;
pub mod url_secrets;

pub use campaign::{Campaign, CampaignConfig};
pub use cohort::{
    Cohort, CohortConfig, DEFAULT_IDENTIFIERS, HoldoutShare, IdentifierKind, MAX_HOLDOUT_SHARE,
};
use destination::de_destinations;
pub use destination::{
    DeliverySettings, DestinationConfig, ReadSecret, RetryConfig, env_var_problem, http_url_problem,
};
use engine::ENGINE_OVERRIDE;
pub use engine::{Engine, EngineConfig, override_engine};
pub use units::{RATE_RANGE, check_rate, human_duration, parse_duration, parse_size};
use units::{de_duration, within};

pub use kind::{
    Claim, Credentials, KindConfig, KindConfigBase, KindSpec, Kinds, parse_as, with_kinds,
};

/// The whole project file, as written by the user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the lake lives.
    pub lake: LakeConfig,
    /// Tables under the lake, by the name SQL uses.
    #[serde(default)]
    pub tables: BTreeMap<String, TableConfig>,
    /// Where cohorts are delivered, by name.
    #[serde(default, deserialize_with = "de_destinations")]
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// Cohorts, by name.
    #[serde(default)]
    pub cohorts: BTreeMap<String, CohortConfig>,
    /// Partner campaigns, by `campaign_id`: the cohort each went to and the feature it pointed
    /// at (the `campaigns` table).
    #[serde(default)]
    pub campaigns: BTreeMap<String, CampaignConfig>,
    /// Where snapshots, plans, journals and locks live, and how runs guard themselves.
    #[serde(default)]
    pub state: StateConfig,
    /// Partner event exports to ingest into the lake, by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// How queries execute: memory bound and spill space.
    #[serde(default)]
    pub engine: EngineConfig,

    /// The project file this came from; relative paths in it are relative to its folder.
    #[serde(skip)]
    pub file: PathBuf,
}

/// A partner event export (Braze Currents layout: Avro or NDJSON files under a prefix).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A folder or URL like `lake.url` (same `lake.options`); listed recursively.
    pub url: String,
    /// The lake table the events land in (a folder under the lake, partitioned by
    /// `event_date`). Default `partner_events`.
    #[serde(default = "default_events_table")]
    pub table: String,
}

fn default_events_table() -> String {
    "partner_events".to_string()
}

/// The state area: what the partner holds (snapshots), unfinished runs (plans and journals) and
/// run locks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// A folder or URL like `lake.url`. Default: `_cohort_bridge/` under the lake.
    pub url: Option<String>,
    /// A run's lock expires this long after its last refresh (a live run refreshes it every
    /// third of that). Default `10m`.
    #[serde(default = "default_lock_ttl", deserialize_with = "de_duration")]
    pub lock_ttl: Duration,
    /// Removals above this share of the committed snapshot are held back unless
    /// `--allow-mass-removal` is given. Default `0.5`.
    #[serde(default = "default_max_removal_share")]
    pub max_removal_share: f64,
    /// An incremental sync commits its change as a delta on top of the snapshot (instead of
    /// rewriting it) while the chain holds at most this many deltas, and their ids stay within
    /// a tenth of the cohort; then a run writes a full snapshot again. 0: always a full
    /// snapshot. Default 24.
    #[serde(default = "default_max_deltas")]
    pub max_deltas: u32,
    /// An incremental sync sends while its cohort is still being sorted: the members come in
    /// parts of at most this many ids, each planned (its adds written) and sent while the next
    /// is sorted. Smaller parts start sending sooner; each part is one more object written. 0:
    /// plan the whole change before sending anything. Default 1,048,576.
    #[serde(default = "default_part_ids")]
    pub part_ids: usize,
    /// Full syncs (the first, `--full`, a resend after `state repair`) in parts too. Off by
    /// default: their adds are the whole cohort, written once as parts and again as the target
    /// snapshot, which cost more than the overlap saved on two cores (docs/benchmarks.md).
    #[serde(default)]
    pub pipeline_full_syncs: bool,
}

fn default_max_deltas() -> u32 {
    24
}

fn default_part_ids() -> usize {
    1 << 20
}

fn default_lock_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_max_removal_share() -> f64 {
    0.5
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            url: None,
            lock_ttl: default_lock_ttl(),
            max_removal_share: default_max_removal_share(),
            max_deltas: default_max_deltas(),
            part_ids: default_part_ids(),
            pipeline_full_syncs: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// A local path (relative to the project file) or a URL: `file:///…`, `s3://bucket/prefix`,
    /// `gs://…`, `az://…`, `memory://`.
    pub url: String,
    /// Extra object-store options (e.g. `aws_endpoint`, `aws_region`, `aws_allow_http`), applied
    /// after the standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`). Never put secrets here.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Folder under the lake holding the table's files.
    pub path: String,
    /// File format; only `parquet` for now.
    #[serde(default)]
    pub format: TableFormat,
    /// Hive partition columns (`event_date=2026-11-28/`), outermost first.
    #[serde(default)]
    pub partitions: Vec<PartitionColumn>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    #[default]
    Parquet,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionColumn {
    pub name: String,
    /// `string` (default), `date` or `int`.
    #[serde(rename = "type", default)]
    pub kind: PartitionType,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionType {
    #[default]
    String,
    Date,
    Int,
}

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret and registers it for scrubbing (`redact`): from now on no output of
    /// the process carries it.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::redact::register(&value);
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// Reads, parses and validates a project file; lists every problem found.
    /// `kinds` are the destination kinds this build knows (`destinations::REGISTRY`).
    pub fn load(file: &Path, kinds: &'static dyn Kinds) -> Result<Config> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::config(file.to_path_buf(), format!("cannot read: {e}")))?;
        Config::parse(&text, file, kinds)
    }

    /// Parses and validates project-file text; `file` names it in messages and anchors paths.
    pub fn parse(text: &str, file: &Path, kinds: &'static dyn Kinds) -> Result<Config> {
        let config = Config::parse_unchecked(text, file, kinds)?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Error::config(file.to_path_buf(), problems.join("\n  ")))
        }
    }

    /// Parses project-file text (syntax, types, unknown keys) without the semantic checks of
    /// `problems`, so `check` can list all of those.
    pub fn parse_unchecked(text: &str, file: &Path, kinds: &'static dyn Kinds) -> Result<Config> {
        let mut config: Config = with_kinds(kinds, || toml::from_str(text))
            .map_err(|e| Error::config(file.to_path_buf(), e.to_string().trim_end().to_string()))?;
        config.file = file.to_path_buf();
        // Defaults that depend on the destination's kind.
        for d in config.destinations.values_mut() {
            if d.delivery.batch_size == 0 {
                d.delivery.batch_size = d.spec.default_batch;
            }
            if d.delivery.requests_per_second == 0.0 {
                d.delivery.requests_per_second = d.spec.default_rps;
            }
        }
        if let Some(url) = ENGINE_OVERRIDE.get() {
            config.engine.url = url.clone();
        }
        Ok(config)
    }

    /// Reads a project file, checking only what `parse_unchecked` checks.
    pub fn load_unchecked(file: &Path, kinds: &'static dyn Kinds) -> Result<Config> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::config(file.to_path_buf(), format!("cannot read: {e}")))?;
        Config::parse_unchecked(&text, file, kinds)
    }

    /// The folder relative paths are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Every semantic problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.lake.url.trim().is_empty() {
            out.push("lake.url: must not be empty".to_string());
        }
        if !(0.0..=1.0).contains(&self.state.max_removal_share) {
            out.push(format!(
                "state.max_removal_share: must be between 0 and 1, got {}",
                self.state.max_removal_share
            ));
        }
        if self.state.max_deltas > 1000 {
            out.push(format!(
                "state.max_deltas: at most 1000 (each one is read by every run), got {}",
                self.state.max_deltas
            ));
        }
        if let Err(e) = self.engine.engine() {
            out.push(format!("engine.url: {e}"));
        }
        if self.engine.target_partitions == Some(0) {
            out.push("engine.target_partitions: must be at least 1".to_string());
        }
        if self.engine.memory_limit < 1 << 20 {
            out.push(format!(
                "engine.memory_limit: must be at least 1MiB, got {} bytes",
                self.engine.memory_limit
            ));
        }
        within(
            &mut out,
            "state.lock_ttl",
            self.state.lock_ttl,
            Duration::from_secs(1)..=Duration::from_secs(24 * 3600),
        );
        within(
            &mut out,
            "engine.query_timeout",
            self.engine.query_timeout,
            Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600),
        );
        if self.engine.target_partitions.is_some_and(|n| n > 1024) {
            out.push("engine.target_partitions: must be between 1 and 1024".to_string());
        }
        for (name, table) in &self.tables {
            if !is_identifier(name) {
                out.push(format!(
                    "tables.{name}: table names must be lowercase SQL identifiers ([a-z_][a-z0-9_]*)"
                ));
            }
            if table.path.trim().is_empty() {
                out.push(format!("tables.{name}.path: must not be empty"));
            }
            for (i, p) in table.partitions.iter().enumerate() {
                if !is_identifier(&p.name) {
                    out.push(format!(
                        "tables.{name}.partitions[{i}].name: `{}` is not a lowercase SQL identifier",
                        p.name
                    ));
                }
            }
        }
        for (name, d) in &self.destinations {
            d.problems(&format!("destinations.{name}"), &mut out);
        }
        for name in self.cohorts.keys() {
            if let Err(problem) = self.cohort(name) {
                out.push(problem);
            }
        }
        self.campaign_problems(&mut out);
        out.extend(self.url_secrets());
        out
    }

    /// A path from the project file, made relative to the project file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir().join(path)
        }
    }

    /// The destination of that name (the name was validated with the cohort).
    pub fn destination(&self, name: &str) -> Result<&DestinationConfig> {
        self.destinations.get(name).ok_or_else(|| {
            Error::config(self.file.clone(), format!("no destination named `{name}`"))
        })
    }

    /// Reads a destination's secrets through `lookup` (the process environment in production).
    pub fn credentials(
        &self,
        destination: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials> {
        let d = self.destination(destination)?;
        let read = |field: &str, var: &str| -> Result<Secret> {
            match lookup(var) {
                Some(v) if !v.is_empty() => Ok(Secret::new(v)),
                _ => Err(Error::config(
                    self.file.clone(),
                    format!(
                        "destinations.{destination}.{field}: environment variable {var} is not set"
                    ),
                )),
            }
        };
        // Before `read` registers it for masking (a short secret would mask its letters in
        // every message, this one included).
        if let Some(problem) = d
            .kind
            .secret_problem(&format!("destinations.{destination}"), lookup)
        {
            return Err(Error::config(self.file.clone(), problem));
        }
        d.kind.credentials(&read)
    }
}

/// The process environment, for `Config::credentials`.
pub fn env_lookup(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_urls() {
        assert_eq!(Engine::parse("local"), Ok(Engine::Local));
        assert_eq!(
            Engine::parse("ballista://sched.internal:50050"),
            Ok(Engine::Ballista {
                host: "sched.internal".into(),
                port: 50050
            })
        );
        assert_eq!(
            Engine::parse("ballista://10.0.0.5"),
            Ok(Engine::Ballista {
                host: "10.0.0.5".into(),
                port: 50050
            })
        );
        assert!(
            Engine::parse("spark://x")
                .unwrap_err()
                .contains("`spark://x`")
        );
        assert!(
            Engine::parse("ballista://h:port")
                .unwrap_err()
                .contains("`port`")
        );
    }

    #[test]
    fn sizes_parse_with_units_and_errors_name_the_text() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("800 MB").unwrap(), 800_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").unwrap_err().contains("`lots`"));
        assert!(
            parse_size("2TiB")
                .unwrap_err()
                .contains("unknown unit `tib`")
        );
        let c = parse(&format!("{GOOD}\n[engine]\nmemory_limit = \"256MiB\"\n")).unwrap();
        assert_eq!(c.engine.memory_limit, 256 << 20);
        let e = parse(&format!("{GOOD}\n[engine]\nmemory_limit = \"big\"\n")).unwrap_err();
        assert!(e.to_string().contains("memory_limit"), "{e}");
    }

    const GOOD: &str = r#"
[lake]
url = "data/lake"

[tables.users]
path = "users"

[tables.events]
path = "events"
partitions = [{ name = "event_date", type = "date" }]

[destinations.braze]
kind = "braze"
base_url = "http://127.0.0.1:9"
partner = "cohort-bridge"
partner_api_key_env = "PK"
client_secret_env = "CS"
request_timeout = "250ms"

[cohorts.paid]
name = "Paid users"
"#;

    fn parse(text: &str) -> Result<Config> {
        crate::destinations::parse_config(text, Path::new("project/cohort-bridge.toml"))
    }

    /// `GOOD` with its destination replaced by `dest`.
    fn with_destination(dest: &str) -> String {
        let start = GOOD.find("[destinations.braze]").unwrap();
        let end = GOOD.find("[cohorts.paid]").unwrap();
        format!(
            "{}[destinations.braze]\n{dest}\n\n{}",
            &GOOD[..start],
            &GOOD[end..]
        )
    }

    #[test]
    fn each_kind_requires_its_keys_refuses_the_others_and_has_its_defaults() {
        let track = parse(&with_destination(
            "kind = \"braze_users_track\"\nbase_url = \"http://h:1\"\napi_key_env = \"RK\"",
        ))
        .unwrap();
        let d = &track.destinations["braze"];
        assert_eq!(
            (d.delivery.batch_size, d.delivery.requests_per_second),
            (75, 1000.0)
        );
        use crate::destinations::braze_users_track as users_track;
        let Some(c) = d.settings::<users_track::Config>() else {
            panic!("{d:?}")
        };
        assert_eq!(c.membership, users_track::Membership::Boolean);
        assert!(c.update_existing_only);
        let creds = track
            .credentials("braze", &|v| Some(format!("value-of-{v}")))
            .unwrap();
        assert_eq!(creds.workspace_key().unwrap().expose(), "value-of-RK");

        let hook = parse(&with_destination(
            "kind = \"webhook\"\nbase_url = \"http://h:1/x\"\nsecret_env = \"HS\"\nheader_env = { Authorization = \"TOK\" }",
        ))
        .unwrap();
        assert_eq!(hook.destinations["braze"].delivery.batch_size, 1000);
        let err = hook
            .credentials("braze", &|v| {
                (v == "HS").then(|| "hook-signing-secret-value".to_string())
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("header_env.Authorization") && err.contains("TOK"),
            "{err}"
        );

        for (dest, expect) in [
            (
                "kind = \"braze_users_track\"\nbase_url = \"http://h:1\"",
                "destinations.braze (kind `braze_users_track`): missing field `api_key_env`",
            ),
            (
                "kind = \"braze_users_track\"\nbase_url = \"http://h:1\"\napi_key_env = \"RK\"\npartner = \"p\"",
                "partner: not a key of kind `braze_users_track`",
            ),
            (
                "kind = \"braze_users_track\"\nbase_url = \"http://h:1\"\napi_key_env = \"RK\"\nbatch_size = 76",
                "batch_size: must be between 1 and 75",
            ),
            (
                "kind = \"braze\"\nbase_url = \"http://h:1\"\npartner = \"p\"\npartner_api_key_env = \"A\"\nclient_secret_env = \"B\"\nattribute = \"x\"",
                "attribute: not a key of kind `braze`",
            ),
            (
                "kind = \"braze\"\nbase_url = \"http://h:1\"\npartner = \"p\"\npartner_api_key_env = \"A\"\nclient_secret_env = \"B\"\nheaders = { X = \"y\" }",
                "headers: not a key of kind `braze` destinations (a key of `webhook` destinations)",
            ),
            (
                "kind = \"webhook\"\nbase_url = \"http://h:1\"",
                "destinations.braze (kind `webhook`): missing field `secret_env`",
            ),
        ] {
            let err = parse(&with_destination(dest)).unwrap_err().to_string();
            assert!(err.contains(expect), "{dest}\n→ {err}");
        }
    }

    #[test]
    fn defaults_are_applied() {
        let c = parse(GOOD).unwrap();
        let d = &c.destinations["braze"];
        assert_eq!(d.delivery.batch_size, 1000);
        assert_eq!(d.delivery.max_in_flight, 8);
        assert_eq!(d.delivery.request_timeout, Duration::from_millis(250));
        assert_eq!(d.delivery.retry.max_attempts, 10);
        let cohort = c.cohort("paid").unwrap();
        assert_eq!(cohort.destination, "braze");
        assert_eq!(cohort.cohort_id, "paid");
        assert_eq!(cohort.display_name, "Paid users");
        assert_eq!(
            cohort.sql_file,
            PathBuf::from("project/queries/cohorts/paid.sql")
        );
        assert_eq!(c.tables["events"].partitions[0].kind, PartitionType::Date);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = GOOD
            .replace("batch_size", "x")
            .replace("partner = ", "partnr = ");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("project/cohort-bridge.toml"), "{err}");
        assert!(err.contains("partnr"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_listed() {
        let text = GOOD
            .replace(
                "request_timeout = \"250ms\"",
                "batch_size = 5000\nmax_in_flight = 0",
            )
            .replace("name = \"Paid users\"", "destination = \"nope\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("destinations.braze.batch_size: must be between 1 and 1000"),
            "{err}"
        );
        assert!(err.contains("destinations.braze.max_in_flight"), "{err}");
        assert!(
            err.contains("cohorts.paid.destination: no destination named `nope`"),
            "{err}"
        );
    }

    #[test]
    fn missing_secret_is_named() {
        let c = parse(GOOD).unwrap();
        let err = c.credentials("braze", &|_| None).unwrap_err().to_string();
        assert!(err.contains("environment variable PK is not set"), "{err}");
        let ok = c
            .credentials("braze", &|v| Some(format!("value-of-{v}")))
            .unwrap();
        assert_eq!(ok.workspace_key().unwrap().expose(), "value-of-CS");
        assert!(!format!("{ok:?}").contains("value-of"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2 weeks").is_err());
    }
}
