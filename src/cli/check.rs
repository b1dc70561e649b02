//! `check`: problems and warnings on stderr, a JSON summary on stdout, the check recorded in the
//! run history when the state area can be reached.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::Args;

use super::args::AtArg;
use crate::check::CheckReport;
use crate::config::Config;
use crate::error::{Result, exit};
use crate::lake::Location;
use crate::state::runs::{self, RunRecord};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Only these cohorts (default: every cohort).
    #[arg(conflicts_with = "all")]
    cohorts: Vec<String>,
    /// Every cohort (the default; for symmetry with `sync --all`).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    at: AtArg,
}

/// `check` with its flags.
pub async fn run(config_file: &Path, a: CheckArgs) -> Result<i32> {
    check(config_file, a.at.at, &a.cohorts).await
}

/// The `check` command: problems and warnings on stderr, a JSON summary on stdout.
pub async fn check(config_file: &Path, at: Option<DateTime<Utc>>, only: &[String]) -> Result<i32> {
    let started_at = Utc::now();
    let config = crate::destinations::load_config_unchecked(config_file)?;
    let at = at.unwrap_or_else(Utc::now);
    let report = crate::check::check_project(&config, at, only).await;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for p in &report.problems {
        eprintln!("error: {p}");
    }
    let line = serde_json::json!({
        "tables": report.tables, "cohorts": report.cohorts,
        "cohorts_planned": report.cohorts_planned, "problems": report.problems.len(),
        "warnings": report.warnings.len(),
    });
    println!("{line}");
    let code = if report.problems.is_empty() {
        exit::OK
    } else {
        exit::USAGE
    };
    record(&config, &report, started_at, at, code).await;
    Ok(code)
}

/// Appends the check to the run history when the state area can be reached (a project too
/// broken to locate it has nowhere to record; its problems were printed anyway).
async fn record(
    config: &Config,
    report: &CheckReport,
    started_at: DateTime<Utc>,
    at: DateTime<Utc>,
    code: i32,
) {
    // A URL holding credentials is not used to write anything (see `check_project`).
    if !config.url_secrets().is_empty() {
        return;
    }
    let Ok(lake) = Location::parse(&config.lake.url, &config.base_dir(), &config.lake.options)
    else {
        return;
    };
    let Ok(state) = crate::state::area(config, &lake) else {
        return;
    };
    let record = RunRecord {
        run_id: crate::state::new_run_id(),
        command: "check".into(),
        started_at,
        ended_at: Utc::now(),
        run_at: Some(at),
        outcome: if report.problems.is_empty() {
            "ok"
        } else {
            "problems"
        }
        .into(),
        exit_code: code,
        error: (!report.problems.is_empty()).then(|| report.problems.join("\n")),
        ..RunRecord::default()
    };
    if let Err(e) = runs::append(&state, &record).await {
        tracing::warn!(error = %e, "cannot record the check in the run history");
    }
}
