//! `emulator`: a Braze-compatible partner over HTTP (for demos, tests and benchmarks), with
//! its keys read from the environment variables named by its flags.

use clap::Args;

use crate::error::{Error, Result, exit};

#[derive(Args, Debug)]
pub struct EmulatorArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// 0 picks a free port (printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The `{partner}` path segment accepted.
    #[arg(long, default_value = "cohort-bridge")]
    partner: String,
    /// Environment variable holding the partner_api_key the emulator accepts.
    #[arg(long, default_value = "BRAZE_PARTNER_API_KEY")]
    partner_api_key_env: String,
    /// Environment variable holding the client_secret the emulator accepts.
    #[arg(long, default_value = "BRAZE_CLIENT_SECRET")]
    client_secret_env: String,
    /// Requests allowed per rate-limit window.
    #[arg(long, default_value_t = 250_000)]
    rate_limit: u64,
    /// The rate-limit window, e.g. 1h, 1s.
    #[arg(long, default_value = "1h", value_parser = super::args::parse_duration)]
    rate_window: std::time::Duration,
    /// Seed of the fault generator.
    #[arg(long, default_value_t = 0)]
    fault_seed: u64,
    /// Probability of a 500 answered before applying a request.
    #[arg(long, default_value_t = 0.0)]
    fault_error_before: f64,
    /// Probability of a 500 answered after applying a request.
    #[arg(long, default_value_t = 0.0)]
    fault_error_after: f64,
    /// Probability of a 423 Resource locked.
    #[arg(long, default_value_t = 0.0)]
    fault_locked: f64,
    /// Probability of a slow answer.
    #[arg(long, default_value_t = 0.0)]
    fault_slow: f64,
    /// How slow a slow answer is.
    #[arg(long, default_value = "2s", value_parser = super::args::parse_duration)]
    fault_slow_delay: std::time::Duration,
    /// Probability of closing the connection without an answer.
    #[arg(long, default_value_t = 0.0)]
    fault_drop: f64,
    /// Refuse (400) any request carrying a user id that contains this text, as a partner
    /// refuses ids it considers invalid.
    #[arg(long)]
    invalid_id_marker: Option<String>,
    /// Environment variable holding the workspace REST API key `/users/track` accepts (unset:
    /// `/users/track` refuses every key).
    #[arg(long, default_value = "BRAZE_REST_API_KEY")]
    rest_api_key_env: String,
    /// `/users/track`: ids containing this text have no profile, so update-only objects naming
    /// them are item-level errors.
    #[arg(long)]
    unknown_id_marker: Option<String>,
    /// Environment variable holding the secret `POST /_webhook` verifies signatures with
    /// (unset: the endpoint answers 404).
    #[arg(long, default_value = "COHORT_BRIDGE_WEBHOOK_SECRET")]
    webhook_secret_env: String,
    /// Environment variable holding the private key Klaviyo's `/api/…` accepts (unset: it
    /// refuses every key).
    #[arg(long, default_value = "KLAVIYO_API_KEY")]
    klaviyo_api_key_env: String,
    /// Klaviyo: requests per second and per minute each endpoint allows (bulk import, job,
    /// import errors, list relationships; documented: 10 and 150).
    #[arg(long, default_value_t = 10)]
    klaviyo_burst: u64,
    #[arg(long, default_value_t = 150)]
    klaviyo_steady: u64,
    /// Klaviyo: how long an import job takes from `queued` to `complete`.
    #[arg(long, default_value = "200ms", value_parser = super::args::parse_duration)]
    klaviyo_job_delay: std::time::Duration,
    /// Klaviyo: import rows whose identifier contains this text fail with an import error.
    #[arg(long)]
    klaviyo_invalid_marker: Option<String>,
    /// Klaviyo: probability that an import job ends `cancelled`.
    #[arg(long, default_value_t = 0.0)]
    klaviyo_cancel_jobs: f64,
    /// Customer.io: environment variable holding the workspace's Site ID (the HTTP Basic user
    /// name of `/api/v1/segments/…`; unset: every request is refused).
    #[arg(long, default_value = "CUSTOMERIO_SITE_ID")]
    customerio_site_id_env: String,
    /// Customer.io: environment variable holding its Track API key (the Basic password).
    #[arg(long, default_value = "CUSTOMERIO_API_KEY")]
    customerio_api_key_env: String,
    /// Customer.io: the manual segments that exist, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    customerio_segments: Vec<i32>,
    /// Customer.io: requests allowed per sliding window (the Track API's 100 a second is a
    /// third-party figure; see docs/partners/customerio.md).
    #[arg(long, default_value_t = 100)]
    customerio_rate_limit: u64,
    /// Customer.io: the sliding window, e.g. 1s.
    #[arg(long, default_value = "1s", value_parser = super::args::parse_duration)]
    customerio_rate_window: std::time::Duration,
    /// Customer.io: people whose id or email contains this text are not in the workspace (adds
    /// naming them are ignored silently).
    #[arg(long)]
    customerio_unknown_marker: Option<String>,
    /// Environment variable holding the Iterable API key the emulator accepts (unset: every
    /// Iterable request is refused as a bad key).
    #[arg(long, default_value = "ITERABLE_API_KEY")]
    iterable_api_key_env: String,
    /// Iterable: requests per second each list endpoint's leaky bucket drains (Iterable
    /// documents none for these endpoints; the default is ours).
    #[arg(long, default_value_t = crate::emulator::iterable::DEFAULT_RATE)]
    iterable_rate: f64,
    /// Iterable: requests each bucket holds (default: two seconds' worth).
    #[arg(long)]
    iterable_burst: Option<f64>,
    /// Iterable: subscribers per request at most (undocumented; the default is ours).
    #[arg(long, default_value_t = crate::emulator::iterable::DEFAULT_MAX_SUBSCRIBERS)]
    iterable_max_subscribers: usize,
    /// Iterable: the project type (`hybrid`, `user_id` or `email`).
    #[arg(long, default_value = "hybrid", value_parser = ["hybrid", "user_id", "email"])]
    iterable_project_type: String,
}

