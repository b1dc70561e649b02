//! `export-engagement`: the emulator's Currents-style engagement export for the first users of
//! a generated lake; one JSON line on stdout.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::Args;

use super::args::parse_at;
use crate::error::{Error, Result, exit};
use crate::lake::Location;
use crate::synth::{IdShape, user_id};

#[derive(Args, Debug)]
pub struct ExportEngagementArgs {
    /// Output folder or object-store URL.
    #[arg(long)]
    out: String,
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// The id shape of the lake whose users these are: uuid, numeric or sorted.
    #[arg(long, default_value_t = IdShape::Uuid)]
    ids: IdShape,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// When the campaigns go out (default: now).
    #[arg(long, value_parser = parse_at)]
    at: Option<DateTime<Utc>>,
    /// A planted effect of the push ("Try offline mode"): the share of members who use
    /// offline mode within 12 hours of the send (0 to 1). Needs --lake.
    #[arg(long, default_value_t = 0.0)]
    lift_after_send: f64,
    /// The same for members who opened the push, within 12 hours of the open.
    #[arg(long, default_value_t = 0.0)]
    lift_after_open: f64,
    /// The lake whose `events` table receives the planted feature uses
    /// (`events/event_date=*/planted-export.parquet`, replaced on each export).
    #[arg(long)]
    lake: Option<String>,
}

/// `export-engagement` with its flags.
pub async fn run(a: ExportEngagementArgs) -> Result<i32> {
    let lift = crate::emulator::currents::Lift {
        after_send: a.lift_after_send,
        after_open: a.lift_after_open,
        ..Default::default()
    };
    export_engagement(
        &a.out,
        a.users,
        a.ids,
        a.seed,
        a.at.unwrap_or_else(Utc::now),
        lift,
        a.lake.as_deref(),
    )
    .await
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
