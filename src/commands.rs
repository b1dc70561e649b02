//! The commands behind the CLI, as library functions returning an exit code, so the demo, the
//! tests and `main` share them.

use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::config::env_lookup;
use crate::error::{Error, Result, exit};
use crate::lake::Location;
use crate::metrics::{Metrics, MetricsOut};
use crate::state::new_run_id;
use crate::state::runs::{self, RunRecord};
use crate::sync::{SyncOptions, sync_cohort};
use crate::synth::{IdShape, SynthSpec, generate as synth_generate, user_id};

/// `sync`: every named cohort (none named: every cohort of the project, `sync --all`), one JSON
/// line each on stdout; the exit code of the first failure.
pub async fn sync(
    config_file: &Path,
    cohorts: &[String],
    options: SyncOptions,
    metrics: &MetricsOut,
) -> Result<i32> {
    let config = crate::destinations::load_config(config_file)?;
    let conflicts = config.conflicts(&env_lookup);
    if !conflicts.is_empty() {
        return Err(Error::config(config.file.clone(), conflicts.join("\n  ")));
    }
    metrics.check(&config)?;
    let all: Vec<String>;
    let cohorts = if cohorts.is_empty() {
        all = config.cohorts.keys().cloned().collect();
        if all.is_empty() {
            return Err(Error::config(
                config.file.clone(),
                "`sync --all`: the file defines no [cohorts.*]",
            ));
        }
        &all
    } else {
        cohorts
    };
    // Usage problems first, before any work: unknown cohorts, unset secrets.
    let mut credentials = Vec::new();
    for name in cohorts {
        let cohort = config
            .cohort(name)
            .map_err(|m| Error::config(config.file.clone(), m))?;
        credentials.push(config.credentials(&cohort.destination, &env_lookup)?);
    }
    // SIGTERM/SIGINT stop a sync cleanly (see `signals`).
    crate::signals::install();
    let lake = crate::project::open_lake(&config).await?;
    let mut code = exit::OK;
    for (name, creds) in cohorts.iter().zip(&credentials) {
        if let Some(signal) = crate::signals::received() {
            // The cohorts not started are simply not synced (no history row).
            return Ok(if code == exit::OK {
                exit::SIGNALLED + signal
            } else {
                code
            });
        }
        let started_at = Utc::now();
        let clock = std::time::Instant::now();
        let result = sync_cohort(&config, &lake, name, creds, options).await;
        let this_code = match &result {
            Ok(s) if s.dead_letters > 0 => exit::PARTIAL,
            Ok(_) => exit::OK,
            Err(e) => e.exit_code(),
        };
        let mut record = RunRecord {
            command: match options.shard {
                Some(shard) => format!("sync --shard {shard}"),
                None => "sync".into(),
            },
            cohort: Some(name.clone()),
            destination: config.cohort(name).ok().map(|c| c.destination),
            started_at,
            run_at: Some(options.at),
            exit_code: this_code,
            ..RunRecord::default()
        };
        match &result {
            Ok(summary) => {
                println!(
                    "{}",
                    serde_json::to_string(summary).expect("summary is JSON")
                );
                record.run_id = summary.run_id.clone();
                record.outcome = summary.outcome.to_string();
                record.members = Some(summary.members);
                record.adds = Some(summary.adds);
                record.removes = Some(summary.removes);
                record.requests = Some(summary.requests);
                record.retries = Some(summary.retries);
                record.dead_letters = Some(summary.dead_letters);
            }
            Err(e) => {
                let text = crate::redact::scrubbed(e.to_string());
                eprintln!("error: cohort `{name}`: {text}");
                let outcome = match e {
                    Error::Locked(_) => "locked",
                    Error::Interrupted { .. } => "interrupted",
                    _ => "failed",
                };
                let line = serde_json::json!({
                    "cohort": name, "outcome": outcome, "exit_code": this_code, "error": text,
                });
                println!("{line}");
                record.run_id = new_run_id();
                record.outcome = outcome.into();
                record.error = Some(text);
            }
        }
        if code == exit::OK {
            code = this_code;
        }
        // A dry run changes nothing anywhere, its history and metrics included.
        if !options.dry_run {
            record.ended_at = Utc::now();
            if let Err(e) = runs::append(&lake.state, &record).await {
                tracing::error!(error = %e, run = %record.run_id, "cannot record the run in the run history");
            }
            if !metrics.is_empty() {
                let destination = record.destination.clone().unwrap_or_default();
                let shard = options.shard.map(|s| s.to_string());
                let mut m = Metrics::default();
                m.sync_run(
                    name,
                    &destination,
                    shard.as_deref(),
                    result.as_ref().ok(),
                    this_code,
                    record.ended_at,
                    clock.elapsed(),
                );
                let group = [
                    ("cohort", name.as_str()),
                    ("destination", destination.as_str()),
                    ("shard", shard.as_deref().unwrap_or("")),
                ];
                metrics.emit(&group, m).await;
            }
        }
    }
    Ok(code)
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
    let names: Vec<String> = match source {
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
    };
    let lake = crate::project::open_lake(&config).await?;
    let mut code = exit::OK;
    for name in &names {
        let started_at = Utc::now();
        let clock = std::time::Instant::now();
        let result =
            crate::ingest::ingest_source(&config, &lake, name, &config.sources[name], &options)
                .await;
        let this_code = match &result {
            Ok(s) if s.quarantined_records > 0 || s.broken_files > 0 => exit::PARTIAL,
            Ok(_) => exit::OK,
            Err(e) => e.exit_code(),
        };
        let mut record = RunRecord {
            command: "ingest".into(),
            cohort: None,
            destination: Some(name.clone()),
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
            metrics.emit(&[("source", name.as_str())], m).await;
        }
        if code == exit::OK {
            code = this_code;
        }
    }
    Ok(code)
}

