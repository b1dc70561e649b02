//! The demo's syncs: two rounds a day apart, every cohort through Cohort Import and through
//! `/users/track`, each compared with what the cohort query returns.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::demo_at;
use super::engagement::return_path;
use super::partner::Setup;
use crate::cohort;
use crate::emulator::currents::EngagementSpec;
use crate::error::{Error, Result};
use crate::lake::sql::Params;
use crate::lake::{Lake, Location};
use crate::state::runs::RunRecord;
use crate::sync::{SyncOptions, SyncSummary, sync_cohort};

/// What the rounds leave: the lake as the last round saw it, a row per sync, and the
/// engagement the partner exported between the rounds.
pub(super) struct Done {
    pub lake: Lake,
    pub rows: Vec<Row>,
    pub engagement: Option<EngagementSpec>,
}

/// Two hourly-style runs a day apart: a first full sync, then an incremental one that sends
/// only who entered and who left.
pub(super) async fn run(
    setup: &mut Setup,
    location: &Location,
    mut lake: Lake,
    mut track_lake: Lake,
) -> Result<Done> {
    let names: Vec<String> = setup.config.cohorts.keys().cloned().collect();
    let mut rows = Vec::new();
    let rounds = [demo_at() - chrono::Duration::days(1), demo_at()];
    let mut engagement = None;
    for (round, at) in rounds.into_iter().enumerate() {
        if round == 1 {
            // Between the runs, the partner's campaigns go out to what it holds, users
            // react in the product, and the engagement comes back into the lake.
            let held: Vec<(String, Vec<String>)> = names
                .iter()
                .filter_map(|n| setup.config.cohort(n).ok())
                .map(|c| {
                    let held = setup.emulator.members(&c.cohort_id).unwrap_or_default();
                    (c.cohort_id.clone(), held)
                })
                .collect();
            engagement = Some(
                return_path(&mut setup.config, &lake, location, &setup.state_dir, &held).await?,
            );
            // Tables list their files when they are opened: open the lake again to see
            // the feature uses the pushes caused (each command of a real schedule is a
            // process of its own, and opens the lake as it is then).
            lake = crate::project::open_lake(&setup.config).await?;
            track_lake = crate::project::open_lake(&setup.track_config).await?;
        }
        for name in &names {
            sync_both_ways(setup, &lake, &track_lake, name, at, &mut rows).await?;
        }
    }
    Ok(Done {
        lake,
        rows,
        engagement,
    })
}

/// One cohort at `at`: synced through Cohort Import (recorded in the run history, its summary
/// printed) and through `/users/track`, each compared with what its query returns.
async fn sync_both_ways(
    setup: &Setup,
    lake: &Lake,
    track_lake: &Lake,
    name: &str,
    at: DateTime<Utc>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let config = &setup.config;
    let started_at = Utc::now();
    let summary = sync_cohort(
        config,
        lake,
        name,
        &setup.cohort_import,
        SyncOptions {
            progress: true,
            ..SyncOptions::at(at)
        },
    )
    .await?;
    // The run history, as `sync` keeps it (the report charts it).
    let record = RunRecord {
        run_id: summary.run_id.clone(),
        command: "sync".into(),
        cohort: Some(name.to_string()),
        destination: Some(summary.destination.clone()),
        started_at,
        ended_at: Utc::now(),
        run_at: Some(at),
        members: Some(summary.members),
        adds: Some(summary.adds),
        removes: Some(summary.removes),
        requests: Some(summary.requests),
        retries: Some(summary.retries),
        dead_letters: Some(summary.dead_letters),
        outcome: summary.outcome.into(),
        ..RunRecord::default()
    };
    crate::state::runs::append(&lake.state, &record).await?;
    println!(
        "{}",
        serde_json::to_string(&summary).expect("summary is JSON")
    );
    // Independently of the sync: run the query again and read back what the
    // partner holds.
    let c = config
        .cohort(name)
        .map_err(|m| Error::config(config.file.clone(), m))?;
    let members = cohort::members(lake, &c, &Params::at(at)).await?;
    // The partner holds the members outside the cohort's holdout.
    let (treated, _) = crate::cohort::holdout::Holdout::of(&c.holdout).split(&members.ids);
    let expected: BTreeSet<&str> = treated.iter().flatten().collect();
    let held: BTreeSet<String> = setup
        .emulator
        .members(&c.cohort_id)
        .unwrap_or_default()
        .into_iter()
        .collect();
    rows.push(Row::new(at, name.to_string(), &expected, &summary, &held));

    // The same cohort through /users/track: the attribute is true for exactly
    // the same members.
    let t = sync_cohort(
        &setup.track_config,
        track_lake,
        name,
        &setup.track_creds,
        SyncOptions {
            progress: false,
            ..SyncOptions::at(at)
        },
    )
    .await?;
    let attributed: BTreeSet<String> = setup
        .emulator
        .attribute_true(&format!("cohort_{}", c.cohort_id))
        .into_iter()
        .collect();
    rows.push(Row::new(
        at,
        format!("{name} [users/track]"),
        &expected,
        &t,
        &attributed,
    ));
    Ok(())
}

/// A sync's row in the demo's table.
pub(super) struct Row {
    pub at: String,
    pub name: String,
    pub members: u64,
    pub held_out: u64,
    pub adds: u64,
    pub removes: u64,
    pub held: u64,
    pub requests: u64,
    pub matches: bool,
}

impl Row {
    /// A sync's row: what it did, and whether the partner holds exactly `expected`.
    fn new(
        at: DateTime<Utc>,
        name: String,
        expected: &BTreeSet<&str>,
        summary: &SyncSummary,
        held: &BTreeSet<String>,
    ) -> Row {
        Row {
            at: at.format("%Y-%m-%d %H:%M").to_string(),
            name,
            members: expected.len() as u64,
            held_out: summary.held_out,
            adds: summary.adds,
            removes: summary.removes,
            held: held.len() as u64,
            requests: summary.requests,
            matches: held.len() == expected.len()
                && held.iter().all(|h| expected.contains(h.as_str())),
        }
    }
}
