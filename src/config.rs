//! The project file (`cohort-bridge.toml`): types with documented defaults, loading, validation
//! that lists every problem with the key at fault, and secrets resolved from environment variables.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

mod conflicts;
pub mod kind;
pub mod url_secrets;

pub use kind::{Claim, Credentials, KindConfig, KindSpec, Kinds, parse_as, with_kinds};

/// The partner's published limit: 250,000 requests per hour per workspace (partner-api.md).
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 250_000.0 / 3600.0;
/// The partner accepts at most 1,000 ids per request (partner-api.md).
pub const MAX_BATCH_SIZE: usize = 1000;

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
}

fn default_max_deltas() -> u32 {
    24
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
        }
    }
}

/// The query engine: DataFusion under a memory pool that operators (sorts, aggregations, joins)
/// reserve from, spilling to disk when it is full rather than growing the process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Where queries execute: `local` (this process), or `ballista://HOST:PORT`, a Ballista
    /// cluster's scheduler (builds with the `ballista` feature). `--engine` overrides it.
    #[serde(default = "default_engine_url")]
    pub url: String,
    /// The pool DataFusion's operators share, e.g. `512MiB`, `2GiB`. Default `1GiB`. A query
    /// that cannot spill and needs more fails with a message naming this key.
    #[serde(default = "default_memory_limit", deserialize_with = "de_size")]
    pub memory_limit: u64,
    /// Where spill files go (a local folder). Default: the system's temporary folder.
    pub spill_dir: Option<PathBuf>,
    /// Partitions (threads) a query runs in. Default: one per core.
    pub target_partitions: Option<usize>,
}

fn default_memory_limit() -> u64 {
    1 << 30
}

fn default_engine_url() -> String {
    "local".into()
}

/// Where queries run, parsed from `engine.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    Local,
    /// A Ballista scheduler.
    Ballista {
        host: String,
        port: u16,
    },
}

