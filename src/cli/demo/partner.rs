//! The demo's partner: an emulator on a free loopback port with throwaway keys, the project's
//! Cohort Import destinations pointed at it, and the same cohorts through `/users/track`.

use std::path::PathBuf;

use chrono::Utc;

use crate::config::{Config, Credentials, DestinationConfig, Secret};
use crate::destinations::{REGISTRY, braze_cohorts, braze_users_track};
use crate::emulator::{self, EmulatorConfig, EmulatorHandle};
use crate::error::{Error, Result};

/// The demo's `/users/track` destination.
const TRACK: &str = "braze_users_track";

/// The partner and the two projects that sync to it.
pub(super) struct Setup {
    /// The project, its Cohort Import destinations pointed at the emulator.
    pub config: Config,
    /// The same cohorts through `/users/track`.
    pub track_config: Config,
    pub emulator: EmulatorHandle,
    pub cohort_import: Credentials,
    pub track_creds: Credentials,
    /// The throwaway state area of both.
    pub state_dir: PathBuf,
}

impl Setup {
    /// Starts the emulator and points the project at it.
    pub async fn start(mut config: Config) -> Result<Setup> {
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
        let track_config = users_track(&config, &partner_emulator.base_url(), &state_dir)?;
        Ok(Setup {
            config,
            track_config,
            emulator: partner_emulator,
            cohort_import: braze_cohorts::credentials(partner_api_key, client_secret),
            track_creds: braze_users_track::credentials(rest_key),
            state_dir,
        })
    }
}

/// The same cohorts through `/users/track`, as a Braze customer with only a workspace REST
/// API key syncs them: membership as the custom attribute `cohort_<cohort_id>`, its own
/// destination and state area (its history does not mix with the Cohort Import runs').
fn users_track(config: &Config, base_url: &str, state_dir: &std::path::Path) -> Result<Config> {
    let mut track_config = config.clone();
    let text = format!(
        "kind = \"braze_users_track\"\nbase_url = \"{base_url}\"\napi_key_env = \"DEMO_REST_API_KEY\"\n\
         requests_per_second = 5000\nmax_in_flight = 16"
    );
    let mut track: DestinationConfig =
        crate::config::with_kinds(&REGISTRY, || toml::from_str(&text))
            .map_err(|e| Error::Internal(format!("the demo's /users/track destination: {e}")))?;
    track.delivery.batch_size = track.spec.max_batch;
    track_config.destinations = [(TRACK.to_string(), track)].into_iter().collect();
    for c in track_config.cohorts.values_mut() {
        c.destination = Some(TRACK.to_string());
    }
    track_config.state.url = Some(state_dir.join("users-track").display().to_string());
    Ok(track_config)
}
