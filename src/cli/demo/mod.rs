//! `demo`: the whole outbound loop on one laptop with no setup. Generates a small deterministic
//! lake under the project's lake path (reused when present), starts the partner emulator
//! in-process, syncs every configured cohort to it twice (a full sync, then an incremental one a
//! day later) through Cohort Import and through `/users/track`, and after each run compares
//! what the partner holds (cohort members; profiles with the attribute) with what the cohort
//! query returns. Exit 0 only if every cohort matches exactly every time.
//!
//! `partner` sets up the emulator and the two ways to it, `rounds` runs the syncs and compares,
//! `engagement` is the way back (campaigns, the planted lift, `ingest`), `lift` the analyses
//! that must find the planted effect; this file runs them in turn and prints the results.

mod engagement;
mod lift;
mod partner;
mod rounds;

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::{Error, Result, exit};
use crate::lake::Location;
use crate::synth::{self, SynthSpec};
use lift::{LiftTable, Recovered};
use rounds::Row;

/// The demo lake: small enough to generate in seconds, big enough to be interesting.
pub const DEMO_USERS: u64 = 50_000;
pub const DEMO_DAYS: u32 = 45;
pub const DEMO_SEED: u64 = 42;
/// The demo lake's last day, and the run time the demo syncs at (the next midnight).
pub fn demo_end_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 27).expect("valid date")
}
pub fn demo_at() -> DateTime<Utc> {
    demo_end_date()
        .succ_opt()
        .expect("valid date")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
}

/// `demo`.
pub async fn run(config_file: &Path) -> Result<i32> {
    let config = crate::destinations::load_config(config_file)?;
    let location = Location::parse(&config.lake.url, &config.base_dir(), &config.lake.options)?;
    ensure_lake(&location).await?;
    // The feature uses an earlier demo's pushes caused are not part of the generated world:
    // every demo starts from the lake `generate` wrote.
    synth::remove_feature_uses(location.store.as_ref(), &location.root, engagement::PLANTED)
        .await
        .map_err(Error::storage_of)?;

    let mut setup = partner::Setup::start(config).await?;
    let lake = crate::project::open_lake(&setup.config).await?;
    let track_lake = crate::project::open_lake(&setup.track_config).await?;
    let result = rounds::run(&mut setup, &location, lake, track_lake).await;
    setup.emulator.shutdown();
    let (config, state_dir) = (&setup.config, &setup.state_dir);
    let analyses = match &result {
        Ok(done) => Some(lift::analyses(config, &done.lake).await),
        Err(_) => None,
    };
    // The report, while the run history (in the throwaway state area) is still there.
    let report_file = config.base_dir().join("report.html");
    let report = match &analyses {
        Some(Ok(_)) => {
            // A lake opened now sees the last runs.
            match crate::project::open_lake(config).await {
                Ok(lake) => {
                    crate::report::write(
                        config,
                        &lake,
                        &report_file.display().to_string(),
                        Some(demo_at()),
                        None,
                    )
                    .await
                }
                Err(e) => Err(e),
            }
        }
        _ => Ok(serde_json::Value::Null),
    };
    let _ = std::fs::remove_dir_all(state_dir);
    let done = result?;
    let (push_to_feature, lift) = analyses.expect("the rounds succeeded")?;
    let report = report?;
    let lift_spec = done.engagement.map(|e| e.lift).unwrap_or_default();
    let recovered = lift.recovered(&lift_spec);
    let all = print_results(&done.rows, &push_to_feature, &lift, &recovered);
    println!(
        "\nThe report (cohorts, delivery, ingest, funnel, lift): {} ({} of {} sections with data)",
        report_file.display(),
        report["sections"].as_u64().unwrap_or(0)
            - report["sections_without_data"].as_u64().unwrap_or(0),
        report["sections"]
    );
    Ok(if all && recovered.all {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// The table of runs, whether every cohort matched, the analyses and whether the lift was
/// recovered; returns whether every cohort matched.
fn print_results(
    rows: &[Row],
    push_to_feature: &str,
    lift: &LiftTable,
    recovered: &Recovered,
) -> bool {
    println!();
    println!(
        "{:<17} {:<26} {:>8} {:>8} {:>7} {:>7} {:>13} {:>8} {:>5}",
        "run at (UTC)",
        "cohort",
        "members",
        "held out",
        "adds",
        "removes",
        "partner holds",
        "requests",
        "match"
    );
    for r in rows {
        println!(
            "{:<17} {:<26} {:>8} {:>8} {:>7} {:>7} {:>13} {:>8} {:>5}",
            r.at,
            r.name,
            r.members,
            r.held_out,
            r.adds,
            r.removes,
            r.held,
            r.requests,
            if r.matches { "yes" } else { "NO" }
        );
    }
    let all = rows.iter().all(|r| r.matches);
    println!(
        "\n{}",
        if all {
            "every cohort matches after every run: the partner holds exactly what the cohort queries return"
        } else {
            "MISMATCH: the partner does not hold what the cohort queries return"
        }
    );
    println!(
        "\nAfter the push (queries/analysis/push_open_to_feature.sql over partner_events ⋈ events):\n{push_to_feature}"
    );
    println!(
        "\nLift: treated against held-out members (queries/analysis/lift.sql over cohort_changes ⋈ partner_events ⋈ events):\n{}",
        lift.table
    );
    for line in &recovered.lines {
        println!("{line}");
    }
    if !recovered.all {
        println!("MISMATCH: the lift analysis did not recover the planted effect");
    }
    all
}

/// Generates the demo lake unless a finished one (with its marker) is already there.
async fn ensure_lake(location: &Location) -> Result<()> {
    let existing = synth::read_marker(location.store.as_ref(), &location.root)
        .await
        .map_err(Error::storage_of)?;
    if existing.is_some() {
        eprintln!("reusing the lake at {}", location.url);
        return Ok(());
    }
    eprintln!(
        "generating a demo lake at {} ({DEMO_USERS} users, {DEMO_DAYS} days to {})",
        location.url,
        demo_end_date()
    );
    let spec = SynthSpec::new(DEMO_USERS, DEMO_DAYS, DEMO_SEED, demo_end_date());
    synth::generate(location.store.clone(), &location.root, &spec)
        .await
        .map_err(Error::storage_of)?;
    Ok(())
}
