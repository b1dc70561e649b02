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
    /// Customer.io's Track API manual segments (`customerio` module): its one workspace.
    pub customerio: CustomerioConfig,
    /// The emulated Iterable project (`/api/lists/subscribe`, `/api/lists/unsubscribe`).
    pub iterable: super::IterableConfig,
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
            customerio: CustomerioConfig::default(),
            iterable: super::IterableConfig::default(),
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
            .field("customerio", &self.customerio)
            .field("iterable", &self.iterable)
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

/// Customer.io's Track API v1 manual segments (`docs/partners/customerio.md`): the one
/// workspace the emulator serves, its segments, its rate limit and its faults.
#[derive(Clone)]
pub struct CustomerioConfig {
    /// The workspace's Site ID: the HTTP Basic user name.
    pub site_id: String,
    /// Its Track API key: the HTTP Basic password.
    pub api_key: String,
    /// Manual segments that exist (made in the dashboard or through the App API, which the
    /// emulator does not serve).
    pub manual_segments: Vec<i32>,
    /// Data-driven segments: they exist, but the Track API may not change them.
    pub data_driven_segments: Vec<i32>,
    /// At most `requests` per sliding `window`, per workspace. Default: 100 a second, a figure
    /// only third-party summaries give (see the contract), so it is configurable.
    pub rate_limit: RateLimitConfig,
    /// People whose `id` or email contains this text are not in the workspace: adding them is
    /// ignored silently (200, nothing applied, no report), as the contract says.
    pub unknown_marker: Option<String>,
    /// The faults every endpoint has: a dropped connection, a 500 before or after applying, a
    /// slow answer. `locked` is not used: Customer.io documents no 423.
    pub faults: FaultConfig,
    /// This API's own faults.
    pub own_faults: CustomerioFaults,
}

impl Default for CustomerioConfig {
    fn default() -> Self {
        Self {
            site_id: "emulator-site-id".to_owned(),
            api_key: "emulator-track-api-key".to_owned(),
            manual_segments: vec![1, 2, 3],
            data_driven_segments: vec![4],
            rate_limit: RateLimitConfig {
                requests: 100,
                window: Duration::from_secs(1),
            },
            unknown_marker: None,
            faults: FaultConfig::default(),
            own_faults: CustomerioFaults::default(),
        }
    }
}

/// Keys are secrets: `Debug` never prints them.
impl fmt::Debug for CustomerioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerioConfig")
            .field("site_id", &"<redacted>")
            .field("api_key", &"<redacted>")
            .field("manual_segments", &self.manual_segments)
            .field("data_driven_segments", &self.data_driven_segments)
            .field("rate_limit", &self.rate_limit)
            .field("unknown_marker", &self.unknown_marker)
            .field("faults", &self.faults)
            .field("own_faults", &self.own_faults)
            .finish()
    }
}

/// Customer.io's own seeded faults, drawn per authenticated request in arrival order, before
/// anything is applied. Precedence when several hit: redirect, 401, HTML 200, 429.
#[derive(Clone, Debug, Default)]
pub struct CustomerioFaults {
    pub seed: u64,
    /// Answer 302 to `https://track-eu.customer.io` (an EU workspace called on the US host).
    pub redirect: f64,
    /// Answer 401, as when the key is revoked mid-run.
    pub unauthorized: f64,
    /// Answer 200 with an HTML page (a proxy's maintenance page).
    pub html: f64,
    /// Answer 429 whatever the rate, with `retry_after` as `Retry-After` when set (the
    /// contract documents no header: this tests a client that meets one, sane or not).
    pub too_many: f64,
    pub retry_after: Option<String>,
}
