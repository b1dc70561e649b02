//! `sync`: deliver cohorts to their destination, one JSON summary line per cohort on stdout,
//! each run recorded in the run history and its metrics emitted.

use std::path::Path;

use chrono::Utc;
use clap::Args;

use super::args::{AtArg, MetricsArgs};
use crate::config::{Config, Credentials, env_lookup};
use crate::error::{Error, Result, exit};
use crate::lake::Lake;
use crate::metrics::{Metrics, MetricsOut};
use crate::state::new_run_id;
use crate::state::runs::{self, RunRecord};
use crate::sync::{SyncOptions, SyncSummary, sync_cohort};

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Cohort names from the project file.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    cohorts: Vec<String>,
    /// Every cohort of the project file, one after the other.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    at: AtArg,
    /// Never draw a progress bar (it is only drawn on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Compute and print the change (members, adds, removes, requests, samples); send
    /// nothing, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Re-send every member, not only the adds (repair after loss at the partner).
    #[arg(long)]
    full: bool,
    /// Send removals even when the query returned no rows or they exceed
    /// `state.max_removal_share` of the cohort.
    #[arg(long)]
    allow_mass_removal: bool,
    /// Deliver only shard K of N (0-based): the members whose stable hash of user_id
    /// is K mod N, with their own plan, journal, lock and snapshot. Run N of these (on N
    /// machines) for the whole cohort; each uses 1/N of the destination's rate limit.
    #[arg(long, value_name = "K/N")]
    shard: Option<crate::cohort::shard::Shard>,
    /// Requests per second for this run, overriding the destination's
    /// `requests_per_second` (and a shard's 1/N share of it).
    #[arg(long, value_name = "R")]
    requests_per_second: Option<f64>,
    /// The destination's base_url, partner or workspace key changed but it is the same
    /// workspace: keep the committed state (what it holds) and send only the change.
    #[arg(long, conflicts_with = "new_workspace")]
    rebind: bool,
    /// The destination is a new, empty workspace: send every member (the old state is kept
    /// under replaced/).
    #[arg(long)]
    new_workspace: bool,
    /// Sync at an `--at` earlier than the last committed run's: the partner is rolled back
    /// to the cohort as it was then (refused without this flag).
    #[arg(long)]
    allow_rewind: bool,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// `sync` with its flags.
pub async fn run(config_file: &Path, args: SyncArgs) -> Result<i32> {
    let options = SyncOptions {
        at: args.at.at.unwrap_or_else(chrono::Utc::now),
        progress: !args.no_progress,
        dry_run: args.dry_run,
        full: args.full,
        allow_mass_removal: args.allow_mass_removal,
        shard: args.shard,
        requests_per_second: args.requests_per_second,
        rebind: args.rebind,
        new_workspace: args.new_workspace,
        allow_rewind: args.allow_rewind,
    };
    sync(config_file, &args.cohorts, options, &args.metrics.into()).await
}

/// `sync`: every named cohort (none named: every cohort of the project, `sync --all`), one JSON
/// line each on stdout; the exit code of the first failure.
pub async fn sync(
    config_file: &Path,
    cohorts: &[String],
    options: SyncOptions,
    metrics: &MetricsOut,
) -> Result<i32> {
    let config = crate::destinations::load_config(config_file)?;
    let conflicts = config.conflicts(&env_lookup);
    if !conflicts.is_empty() {
        return Err(Error::config(config.file.clone(), conflicts.join("\n  ")));
    }
    metrics.check(&config)?;
    let all: Vec<String>;
    let cohorts = if cohorts.is_empty() {
        all = config.cohorts.keys().cloned().collect();
        if all.is_empty() {
            return Err(Error::config(
                config.file.clone(),
                "`sync --all`: the file defines no [cohorts.*]",
            ));
        }
        &all
    } else {
        cohorts
    };
    // Usage problems first, before any work: unknown cohorts, unset secrets (a dry run sends
    // nothing, so it needs no keys: without them it diffs against the committed state as is).
    let mut credentials = Vec::new();
    for name in cohorts {
        let cohort = config
            .cohort(name)
            .map_err(|m| Error::config(config.file.clone(), m))?;
        let read = config.credentials(&cohort.destination, &env_lookup);
        credentials.push(match read {
            Err(e) if options.dry_run => {
                tracing::info!(cohort = %name, "dry run without the destination's keys: {e}");
                Credentials::default()
            }
            read => read?,
        });
    }
    // SIGTERM/SIGINT stop a sync cleanly (see `signals`).
    crate::signals::install();
    let lake = crate::project::open_lake(&config).await?;
    let mut code = exit::OK;
    for (name, creds) in cohorts.iter().zip(&credentials) {
        if let Some(signal) = crate::signals::received() {
            // The cohorts not started are simply not synced (no history row).
            return Ok(if code == exit::OK {
                exit::SIGNALLED + signal
            } else {
                code
            });
        }
        let this_code = sync_one(&config, &lake, name, creds, options, metrics).await;
        if code == exit::OK {
            code = this_code;
        }
    }
    Ok(code)
}

