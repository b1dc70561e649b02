//! The project-file loader (`Config::parse` and its semantic checks): arbitrary text, and
//! project files built from the real keys with hostile values (huge, tiny, negative, NaN,
//! durations of every size). No panic; a loaded project's values are within their documented
//! ranges; every refusal names the file; allocations within a constant times the input.

use std::path::Path;
use std::time::Duration;

use cohort_bridge::config::RATE_RANGE;
use proptest::prelude::*;

use crate::{run, within};

const KEYS: &[&str] = &[
    "requests_per_second",
    "batch_size",
    "max_in_flight",
    "request_timeout",
    "deadline",
    "retry.max_attempts",
    "retry.initial_backoff",
    "retry.max_backoff",
    "retry.max_elapsed",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("1e-30".to_string()),
        Just("1e308".to_string()),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        "[0-9]{1,25}(\\.[0-9]{0,5})?(ms|s|m|h|d|)".prop_map(|v| format!("\"{v}\"")),
        "\\PC{0,12}".prop_map(|v| format!("{v:?}")),
    ]
}

fn project(pairs: &[(usize, String)], lock_ttl: &str) -> String {
    let (mut dest, mut retry) = (String::new(), String::new());
    for (k, v) in pairs {
        let key = KEYS[k % KEYS.len()];
        match key.strip_prefix("retry.") {
            Some(r) => retry.push_str(&format!("{r} = {v}\n")),
            None => dest.push_str(&format!("{key} = {v}\n")),
        }
    }
    format!(
        "[lake]\nurl = \"/tmp/lake\"\n[state]\nlock_ttl = {lock_ttl}\n\
         [destinations.b]\nkind = \"braze\"\nbase_url = \"https://x\"\npartner = \"p\"\n\
         partner_api_key_env = \"A\"\nclient_secret_env = \"B\"\n{dest}\
         [destinations.b.retry]\n{retry}"
    )
}

fn check(text: &str) {
    let parsed = within(
        "config",
        text.as_bytes(),
        256 * text.len() + (1 << 20),
        || cohort_bridge::destinations::parse_config(text, Path::new("p.toml")),
    );
    match parsed {
        Ok(c) => {
            if let Some(d) = c.destinations.get("b") {
                assert!(
                    RATE_RANGE.contains(&d.delivery.requests_per_second),
                    "{text}"
                );
                assert!(
                    d.delivery.retry.max_backoff <= Duration::from_secs(24 * 3600),
                    "{text}"
                );
                assert!(
                    d.delivery.deadline <= Duration::from_secs(7 * 24 * 3600),
                    "{text}"
                );
            }
            assert!(c.state.lock_ttl <= Duration::from_secs(24 * 3600), "{text}");
        }
        Err(e) => assert!(e.to_string().starts_with("p.toml: "), "{e}"),
    }
}

#[test]
fn project_file_loader() {
    let built = (
        proptest::collection::vec((0usize..64, value()), 0..8),
        value(),
    )
        .prop_map(|(pairs, ttl)| project(&pairs, &ttl));
    let text = prop_oneof![1 => "\\PC{0,400}", 3 => built];
    run(text, |t| check(t));
}
