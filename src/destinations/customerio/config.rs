//! `kind = "customerio"`: its keys, their checks and its credentials.

use crate::config::{self, Claim, Credentials, KindConfig, Secret};
use crate::error::Result;

/// Ids per request: "You are limited to 1000 customer IDs per request" (both segment
/// endpoints; `ids` is `string[] 1…1000`).
pub const MAX_BATCH: usize = 1000;

/// Requests per second by default. The Track API's limit is 100 a second per workspace in
/// third-party summaries of Customer.io's docs (not on a Customer.io page we could read), and
/// it sends no rate-limit headers to steer by: ours is 97, leaving 3 requests a second for the
/// pacer's burst and for requests that reach the partner later than they left, so no second
/// of any sliding window holds more than 100.
pub const DEFAULT_RPS: f64 = 97.0;

/// Requests that may leave back to back (the pacer's burst): small, because the limit is per
/// second and nothing in the answers says how much of it is left.
pub const BURST: usize = 2;

/// The Track API's hosts by region.
pub const US_URL: &str = "https://track.customer.io";
pub const EU_URL: &str = "https://track-eu.customer.io";

/// Where the workspace lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Us,
    Eu,
}

/// `kind = "customerio"`: its keys (besides the delivery settings).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The workspace's region: `us` (`https://track.customer.io`) or `eu`
    /// (`https://track-eu.customer.io`). One of `region` and `base_url` is required.
    #[serde(default)]
    pub region: Option<Region>,
    /// Another Track API endpoint (a proxy, the emulator), instead of `region`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the workspace's Site ID (the HTTP Basic user name).
    pub site_id_env: String,
    /// Environment variable holding its Track API key (the HTTP Basic password).
    pub api_key_env: String,
    /// The manual segment the cohort is: its id, shown under *Usage* on the segment's page.
    pub segment_id: i64,
}

impl Config {
    pub const KEYS: &'static [&'static str] = &[
        "region",
        "base_url",
        "site_id_env",
        "api_key_env",
        "segment_id",
    ];

    /// The endpoint requests go to, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        match (&self.base_url, self.region) {
            (Some(url), _) => url.trim_end_matches('/'),
            (None, Some(Region::Eu)) => EU_URL,
            (None, _) => US_URL,
        }
    }
}

impl KindConfig for Config {
    fn base_url(&self) -> Option<&str> {
        Some(self.endpoint())
    }

    fn problems(&self, key: &str, out: &mut Vec<String>) {
        match (&self.region, &self.base_url) {
            (Some(_), Some(_)) => out.push(format!(
                "{key}: set `region` or `base_url`, not both (`base_url` replaces the region's \
                 host)"
            )),
            (None, None) => out.push(format!(
                "{key}.region: required: `region = \"us\"` (track.customer.io) or \
                 `region = \"eu\"` (track-eu.customer.io), as the workspace's account settings \
                 say (or `base_url`)"
            )),
            (None, Some(url)) => {
                out.extend(config::http_url_problem(&format!("{key}.base_url"), url));
            }
            (Some(_), None) => {}
        }
        for (field, var) in [
            ("site_id_env", &self.site_id_env),
            ("api_key_env", &self.api_key_env),
        ] {
            out.extend(config::env_var_problem(&format!("{key}.{field}"), var));
        }
        if !(1..=i64::from(i32::MAX)).contains(&self.segment_id) {
            out.push(format!(
                "{key}.segment_id: must be a manual segment's id, 1 to {}, got {}",
                i32::MAX,
                self.segment_id
            ));
        }
    }

    fn credentials(&self, read: &config::ReadSecret<'_>) -> Result<Credentials> {
        Ok(credentials(
            read("site_id_env", &self.site_id_env)?,
            read("api_key_env", &self.api_key_env)?,
        ))
    }

    fn workspace(&self, http: &dyn Fn(&str) -> String, key: &dyn Fn(&str) -> String) -> String {
        format!(
            "customerio {} {}",
            http(self.endpoint()),
            key(&self.site_id_env)
        )
    }

    /// Every cohort of the destination is its one segment.
    fn claim(&self, _cohort_id: &str) -> Claim {
        Claim::Named(format!("manual segment {}", self.segment_id))
    }
}

/// A workspace's Track API keys: the Site ID names the workspace; both are the Basic
/// credentials of every request.
pub fn credentials(site_id: Secret, api_key: Secret) -> Credentials {
    Credentials {
        workspace: Some(site_id.clone()),
        secrets: [("site_id_env", site_id), ("api_key_env", api_key)].into(),
        headers: Vec::new(),
    }
}
