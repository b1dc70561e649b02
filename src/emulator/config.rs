//! How the emulator behaves: the partner and workspace it accepts, its rate limit and its faults.

use std::fmt;
use std::time::Duration;

/// How the emulator behaves: the one partner and workspace it accepts, its rate limit and faults.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// The `{partner}` path segment accepted, e.g. `"cohort-bridge"`.
    pub partner: String,
    /// The only valid `partner_api_key`.
    pub partner_api_key: String,
    /// The only valid `client_secret` (one workspace).
    pub client_secret: String,
    pub rate_limit: RateLimitConfig,
    pub faults: FaultConfig,
    /// User ids containing this text are refused with a 400 naming the id, as a partner
    /// refuses an id it considers invalid (for testing dead letters). `None`: no such ids.
    pub invalid_id_marker: Option<String>,
    /// The only valid workspace REST API key (`/users/track`, `Authorization: Bearer`).
    pub rest_api_key: String,
    /// `/users/track`: ids containing this text have no profile until one is created, so an
    /// update-only object naming one is an item-level error. `None`: every id has a profile.
    pub unknown_id_marker: Option<String>,
    /// `POST /_webhook` verifies signatures with this secret; `None`: the endpoint is off.
    pub webhook_secret: Option<String>,
    /// The Klaviyo endpoints (`/api/…`): key, limits, job processing time, faults.
    pub klaviyo: super::KlaviyoConfig,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            partner: "cohort-bridge".to_owned(),
            partner_api_key: "emulator-partner-key".to_owned(),
            client_secret: "emulator-client-secret".to_owned(),
            rate_limit: RateLimitConfig::default(),
            faults: FaultConfig::default(),
            invalid_id_marker: None,
            rest_api_key: "emulator-rest-api-key".to_owned(),
            unknown_id_marker: None,
            webhook_secret: None,
            klaviyo: super::KlaviyoConfig::default(),
        }
    }
}

/// Keys are secrets: `Debug` never prints them.
impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("partner", &self.partner)
            .field("partner_api_key", &"<redacted>")
            .field("client_secret", &"<redacted>")
            .field("rest_api_key", &"<redacted>")
            .field("rate_limit", &self.rate_limit)
            .field("faults", &self.faults)
            .field("klaviyo", &self.klaviyo)
            .finish()
    }
}

/// A fixed window per workspace: at most `requests` per `window`.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    pub requests: u64,
    pub window: Duration,
}

impl Default for RateLimitConfig {
    /// Braze's default: 250,000 requests per hour.
    fn default() -> Self {
        Self {
            requests: 250_000,
            window: Duration::from_secs(3600),
        }
    }
}

/// Per-request fault probabilities, drawn from a PRNG seeded with `seed` in arrival order.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    pub seed: u64,
    /// Answer 500 without applying.
    pub error_before_apply: f64,
    /// Apply the change, then answer 500.
    pub error_after_apply: f64,
    /// Answer 423 "Resource locked" without applying.
    pub locked: f64,
    /// Sleep `slow_delay` before answering (then answer as otherwise decided).
    pub slow: f64,
    pub slow_delay: Duration,
    /// Close the connection without any response; nothing applied.
    pub drop_connection: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            error_before_apply: 0.0,
            error_after_apply: 0.0,
            locked: 0.0,
            slow: 0.0,
            slow_delay: Duration::from_secs(2),
            drop_connection: 0.0,
        }
    }
}
