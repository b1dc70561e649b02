//! `kind = "braze_users_track"`: its keys, their checks and its credentials.

use crate::config::{self, Claim, Credentials, KindConfig, Secret};
use crate::error::Result;

/// Attribute objects per request (the partner's limit).
pub const MAX_OBJECTS: usize = 75;

/// 3,000 requests per 3 seconds.
pub const DEFAULT_RPS: f64 = 1000.0;

/// How `/users/track` records membership.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    /// A boolean attribute per cohort, `true` for members, `false` once they leave.
    #[default]
    Boolean,
    /// One array attribute shared by the cohorts, changed with `add` / `remove`.
    Array,
}

/// `kind = "braze_users_track"`: its keys (besides the delivery settings).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The workspace's REST endpoint, e.g. `https://rest.iad-01.braze.com`.
    pub base_url: String,
    /// Environment variable holding the workspace REST API key (sent as
    /// `Authorization: Bearer`).
    pub api_key_env: String,
    /// A boolean attribute per cohort, or one array attribute.
    #[serde(default)]
    pub membership: Membership,
    /// The attribute's name. Default `cohort_<cohort_id>` for a boolean, `cohorts` for an
    /// array.
    #[serde(default)]
    pub attribute: Option<String>,
    /// Send `_update_existing_only` so unknown ids create no profile (their item-level errors
    /// become dead letters). Default true.
    #[serde(default = "yes")]
    pub update_existing_only: bool,
}

fn yes() -> bool {
    true
}

impl Config {
    pub const KEYS: &'static [&'static str] = &[
        "base_url",
        "api_key_env",
        "membership",
        "attribute",
        "update_existing_only",
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
        out.extend(config::env_var_problem(
            &format!("{key}.api_key_env"),
            &self.api_key_env,
        ));
        if let Some(a) = &self.attribute
            && (a.is_empty() || a.len() > 255 || a.starts_with('$'))
        {
            out.push(format!(
                "{key}.attribute: must be 1 to 255 characters, not starting with `$`, got `{a}`"
            ));
        }
    }

    fn credentials(&self, read: &config::ReadSecret<'_>) -> Result<Credentials> {
        Ok(credentials(read("api_key_env", &self.api_key_env)?))
    }

    fn workspace(&self, http: &dyn Fn(&str) -> String, key: &dyn Fn(&str) -> String) -> String {
        format!(
            "users_track {} {}",
            http(&self.base_url),
            key(&self.api_key_env)
        )
    }

    fn claim(&self, cohort_id: &str) -> Claim {
        match self.membership {
            Membership::Boolean => Claim::Boolean(
                self.attribute
                    .clone()
                    .unwrap_or_else(|| format!("cohort_{cohort_id}")),
            ),
            Membership::Array => {
                Claim::ArrayValue(self.attribute.clone().unwrap_or_else(|| "cohorts".into()))
            }
        }
    }
}

/// A workspace REST API key: sent as `Authorization: Bearer`, names the workspace.
pub fn credentials(api_key: Secret) -> Credentials {
    Credentials {
        workspace: Some(api_key.clone()),
        secrets: [("api_key_env", api_key)].into(),
        headers: Vec::new(),
    }
}
