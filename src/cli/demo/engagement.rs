//! The demo's way back: the partner's campaigns go out to the cohorts it holds, members react
//! in the product (a planted lift), and the engagement comes into the lake through `ingest`.

use std::path::Path;

use super::{DEMO_SEED, demo_at};
use crate::config::{Config, SourceConfig};
use crate::emulator::currents::{EngagementSpec, Lift, PushCampaign, write_engagement};
use crate::error::{Error, Result};
use crate::lake::{Lake, Location};
use crate::synth;

/// The name of the demo's planted feature uses in the lake's `events` folders.
pub(super) const PLANTED: &str = "planted-demo";

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

/// The loop's other half: the emulator's campaigns go out to the cohorts it holds and it
/// exports the engagement (Currents Avro); the members react in the product (the planted
/// lift, written into the lake's `events`); `ingest` brings the engagement into the lake as
/// `partner_events`. Returns the spec used.
pub(super) async fn return_path(
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
