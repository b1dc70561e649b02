//! The NDJSON decoder (`ingest::formats::ndjson`, through `ingest::decode_file`): random bytes,
//! and mutations of valid files and of hostile lines (deep nesting, huge numbers, lone
//! surrogates, invalid UTF-8). No panic; every line read either lands or is quarantined; and
//! allocations stay within a constant times the input's size.

use cohort_bridge::ingest::decode_file;
use cohort_bridge::ingest::formats::Format;
use cohort_bridge::ingest::limits::Limits;

use crate::{inputs, run, within};

fn seeds() -> Vec<Vec<u8>> {
    let good = (0..4)
        .map(|i| {
            serde_json::json!({
                "event_type": "users.messages.email.Click", "id": format!("e{i}"),
                "time": 1_764_000_000 + i, "user_id": format!("u{i}"), "url": null,
                "nested": {"a": [1, 2.5, "x", true, null, {"b": "é✓"}]},
            })
            .to_string()
                + "\n"
        })
        .collect::<String>();
    let mut out = vec![
        good.clone().into_bytes(),
        good.replace('\n', "\r\n").into_bytes(),
    ];
    out.push(format!("{}{}\n", "[".repeat(300), "]".repeat(300)).into_bytes());
    out.push(b"{\"id\":\"a\",\"time\":1e999999}\n{\"id\":\"\\ud800\",\"time\":-0}\n".to_vec());
    out.push(b"\xef\xbb\xbf{\"id\":\"a\xff\",\"time\":1}\n\n \n{}\n".to_vec());
    out
}

#[test]
fn ndjson_decoder() {
    run(inputs(seeds()), |bytes| {
        let n = bytes.len();
        let decoded = within("ndjson", bytes, 256 * n + (4 << 20), || {
            decode_file(
                "event_type=users.messages.email.Click/f.ndjson",
                Format::NdJson,
                bytes,
                &Limits::default(),
            )
        });
        assert_eq!(
            decoded.broken, None,
            "NDJSON files are never broken, only lines"
        );
        assert_eq!(
            decoded.batch.num_rows() as u64 + decoded.quarantine.len() as u64,
            decoded.records,
            "every line read lands or is quarantined"
        );
    });
}