/// One cohort: the sync, its line on stdout, its history row and metrics; its exit code.
async fn sync_one(
    config: &Config,
    lake: &Lake,
    name: &str,
    creds: &Credentials,
    options: SyncOptions,
    metrics: &MetricsOut,
) -> i32 {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let result = sync_cohort(config, lake, name, creds, options).await;
    let this_code = match &result {
        Ok(s) if s.dead_letters > 0 => exit::PARTIAL,
        Ok(_) => exit::OK,
        Err(e) => e.exit_code(),
    };
    let mut record = RunRecord {
        command: match options.shard {
            Some(shard) => format!("sync --shard {shard}"),
            None => "sync".into(),
        },
        cohort: Some(name.to_string()),
        destination: config.cohort(name).ok().map(|c| c.destination),
        started_at,
        run_at: Some(options.at),
        exit_code: this_code,
        ..RunRecord::default()
    };
    report(name, &result, this_code, &mut record);
    // A dry run changes nothing anywhere, its history and metrics included.
    if !options.dry_run {
        record.ended_at = Utc::now();
        if let Err(e) = runs::append(&lake.state, &record).await {
            tracing::error!(error = %e, run = %record.run_id, "cannot record the run in the run history");
        }
        if !metrics.is_empty() {
            let destination = record.destination.clone().unwrap_or_default();
            let shard = options.shard.map(|s| s.to_string());
            let mut m = Metrics::default();
            m.sync_run(
                name,
                &destination,
                shard.as_deref(),
                result.as_ref().ok(),
                this_code,
                record.ended_at,
                clock.elapsed(),
            );
            let group = [
                ("cohort", name),
                ("destination", destination.as_str()),
                ("shard", shard.as_deref().unwrap_or("")),
            ];
            metrics.emit(&group, m).await;
        }
    }
    this_code
}

/// Prints a cohort's line (its summary, or its error also on stderr) and fills its history row.
fn report(name: &str, result: &Result<SyncSummary>, this_code: i32, record: &mut RunRecord) {
    match result {
        Ok(summary) => {
            println!(
                "{}",
                serde_json::to_string(summary).expect("summary is JSON")
            );
            record.run_id = summary.run_id.clone();
            record.outcome = summary.outcome.to_string();
            record.members = Some(summary.members);
            record.adds = Some(summary.adds);
            record.removes = Some(summary.removes);
            record.requests = Some(summary.requests);
            record.retries = Some(summary.retries);
            record.dead_letters = Some(summary.dead_letters);
        }
        Err(e) => {
            let text = crate::redact::scrubbed(e.to_string());
            eprintln!("error: cohort `{name}`: {text}");
            let outcome = match e {
                Error::Locked(_) => "locked",
                Error::Interrupted { .. } => "interrupted",
                _ => "failed",
            };
            let line = serde_json::json!({
                "cohort": name, "outcome": outcome, "exit_code": this_code, "error": text,
            });
            println!("{line}");
            record.run_id = new_run_id();
            record.outcome = outcome.into();
            record.error = Some(text);
        }
    }
}
