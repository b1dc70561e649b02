//! `report`: one self-contained HTML report of the lake (built by `crate::report`), and a JSON
//! line on stdout saying what was written.

use std::path::{Path, PathBuf};

use clap::Args;

use super::args::AtArg;
use crate::error::{Result, exit};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Where to write it.
    #[arg(long, default_value = "report.html")]
    out: PathBuf,
    #[command(flatten)]
    at: AtArg,
}

/// `report`: writes the report for the project's lake to `out` and prints a JSON line.
pub async fn run(config_file: &Path, a: ReportArgs) -> Result<i32> {
    let config = crate::destinations::load_config(config_file)?;
    let lake = crate::project::open_lake(&config).await?;
    let line = crate::report::write(&config, &lake, &a.out, a.at.at).await?;
    println!("{line}");
    Ok(exit::OK)
}