/// `export-engagement`: the emulator's Currents export for synthetic members.
/// Its members are the first `users` users of a lake generated with the same id shape.
pub async fn export_engagement(
    out: &str,
    users: u64,
    ids: IdShape,
    seed: u64,
    at: DateTime<Utc>,
    lift: crate::emulator::currents::Lift,
    lake: Option<&str>,
) -> Result<i32> {
    use crate::emulator::currents::{EngagementSpec, PushCampaign, write_engagement};
    for (flag, p) in [
        ("--lift-after-send", lift.after_send),
        ("--lift-after-open", lift.after_open),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::config(
                None,
                format!("{flag}: a probability between 0 and 1, got {p}"),
            ));
        }
    }
    let planting = lift.after_send > 0.0 || lift.after_open > 0.0;
    let lake = match (lake, planting) {
        (Some(url), _) => Some(Location::parse(url, Path::new("."), &Default::default())?),
        (None, true) => {
            return Err(Error::config(
                None,
                "--lift-after-send/--lift-after-open plant feature uses in a lake: pass --lake",
            ));
        }
        (None, false) => None,
    };
    let location = Location::parse(out, Path::new("."), &Default::default())?;
    let members: Vec<String> = (0..users).map(|i| user_id(ids, i)).collect();
    let spec = EngagementSpec {
        seed,
        at,
        push_campaigns: vec![PushCampaign {
            cohort_id: None,
            campaign_id: "camp-offline".into(),
            campaign_name: "Try offline mode".into(),
            feature: Some("offline_mode".into()),
        }],
        lift,
    };
    let started = std::time::Instant::now();
    let report = write_engagement(
        location.store.clone(),
        &location.root,
        &[("export".into(), members)],
        &spec,
    )
    .await
    .map_err(Error::Internal)?;
    if let Some(lake) = lake {
        crate::synth::write_feature_uses(
            lake.store.as_ref(),
            &lake.root,
            &report.planted,
            "planted-export",
        )
        .await
        .map_err(Error::storage_of)?;
    }
    let mut line = serde_json::to_value(&report).expect("report is JSON");
    line["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    line["out"] = serde_json::json!(location.url.as_str());
    println!("{line}");
    Ok(exit::OK)
}

