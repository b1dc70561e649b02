//! `kind = "webhook"`: its keys, their checks and its credentials.

use std::collections::BTreeMap;

use crate::config::{self, Credentials, KindConfig, Secret};
use crate::error::Result;

/// The shortest signing secret accepted, in bytes: a shorter one is guessable, and every
/// secret is masked wherever it appears in output (a one-letter secret would mask that letter
/// in every message).
pub const MIN_SECRET_BYTES: usize = 16;

/// Ids per request at most (a receiver's body limit is the usual bound; 10k UUIDs are ~400 KB).
pub const MAX_BATCH: usize = 10_000;

/// Ids per request when the config does not say: receivers' body limits vary; 1,000 UUIDs are
/// ~50 KB.
pub const DEFAULT_BATCH: usize = 1000;

/// `kind = "webhook"`: its keys (besides the delivery settings).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The receiver's URL (its query kept).
    pub base_url: String,
    /// Environment variable holding the HMAC-SHA256 signing secret.
    pub secret_env: String,
    /// Headers sent with every request (not secrets: they are in this file).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are read from these environment variables (secrets, e.g.
    /// `Authorization`).
    #[serde(default)]
    pub header_env: BTreeMap<String, String>,
}

impl Config {
    pub const KEYS: &'static [&'static str] = &["base_url", "secret_env", "headers", "header_env"];
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
            &format!("{key}.secret_env"),
            &self.secret_env,
        ));
        for (name, var) in &self.header_env {
            out.extend(config::env_var_problem(
                &format!("{key}.header_env.{name}"),
                var,
            ));
        }
    }

    /// The problem with `secret` (read from `secret_env`) as a signing secret, if any; checked
    /// before the secret is registered for masking. Never quotes it.
    fn secret_problem(&self, key: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let secret = lookup(&self.secret_env)?;
        (!secret.is_empty() && secret.len() < MIN_SECRET_BYTES).then(|| {
            format!(
                "{key}.secret_env: the signing secret in {} is {} bytes; it must be at least \
                 {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
                self.secret_env,
                secret.len()
            )
        })
    }

    fn credentials(&self, read: &config::ReadSecret<'_>) -> Result<Credentials> {
        Ok(credentials(
            read("secret_env", &self.secret_env)?,
            self.header_env
                .iter()
                .map(|(name, var)| Ok((name.clone(), read(&format!("header_env.{name}"), var)?)))
                .collect::<Result<_>>()?,
        ))
    }

    fn workspace(&self, http: &dyn Fn(&str) -> String, _key: &dyn Fn(&str) -> String) -> String {
        format!("webhook {}", http(&self.base_url))
    }
}

/// A webhook's signing secret (it names the receiver's key) and its secret headers.
pub fn credentials(secret: Secret, headers: Vec<(String, Secret)>) -> Credentials {
    Credentials {
        workspace: Some(secret.clone()),
        secrets: [("secret_env", secret)].into(),
        headers,
    }
}
