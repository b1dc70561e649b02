//! `kind = "klaviyo"`: its keys, their checks and its credentials.

use std::time::Duration;

use crate::config::{self, Credentials, KindConfig, Secret};
use crate::error::Result;

/// Profiles per bulk import job, Klaviyo's limit ("Accepts up to 10,000 profiles per
/// request"), and so the most ids a batch may carry: a batch of removes is resolved to profile
/// ids 100 at a time and removed 1,000 at a time within its steps.
pub const MAX_BATCH: usize = 10_000;

/// The default batch: the largest, as adds are what a large sync mostly sends.
pub const DEFAULT_BATCH: usize = MAX_BATCH;

/// Requests per second on each endpoint. Klaviyo documents burst 10/s and steady 150/m for
/// every endpoint we call but the lookup (which allows more), in fixed windows, per endpoint.
/// The steady window binds after the first minute: 150/m is 2.5/s. Ours: 2.45/s, so the most
/// any 60 s holds is the pacer's burst (2.45) plus 147 = 149 < 150, and a run of any length
/// meets no 429 (98% of the documented rate).
pub const DEFAULT_RPS: f64 = 2.45;

/// The revision pinned when the config names none (the newest read, December 2026).
pub const DEFAULT_REVISION: &str = "2026-10-15";

/// The wait before the first poll of an import job; each later poll waits twice as long as
/// the one before, up to 30 s.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// `kind = "klaviyo"`: its keys (besides the delivery settings). A cohort is the membership of
/// the static list whose id is the cohort's `cohort_id`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Klaviyo's API host. Default `https://a.klaviyo.com`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Environment variable holding the private API key (sent as
    /// `Authorization: Klaviyo-API-Key …`; scopes `lists:write`, `profiles:write`,
    /// `lists:read`, `profiles:read`).
    pub api_key_env: String,
    /// The `revision` header, `YYYY-MM-DD`. Default `2026-10-15`.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// The wait before the first poll of an import job, e.g. `1s` (doubling, up to 30 s).
    #[serde(default)]
    pub poll_interval: Option<String>,
}

fn default_base_url() -> String {
    "https://a.klaviyo.com".into()
}

fn default_revision() -> String {
    DEFAULT_REVISION.into()
}

impl Config {
    pub const KEYS: &'static [&'static str] =
        &["base_url", "api_key_env", "revision", "poll_interval"];

    /// The first poll's wait (checked by `problems`).
    pub fn poll(&self) -> Duration {
        self.poll_interval
            .as_deref()
            .and_then(|p| config::parse_duration(p).ok())
            .unwrap_or(DEFAULT_POLL)
    }
}

/// Whether `revision` reads as Klaviyo's `YYYY-MM-DD` (with an optional `.suffix`).
fn revision_problem(key: &str, revision: &str) -> Option<String> {
    let date = revision.split('.').next().unwrap_or_default();
    let ok = date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok();
    (!ok).then(|| format!("{key}: must be a Klaviyo revision date YYYY-MM-DD, got `{revision}`"))
}

impl KindConfig for Config {
    fn base_url(&self) -> Option<&str> {
        Some(&self.base_url)
    }

    fn problems(&self, key: &str, out: &mut Vec<String>) {
        out.extend(config::http_url_problem(
            &format!("{key}.base_url"),
            &self.base_url,
        ));
        out.extend(config::env_var_problem(
            &format!("{key}.api_key_env"),
            &self.api_key_env,
        ));
        out.extend(revision_problem(&format!("{key}.revision"), &self.revision));
        if let Some(p) = &self.poll_interval {
            match config::parse_duration(p) {
                Ok(d) if d >= Duration::from_millis(10) && d <= Duration::from_secs(60) => {}
                _ => out.push(format!(
                    "{key}.poll_interval: must be a duration from 10ms to 60s, got `{p}`"
                )),
            }
        }
    }

    fn credentials(&self, read: &config::ReadSecret<'_>) -> Result<Credentials> {
        Ok(credentials(read("api_key_env", &self.api_key_env)?))
    }

    fn workspace(&self, http: &dyn Fn(&str) -> String, key: &dyn Fn(&str) -> String) -> String {
        format!(
            "klaviyo {} {}",
            http(&self.base_url),
            key(&self.api_key_env)
        )
    }
}

/// A private API key: sent as `Authorization: Klaviyo-API-Key`, names the account.
pub fn credentials(api_key: Secret) -> Credentials {
    Credentials {
        workspace: Some(api_key.clone()),
        secrets: [("api_key_env", api_key)].into(),
        headers: Vec::new(),
    }
}
