//! `[campaigns.<campaign_id>]`: which cohort a partner campaign went to, which product feature it
//! pointed at, and how long after its first send a use counts. The one place the analyses read
//! it from: the lake registers it as the `campaigns` table, which `queries/analysis/lift.sql` and
//! the report's funnel join (`state::register_tables`).

use std::time::Duration;

use serde::Deserialize;

use super::Config;
use super::units::de_duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// The cohort (its name in this file) the campaign was sent to.
    pub cohort: String,
    /// The feature it points to: `events.feature` of the `feature_used` events.
    pub feature: String,
    /// How long after the campaign's first send a use of the feature counts. Default 24 h.
    #[serde(default = "default_window", deserialize_with = "de_duration")]
    pub window: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A campaign as the `campaigns` table has it: the cohort named both ways.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub campaign_id: String,
    pub cohort: String,
    pub cohort_id: String,
    pub destination: String,
    pub feature: String,
    pub window_hours: f64,
}

impl Config {
    /// Every campaign whose cohort exists, in `campaign_id` order.
    pub fn campaigns(&self) -> Vec<Campaign> {
        self.campaigns
            .iter()
            .filter_map(|(id, c)| {
                let cohort = self.cohort(&c.cohort).ok()?;
                Some(Campaign {
                    campaign_id: id.clone(),
                    cohort: cohort.name,
                    cohort_id: cohort.cohort_id,
                    destination: cohort.destination,
                    feature: c.feature.clone(),
                    window_hours: c.window.as_secs_f64() / 3600.0,
                })
            })
            .collect()
    }

    /// The problems of `[campaigns.*]`, each naming its key.
    pub(super) fn campaign_problems(&self, out: &mut Vec<String>) {
        for (id, c) in &self.campaigns {
            if !self.cohorts.contains_key(&c.cohort) {
                let known: Vec<&str> = self.cohorts.keys().map(String::as_str).collect();
                out.push(format!(
                    "campaigns.{id}.cohort: no cohort `{}` (the file defines: {})",
                    c.cohort,
                    known.join(", ")
                ));
            }
            if c.feature.trim().is_empty() {
                out.push(format!("campaigns.{id}.feature: must not be empty"));
            }
            if c.window.is_zero() || c.window > Duration::from_secs(90 * 24 * 3600) {
                out.push(format!(
                    "campaigns.{id}.window: must be between 1s and 90 days, got {}",
                    super::human_duration(c.window)
                ));
            }
        }
    }
}
