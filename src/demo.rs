//! `demo`: the whole outbound loop on one laptop with no setup. Generates a small deterministic
//! lake under the project's lake path (reused when present), starts the partner emulator
//! in-process, syncs every configured cohort to it twice (a full sync, then an incremental one a
//! day later), and after each run compares what the partner holds with what the cohort query
//! returns. Exit 0 only if every cohort matches exactly every time.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::Array;

use crate::cohort;
use crate::config::SourceConfig;
use crate::config::{Config, Credentials, Secret};
use crate::emulator::currents::{EngagementSpec, write_engagement};
use crate::emulator::{self, EmulatorConfig};
use crate::error::{Error, Result, exit};
use crate::lake::sql::{Params, SqlSource};
use crate::lake::{Lake, Location};
use crate::sync::{SyncOptions, sync_cohort};
use crate::synth::{self, SynthSpec};

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

pub async fn demo(config_file: &Path) -> Result<i32> {
    let mut config = Config::load(config_file)?;
    let location = Location::parse(&config.lake.url, &config.base_dir(), &config.lake.options)?;
    ensure_lake(&location).await?;

    // The partner: an emulator on a free loopback port, with throwaway keys.
    let nonce = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let creds = Credentials {
        partner_api_key: Secret::new(format!("demo-partner-key-{nonce:x}")),
        client_secret: Secret::new(format!("demo-client-secret-{nonce:x}")),
    };
    let partner = config
        .destinations
        .values()
        .next()
        .map(|d| d.partner.clone())
        .ok_or_else(|| {
            Error::config(
                config.file.clone(),
                "the demo needs at least one destination",
            )
        })?;
    let partner_emulator = emulator::start(
        ([127, 0, 0, 1], 0).into(),
        EmulatorConfig {
            partner: partner.clone(),
            partner_api_key: creds.partner_api_key.expose().to_string(),
            client_secret: creds.client_secret.expose().to_string(),
            ..EmulatorConfig::default()
        },
    )
    .await
    .map_err(|e| Error::Internal(format!("cannot start the emulator: {e}")))?;
    eprintln!(
        "partner emulator listening on {}",
        partner_emulator.base_url()
    );
    for d in config.destinations.values_mut() {
        d.base_url = partner_emulator.base_url();
        d.partner = partner.clone();
        // The emulator answers fast; don't wait for the real partner's hourly budget.
        d.requests_per_second = d.requests_per_second.max(1000.0);
    }

    // The emulator forgets everything when the demo ends, so the demo's state (snapshots,
    // journals, locks) must too: a throwaway state area, not the lake's `_cohort_bridge/`.
    let state_dir = std::env::temp_dir().join(format!("cohort-bridge-demo-{nonce:x}"));
    config.state.url = Some(state_dir.display().to_string());

    let lake = Lake::open(&config).await?;
    let names: Vec<String> = config.cohorts.keys().cloned().collect();
    let mut rows = Vec::new();
    // Two hourly-style runs a day apart: a first full sync, then an incremental one that sends
    // only who entered and who left.
    let rounds = [demo_at() - chrono::Duration::days(1), demo_at()];
    let result = async {
        for at in rounds {
            for name in &names {
                let summary = sync_cohort(
                    &config,
                    &lake,
                    name,
                    &creds,
                    SyncOptions {
                        progress: true,
                        ..SyncOptions::at(at)
                    },
                )
                .await?;
                println!(
                    "{}",
                    serde_json::to_string(&summary).expect("summary is JSON")
                );
                // Independently of the sync: run the query again and read back what the
                // partner holds.
                let c = config
                    .cohort(name)
                    .map_err(|m| Error::config(config.file.clone(), m))?;
                let members = cohort::members(&lake, &c, &Params { run_ts: at }).await?;
                let expected: BTreeSet<&str> = (0..members.ids.len())
                    .map(|i| members.ids.value(i))
                    .collect();
                let held: BTreeSet<String> = partner_emulator
                    .members(&c.cohort_id)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let matches = held.len() == expected.len()
                    && held.iter().all(|h| expected.contains(h.as_str()));
                rows.push(Row {
                    at: at.format("%Y-%m-%d %H:%M").to_string(),
                    name: name.clone(),
                    members: expected.len() as u64,
                    adds: summary.adds,
                    removes: summary.removes,
                    held: held.len() as u64,
                    requests: summary.requests,
                    matches,
                });
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    // What the partner holds now, for its engagement exports below.
    let held: Vec<(String, Vec<String>)> = names
        .iter()
        .filter_map(|n| config.cohort(n).ok())
        .map(|c| {
            (
                c.cohort_id.clone(),
                partner_emulator.members(&c.cohort_id).unwrap_or_default(),
            )
        })
        .collect();
    partner_emulator.shutdown();
    let engagement = match result {
        Ok(()) => return_path(&mut config, &lake, &state_dir, &held).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&state_dir);
    let analysis = engagement?;

    println!();
    println!(
        "{:<17} {:<26} {:>8} {:>7} {:>7} {:>13} {:>8} {:>5}",
        "run at (UTC)",
        "cohort",
        "members",
        "adds",
        "removes",
        "partner holds",
        "requests",
        "match"
    );
    for r in &rows {
        println!(
            "{:<17} {:<26} {:>8} {:>7} {:>7} {:>13} {:>8} {:>5}",
            r.at,
            r.name,
            r.members,
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
        "\nAfter the push (queries/analysis/push_open_to_feature.sql over partner_events ⋈ events):\n{analysis}"
    );
    Ok(if all { exit::OK } else { exit::FAILURE })
}

/// The loop's other half: the emulator exports engagement (Currents Avro) for the cohorts it
/// holds, `ingest` brings it into the lake as `partner_events`, and the push-to-feature
/// analysis runs over it joined with product events. Returns the analysis as a table.
async fn return_path(
    config: &mut Config,
    lake: &Lake,
    state_dir: &Path,
    held: &[(String, Vec<String>)],
) -> Result<String> {
    let currents = state_dir.join("currents");
    let loc = Location::parse(
        &currents.display().to_string(),
        Path::new("."),
        &Default::default(),
    )?;
    let spec = EngagementSpec {
        seed: DEMO_SEED,
        // Inside the demo lake's product events, so the 24 h after each push can be looked at.
        at: demo_at() - chrono::Duration::days(8) + chrono::Duration::hours(10),
        push_campaigns: vec![
            ("camp-offline".into(), "Try offline mode".into()),
            ("camp-playlists".into(), "Build a playlist".into()),
        ],
    };
    let report = write_engagement(loc.store.clone(), &loc.root, held, &spec)
        .await
        .map_err(|e| Error::Internal(format!("emulator engagement export: {e}")))?;
    eprintln!(
        "the partner exported {} engagement events in {} Currents Avro files ({} duplicate deliveries, {} late)",
        report.events, report.files, report.duplicates, report.late
    );
    let source = SourceConfig {
        url: currents.display().to_string(),
        table: "partner_events".into(),
    };
    config
        .sources
        .insert("demo_currents".into(), source.clone());
    if !config.tables.contains_key("partner_events") {
        crate::ingest::register_tables(lake, config)?;
    }
    let ingested =
        crate::ingest::ingest_source(config, lake, "demo_currents", &source, &Default::default())
            .await?;
    println!(
        "{}",
        serde_json::to_string(&ingested).expect("summary is JSON")
    );

    let file = config
        .base_dir()
        .join("queries/analysis/push_open_to_feature.sql");
    let text = crate::query::read_sql_file(&file)?;
    let origin = file.display().to_string();
    let df = lake
        .plan_query(
            &SqlSource {
                origin: &origin,
                text: &text,
            },
            &Params { run_ts: demo_at() },
        )
        .await?;
    let batches = lake.collect(df, &origin).await?;
    let table = crate::query::render(&batches, crate::query::Format::Table)?;
    Ok(String::from_utf8_lossy(&table).into_owned())
}

struct Row {
    at: String,
    name: String,
    members: u64,
    adds: u64,
    removes: u64,
    held: u64,
    requests: u64,
    matches: bool,
}

/// Generates the demo lake unless a finished one (with its marker) is already there.
async fn ensure_lake(location: &Location) -> Result<()> {
    let existing = synth::read_marker(location.store.as_ref(), &location.root)
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
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
        .map_err(|e| Error::Storage(e.to_string()))?;
    Ok(())
}
