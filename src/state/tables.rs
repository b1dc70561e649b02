//! The tables the state area adds to the lake, each unless the project declares a table of that
//! name: `runs` (the run history), `cohort_changes` (what every committed sync changed: the
//! history's id lists, each change with its cohort's name and `cohort_id`) and `campaigns` (the
//! project's `[campaigns.*]`: the one campaign → cohort → feature → window mapping the analyses
//! and the report join).

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{LogicalPlanBuilder, cast, col, lit, when};
use datafusion::prelude::DataFrame;

use super::{history, runs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::Lake;

/// Registers `runs`, `cohort_changes` and `campaigns`.
pub fn register_tables(lake: &Lake, config: &Config) -> Result<()> {
    if !config.tables.contains_key("runs") {
        lake.register_fixed(
            "runs",
            &lake.state.child_url("runs"),
            runs::schema(),
            vec![("run_date".to_string(), DataType::Date32)],
        )?;
    }
    if !config.tables.contains_key("cohort_changes") {
        register_changes(lake, config)?;
    }
    if !config.tables.contains_key("campaigns") {
        register_campaigns(lake, config)?;
    }
    Ok(())
}

fn internal(what: &str) -> impl Fn(datafusion::error::DataFusionError) -> Error + '_ {
    move |e| Error::Internal(format!("{what}: {e}"))
}

/// `cohort_changes`: the history's files, whose `cohort` partition is the `cohort_id`, with the
/// cohort's name (from the project file, by destination and `cohort_id`; the id itself for a
/// cohort the file no longer defines) as `cohort` and the id as `cohort_id`, as `runs` has them.
fn register_changes(lake: &Lake, config: &Config) -> Result<()> {
    let raw = lake.fixed_table(
        "cohort_changes",
        &lake.state.child_url(history::DIR),
        history::schema(),
        history::partitions(),
    )?;
    let fail = internal("the cohort_changes view");
    let df = lake.context().read_table(raw).map_err(&fail)?;
    let id = || cast(col("cohort"), DataType::Utf8);
    let mut names = config
        .cohorts
        .keys()
        .filter_map(|n| config.cohort(n).ok())
        .map(|c| {
            (
                col("destination")
                    .eq(lit(c.destination))
                    .and(id().eq(lit(c.cohort_id))),
                lit(c.name),
            )
        });
    let name = match names.next() {
        None => id(),
        Some((cond, name)) => {
            let mut case = when(cond, name);
            for (cond, name) in names {
                case = case.when(cond, name);
            }
            case.otherwise(id()).map_err(&fail)?
        }
    };
    let df = df
        .select(vec![
            col("user_id"),
            col("reason"),
            col("destination"),
            name.alias("cohort"),
            id().alias("cohort_id"),
            col("run_at_ms"),
            col("committed_at_ms"),
            col("op"),
        ])
        .map_err(&fail)?;
    lake.register_view("cohort_changes", df.into_view())
}

/// `campaigns(campaign_id, cohort, cohort_id, destination, feature, window_hours)`: one row per
/// `[campaigns.<id>]` whose cohort exists (`check` names the others).
fn register_campaigns(lake: &Lake, config: &Config) -> Result<()> {
    let fail = internal("the campaigns table");
    let campaigns = config.campaigns();
    let text = |s: &str| lit(s.to_string());
    // One row of the right types when there is none, filtered out: an empty table that still
    // has its columns.
    let rows: Vec<Vec<_>> = if campaigns.is_empty() {
        vec![vec![
            text(""),
            text(""),
            text(""),
            text(""),
            text(""),
            lit(0.0),
        ]]
    } else {
        campaigns
            .iter()
            .map(|c| {
                vec![
                    text(&c.campaign_id),
                    text(&c.cohort),
                    text(&c.cohort_id),
                    text(&c.destination),
                    text(&c.feature),
                    lit(c.window_hours),
                ]
            })
            .collect()
    };
    let mut plan = LogicalPlanBuilder::values(rows).map_err(&fail)?;
    if campaigns.is_empty() {
        plan = plan.filter(lit(false)).map_err(&fail)?;
    }
    let names = [
        "campaign_id",
        "cohort",
        "cohort_id",
        "destination",
        "feature",
        "window_hours",
    ];
    let plan = plan
        .project(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| col(format!("column{}", i + 1)).alias(*n)),
        )
        .map_err(&fail)?
        .build()
        .map_err(&fail)?;
    let df = DataFrame::new(lake.context().state(), plan);
    lake.register_view("campaigns", df.into_view())
}
