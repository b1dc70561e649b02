//! `[destinations.<name>]`: the kind (read through the registry's [`KindSpec`]), the delivery
//! settings every kind shares, and their checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::kind::{self, KindConfig, KindSpec, Kinds};
use super::units::{check_rate, de_duration, human_duration, within};
use super::{Secret, url_secrets};
use crate::error::Result;

/// A destination: its kind with that kind's own keys (each kind's config type lives beside its
/// code in `src/destinations/<kind>/config.rs`), and the delivery settings every kind shares. Secrets are
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
    /// Ids per request, from 1 to the kind's `max_batch` (the partner's limit); default the
    /// kind's `default_batch` (see the registry in `destinations`).
    #[serde(default)]
    pub batch_size: usize,
    /// Requests per second across the whole run. Default: the kind's `default_rps`, the
    /// partner's limit.
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
pub(super) fn de_destinations<'de, D: Deserializer<'de>>(
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

impl DestinationConfig {
    /// Every semantic problem of this section, each naming its key under `key`
    /// (`destinations.<name>`): the kind's own, then the delivery settings'.
    pub(super) fn problems(&self, key: &str, out: &mut Vec<String>) {
        self.kind.problems(key, out);
        let max = self.spec.max_batch;
        let d = &self.delivery;
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
            out,
            &format!("{key}.request_timeout"),
            d.request_timeout,
            ms(1)..=hours(1),
        );
        within(
            out,
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
            out,
            &format!("{key}.retry.initial_backoff"),
            r.initial_backoff,
            ms(1)..=hours(1),
        );
        within(
            out,
            &format!("{key}.retry.max_backoff"),
            r.max_backoff,
            ms(1)..=hours(24),
        );
        within(
            out,
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
}