impl Engine {
    pub fn parse(url: &str) -> std::result::Result<Engine, String> {
        let url = url.trim();
        if url.is_empty() || url == "local" {
            return Ok(Engine::Local);
        }
        // Messages quote the URL without credentials (refused anyway: see `url_secrets`).
        let shown = url_secrets::shown(url);
        let Some(rest) = url.strip_prefix("ballista://") else {
            return Err(format!(
                "`{shown}`: write `local` or `ballista://HOST:PORT` (a Ballista scheduler)"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{shown}`: the port `{p}` is not a number"))?,
            ),
            None => (rest, 50050),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("`{shown}`: no scheduler host"));
        }
        Ok(Engine::Ballista {
            host: host.to_string(),
            port,
        })
    }
}

impl EngineConfig {
    /// The engine `url` names, if this build can run it.
    pub fn engine(&self) -> std::result::Result<Engine, String> {
        match Engine::parse(&self.url)? {
            Engine::Ballista { .. } if !cfg!(feature = "ballista") => Err(
                "this build of cohort-bridge has no Ballista support; build it with \
                 `cargo build --release --features ballista`"
                    .to_string(),
            ),
            engine => Ok(engine),
        }
    }
}

/// `--engine` (set once by `main`) wins over `engine.url` of every project file loaded.
static ENGINE_OVERRIDE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn override_engine(url: String) {
    let _ = ENGINE_OVERRIDE.set(url);
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            url: default_engine_url(),
            memory_limit: default_memory_limit(),
            spill_dir: None,
            target_partitions: None,
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

/// A destination: its kind with that kind's own keys (each kind's config type lives beside its
/// code in `deliver::destination`), and the delivery settings every kind shares. Secrets are
/// named by environment variable, never written here.
///
/// Parsed from the `[destinations.<name>]` table: `kind` picks the type, the shared keys go to
/// [`DeliverySettings`], and every other key must be one of the kind's (a key of another kind
/// is refused by name, with the kind's keys listed).
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// The kind's own keys, parsed by its registry row.
    pub kind: Box<dyn KindConfig>,
    /// The kind's name, limits and defaults.
    pub spec: &'static KindSpec,
    pub delivery: DeliverySettings,
}

impl DestinationConfig {
    /// As `kind` names it.
    pub fn kind_name(&self) -> &'static str {
        self.spec.name
    }

    /// The kind's own config type, when it is `T`.
    pub fn settings<T: 'static>(&self) -> Option<&T> {
        self.kind.as_any().downcast_ref()
    }

    /// As [`settings`](Self::settings), to change it (the demo points a kind at its emulator).
    pub fn settings_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.kind.as_any_mut().downcast_mut()
    }
}

/// How every kind delivers a plan: batch bounds, rate, in-flight, timeout, retry, deadline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Ids per request: 1..=1000 for `braze` (default 1000), 1..=75 for `braze_users_track`
    /// (default 75), 1..=10,000 for `webhook` (default 1000): the partner's limits.
    #[serde(default)]
    pub batch_size: usize,
    /// Requests per second across the whole run. Default: the partner's limit (69.44 for
    /// `braze`, 250,000 per hour; 1,000 for `braze_users_track`, 3,000 per 3 seconds).
    #[serde(default)]
    pub requests_per_second: f64,
    /// Requests in flight at once on one connection pool. Default 8.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Time limit for one attempt of one request. Default `30s`.
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    #[serde(default)]
    pub retry: RetryConfig,
    /// The longest one `sync` of one cohort may take, 1s..=7 days. Past it the run stops
    /// cleanly: no new batch starts, what was acknowledged is journaled, and the next run
    /// resumes the plan (exit 1). Default `6h`.
    #[serde(default = "default_deadline", deserialize_with = "de_duration")]
    pub deadline: Duration,
}

impl DeliverySettings {
    /// The keys every kind takes.
    pub const KEYS: &'static [&'static str] = &[
        "batch_size",
        "requests_per_second",
        "max_in_flight",
        "request_timeout",
        "retry",
        "deadline",
    ];
}

impl DestinationConfig {
    /// From a `[destinations.<name>]` table; `name` (when known) prefixes every message.
    pub fn from_table(
        name: Option<&str>,
        mut table: toml::Table,
    ) -> std::result::Result<Self, String> {
        let key = |k: &str| match name {
            Some(n) => format!("destinations.{n}.{k}"),
            None => k.to_string(),
        };
        let kinds = kind::kinds()?;
        let names = kinds.names().join(", ");
        let kind = match table.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            other => {
                return Err(format!(
                    "{}: {} (one of {names})",
                    key("kind"),
                    match other {
                        None => "required".to_string(),
                        Some(v) => format!("must be a string, got `{v}`"),
                    },
                ));
            }
        };
        let Some(spec) = kinds.find(&kind) else {
            return Err(format!(
                "{}: unknown kind `{kind}` (one of {names})",
                key("kind"),
            ));
        };
        let own = spec.keys;
        let mut shared = toml::Table::new();
        for k in DeliverySettings::KEYS {
            if let Some(v) = table.remove(*k) {
                shared.insert((*k).to_string(), v);
            }
        }
        let foreign: Vec<String> = table
            .keys()
            .filter(|k| !own.contains(&k.as_str()))
            .map(|k| {
                let hint = foreign_hint(spec, k, kinds);
                format!(
                    "{}: not a key of kind `{kind}` destinations{hint}; its keys are {}, and the \
                     delivery keys {}",
                    key(k),
                    own.join(", "),
                    DeliverySettings::KEYS.join(", ")
                )
            })
            .collect();
        if !foreign.is_empty() {
            return Err(foreign.join("\n  "));
        }
        let at = |e: toml::de::Error| {
            let e = e.to_string();
            format!(
                "{} (kind `{kind}`): {}",
                name.map(|n| format!("destinations.{n}"))
                    .unwrap_or_default(),
                e.trim_end()
            )
        };
        let delivery: DeliverySettings = toml::Value::Table(shared).try_into().map_err(at)?;
        let kind = (spec.parse)(toml::Value::Table(table)).map_err(at)?;
        Ok(DestinationConfig {
            kind,
            spec,
            delivery,
        })
    }
}

/// Why a key a kind does not take may have been written: the kind's own hint for it, or the
/// other kind that takes it.
fn foreign_hint(spec: &KindSpec, key: &str, kinds: &dyn Kinds) -> String {
    if let Some((_, hint)) = spec.hints.iter().find(|(k, _)| *k == key) {
        return format!(" ({hint})");
    }
    kinds
        .names()
        .into_iter()
        .filter_map(|name| kinds.find(name))
        .find(|other| other.name != spec.name && other.keys.contains(&key))
        .map(|other| format!(" (a key of `{}` destinations)", other.name))
        .unwrap_or_default()
}

impl<'de> Deserialize<'de> for DestinationConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        DestinationConfig::from_table(None, table).map_err(serde::de::Error::custom)
    }
}

/// `[destinations.*]`, each table parsed knowing its name (so messages name the key at fault).
fn de_destinations<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, DestinationConfig>, D::Error> {
    let tables = BTreeMap::<String, toml::Table>::deserialize(d)?;
    tables
        .into_iter()
        .map(|(name, table)| {
            let dest = DestinationConfig::from_table(Some(&name), table)
                .map_err(serde::de::Error::custom)?;
            Ok((name, dest))
        })
        .collect()
}

/// A problem with `var` as the name of an environment variable (for the kinds' `*_env` keys).
pub fn env_var_problem(key: &str, var: &str) -> Option<String> {
    (var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then(|| {
        format!("{key}: must name an environment variable (letters, digits, _), got `{var}`")
    })
}

/// A problem with `url` as an HTTP kind's `base_url`.
pub fn http_url_problem(key: &str, url: &str) -> Option<String> {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => None,
        _ => Some(format!(
            "{key}: `{}` is not an http(s) URL",
            url_secrets::shown(url)
        )),
    }
}

/// Reads the secret in environment variable `var` (named by key `field`) through a lookup.
pub type ReadSecret<'a> = dyn Fn(&str, &str) -> Result<Secret> + 'a;

fn default_deadline() -> Duration {
    Duration::from_secs(6 * 3600)
}

fn default_max_in_flight() -> usize {
    8
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// How transient failures (423, 429, 5xx, timeouts, connection errors) are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request, the first included. Default 10.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First backoff; doubles each attempt, with full jitter. Default `200ms`.
    #[serde(default = "default_initial_backoff", deserialize_with = "de_duration")]
    pub initial_backoff: Duration,
    /// Cap on one backoff (a server's `Retry-After` may ask for longer). Default `30s`.
    #[serde(default = "default_max_backoff", deserialize_with = "de_duration")]
    pub max_backoff: Duration,
    /// Give up on a request once this much time has passed since its first attempt. Default `10m`.
    #[serde(default = "default_max_elapsed", deserialize_with = "de_duration")]
    pub max_elapsed: Duration,
}

fn default_max_attempts() -> u32 {
    10
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_elapsed() -> Duration {
    Duration::from_secs(600)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            max_elapsed: default_max_elapsed(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortConfig {
    /// The SQL file, relative to the project file. Default `queries/cohorts/<name>.sql`.
    pub sql: Option<PathBuf>,
    /// Destination name. Default: the only destination, when there is exactly one.
    pub destination: Option<String>,
    /// The partner's `cohort_id` (unique per workspace). Default: the cohort's name.
    pub cohort_id: Option<String>,
    /// Display name in the partner's dashboard. Default: the cohort's name.
    pub name: Option<String>,
    /// Share of members held out (never sent; recorded as `held_out`), `0` to `0.5`.
    #[serde(default)]
    pub holdout: f64,
    /// Salt of the holdout split. Default: the cohort's `cohort_id`.
    pub holdout_salt: Option<String>,
    /// Which identifier columns make the member, first present first. Default `["user_id",
    /// "alias", "device_id", "braze_id"]`.
    pub identifiers: Option<Vec<IdentifierKind>>,
}

/// A cohort with every default applied.
#[derive(Debug, Clone)]
pub struct Cohort {
    pub name: String,
    pub sql_file: PathBuf,
    pub destination: String,
    pub cohort_id: String,
    pub display_name: String,
    /// Members held out of delivery (a control group; `cohort::holdout` splits them);
    /// `share == 0` holds out nobody.
    pub holdout: HoldoutShare,
    /// The identifier kinds that make a member, in priority order.
    pub identifiers: Vec<IdentifierKind>,
}

/// A cohort's holdout as configured: the share of members held out and the split's salt.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldoutShare {
    /// `0..=MAX_HOLDOUT_SHARE`.
    pub share: f64,
    pub salt: String,
}

/// The largest share a cohort may hold out: beyond half, "held out" is the treatment.
pub const MAX_HOLDOUT_SHARE: f64 = 0.5;

/// A kind of identifier, as `cohorts.<name>.identifiers` names it (`cohort::identity` makes
/// members of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    UserId,
    Alias,
    DeviceId,
    BrazeId,
}

/// The default priority of identifier kinds.
pub const DEFAULT_IDENTIFIERS: [IdentifierKind; 4] = [
    IdentifierKind::UserId,
    IdentifierKind::Alias,
    IdentifierKind::DeviceId,
    IdentifierKind::BrazeId,
];

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
            let key = format!("destinations.{name}");
            d.kind.problems(&key, &mut out);
            let max = d.spec.max_batch;
            let d = &d.delivery;
            if d.batch_size == 0 || d.batch_size > max {
                out.push(format!(
                    "{key}.batch_size: must be between 1 and {max} (the partner's limit), got {}",
                    d.batch_size
                ));
            }
            if let Err(e) = check_rate(d.requests_per_second) {
                out.push(format!("{key}.requests_per_second: {e}"));
            }
            if d.max_in_flight == 0 || d.max_in_flight > 1024 {
                out.push(format!(
                    "{key}.max_in_flight: must be between 1 and 1024, got {}",
                    d.max_in_flight
                ));
            }
            let ms = Duration::from_millis;
            let hours = |h: u64| Duration::from_secs(h * 3600);
            within(
                &mut out,
                &format!("{key}.request_timeout"),
                d.request_timeout,
                ms(1)..=hours(1),
            );
            within(
                &mut out,
                &format!("{key}.deadline"),
                d.deadline,
                Duration::from_secs(1)..=hours(7 * 24),
            );
            let r = &d.retry;
            if !(1..=1000).contains(&r.max_attempts) {
                out.push(format!(
                    "{key}.retry.max_attempts: must be between 1 and 1000 (the first attempt counts), got {}",
                    r.max_attempts
                ));
            }
            within(
                &mut out,
                &format!("{key}.retry.initial_backoff"),
                r.initial_backoff,
                ms(1)..=hours(1),
            );
            within(
                &mut out,
                &format!("{key}.retry.max_backoff"),
                r.max_backoff,
                ms(1)..=hours(24),
            );
            within(
                &mut out,
                &format!("{key}.retry.max_elapsed"),
                r.max_elapsed,
                ms(1)..=hours(7 * 24),
            );
            if r.initial_backoff > r.max_backoff {
                out.push(format!(
                    "{key}.retry.initial_backoff: must not exceed retry.max_backoff ({} > {})",
                    human_duration(r.initial_backoff),
                    human_duration(r.max_backoff)
                ));
            }
        }
        for name in self.cohorts.keys() {
            if let Err(problem) = self.cohort(name) {
                out.push(problem);
            }
        }
        out.extend(self.url_secrets());
        out
    }

