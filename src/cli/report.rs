//! `report`: one self-contained HTML report of the lake (built by `crate::report`), and a JSON
//! line on stdout saying what was written.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::Args;

use super::args::{AtArg, parse_at};
use crate::error::{Result, exit};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Where to write it: a local path, or an object-store URL (s3://, gs://, az://) written
    /// with the lake's options.
    #[arg(long, default_value = "report.html")]
    out: String,
    /// Only what happened since then (binds `$since` in the sections' SQL): a time or a date,
    /// UTC, as --at. Default: everything.
    #[arg(long, value_parser = parse_at)]
    since: Option<DateTime<Utc>>,
    #[command(flatten)]
    at: AtArg,
}

/// `report`: writes the report for the project's lake to `out` and prints a JSON line.
pub async fn run(config_file: &Path, a: ReportArgs) -> Result<i32> {
    let config = crate::destinations::load_config(config_file)?;
    let lake = crate::project::open_lake(&config).await?;
    let line = crate::report::write(&config, &lake, &a.out, a.at.at, a.since).await?;
    println!("{line}");
    Ok(exit::OK)
}
