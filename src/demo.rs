//! `demo`: the whole outbound loop on one laptop with no setup. Generates a small deterministic
//! lake under the project's lake path (reused when present), starts the partner emulator
//! in-process, syncs every configured cohort to it twice (a full sync, then an incremental one a
//! day later) through Cohort Import and through `/users/track`, and after each run compares
//! what the partner holds (cohort members; profiles with the attribute) with what the cohort
//! query returns. Exit 0 only if every cohort matches exactly every time.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};

use crate::cohort;
use crate::config::SourceConfig;
use crate::config::{Config, DestinationConfig, Secret};
use crate::destinations::{braze_cohorts, braze_users_track};
use crate::emulator::currents::{EngagementSpec, Lift, PushCampaign, write_engagement};
use crate::emulator::{self, EmulatorConfig};
use crate::error::{Error, Result, exit};
use crate::lake::sql::{Params, SqlSource};
use crate::lake::{Lake, Location};
use crate::state::runs::RunRecord;
use crate::sync::{SyncOptions, SyncSummary, sync_cohort};
use crate::synth::{self, SynthSpec};

/// The demo's `/users/track` destination.
const TRACK: &str = "braze_users_track";

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
    let mut config = crate::destinations::load_config(config_file)?;
    let location = Location::parse(&config.lake.url, &config.base_dir(), &config.lake.options)?;
    ensure_lake(&location).await?;
    // The feature uses an earlier demo's pushes caused are not part of the generated world:
    // every demo starts from the lake `generate` wrote.
    synth::remove_feature_uses(location.store.as_ref(), &location.root, PLANTED)
        .await
        .map_err(Error::storage_of)?;

    // The partner: an emulator on a free loopback port, with throwaway keys.
    let nonce = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let (partner_api_key, client_secret, rest_key) = (
        Secret::new(format!("demo-partner-key-{nonce:x}")),
        Secret::new(format!("demo-client-secret-{nonce:x}")),
        Secret::new(format!("demo-rest-api-key-{nonce:x}")),
    );
    let partner = config
        .destinations
        .values()
        .find_map(|d| Some(d.settings::<braze_cohorts::Config>()?.partner.clone()))
        .ok_or_else(|| {
            Error::config(
                config.file.clone(),
                "the demo needs at least one Cohort Import (`kind = \"braze\"`) destination",
            )
        })?;
    let partner_emulator = emulator::start(
        ([127, 0, 0, 1], 0).into(),
        EmulatorConfig {
            partner: partner.clone(),
            partner_api_key: partner_api_key.expose().to_string(),
            client_secret: client_secret.expose().to_string(),
            rest_api_key: rest_key.expose().to_string(),
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
        if let Some(c) = d.settings_mut::<braze_cohorts::Config>() {
            c.base_url = partner_emulator.base_url();
            c.partner = partner.clone();
        }
        // The emulator answers fast; don't wait for the real partner's hourly budget.
        d.delivery.requests_per_second = d.delivery.requests_per_second.max(1000.0);
    }

    // The emulator forgets everything when the demo ends, so the demo's state (snapshots,
    // journals, locks) must too: a throwaway state area, not the lake's `_cohort_bridge/`.
    let state_dir = std::env::temp_dir().join(format!("cohort-bridge-demo-{nonce:x}"));
    config.state.url = Some(state_dir.display().to_string());

    // The same cohorts through `/users/track`, as a Braze customer with only a workspace REST
    // API key syncs them: membership as the custom attribute `cohort_<cohort_id>`, its own
    // destination and state area (its history does not mix with the Cohort Import runs').
    let mut track_config = config.clone();
    let mut track: DestinationConfig = crate::config::with_kinds(&crate::destinations::REGISTRY, || {
        toml::from_str(&format!(
        "kind = \"braze_users_track\"\nbase_url = \"{}\"\napi_key_env = \"DEMO_REST_API_KEY\"\n\
         requests_per_second = 5000\nmax_in_flight = 16",
        partner_emulator.base_url()
    ))
    })
    .map_err(|e| Error::Internal(format!("the demo's /users/track destination: {e}")))?;
    track.delivery.batch_size = track.spec.max_batch;
    track_config.destinations = [(TRACK.to_string(), track)].into_iter().collect();
    for c in track_config.cohorts.values_mut() {
        c.destination = Some(TRACK.to_string());
    }
    track_config.state.url = Some(state_dir.join("users-track").display().to_string());
    let track_creds = braze_users_track::credentials(rest_key);

    let mut lake = crate::project::open_lake(&config).await?;
    let mut track_lake = crate::project::open_lake(&track_config).await?;
    let names: Vec<String> = config.cohorts.keys().cloned().collect();
    let mut rows = Vec::new();
    // Two hourly-style runs a day apart: a first full sync, then an incremental one that sends
    // only who entered and who left.
    let rounds = [demo_at() - chrono::Duration::days(1), demo_at()];
    let mut engagement = None;
    let result = async {
        for (round, at) in rounds.into_iter().enumerate() {
            if round == 1 {
                // Between the runs, the partner's campaigns go out to what it holds, users
                // react in the product, and the engagement comes back into the lake.
                let held: Vec<(String, Vec<String>)> = names
                    .iter()
                    .filter_map(|n| config.cohort(n).ok())
                    .map(|c| {
                        let held = partner_emulator.members(&c.cohort_id).unwrap_or_default();
                        (c.cohort_id.clone(), held)
                    })
                    .collect();
                engagement =
                    Some(return_path(&mut config, &lake, &location, &state_dir, &held).await?);
                // Tables list their files when they are opened: open the lake again to see
                // the feature uses the pushes caused (each command of a real schedule is a
                // process of its own, and opens the lake as it is then).
                lake = crate::project::open_lake(&config).await?;
                track_lake = crate::project::open_lake(&track_config).await?;
            }
            for name in &names {
                let started_at = Utc::now();
                let summary = sync_cohort(
                    &config,
                    &lake,
                    name,
                    &braze_cohorts::credentials(partner_api_key.clone(), client_secret.clone()),
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
                    cohort: Some(name.clone()),
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
                let members = cohort::members(&lake, &c, &Params { run_ts: at }).await?;
                // The partner holds the members outside the cohort's holdout.
                let (treated, _) = crate::cohort::holdout::Holdout::of(&c.holdout).split(&members.ids);
                let expected: BTreeSet<&str> = treated.iter().flatten().collect();
                let held: BTreeSet<String> = partner_emulator
                    .members(&c.cohort_id)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                rows.push(Row::new(at, name.clone(), &expected, &summary, &held));

                // The same cohort through /users/track: the attribute is true for exactly
                // the same members.
                let t = sync_cohort(
                    &track_config,
                    &track_lake,
                    name,
                    &track_creds,
                    SyncOptions {
                        progress: false,
                        ..SyncOptions::at(at)
                    },
                )
                .await?;
                let attributed: BTreeSet<String> = partner_emulator
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
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    partner_emulator.shutdown();
    let analyses = match result {
        Ok(()) => analyses(&config, &lake).await,
        Err(e) => Err(e),
    };
    // The report, while the run history (in the throwaway state area) is still there.
    let report_file = config.base_dir().join("report.html");
    let report = match &analyses {
        Ok(_) => {
            // A lake opened now sees the last runs.
            match crate::project::open_lake(&config).await {
                Ok(lake) => {
                    crate::report::write(&config, &lake, &report_file, Some(demo_at())).await
                }
                Err(e) => Err(e),
            }
        }
        Err(_) => Ok(serde_json::Value::Null),
    };
    let _ = std::fs::remove_dir_all(&state_dir);
    let (push_to_feature, lift) = analyses?;
    let report = report?;
    let lift_spec = engagement.map(|e| e.lift).unwrap_or_default();

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
    for r in &rows {
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
    let recovered = lift.recovered(&lift_spec);
    for line in &recovered.lines {
        println!("{line}");
    }
    if !recovered.all {
        println!("MISMATCH: the lift analysis did not recover the planted effect");
    }
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

/// The name of the demo's planted feature uses in the lake's `events` folders.
const PLANTED: &str = "planted-demo";

/// The demo's campaigns: each push goes to one cohort and points to one feature; the planted
/// lift makes members use it.
fn demo_campaigns() -> Vec<PushCampaign> {
    [
        (
            "sessions_without_offline",
            "camp-offline",
            "Try offline mode",
            "offline_mode",
        ),
        (
            "paid_active_30d",
            "camp-playlists",
            "Build a playlist",
            "playlists",
        ),
    ]
    .into_iter()
    .map(|(cohort, id, name, feature)| PushCampaign {
        cohort_id: Some(cohort.into()),
        campaign_id: id.into(),
        campaign_name: name.into(),
        feature: Some(feature.into()),
    })
    .collect()
}

/// The effect the demo plants: 5% of members use the feature after the push, 25% of those who
/// opened it (30% open): +11 points expected.
pub const DEMO_LIFT: Lift = Lift {
    after_send: 0.05,
    after_open: 0.25,
    within: chrono::Duration::hours(12),
};

/// `lift.sql`'s result, and whether it recovers a planted lift.
pub struct LiftTable {
    pub table: String,
    /// (campaign, held-out share that used the feature, lift, 95% interval), in points.
    pub rows: Vec<(String, f64, f64, f64, f64)>,
}

pub struct Recovered {
    pub all: bool,
    pub lines: Vec<String>,
}

impl LiftTable {
    fn from_batches(batches: &[datafusion::arrow::array::RecordBatch]) -> Result<LiftTable> {
        use datafusion::arrow::array::{AsArray, Float64Array};
        use datafusion::arrow::compute::cast;
        use datafusion::arrow::datatypes::DataType;
        let table = crate::query::render(batches, crate::query::Format::Table)?;
        let mut rows = Vec::new();
        for b in batches {
            let col = |name: &str| -> Result<Float64Array> {
                let c = b.column_by_name(name).ok_or_else(|| {
                    Error::Internal(format!("lift.sql returns no `{name}` column"))
                })?;
                let c = cast(c, &DataType::Float64).map_err(|e| Error::Internal(e.to_string()))?;
                Ok(c.as_primitive().clone())
            };
            let campaign = cast(
                b.column_by_name("campaign_id")
                    .ok_or_else(|| Error::Internal("lift.sql returns no `campaign_id`".into()))?,
                &DataType::Utf8,
            )
            .map_err(|e| Error::Internal(e.to_string()))?;
            let campaign = campaign.as_string::<i32>();
            let (base, lift, lo, hi) = (
                col("held_out_pct")?,
                col("lift_points")?,
                col("ci95_low")?,
                col("ci95_high")?,
            );
            for i in 0..b.num_rows() {
                rows.push((
                    campaign.value(i).to_string(),
                    base.value(i),
                    lift.value(i),
                    lo.value(i),
                    hi.value(i),
                ));
            }
        }
        Ok(LiftTable {
            table: String::from_utf8_lossy(&table).into_owned(),
            rows,
        })
    }

    /// Does every campaign's 95% interval hold the planted lift (net of the held-out base
    /// rate: a member who would have used the feature anyway counts once)?
    pub fn recovered(&self, lift: &Lift) -> Recovered {
        let mut lines = Vec::new();
        let mut all = !self.rows.is_empty();
        for (campaign, base, measured, lo, hi) in &self.rows {
            let planted = 100.0 * lift.expected() * (1.0 - base / 100.0);
            let ok = *lo <= planted && planted <= *hi;
            all &= ok;
            lines.push(format!(
                "{campaign}: planted +{planted:.2} points ({:.0}% open × {:.0}% + {:.0}% × {:.0}%, \
                 net of the {base:.2}% base rate), measured {measured:+.2} [{lo:+.2}, {hi:+.2}]: {}",
                100.0 * crate::emulator::currents::OPEN_RATE,
                100.0 * lift.after_open,
                100.0 * (1.0 - crate::emulator::currents::OPEN_RATE),
                100.0 * lift.after_send,
                if ok { "recovered" } else { "NOT recovered" }
            ));
        }
        Recovered { all, lines }
    }
}

/// Runs a query file of `queries/analysis/` as of the demo's time.
async fn analysis(
    config: &Config,
    lake: &Lake,
    name: &str,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    let file = config.base_dir().join("queries/analysis").join(name);
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
    lake.collect(df, &origin).await
}

/// The push-to-feature table and the lift.
async fn analyses(config: &Config, lake: &Lake) -> Result<(String, LiftTable)> {
    let push = analysis(config, lake, "push_open_to_feature.sql").await?;
    let push = crate::query::render(&push, crate::query::Format::Table)?;
    let lift = LiftTable::from_batches(&analysis(config, lake, "lift.sql").await?)?;
    Ok((String::from_utf8_lossy(&push).into_owned(), lift))
}

/// The loop's other half: the emulator's campaigns go out to the cohorts it holds and it
/// exports the engagement (Currents Avro); the members react in the product (the planted
/// lift, written into the lake's `events`); `ingest` brings the engagement into the lake as
/// `partner_events`. Returns the spec used.
async fn return_path(
    config: &mut Config,
    lake: &Lake,
    location: &Location,
    state_dir: &Path,
    held: &[(String, Vec<String>)],
) -> Result<EngagementSpec> {
    let currents = state_dir.join("currents");
    let loc = Location::parse(
        &currents.display().to_string(),
        Path::new("."),
        &Default::default(),
    )?;
    let spec = EngagementSpec {
        seed: DEMO_SEED,
        // Two hours after the first sync, inside the demo lake's last day of product events.
        at: demo_at() - chrono::Duration::days(1) + chrono::Duration::hours(2),
        push_campaigns: demo_campaigns(),
        lift: DEMO_LIFT,
    };
    let report = write_engagement(loc.store.clone(), &loc.root, held, &spec)
        .await
        .map_err(|e| Error::Internal(format!("emulator engagement export: {e}")))?;
    synth::write_feature_uses(
        location.store.as_ref(),
        &location.root,
        &report.planted,
        PLANTED,
    )
    .await
    .map_err(Error::storage_of)?;
    eprintln!(
        "the partner exported {} engagement events in {} Currents Avro files ({} duplicate deliveries, {} late); \
         the pushes caused {} feature uses",
        report.events, report.files, report.duplicates, report.late, report.planted_uses
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
    Ok(spec)
}

struct Row {
    at: String,
    name: String,
    members: u64,
    held_out: u64,
    adds: u64,
    removes: u64,
    held: u64,
    requests: u64,
    matches: bool,
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