    /// A cohort with defaults applied, or the problem with its configuration.
    pub fn cohort(&self, name: &str) -> std::result::Result<Cohort, String> {
        let Some(c) = self.cohorts.get(name) else {
            let known: Vec<&str> = self.cohorts.keys().map(String::as_str).collect();
            return Err(format!(
                "no cohort named `{name}` (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        let destination = match &c.destination {
            Some(d) if self.destinations.contains_key(d) => d.clone(),
            Some(d) => {
                return Err(format!(
                    "cohorts.{name}.destination: no destination named `{d}` (configured: {})",
                    self.destinations
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            None if self.destinations.len() == 1 => {
                self.destinations.keys().next().cloned().unwrap_or_default()
            }
            None => {
                return Err(format!(
                    "cohorts.{name}.destination: required when there is not exactly one destination"
                ));
            }
        };
        let cohort_id = c.cohort_id.clone().unwrap_or_else(|| name.to_string());
        if cohort_id.trim().is_empty() {
            return Err(format!("cohorts.{name}.cohort_id: must not be empty"));
        }
        let display_name = c.name.clone().unwrap_or_else(|| name.to_string());
        if display_name.trim().is_empty() {
            return Err(format!("cohorts.{name}.name: must not be empty"));
        }
        let sql = c
            .sql
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("queries/cohorts/{name}.sql")));
        let identifiers = c
            .identifiers
            .clone()
            .unwrap_or_else(|| DEFAULT_IDENTIFIERS.to_vec());
        if identifiers.is_empty() {
            return Err(format!(
                "cohorts.{name}.identifiers: must name at least one kind"
            ));
        }
        if (1..identifiers.len()).any(|i| identifiers[..i].contains(&identifiers[i])) {
            return Err(format!("cohorts.{name}.identifiers: names a kind twice"));
        }
        if !(0.0..=MAX_HOLDOUT_SHARE).contains(&c.holdout) {
            return Err(format!(
                "cohorts.{name}.holdout: must be between 0 and {} (a share of the members), got {}",
                MAX_HOLDOUT_SHARE, c.holdout
            ));
        }
        let salt = c.holdout_salt.clone().unwrap_or_else(|| cohort_id.clone());
        if salt.is_empty() {
            return Err(format!("cohorts.{name}.holdout_salt: must not be empty"));
        }
        Ok(Cohort {
            name: name.to_string(),
            sql_file: self.resolve(&sql),
            destination,
            cohort_id,
            display_name,
            holdout: HoldoutShare {
                share: c.holdout,
                salt,
            },
            identifiers,
        })
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

/// `"1.5 GiB"` → `(1.5, "GiB")`: a leading number and the trimmed rest.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// The range of `requests_per_second` (and `--requests-per-second`): below it a single
/// request's wait would be measured in hours, above it no partner answers.
pub const RATE_RANGE: std::ops::RangeInclusive<f64> = 0.01..=100_000.0;

/// Checks a request rate against `RATE_RANGE`.
pub fn check_rate(rate: f64) -> std::result::Result<(), String> {
    if rate.is_finite() && RATE_RANGE.contains(&rate) {
        Ok(())
    } else {
        Err(format!(
            "must be between {} and {} requests per second, got {rate}",
            RATE_RANGE.start(),
            RATE_RANGE.end()
        ))
    }
}

/// Pushes a problem naming `key` and the allowed range when `value` is outside `range`.
fn within(
    out: &mut Vec<String>,
    key: &str,
    value: Duration,
    range: std::ops::RangeInclusive<Duration>,
) {
    if !range.contains(&value) {
        out.push(format!(
            "{key}: must be between {} and {}, got {}",
            human_duration(*range.start()),
            human_duration(*range.end()),
            human_duration(value)
        ));
    }
}

/// `1500ms` → `1.5s`, `7200s` → `2h`: a duration as the project file would write it.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60.0 || secs % 60.0 != 0.0 {
        format!("{secs}s")
    } else if secs < 3600.0 || secs % 3600.0 != 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{}h", secs / 3600.0)
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let (value, unit) = number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a duration (use e.g. 250ms, 30s, 5m, 1h)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{text}`: {e}"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Seconds(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        Raw::Seconds(s) => Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom),
    }
}

/// A byte size: a number of bytes, or text like `512MiB`, `1.5GiB`, `800MB`, `64KiB`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let (number, unit) = number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a size (try `512MiB` or `2GiB`)"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = number * scale as f64;
    if bytes < 1.0 || !bytes.is_finite() {
        return Err(format!("`{text}` must be at least one byte"));
    }
    Ok(bytes as u64)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Bytes(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
        Raw::Bytes(b) => Ok(b),
    }
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
