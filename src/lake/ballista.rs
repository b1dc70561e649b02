//! `engine.url = "ballista://HOST:PORT"` (cargo feature `ballista`): the same SQL, planned here
//! and executed on an Apache DataFusion Ballista cluster.
//!
//! The session is upgraded for Ballista (`SessionStateExt::upgrade_for_ballista`): every query
//! goes to the scheduler as a logical plan with this session's settings; the scheduler plans
//! it (listing the tables' files) and executors read the Parquet files and run the stages.
//! So the scheduler and the executors need the lake's object store themselves:
//! - `file://` lakes must be at the same path on every node (a shared volume);
//! - `s3://` lakes: the non-secret options of `lake.options` (`aws_endpoint`, `aws_region`,
//!   `aws_allow_http`) travel with every query as Ballista's `s3.*` settings, which stock
//!   Ballista executors and schedulers apply; credentials never travel — each node uses its own
//!   `AWS_*` environment or instance role.

use std::collections::BTreeMap;
use std::sync::Arc;

use ballista::extension::SessionStateExt;
use datafusion::config::ConfigExtension;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};

datafusion::common::extensions_options! {
    /// Ballista's `s3.*` settings (the keys stock Ballista nodes read), without the secret ones.
    pub struct S3Settings {
        /// An S3-compatible endpoint (MinIO, a test server).
        pub endpoint: Option<String>, default = None
        pub region: Option<String>, default = None
        /// Allow `http://` endpoints.
        pub allow_http: bool, default = false
    }
}

impl ConfigExtension for S3Settings {
    const PREFIX: &'static str = "s3";
}

/// The non-secret S3 settings of `lake.options` (falling back to the standard environment).
pub fn s3_settings(options: &BTreeMap<String, String>) -> S3Settings {
    let get = |key: &str, env: &str| {
        options
            .get(key)
            .cloned()
            .or_else(|| std::env::var(env).ok())
            .filter(|v| !v.is_empty())
    };
    S3Settings {
        endpoint: get("aws_endpoint", "AWS_ENDPOINT")
            .or_else(|| get("endpoint", "AWS_ENDPOINT_URL")),
        region: get("aws_region", "AWS_REGION").or_else(|| get("region", "AWS_DEFAULT_REGION")),
        allow_http: get("aws_allow_http", "AWS_ALLOW_HTTP").is_some_and(|v| v == "true"),
    }
}

/// A session whose queries run on the Ballista scheduler at `host:port`. No connection is made
/// here: an unreachable scheduler is the first query's error.
pub fn context(
    session: SessionConfig,
    runtime: Arc<RuntimeEnv>,
    host: &str,
    port: u16,
    lake_options: &BTreeMap<String, String>,
) -> Result<SessionContext> {
    let session = session.with_option_extension(s3_settings(lake_options));
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(session)
        .with_runtime_env(runtime)
        .build()
        .upgrade_for_ballista(format!("http://{host}:{port}"))
        .map_err(|e| Error::Internal(format!("cannot set up the Ballista session: {e}")))?;
    Ok(SessionContext::new_with_state(state))
}
