//! `[cohorts.<name>]` and a cohort with every default applied. Identifier kinds and the holdout
//! share are plain values here; `cohort::identity` and `cohort::holdout` give them meaning.

use std::path::PathBuf;

use serde::Deserialize;

use super::Config;

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
    /// "alias", "device_id", "braze_id"]`; `email` and `phone` are used only when named.
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
    /// An email address (column `email`), trimmed and lowercased; malformed ones are dead
    /// letters.
    Email,
    /// A phone number (column `phone`), in E.164; malformed ones are dead letters.
    Phone,
}

/// The default priority of identifier kinds.
pub const DEFAULT_IDENTIFIERS: [IdentifierKind; 4] = [
    IdentifierKind::UserId,
    IdentifierKind::Alias,
    IdentifierKind::DeviceId,
    IdentifierKind::BrazeId,
];

impl Config {
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
}
