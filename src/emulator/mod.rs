//! A Braze-compatible partner emulator over real HTTP: the Partner Cohort Import API (see
//! `../shared/partner-api.md`, beside the repository, "Outbound") with auth, a fixed-window
//! rate limit, seeded fault injection and read-only `/_emulator/...` endpoints for the demo,
//! tests and benchmarks.
//!
//! It parses the wire format on its own (`serde_json::Value`) and shares no request types with
//! the client side. Accepted changes are appended to a per-cohort log under a short lock and
//! folded into the member set lazily, when a reader asks.

mod admission;
mod cohorts;
mod config;
pub mod currents;
pub mod customerio;
mod faults;
pub mod iterable;
pub mod klaviyo;
mod server;
mod state;
mod users_track;
mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{
    CustomerioConfig, CustomerioFaults, EmulatorConfig, FaultConfig, RateLimitConfig,
};
pub use customerio::CustomerioStats;
use faults::{FaultInjector, RateLimiter};
pub use iterable::{IterableConfig, IterableMembers, IterableStats};
pub use klaviyo::{KlaviyoConfig, KlaviyoProfile, KlaviyoRate};
use server::accept_loop;
use state::State;

/// Counters since start. Redundant adds/removes are counted when the logs are folded, in
/// arrival order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Every HTTP request received (read-only endpoints included).
    pub requests: u64,
    /// Responses sent, by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Connections closed by the `drop_connection` fault.
    pub dropped_connections: u64,
    pub cohorts_created: u64,
    pub cohorts_renamed: u64,
    /// `/cohorts/users` requests whose changes were applied.
    pub user_requests_applied: u64,
    /// Ids in applied add changes.
    pub ids_added: u64,
    /// Ids in applied remove changes.
    pub ids_removed: u64,
    /// Ids added that were already members when applied.
    pub redundant_adds: u64,
    /// Ids removed that were not members when applied.
    pub redundant_removes: u64,
    /// Largest id count seen in one `/cohorts/users` request, even if rejected.
    pub max_ids_per_request: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// `/users/track` requests applied, and the attribute objects they applied.
    #[serde(default)]
    pub track_requests_applied: u64,
    #[serde(default)]
    pub track_objects_applied: u64,
}

/// Everything the connection tasks share.
struct Shared {
    config: EmulatorConfig,
    state: State,
    profiles: users_track::Profiles,
    webhook: webhook::Receiver,
    klaviyo: klaviyo::Klaviyo,
    customerio: customerio::Workspace,
    iterable: iterable::Project,
    limiter: RateLimiter,
    faults: FaultInjector,
    shutdown: watch::Sender<bool>,
}