/// `http-floor` (hidden; `benches/e2e.py`, case d): the HTTP floor of a sync of `ids` members.
/// The same requests a full sync sends (the create call, then `ids` synthetic ids in
/// `batch_size` batches) through the same client, pacing and in-flight bound, with every body
/// encoded before the clock starts: no query, diff, plan or state. Prints one JSON line.
pub async fn http_floor(config_file: &Path, cohort: &str, ids: usize) -> Result<i32> {
    use crate::destinations::{self as destination, Op};
    use crate::deliver::{plan::batches, sender::Sender};
    use datafusion::arrow::array::{Array, StringArray};

    let config = crate::destinations::load_config(config_file)?;
    let cohort = config
        .cohort(cohort)
        .map_err(|e| Error::config(config.file.clone(), e))?;
    let dest = config.destination(&cohort.destination)?;
    let creds = config.credentials(&cohort.destination, &env_lookup)?;
    let destination::Delivery::Requests(braze) =
        destination::open(dest, &creds, &cohort, &config.base_dir())?
    else {
        return Err(Error::config(
            config.file.clone(),
            format!(
                "http-floor: destination `{}` sends no requests",
                cohort.destination
            ),
        ));
    };
    // UUID ids, as the realistic lake's (benches/e2e.py): the bodies are as long as a sync's.
    let members = StringArray::from_iter_values((0..ids as u64).map(|i| user_id(IdShape::Uuid, i)));
    let setup = braze.setup(Utc::now());
    let requests: Vec<_> = batches(members.len(), dest.delivery.batch_size)
        .into_iter()
        .map(|(n, range)| braze.batch("http-floor", n, &members, range, Op::Add))
        .collect();
    let count = requests.len() + usize::from(setup.is_some());
    let (tx, rx) = tokio::sync::mpsc::channel(count);
    for request in requests {
        tx.send(request)
            .await
            .map_err(|_| Error::Internal("request channel closed".into()))?;
    }
    drop(tx);
    let sender = Sender::new(
        &dest.delivery,
        braze.clone(),
        tokio::time::Instant::now() + dest.delivery.deadline,
    )?;
    // As a sync does: the cohort exists before its members are sent.
    let started = std::time::Instant::now();
    if let Some(setup) = setup {
        sender.send(&setup).await?;
    }
    sender.send_all(rx, |_| {}).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "requests": count,
            "ids": ids,
            "seconds": seconds,
            "requests_per_second": count as f64 / seconds,
        })
    );
    Ok(exit::OK)
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

/// `generate`: a synthetic lake at a path or URL.
pub async fn generate(
    out: &str,
    users: u64,
    days: u32,
    seed: u64,
    end_date: NaiveDate,
    events_per_day: Option<u64>,
    ids: IdShape,
) -> Result<i32> {
    let location = Location::parse(out, Path::new("."), &Default::default())?;
    let mut spec = SynthSpec::new(users, days, seed, end_date);
    spec.events_per_day = events_per_day;
    spec.ids = ids;
    let started = std::time::Instant::now();
    let report = synth_generate(location.store.clone(), &location.root, &spec)
        .await
        .map_err(Error::storage_of)?;
    let line = serde_json::json!({
        "lake": location.url.as_str(), "users": report.users, "events": report.events,
        "user_files": report.user_files, "event_files": report.event_files,
        "end_date": end_date.to_string(), "ids": ids.as_str(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{line}");
    Ok(exit::OK)
}

pub use crate::check::check;
pub use crate::demo::demo;

/// Parses `--at`: RFC 3339 (`2026-11-28T10:00:00Z`), Airflow's `2026-11-28 10:00:00+00:00`,
/// a naive `2026-11-28T10:00:00` (taken as UTC) or a date `2026-11-28` (midnight UTC).
pub fn parse_at(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "`{s}` is not a time: use RFC 3339 (2026-11-28T10:00:00Z), `2026-11-28 10:00:00+00:00` or 2026-11-28"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_accepts_what_schedulers_pass() {
        let want: DateTime<Utc> = "2026-11-28T10:00:00Z".parse().unwrap();
        for s in [
            "2026-11-28T10:00:00Z",
            "2026-11-28T10:00:00+00:00",
            "2026-11-28 10:00:00+00:00",
            "2026-11-28T11:00:00+01:00",
            "2026-11-28T10:00:00",
        ] {
            assert_eq!(parse_at(s).unwrap(), want, "{s}");
        }
        assert_eq!(
            parse_at("2026-11-28").unwrap(),
            "2026-11-28T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(parse_at("yesterday").is_err());
    }
}
