//! `kind = "braze"`: its keys, their checks and its credentials.

use crate::config::{self, Credentials, KindConfig, Secret};
use crate::error::Result;

/// Ids per request: Cohort Import's limit.
pub const MAX_BATCH: usize = 1000;

/// Cohort Import's default limit: 250,000 requests an hour.
pub const DEFAULT_RPS: f64 = 250_000.0 / 3600.0;

/// `kind = "braze"`: its keys (besides the delivery settings).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The partner's REST endpoint, e.g. `https://rest.iad-01.braze.com`.
    pub base_url: String,
    /// The `{partner}` segment of `/partners/{partner}/cohorts`.
    pub partner: String,
    /// Environment variable holding the `partner_api_key`.
    pub partner_api_key_env: String,
    /// Environment variable holding the workspace's `client_secret` (data import key).
    pub client_secret_env: String,
}

impl Config {
    pub const KEYS: &'static [&'static str] = &[
        "base_url",
        "partner",
        "partner_api_key_env",
        "client_secret_env",
    ];
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
        if self.partner.is_empty() || self.partner.contains('/') {
            out.push(format!("{key}.partner: must be a non-empty path segment"));
        }
        for (field, var) in [
            ("partner_api_key_env", &self.partner_api_key_env),
            ("client_secret_env", &self.client_secret_env),
        ] {
            out.extend(config::env_var_problem(&format!("{key}.{field}"), var));
        }
    }

    fn credentials(&self, read: &config::ReadSecret<'_>) -> Result<Credentials> {
        Ok(credentials(
            read("partner_api_key_env", &self.partner_api_key_env)?,
            read("client_secret_env", &self.client_secret_env)?,
        ))
    }

    fn workspace(&self, http: &dyn Fn(&str) -> String, key: &dyn Fn(&str) -> String) -> String {
        format!(
            "braze {}/partners/{} {}",
            http(&self.base_url),
            self.partner,
            key(&self.client_secret_env)
        )
    }
}

/// Cohort Import's keys: both travel in every request body; the `client_secret` names the
/// workspace.
pub fn credentials(partner_api_key: Secret, client_secret: Secret) -> Credentials {
    Credentials {
        workspace: Some(client_secret.clone()),
        secrets: [
            ("partner_api_key_env", partner_api_key),
            ("client_secret_env", client_secret),
        ]
        .into(),
        headers: Vec::new(),
    }
}