/// A running emulator. Cheap to clone; the server keeps running when every handle is dropped.
#[derive(Clone)]
pub struct EmulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`; an unspecified bind address becomes loopback.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Current members, sorted; `None` if the cohort was never created. User ids are plain,
    /// device ids `device:ID`, aliases `alias:NAME:LABEL`.
    pub fn members(&self, cohort_id: &str) -> Option<Vec<String>> {
        self.shared.state.members(cohort_id)
    }

    pub fn cohort_name(&self, cohort_id: &str) -> Option<String> {
        self.shared.state.cohort_name(cohort_id)
    }

    pub fn stats(&self) -> Stats {
        self.shared.state.stats()
    }

    /// `/users/track`: the users whose boolean `attribute` is true, sorted (external ids plain,
    /// aliases `alias:NAME:LABEL`, Braze ids `braze:ID`).
    pub fn attribute_true(&self, attribute: &str) -> Vec<String> {
        self.shared.profiles.with_true(attribute)
    }

    /// `/users/track`: deletes these users' profiles (external ids plain, aliases
    /// `alias:NAME:LABEL`), as a workspace does on a deletion request. Update-only objects
    /// naming them are item-level errors from now on, removals included.
    pub fn delete_profiles(&self, users: &[String]) {
        self.shared.profiles.delete(users);
    }

    /// `POST /_webhook`: the members the signed batches left in `cohort_id`, sorted.
    pub fn webhook_members(&self, cohort_id: &str) -> Vec<String> {
        self.shared.webhook.members(cohort_id)
    }

    /// `/users/track`: the users whose array `attribute` holds `value`, sorted.
    pub fn attribute_holds(&self, attribute: &str, value: &str) -> Vec<String> {
        self.shared.profiles.with_element(attribute, value)
    }

    /// Every authenticated partner request so far, in arrival order: when it arrived and whether
    /// the rate limit let it through (false: answered 429).
    pub fn rate_log(&self) -> Vec<(std::time::SystemTime, bool)> {
        self.shared.limiter.log()
    }

    /// Klaviyo: the profiles in list `list_id`, sorted by profile id (import jobs whose
    /// processing time has passed applied first); `None` if nothing was ever added to it.
    pub fn klaviyo_members(&self, list_id: &str) -> Option<Vec<KlaviyoProfile>> {
        self.shared
            .klaviyo
            .members(list_id, self.shared.config.klaviyo.job_delay)
    }

    /// Klaviyo: every profile, sorted by id.
    pub fn klaviyo_profiles(&self) -> Vec<KlaviyoProfile> {
        self.shared
            .klaviyo
            .profiles(self.shared.config.klaviyo.job_delay)
    }

    /// Klaviyo: every authenticated request with a known revision, in arrival order: when,
    /// which endpoint, and whether its limits let it through (false: answered 429).
    pub fn klaviyo_rate_log(&self) -> Vec<klaviyo::RateEntry> {
        self.shared.klaviyo.rate_log()
    }

    /// Klaviyo: import jobs accepted, and requests applied (jobs created, list changes).
    pub fn klaviyo_counts(&self) -> (usize, u64) {
        self.shared.klaviyo.counts()
    }

    /// Customer.io: the members of segment `segment_id`, sorted (ids as they are,
    /// `email:ADDRESS`, `cio_id:ID`); `None` if the workspace has no such segment.
    pub fn customerio_members(&self, segment_id: i32) -> Option<Vec<String>> {
        self.shared.customerio.members(segment_id)
    }

    /// Customer.io: what its segment endpoints saw and did.
    pub fn customerio_stats(&self) -> CustomerioStats {
        self.shared.customerio.stats()
    }

    /// Customer.io: every authenticated request's arrival and whether its rate limit let it
    /// through (false: answered 429).
    pub fn customerio_rate_log(&self) -> Vec<(std::time::SystemTime, bool)> {
        self.shared.customerio.rate_log()
    }

    /// Iterable: the members of static list `list_id`, sorted by kind; `None` if no request
    /// ever named the list.
    pub fn iterable_members(&self, list_id: u64) -> Option<IterableMembers> {
        self.shared.iterable.members(list_id)
    }

    /// Iterable: counters since start.
    pub fn iterable_stats(&self) -> IterableStats {
        self.shared.iterable.stats()
    }

    /// Iterable: whether any list request carried this identifier, as `email:ADDRESS` (as
    /// sent) or `userId:ID`.
    pub fn iterable_saw(&self, tagged: &str) -> bool {
        self.shared.iterable.seen(tagged)
    }

    /// Iterable: GDPR-forgets these users (off every list; refused as `forgotten…` from now
    /// on), as a project does on a deletion request.
    pub fn iterable_forget(&self, emails: &[String], user_ids: &[String]) {
        self.shared.iterable.forget(emails, user_ids);
    }

    /// Iterable: forgotten users may be created again.
    pub fn iterable_unforget(&self) {
        self.shared.iterable.unforget();
    }

    /// Iterable: every list request that reached the rate limit, in arrival order: when, and
    /// whether its endpoint's bucket let it through (false: answered 429).
    pub fn iterable_rate_log(&self) -> Vec<(std::time::SystemTime, bool)> {
        self.shared.iterable.rate_log()
    }

    /// Stops accepting connections and closes idle keep-alive connections (best effort).
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Binds `addr`, spawns the accept loop on the current tokio runtime and returns at once.
pub async fn start(addr: SocketAddr, config: EmulatorConfig) -> std::io::Result<EmulatorHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        state: State::default(),
        profiles: users_track::Profiles::default(),
        webhook: webhook::Receiver::default(),
        klaviyo: klaviyo::Klaviyo::new(&config.klaviyo),
        customerio: customerio::Workspace::new(&config.customerio),
        iterable: iterable::Project::default(),
        limiter: RateLimiter::new(&config.rate_limit),
        faults: FaultInjector::new(config.faults.clone()),
        config,
        shutdown,
    });
    tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
    tracing::debug!(addr = %local, "partner emulator listening");
    Ok(EmulatorHandle {
        addr: local,
        shared,
    })
}

/// For the CLI: start, log the URL, serve until ctrl-c.
pub async fn serve_forever(addr: SocketAddr, config: EmulatorConfig) -> std::io::Result<()> {
    let handle = start(addr, config).await?;
    tracing::info!(url = %handle.base_url(), "partner emulator ready; ctrl-c to stop");
    tokio::signal::ctrl_c().await?;
    handle.shutdown();
    let stats = handle.stats();
    tracing::info!(
        requests = stats.requests,
        user_requests_applied = stats.user_requests_applied,
        ids_added = stats.ids_added,
        ids_removed = stats.ids_removed,
        "partner emulator stopped"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
    use serde_json::{Value, json};
    use std::time::Duration;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const KEY: &str = "pk-test";
    const SECRET: &str = "cs-test";

    fn config() -> EmulatorConfig {
        EmulatorConfig {
            partner: "cohort-bridge".to_owned(),
            partner_api_key: KEY.to_owned(),
            client_secret: SECRET.to_owned(),
            ..EmulatorConfig::default()
        }
    }

    fn faulty(faults: FaultConfig) -> EmulatorConfig {
        EmulatorConfig { faults, ..config() }
    }

    async fn emulator(config: EmulatorConfig) -> EmulatorHandle {
        start("127.0.0.1:0".parse().unwrap(), config).await.unwrap()
    }

    fn create_body(cohort_id: &str, name: &str) -> Value {
        json!({
            "partner_api_key": KEY, "client_secret": SECRET,
            "cohort_id": cohort_id, "name": name, "created_at": "2026-01-31T12:00:00Z",
        })
    }

    fn users_body(cohort_id: &str, changes: Value) -> Value {
        json!({
            "partner_api_key": KEY, "client_secret": SECRET,
            "cohort_id": cohort_id, "cohort_changes": changes,
        })
    }

    async fn post(h: &EmulatorHandle, path: &str, body: &Value) -> reqwest::Response {
        let url = format!("{}/partners/cohort-bridge{path}", h.base_url());
        reqwest::Client::new()
            .post(url)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn status_and_message(resp: reqwest::Response) -> (u16, String) {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (
            status,
            body["message"].as_str().unwrap_or_default().to_owned(),
        )
    }

    async fn create(h: &EmulatorHandle, cohort_id: &str, name: &str) -> (u16, String) {
        status_and_message(post(h, "/cohorts", &create_body(cohort_id, name)).await).await
    }

    async fn users(h: &EmulatorHandle, cohort_id: &str, changes: Value) -> (u16, String) {
        status_and_message(post(h, "/cohorts/users", &users_body(cohort_id, changes)).await).await
    }

    async fn get_json(h: &EmulatorHandle, path: &str) -> (u16, Value) {
        let resp = reqwest::get(format!("{}{path}", h.base_url()))
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn create_add_remove_and_read_members() {
        let h = emulator(config()).await;
        let resp = post(&h, "/cohorts", &create_body("c1", "High value")).await;
        assert_eq!(resp.status().as_u16(), 201);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(resp.headers()["x-ratelimit-limit"], "250000");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"message": "success"})
        );
        assert_eq!(h.members("c1"), Some(vec![]));

        let changes = json!([
            {"user_ids": ["u3", "u1", "u2"]},
            {"device_ids": ["d1"], "aliases": [{"alias_name": "n", "alias_label": "l"}]},
        ]);
        assert_eq!(users(&h, "c1", changes).await, (201, "success".to_owned()));
        let removal = json!([{"user_ids": ["u2", "ghost"], "should_remove": true}]);
        assert_eq!(users(&h, "c1", removal).await.0, 201);
        assert_eq!(
            h.members("c1"),
            Some(strings(&["alias:n:l", "device:d1", "u1", "u3"]))
        );

        assert_eq!(create(&h, "c1", "High value").await.0, 201);
        assert_eq!(create(&h, "c1", "Very high value").await.0, 201);
        assert_eq!(h.cohort_name("c1").as_deref(), Some("Very high value"));
        assert_eq!(h.members("nope"), None);
        assert_eq!(h.cohort_name("nope"), None);

        let (status, body) = get_json(&h, "/_emulator/cohorts/c1/members").await;
        assert_eq!(status, 200);
        assert_eq!(body["name"], "Very high value");
        assert_eq!(
            body["members"],
            json!(["alias:n:l", "device:d1", "u1", "u3"])
        );
        assert_eq!(get_json(&h, "/_emulator/cohorts/nope/members").await.0, 404);
        let (_, list) = get_json(&h, "/_emulator/cohorts").await;
        assert_eq!(
            list,
            json!([{"cohort_id": "c1", "name": "Very high value", "members": 4}])
        );
        let (_, stats) = get_json(&h, "/_emulator/stats").await;
        let stats: Stats = serde_json::from_value(stats).unwrap();
        assert_eq!((stats.cohorts_created, stats.cohorts_renamed), (1, 1));
        assert_eq!(stats.user_requests_applied, 2);
        assert_eq!((stats.ids_added, stats.ids_removed), (5, 2));
        assert_eq!(stats.redundant_removes, 1);
        assert_eq!(stats.max_ids_per_request, 5);
        assert_eq!(stats.by_status.get(&201), Some(&5));
        h.shutdown();
    }

    #[tokio::test]
    async fn validation_errors_name_the_field() {
        let h = emulator(config()).await;
        assert_eq!(create(&h, "c1", "One").await.0, 201);

        let ids: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
        let too_many =
            json!([{"user_ids": ids[..600]}, {"user_ids": ids[600..], "should_remove": true}]);
        assert_eq!(
            users(&h, "c1", too_many).await,
            (400, "too many ids: 1001 > 1000".to_owned())
        );
        assert_eq!(h.stats().max_ids_per_request, 1001);
        assert_eq!(h.members("c1"), Some(vec![]));

        assert_eq!(
            create(&h, "c2", "").await,
            (400, "name must be a non-empty string".to_owned())
        );
        let mut bad_time = create_body("c2", "Two");
        bad_time["created_at"] = json!("yesterday");
        let (status, msg) = status_and_message(post(&h, "/cohorts", &bad_time).await).await;
        assert_eq!(status, 400);
        assert!(msg.starts_with("created_at must be"), "{msg}");
        assert_eq!(h.cohort_name("c2"), None);

        let non_string = json!([{"user_ids": ["a"]}, {"user_ids": ["b", "c", 7]}]);
        let expected = "cohort_changes[1].user_ids[2] must be a string".to_owned();
        assert_eq!(users(&h, "c1", non_string).await, (400, expected));
        let bad_alias = json!([{"aliases": [{"alias_name": "n"}]}]);
        let expected =
            "cohort_changes[0].aliases[0].alias_label must be a non-empty string".to_owned();
        assert_eq!(users(&h, "c1", bad_alias).await, (400, expected));
        let no_ids = json!([{"user_ids": [], "should_remove": true}]);
        assert!(
            users(&h, "c1", no_ids)
                .await
                .1
                .starts_with("cohort_changes[0] must carry")
        );
        let empty = users(&h, "c1", json!([])).await;
        assert_eq!(
            empty,
            (400, "cohort_changes must be a non-empty array".to_owned())
        );
        let unknown = users(&h, "c9", json!([{"user_ids": ["a"]}])).await;
        assert_eq!(unknown, (400, "cohort_id \"c9\" not found".to_owned()));

        let url = format!("{}/partners/cohort-bridge/cohorts", h.base_url());
        let resp = reqwest::Client::new()
            .post(url)
            .body("{not json")
            .send()
            .await
            .unwrap();
        let (status, msg) = status_and_message(resp).await;
        assert_eq!(status, 400);
        assert!(msg.starts_with("malformed JSON body: "), "{msg}");
        assert_eq!(h.members("c1"), Some(vec![]));
        assert_eq!(h.stats().user_requests_applied, 0);
    }

    #[tokio::test]
    async fn auth_errors_and_routing() {
        let h = emulator(config()).await;
        let mut wrong_key = create_body("c1", "One");
        wrong_key["partner_api_key"] = json!("nope");
        let resp = post(&h, "/cohorts", &wrong_key).await;
        assert!(resp.headers().get("x-ratelimit-limit").is_none());
        assert_eq!(
            status_and_message(resp).await,
            (401, "invalid partner key".to_owned())
        );
        let mut wrong_secret = create_body("c1", "One");
        wrong_secret["client_secret"] = json!("nope");
        let resp = post(&h, "/cohorts", &wrong_secret).await;
        assert_eq!(
            status_and_message(resp).await,
            (401, "invalid client secret".to_owned())
        );
        let url = format!("{}/partners/someone-else/cohorts", h.base_url());
        let resp = reqwest::Client::new()
            .post(url)
            .json(&create_body("c1", "One"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            status_and_message(resp).await,
            (401, "partner not enabled".to_owned())
        );
        assert_eq!(h.cohort_name("c1"), None);

        let client = reqwest::Client::new();
        let base = h.base_url();
        let get = client
            .get(format!("{base}/partners/cohort-bridge/cohorts"))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status().as_u16(), 405);
        assert_eq!(get.headers()[ALLOW], "POST");
        let missing = client
            .post(format!("{base}/partners/cohort-bridge/other"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status().as_u16(), 404);
        let stats = h.stats();
        assert_eq!(stats.requests, 5);
        assert_eq!(
            stats.by_status,
            BTreeMap::from([(401, 3), (404, 1), (405, 1)])
        );
    }

    #[tokio::test]
    async fn rate_limit_answers_429_then_recovers() {
        let window = Duration::from_secs(2);
        let h = emulator(EmulatorConfig {
            rate_limit: RateLimitConfig {
                requests: 3,
                window,
            },
            ..config()
        })
        .await;
        // Windows are aligned to the epoch: start just after one begins, so all four requests
        // fall in the same window.
        let into = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 2000;
        tokio::time::sleep(Duration::from_millis((2000 - into + 20) as u64)).await;
        for remaining in ["2", "1", "0"] {
            let resp = post(&h, "/cohorts", &create_body("c1", "One")).await;
            assert_eq!(resp.status().as_u16(), 201);
            assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
            assert_eq!(resp.headers()["x-ratelimit-remaining"], remaining);
        }
        let resp = post(&h, "/cohorts", &create_body("c1", "Renamed")).await;
        assert_eq!(resp.status().as_u16(), 429);
        let headers = resp.headers();
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        let retry: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "retry-after {retry}");
        let reset: u64 = headers["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            reset >= now && reset <= now + 2 && reset.is_multiple_of(2),
            "reset {reset}, now {now}"
        );
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"message": "rate limit exceeded"})
        );
        assert_eq!(h.cohort_name("c1").as_deref(), Some("One"));
        assert_eq!(h.stats().rate_limited, 1);
        let log: Vec<bool> = h
            .rate_log()
            .into_iter()
            .map(|(_, allowed)| allowed)
            .collect();
        assert_eq!(log, [true, true, true, false]);

        tokio::time::sleep(window + Duration::from_millis(100)).await;
        assert_eq!(create(&h, "c1", "Renamed").await.0, 201);
        assert_eq!(h.cohort_name("c1").as_deref(), Some("Renamed"));
    }

    #[tokio::test]
    async fn fault_error_before_apply_and_locked_do_not_apply() {
        let h = emulator(faulty(FaultConfig {
            error_before_apply: 1.0,
            ..FaultConfig::default()
        }))
        .await;
        let resp = post(&h, "/cohorts", &create_body("c1", "One")).await;
        assert!(resp.headers().get("x-ratelimit-remaining").is_some());
        assert_eq!(resp.status().as_u16(), 500);
        assert_eq!(h.cohort_name("c1"), None);

        let h = emulator(faulty(FaultConfig {
            locked: 1.0,
            ..FaultConfig::default()
        }))
        .await;
        assert_eq!(
            create(&h, "c1", "One").await,
            (423, "Resource locked".to_owned())
        );
        assert_eq!(h.cohort_name("c1"), None);
        assert_eq!(h.stats().by_status, BTreeMap::from([(423, 1)]));
    }

    #[tokio::test]
    async fn fault_error_after_apply_applies_and_answers_500() {
        let h = emulator(faulty(FaultConfig {
            error_after_apply: 1.0,
            ..FaultConfig::default()
        }))
        .await;
        assert_eq!(create(&h, "c1", "One").await.0, 500);
        assert_eq!(h.cohort_name("c1").as_deref(), Some("One"));
        assert_eq!(
            users(&h, "c1", json!([{"user_ids": ["b", "a"]}])).await.0,
            500
        );
        assert_eq!(h.members("c1"), Some(strings(&["a", "b"])));
        // Invalid requests are still refused, not applied.
        assert_eq!(users(&h, "c1", json!([{"user_ids": [1]}])).await.0, 400);
        assert_eq!(h.stats().user_requests_applied, 1);
    }

    #[tokio::test]
    async fn fault_slow_delays_then_answers_normally() {
        let slow_delay = Duration::from_millis(300);
        let h = emulator(faulty(FaultConfig {
            slow: 1.0,
            slow_delay,
            ..FaultConfig::default()
        }))
        .await;
        let started = Instant::now();
        assert_eq!(create(&h, "c1", "One").await.0, 201);
        assert!(started.elapsed() >= slow_delay);
        assert_eq!(h.cohort_name("c1").as_deref(), Some("One"));
    }

    #[tokio::test]
    async fn fault_drop_closes_the_connection_without_a_response() {
        let h = emulator(faulty(FaultConfig {
            drop_connection: 1.0,
            ..FaultConfig::default()
        }))
        .await;
        let url = format!("{}/partners/cohort-bridge/cohorts", h.base_url());
        let result = reqwest::Client::new()
            .post(url)
            .json(&create_body("c1", "One"))
            .send()
            .await;
        let error = result.expect_err("a dropped connection must not produce a response");
        assert!(!error.is_status(), "{error}");

        // The same over a raw socket: the server closes without writing a single byte.
        let body = create_body("c1", "One").to_string();
        let request = format!(
            "POST /partners/cohort-bridge/cohorts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = TcpStream::connect(h.addr()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
        let read = read.expect("the server must close the connection");
        assert!(
            read.is_err() || received.is_empty(),
            "got {:?}",
            String::from_utf8_lossy(&received)
        );
        assert_eq!(h.cohort_name("c1"), None);
        let stats = h.stats();
        assert_eq!(stats.dropped_connections, 2);
        assert!(stats.by_status.is_empty());
    }

    #[tokio::test]
    async fn redundant_adds_and_removes_are_counted() {
        let h = emulator(config()).await;
        create(&h, "c1", "One").await;
        users(&h, "c1", json!([{"user_ids": ["a", "b"]}])).await;
        users(
            &h,
            "c1",
            json!([{"user_ids": ["b", "c"]}, {"user_ids": ["z", "a"], "should_remove": true}]),
        )
        .await;
        users(&h, "c1", json!([{"user_ids": ["a"]}])).await;
        assert_eq!(h.members("c1"), Some(strings(&["a", "b", "c"])));
        let stats = h.stats();
        assert_eq!((stats.ids_added, stats.ids_removed), (5, 2));
        assert_eq!((stats.redundant_adds, stats.redundant_removes), (1, 1));
    }

    #[tokio::test]
    async fn concurrent_keep_alive_requests_all_apply() {
        let h = emulator(config()).await;
        create(&h, "c1", "One").await;
        let client = reqwest::Client::new();
        let url = format!("{}/partners/cohort-bridge/cohorts/users", h.base_url());
        let tasks = (0..40).map(|t| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let ids: Vec<String> = (0..250).map(|i| format!("u{t}-{i}")).collect();
                let body = users_body("c1", json!([{"user_ids": ids}]));
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        });
        for task in tasks.collect::<Vec<_>>() {
            assert_eq!(task.await.unwrap(), 201);
        }
        assert_eq!(h.members("c1").map(|m| m.len()), Some(40 * 250));
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let h = emulator(config()).await;
        assert_eq!(create(&h, "c1", "One").await.0, 201);
        h.shutdown();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let url = format!("{}/partners/cohort-bridge/cohorts", h.base_url());
        let result = reqwest::Client::new()
            .post(url)
            .json(&create_body("c2", "Two"))
            .send()
            .await;
        assert!(result.is_err());
    }

    #[test]
    fn config_debug_hides_keys() {
        let text = format!("{:?}", config());
        assert!(!text.contains(KEY) && !text.contains(SECRET), "{text}");
    }
}
