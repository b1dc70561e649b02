//! `export-engagement`: the emulator's Currents-style engagement export — for the members a
//! cohort's last committed sync delivered (`--cohort`, with the project file: held-out members
//! never get a push), or for the first users of a generated lake (`--users`); one JSON line on
//! stdout.

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
    /// Push to the members this cohort's last committed sync delivered (from the project
    /// file's state area; its held-out members are never pushed), with the project file's
    /// `[campaigns.*]` of that cohort (else `camp-offline`); plants into the project's lake.
    #[arg(long, conflicts_with = "users")]
    cohort: Option<String>,
    /// Push to the first N users of a generated lake (a demo without a project).
    #[arg(long)]
    users: Option<u64>,
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
    /// (`events/event_date=*/planted-export.parquet`, replaced on each export). Default with
    /// --cohort: the project's lake.
    #[arg(long)]
    lake: Option<String>,
}

/// Who the export pushes to, and with which campaigns.
pub struct Audience {
    /// `(cohort_id, members)`.
    pub members: (String, Vec<String>),
    pub campaigns: Vec<crate::emulator::currents::PushCampaign>,
}

/// `export-engagement` with its flags.
pub async fn run(config_file: &Path, a: ExportEngagementArgs) -> Result<i32> {
    let lift = crate::emulator::currents::Lift {
        after_send: a.lift_after_send,
        after_open: a.lift_after_open,
        ..Default::default()
    };
    let at = a.at.unwrap_or_else(Utc::now);
    let (audience, lake) = match &a.cohort {
        Some(name) => {
            let config = crate::destinations::load_config(config_file)?;
            let audience = delivered_to(&config, name).await?;
            let lake = match a.lake {
                Some(url) => Some(Location::parse(&url, Path::new("."), &Default::default())?),
                None => Some(Location::parse(
                    &config.lake.url,
                    &config.base_dir(),
                    &config.lake.options,
                )?),
            };
            (audience, lake)
        }
        None => {
            let users = a.users.unwrap_or(100_000);
            let lake = match a.lake {
                Some(url) => Some(Location::parse(&url, Path::new("."), &Default::default())?),
                None => None,
            };
            let audience = Audience {
                members: (
                    "export".into(),
                    (0..users).map(|i| user_id(a.ids, i)).collect(),
                ),
                campaigns: vec![default_campaign()],
            };
            (audience, lake)
        }
    };
    export_engagement(&a.out, audience, a.seed, at, lift, lake).await
}

/// The demo's push: "Try offline mode".
fn default_campaign() -> crate::emulator::currents::PushCampaign {
    crate::emulator::currents::PushCampaign {
        cohort_id: None,
        campaign_id: "camp-offline".into(),
        campaign_name: "Try offline mode".into(),
        feature: Some("offline_mode".into()),
    }
}

/// The members cohort `name`'s last committed sync left at the partner (its external ids: the
/// engagement export keys users by them), and the project's campaigns of that cohort.
async fn delivered_to(config: &crate::config::Config, name: &str) -> Result<Audience> {
    let cohort = config
        .cohort(name)
        .map_err(|m| Error::config(config.file.clone(), m))?;
    let lake = Location::parse(&config.lake.url, &config.base_dir(), &config.lake.options)?;
    let area = crate::state::area(config, &lake)?;
    let state = crate::state::CohortState::new(
        area.store.clone(),
        &area.root,
        &cohort.destination,
        &cohort.cohort_id,
    )
    .named(&cohort.name);
    let Some(pointer) = state.pointer().await? else {
        return Err(Error::config(
            None,
            format!(
                "--cohort {name}: no committed sync of this cohort (unsharded) to push to; run \
                 `cohort-bridge sync {name}` first"
            ),
        ));
    };
    let ids = state.snapshot(Some(&pointer)).await?;
    use crate::cohort::identity::{Id, parse};
    let members: Vec<String> = ids
        .iter()
        .flatten()
        .filter_map(|k| match parse(k) {
            Id::External(v) => Some(v.to_string()),
            _ => None,
        })
        .collect();
    let mut campaigns: Vec<_> = config
        .campaigns()
        .into_iter()
        .filter(|c| c.cohort == cohort.name)
        .map(|c| crate::emulator::currents::PushCampaign {
            cohort_id: None,
            campaign_name: c.campaign_id.clone(),
            campaign_id: c.campaign_id,
            feature: Some(c.feature),
        })
        .collect();
    if campaigns.is_empty() {
        campaigns.push(default_campaign());
    }
    Ok(Audience {
        members: (cohort.cohort_id, members),
        campaigns,
    })
}

/// `export-engagement`: the emulator's Currents export for `audience`, its planted uses
/// written into `lake`.
pub async fn export_engagement(
    out: &str,
    audience: Audience,
    seed: u64,
    at: DateTime<Utc>,
    lift: crate::emulator::currents::Lift,
    lake: Option<Location>,
) -> Result<i32> {
    use crate::emulator::currents::{EngagementSpec, write_engagement};
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
    if planting && lake.is_none() {
        return Err(Error::config(
            None,
            "--lift-after-send/--lift-after-open plant feature uses in a lake: pass --lake (or --cohort with the project file)",
        ));
    }
    let location = Location::parse(out, Path::new("."), &Default::default())?;
    let pushed = audience.members.1.len();
    let spec = EngagementSpec {
        seed,
        at,
        push_campaigns: audience.campaigns,
        lift,
    };
    let started = std::time::Instant::now();
    let report = write_engagement(
        location.store.clone(),
        &location.root,
        &[audience.members],
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
    line["members"] = serde_json::json!(pushed);
    println!("{line}");
    Ok(exit::OK)
}
