//! `sync`: one cohort from SQL to the partner — members, create or rename the cohort, then every
//! batch delivered and acknowledged — and the one-line summary a scheduler reads.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::info;

use crate::cohort;
use crate::config::{Config, Credentials};
use crate::deliver::destination::braze::Braze;
use crate::deliver::plan::{batches, encode_in_background};
use crate::deliver::sender::Sender;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::sql::Params;
use crate::progress::Progress;
use datafusion::arrow::array::Array;

/// How a run was asked to behave.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// The run's logical time: `$run_ts`, `$run_date`, and the cohort's `created_at`.
    pub at: DateTime<Utc>,
    /// Draw a progress bar (only ever on a terminal).
    pub progress: bool,
}

/// The one-line JSON summary printed on stdout per cohort.
#[derive(Debug, Clone, Serialize)]
pub struct SyncSummary {
    pub cohort: String,
    pub cohort_id: String,
    pub destination: String,
    pub outcome: &'static str,
    pub members: u64,
    pub rows: u64,
    pub nulls_skipped: u64,
    pub empty_skipped: u64,
    pub duplicates_removed: u64,
    pub batches: u64,
    pub requests: u64,
    pub retries: u64,
    pub query_seconds: f64,
    pub seconds: f64,
}

/// Syncs one cohort: every member is acknowledged by the partner, or an error says why not.
pub async fn sync_cohort(
    config: &Config,
    lake: &Lake,
    name: &str,
    credentials: &Credentials,
    options: SyncOptions,
) -> Result<SyncSummary> {
    let started = Instant::now();
    let cohort = config
        .cohort(name)
        .map_err(|m| Error::config(config.file.clone(), m))?;
    let dest = config.destination(&cohort.destination)?;

    let members = cohort::members(lake, &cohort, &Params { run_ts: options.at }).await?;
    let query_seconds = started.elapsed().as_secs_f64();
    info!(
        cohort = %cohort.name,
        members = members.ids.len(),
        nulls_skipped = members.nulls_skipped,
        duplicates_removed = members.duplicates_removed,
        seconds = query_seconds,
        "cohort computed"
    );

    let braze = Arc::new(Braze::new(dest, credentials, &cohort));
    let sender = Sender::new(dest)?;
    sender
        .send(&braze.create_cohort(options.at))
        .await
        .map_err(|e| explain_rejection(e, config, &cohort.destination))?;

    let plan = batches(members.ids.len(), dest.batch_size);
    let planned = plan.len() as u64;
    let progress = Progress::new(options.progress, planned, &cohort.name);
    let requests = encode_in_background(
        braze,
        members.ids.clone(),
        plan,
        false,
        (dest.max_in_flight * 2).max(16),
    );
    sender
        .send_all(requests, |_| progress.inc())
        .await
        .map_err(|e| explain_rejection(e, config, &cohort.destination))?;
    progress.finish();

    let stats = sender.stats();
    let summary = SyncSummary {
        cohort: cohort.name.clone(),
        cohort_id: cohort.cohort_id.clone(),
        destination: cohort.destination.clone(),
        outcome: "delivered",
        members: members.ids.len() as u64,
        rows: members.rows,
        nulls_skipped: members.nulls_skipped,
        empty_skipped: members.empty_skipped,
        duplicates_removed: members.duplicates_removed,
        batches: stats.acked_batches,
        requests: stats.requests,
        retries: stats.retries,
        query_seconds,
        seconds: started.elapsed().as_secs_f64(),
    };
    info!(cohort = %summary.cohort, batches = summary.batches, requests = summary.requests,
        retries = summary.retries, seconds = summary.seconds, "cohort delivered");
    Ok(summary)
}

/// A 401 names the environment variables that hold the keys, so the fix is obvious.
fn explain_rejection(e: Error, config: &Config, destination: &str) -> Error {
    match e {
        Error::PartnerRejected {
            what,
            status: 401,
            message,
        } => {
            let hint = config
                .destinations
                .get(destination)
                .map(|d| {
                    format!(
                        " (check {} and {} for destination `{destination}`)",
                        d.partner_api_key_env, d.client_secret_env
                    )
                })
                .unwrap_or_default();
            Error::PartnerRejected {
                what,
                status: 401,
                message: format!("{message}{hint}"),
            }
        }
        other => other,
    }
}