/// `emulator` with its flags: serves until the process ends.
pub async fn run(a: EmulatorArgs) -> Result<i32> {
    let secret = |var: &str| {
        std::env::var(var).map_err(|_| {
            Error::config(
                None,
                format!(
                    "environment variable {var} is not set (the emulator accepts the key it holds)"
                ),
            )
        })
    };
    match (secret(&a.partner_api_key_env), secret(&a.client_secret_env)) {
        (Ok(partner_api_key), Ok(client_secret)) => {
            let faults = crate::emulator::FaultConfig {
                seed: a.fault_seed,
                error_before_apply: a.fault_error_before,
                error_after_apply: a.fault_error_after,
                locked: a.fault_locked,
                slow: a.fault_slow,
                slow_delay: a.fault_slow_delay,
                drop_connection: a.fault_drop,
            };
            // Unset: a key no client can send (a header value has no NUL).
            let unset = |var: &str| std::env::var(var).unwrap_or_else(|_| "\0unset".into());
            let customerio = crate::emulator::CustomerioConfig {
                site_id: unset(&a.customerio_site_id_env),
                api_key: unset(&a.customerio_api_key_env),
                manual_segments: a.customerio_segments,
                data_driven_segments: Vec::new(),
                rate_limit: crate::emulator::RateLimitConfig {
                    requests: a.customerio_rate_limit,
                    window: a.customerio_rate_window,
                },
                unknown_marker: a.customerio_unknown_marker,
                faults: faults.clone(),
                own_faults: crate::emulator::CustomerioFaults::default(),
            };
            let config = crate::emulator::EmulatorConfig {
                partner: a.partner,
                partner_api_key,
                client_secret,
                rate_limit: crate::emulator::RateLimitConfig {
                    requests: a.rate_limit,
                    window: a.rate_window,
                },
                faults,
                invalid_id_marker: a.invalid_id_marker,
                // Unset: a key no client can send (a header value has no NUL).
                rest_api_key: std::env::var(&a.rest_api_key_env)
                    .unwrap_or_else(|_| "\0unset".into()),
                unknown_id_marker: a.unknown_id_marker,
                webhook_secret: std::env::var(&a.webhook_secret_env).ok(),
                klaviyo: crate::emulator::KlaviyoConfig {
                    api_key: std::env::var(&a.klaviyo_api_key_env)
                        .unwrap_or_else(|_| "\0unset".into()),
                    rate: crate::emulator::KlaviyoRate {
                        burst: a.klaviyo_burst,
                        steady: a.klaviyo_steady,
                    },
                    job_delay: a.klaviyo_job_delay,
                    invalid_marker: a.klaviyo_invalid_marker,
                    cancel_jobs: a.klaviyo_cancel_jobs,
                    seed: a.fault_seed,
                    ..crate::emulator::KlaviyoConfig::default()
                },
                customerio,
                iterable: crate::emulator::IterableConfig {
                    api_key: std::env::var(&a.iterable_api_key_env)
                        .unwrap_or_else(|_| "\0unset".into()),
                    project_type: match a.iterable_project_type.as_str() {
                        "user_id" => crate::emulator::iterable::ProjectType::UserId,
                        "email" => crate::emulator::iterable::ProjectType::Email,
                        _ => crate::emulator::iterable::ProjectType::Hybrid,
                    },
                    max_subscribers: a.iterable_max_subscribers,
                    rate: a.iterable_rate,
                    burst: a.iterable_burst.unwrap_or(2.0 * a.iterable_rate),
                    ..crate::emulator::IterableConfig::default()
                },
            };
            crate::emulator::serve_forever((a.host, a.port).into(), config)
                .await
                .map(|()| exit::OK)
                .map_err(|e| Error::Internal(format!("emulator: {e}")))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}
