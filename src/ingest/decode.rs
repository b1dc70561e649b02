//! Decoding one file: its format's decoder hands over records, which become rows of the
//! event columns or quarantine entries; a file that cannot be read to the end keeps the rows
//! before the damage, and one that panics the decoder (a bug) is quarantined whole.

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;

use super::days::fingerprints_of;
use super::event::EventColumns;
use super::formats::Format;
use super::limits::Limits;
use super::listing::event_type_of;
use super::quarantine::{QUARANTINE_ENTRY_BYTES, Quarantined};

/// One source file, read.
pub(super) struct FileRead {
    pub(super) rel: String,
    pub(super) meta: object_store::ObjectMeta,
    pub(super) records: u64,
    pub(super) batch: RecordBatch,
    /// The fingerprint of each row's event id (computed here, off the writer's path).
    pub(super) fingerprints: Vec<u128>,
    pub(super) quarantine: Vec<Quarantined>,
    /// Where and why the file could not be read to the end, and its bytes (to keep).
    pub(super) broken: Option<(u64, String, Bytes)>,
}

pub(super) fn read_file(
    rel: String,
    meta: object_store::ObjectMeta,
    format: Format,
    bytes: Bytes,
    limits: &Limits,
) -> FileRead {
    // Bad input must not panic; if a bug lets it, the file is quarantined and the run goes on.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_file(&rel, format, &bytes, limits)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        DecodedFile {
            batch: EventColumns::default().finish(),
            records: 0,
            quarantine: Vec::new(),
            broken: Some((
                0,
                format!("the decoder failed on this file (a bug, please report it): {message}"),
            )),
        }
    });
    FileRead {
        fingerprints: fingerprints_of(&decoded.batch),
        batch: decoded.batch,
        records: decoded.records,
        quarantine: decoded.quarantine,
        broken: decoded.broken.map(|(p, r)| (p, r, bytes)),
        rel,
        meta,
    }
}

/// One file decoded.
#[derive(Debug)]
pub struct DecodedFile {
    /// The good events, as rows of [`event::schema`].
    pub batch: RecordBatch,
    /// Records (or NDJSON lines) read, good and bad.
    pub records: u64,
    /// The bad ones.
    pub quarantine: Vec<Quarantined>,
    /// Where and why the file could not be read to the end.
    pub broken: Option<(u64, String)>,
}

/// Decodes one file (`rel`: its path under the source, for the event type of its folder and
/// the `source_file` column) within `limits`. Never panics on any bytes; what it allocates is
/// bounded by `limits` (see `limits.rs`).
pub fn decode_file(rel: &str, format: Format, bytes: &[u8], limits: &Limits) -> DecodedFile {
    let folder = event_type_of(rel);
    let mut columns = EventColumns::default();
    let mut quarantine = Vec::new();
    let mut records = 0u64;
    // What the quarantine entries of this file take; past the file's limit, the file stops.
    let mut kept = 0usize;
    let mut bad = |position: u64, reason: String, record: Option<String>| {
        kept += QUARANTINE_ENTRY_BYTES
            + rel.len()
            + reason.len()
            + record.as_ref().map_or(0, String::len);
        quarantine.push(Quarantined {
            file: rel.to_string(),
            position,
            reason,
            record,
        });
        if kept > limits.file_bytes {
            return Err(format!(
                "the file's bad records take more than {} bytes to report (the per-file limit, \
                 engine.memory_limit / 20) at {position}; the records before it are kept",
                limits.file_bytes
            ));
        }
        Ok(())
    };
    let broken = format
        .decoder()
        .decode(bytes, limits, &mut |position, record| {
            records += 1;
            match record {
                Err(reason) => bad(position, reason, None),
                Ok(record) => match columns.push(&record.parts(), folder, rel) {
                    Ok(()) => Ok(()),
                    Err(reason) => bad(position, reason, record.json_text()),
                },
            }
        });
    DecodedFile {
        batch: columns.finish(),
        records,
        quarantine,
        broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_bad_records_stops_at_the_file_limit() {
        let limits = Limits {
            file_bytes: 1 << 20,
            ..Limits::default()
        };
        let lines = "{}\n".repeat(100_000);
        let d = decode_file("x/f.ndjson", Format::NdJson, lines.as_bytes(), &limits);
        let (at, why) = d.broken.unwrap();
        assert!(at > 1_000 && at < 100_000, "{at}");
        assert!(
            why.contains("bad records take more than 1048576 bytes"),
            "{why}"
        );
        assert_eq!(d.quarantine.len() as u64, d.records);
        assert_eq!(d.batch.num_rows(), 0);
    }
}
