//! `kind = "iterable"`: its keys, their checks and its credentials.

use crate::config::{self, Claim, Credentials, KindConfig, Secret};
use crate::error::Result;

/// Subscribers per request at most. Iterable documents no cap for `/api/lists/subscribe`
/// and `/unsubscribe`: this bound is ours (10,000 emails are ~400 KB, a tenth of the 4 MB
/// Iterable documents for its bulk user endpoint).
pub const MAX_BATCH: usize = 10_000;

/// Subscribers per request when the config does not say (ours: no documented figure).
pub const DEFAULT_BATCH: usize = 1_000;

/// Requests per second per endpoint when the config does not say. Iterable documents no rate
/// for the list endpoints: this is ours, its documented rate for `/api/users/bulkUpdate`.
pub const DEFAULT_RPS: f64 = 5.0;

/// The data centers' API hosts.
pub const US_URL: &str = "https://api.iterable.com";
pub const EU_URL: &str = "https://api.eu.iterable.com";

/// Where the project lives (all of an organization's projects are in one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    #[default]
    Us,
    Eu,
}

/// How the project identifies users (chosen when it was created; it cannot change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectType {
    /// `email` and `userId` both identify users: a member is sent by its row's kind.
    Hybrid,
    /// `userId` only: members must be user ids.
    UserId,
    /// `email` only (not available in the EU data center): members must be emails.
    Email,
}

/// `kind = "iterable"`: its keys (besides the delivery settings).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The static list that holds the cohort (Iterable's numeric list id).
    pub list_id: u64,
    /// `hybrid`, `user_id` or `email`, as the project was created.
    pub project_type: ProjectType,
    /// `us` (default) or `eu`.
    #[serde(default)]
    pub region: Region,
    /// Overrides the region's host (tests, proxies); the region still names the data center.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the project's server-side API key (header `Api-Key`).
    pub api_key_env: String,
    /// Send `updateExistingUsersOnly` so a sync creates no users (unknown ones come back as
    /// not found and become dead letters). Default true.
    #[serde(default = "yes")]
    pub update_existing_only: bool,
}

fn yes() -> bool {
    true
}

impl Config {
    pub const KEYS: &'static [&'static str] = &[
        "list_id",
        "project_type",
        "region",
        "base_url",
        "api_key_env",
        "update_existing_only",
    ];

    /// The API host requests go to.
    pub fn url(&self) -> &str {
        self.base_url.as_deref().unwrap_or(match self.region {
            Region::Us => US_URL,
            Region::Eu => EU_URL,
        })
    }
}

impl KindConfig for Config {
    fn base_url(&self) -> Option<&str> {
        Some(self.url())
    }

    fn problems(&self, key: &str, out: &mut Vec<String>) {
        if let Some(url) = &self.base_url {
            out.extend(config::http_url_problem(&format!("{key}.base_url"), url));
        }
        out.extend(config::env_var_problem(
            &format!("{key}.api_key_env"),
            &self.api_key_env,
        ));
        if self.list_id == 0 {
            out.push(format!(
                "{key}.list_id: must be the static list's id (a positive number), got 0"
            ));
        }
        if self.project_type == ProjectType::Email && self.region == Region::Eu {
            out.push(format!(
                "{key}.project_type: email-based projects are not available in Iterable's EU \
                 data center (region = \"eu\"); an EU project is `hybrid` or `user_id`"
            ));
        }
    }

    fn credentials(&self, read: &config::ReadSecret<'_>) -> Result<Credentials> {
        Ok(credentials(read("api_key_env", &self.api_key_env)?))
    }

    fn workspace(&self, http: &dyn Fn(&str) -> String, key: &dyn Fn(&str) -> String) -> String {
        format!("iterable {} {}", http(self.url()), key(&self.api_key_env))
    }

    /// Every cohort of the destination writes its one list.
    fn claim(&self, _cohort_id: &str) -> Claim {
        Claim::Named(format!("the static list {}", self.list_id))
    }
}

/// A project's API key: sent as `Api-Key`, names the project.
pub fn credentials(api_key: Secret) -> Credentials {
    Credentials {
        workspace: Some(api_key.clone()),
        secrets: [("api_key_env", api_key)].into(),
        headers: Vec::new(),
    }
}
