//! `[engine]`: where queries run and the memory they may take.

use std::path::PathBuf;

use serde::Deserialize;

use super::units::de_size;
use super::url_secrets;

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
    /// The longest a query may take on a Ballista cluster before it is abandoned with an error
    /// (an executor lost at the wrong moment can leave Ballista 55's scheduler waiting
    /// forever). Default 1 h. Local queries are not bounded.
    #[serde(
        default = "default_query_timeout",
        deserialize_with = "super::units::de_duration"
    )]
    pub query_timeout: std::time::Duration,
}

fn default_query_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
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
pub(super) static ENGINE_OVERRIDE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

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
            query_timeout: default_query_timeout(),
        }
    }
}
