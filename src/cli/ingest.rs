//! `ingest`: partner event files into the lake, one JSON summary line per source on stdout,
//! each run recorded in the run history and its metrics emitted.

use std::path::Path;

use chrono::{NaiveDate, Utc};
use clap::Args;

use super::args::MetricsArgs;
use crate::config::Config;
use crate::error::{Error, Result, exit};
use crate::metrics::{Metrics, MetricsOut};
use crate::state::new_run_id;
use crate::state::runs::{self, RunRecord};

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Only this source (default: every `[sources.*]`).
    #[arg(long)]
    source: Option<String>,
    /// First event_date to backfill (inclusive); needs --to.
    #[arg(long, requires = "to")]
    from: Option<NaiveDate>,
    /// Last event_date to backfill (inclusive); needs --from.
    #[arg(long, requires = "from")]
    to: Option<NaiveDate>,
    /// Make progress durable (switch the days being written, record the files done) at
    /// most every this many seconds; a run that dies resumes from there. 0: after every file.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    checkpoint_every: u64,
    /// Never draw a progress bar (it is only drawn on a terminal anyway), as `sync`.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// `ingest` with its flags.
pub async fn run(config_file: &Path, args: IngestArgs) -> Result<i32> {
    let options = crate::ingest::IngestOptions {
        range: args.from.zip(args.to),
        progress: !args.no_progress,
        checkpoint_every: Some(std::time::Duration::from_secs(args.checkpoint_every)),
    };
    ingest(
        config_file,
        args.source.as_deref(),
        options,
        &args.metrics.into(),
    )
    .await
}

/// `ingest`: every source (or one), one JSON line each; exit 3 if anything was quarantined.
pub async fn ingest(
    config_file: &Path,
    source: Option<&str>,
    options: crate::ingest::IngestOptions,
    metrics: &MetricsOut,
) -> Result<i32> {
    let config = crate::destinations::load_config(config_file)?;
    metrics.check(&config)?;
    if let Some((from, to)) = options.range
        && from > to
    {
        return Err(Error::config(
            None,
            format!("--from {from} is after --to {to}"),
        ));
    }
    let names = source_names(&config, source)?;
    let lake = crate::project::open_lake(&config).await?;
    let mut code = exit::OK;
    for name in &names {
        let this_code = ingest_one(&config, &lake, name, &options, metrics).await;
        if code == exit::OK {
            code = this_code;
        }
    }
    Ok(code)
}

/// The sources to ingest: the one named (which the project must define), or every one.
fn source_names(config: &Config, source: Option<&str>) -> Result<Vec<String>> {
    Ok(match source {
        Some(s) if config.sources.contains_key(s) => vec![s.to_string()],
        Some(s) => {
            return Err(Error::config(
                config.file.clone(),
                format!(
                    "no source named `{s}` (configured: {})",
                    config
                        .sources
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        None if config.sources.is_empty() => {
            return Err(Error::config(
                config.file.clone(),
                "no [sources.<name>] configured",
            ));
        }
        None => config.sources.keys().cloned().collect(),
    })
}

/// One source: the ingest, its line on stdout, its history row and metrics; its exit code.
async fn ingest_one(
    config: &Config,
    lake: &crate::lake::Lake,
    name: &str,
    options: &crate::ingest::IngestOptions,
    metrics: &MetricsOut,
) -> i32 {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let result =
        crate::ingest::ingest_source(config, lake, name, &config.sources[name], options).await;
    let this_code = match &result {
        Ok(s) if s.quarantined_records > 0 || s.broken_files > 0 => exit::PARTIAL,
        Ok(_) => exit::OK,
        Err(e) => e.exit_code(),
    };
    let mut record = RunRecord {
        command: "ingest".into(),
        cohort: None,
        destination: Some(name.to_string()),
        started_at,
        exit_code: this_code,
        ..RunRecord::default()
    };
    match &result {
        Ok(s) => {
            println!("{}", serde_json::to_string(s).expect("summary is JSON"));
            record.run_id = s.run_id.clone();
            record.outcome = if this_code == exit::OK {
                "ingested"
            } else {
                "ingested_with_quarantine"
            }
            .into();
            record.members = Some(s.events_added);
            record.dead_letters = Some(s.quarantined_records + s.broken_files);
        }
        Err(e) => {
            let e = crate::redact::scrubbed(e.to_string());
            eprintln!("error: source `{name}`: {e}");
            println!(
                "{}",
                serde_json::json!({"source": name, "outcome": "failed", "exit_code": this_code, "error": e})
            );
            record.run_id = new_run_id();
            record.outcome = if this_code == exit::LOCKED {
                "locked"
            } else {
                "failed"
            }
            .into();
            record.error = Some(e);
        }
    }
    record.ended_at = Utc::now();
    if let Err(e) = runs::append(&lake.state, &record).await {
        tracing::error!(error = %e, "cannot record the run in the run history");
    }
    if !metrics.is_empty() {
        let mut m = Metrics::default();
        m.ingest_run(
            name,
            result.as_ref().ok(),
            this_code,
            record.ended_at,
            clock.elapsed(),
        );
        metrics.emit(&[("source", name)], m).await;
    }
    this_code
}
