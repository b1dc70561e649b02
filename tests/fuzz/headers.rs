//! The rate-limit header parsers (`deliver::headers`): any bytes as `Retry-After`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset`, at any clock. No panic, every wait within
//! `MAX_WAIT`, the quote of what was asked short, and allocations small.

use std::time::{Duration, UNIX_EPOCH};

use cohort_bridge::deliver::headers::{MAX_WAIT, reset_in, server_delay};
use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderValue};

use crate::{run, within};

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[-+0-9.eE]{0,40}".prop_map(String::into_bytes),
        "(Mon|Sun), [0-9]{2} (Jan|Feb|Dec) [0-9]{4,6} [0-9:]{8} GMT".prop_map(String::into_bytes),
        Just(u64::MAX.to_string().into_bytes()),
        Just(b"NaN".to_vec()),
        Just(b"-inf".to_vec()),
        Just(b"1e400".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn header_parsers() {
    let strategy = (value(), value(), value(), any::<u64>());
    run(strategy, |(retry, remaining, reset, now)| {
        let now = UNIX_EPOCH
            .checked_add(Duration::from_secs(now / 2))
            .unwrap_or(UNIX_EPOCH);
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("retry-after", retry),
            ("x-ratelimit-remaining", remaining),
            ("x-ratelimit-reset", reset),
        ] {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.insert(k, v);
            }
        }
        let input = [retry.as_slice(), remaining, reset].concat();
        within("headers", &input, 64 << 10, || {
            if let Some(a) = server_delay(&h, now) {
                assert!(a.wait <= MAX_WAIT, "{a:?}");
                assert!(a.said.len() < 300, "{a:?}");
            }
            if let Ok(text) = std::str::from_utf8(reset)
                && let Some(d) = reset_in(text, now)
            {
                assert!(d <= MAX_WAIT);
            }
        });
    });
}
