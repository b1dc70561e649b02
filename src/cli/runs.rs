//! `runs`: the run history (the `runs` table of the state area), newest first, as a table or
//! JSON lines on stdout.

use std::path::Path;

use clap::{Args, ValueEnum};

use crate::error::{Error, Result, exit};

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// Only this cohort's runs.
    #[arg(long)]
    cohort: Option<String>,
    /// How many runs.
    #[arg(long, default_value_t = 20)]
    last: usize,
    #[arg(long, value_enum, default_value_t = RunsFormat::Table)]
    format: RunsFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RunsFormat {
    Table,
    Json,
}

/// `runs` with its flags.
pub async fn run(config_file: &Path, a: RunsArgs) -> Result<i32> {
    runs(
        config_file,
        a.cohort.as_deref(),
        a.last,
        matches!(a.format, RunsFormat::Json),
    )
    .await
}

/// `runs`: the run history, newest first.
pub async fn runs(
    config_file: &Path,
    cohort: Option<&str>,
    last: usize,
    json: bool,
) -> Result<i32> {
    use datafusion::prelude::{col, lit};
    let config = crate::destinations::load_config(config_file)?;
    let lake = crate::project::open_lake(&config).await?;
    let mut df = lake
        .context()
        .table("runs")
        .await
        .map_err(|e| Error::query_at("runs", e))?;
    if let Some(c) = cohort {
        df = df
            .filter(col("cohort").eq(lit(c)))
            .map_err(Error::query_of)?;
    }
    let df = df
        .sort(vec![col("started_at").sort(false, true)])
        .and_then(|d| d.limit(0, Some(last)))
        .and_then(|d| {
            d.select_columns(&[
                "started_at",
                "command",
                "cohort",
                "outcome",
                "exit_code",
                "members",
                "adds",
                "removes",
                "requests",
                "retries",
                "dead_letters",
                "run_id",
                "error",
            ])
        })
        .map_err(Error::query_of)?;
    let batches = lake.collect(df, "runs").await?;
    if !json && batches.iter().all(|b| b.num_rows() == 0) {
        eprintln!("no runs recorded yet under {}", lake.state.url);
        return Ok(exit::OK);
    }
    let format = if json {
        crate::query::Format::Json
    } else {
        crate::query::Format::Table
    };
    let text = crate::query::render(&batches, format)?;
    print!("{}", String::from_utf8_lossy(&text));
    Ok(exit::OK)
}
