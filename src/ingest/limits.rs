//! What hostile input may cost: every limit that bounds the memory and time an input file can
//! make `ingest` spend, in one place.
//!
//! An input file is never trusted to say how big something is. Avro block record counts, array
//! and map lengths, string, bytes and fixed lengths are checked against the bytes actually
//! present before anything is allocated for them (an item's schema gives the least number of
//! bytes it takes; items that take none are capped by [`MAX_ZERO_SIZE_ITEMS`]); a compressed
//! block may not decompress past [`MAX_BLOCK_BYTES`] (snappy's claimed length is checked before
//! its buffer is allocated, deflate and zstandard stop reading there); a schema may not expand
//! past [`MAX_SCHEMA_NODES`] nodes or [`MAX_SCHEMA_DEPTH`] levels (nor its text past
//! [`MAX_SCHEMA_BYTES`]); a record may not produce more
//! than [`MAX_RECORD_BYTES`] of JSON (decoding stops building it there and only skips its bytes);
//! and a file may not produce more than [`Limits::file_bytes`] of rows (or be larger than that
//! itself). A file past a limit is quarantined with the reason, and the run goes on.
//!
//! **Peak memory.** With these limits, an ingest holds at most `engine.memory_limit` of input
//! files and what they decode to: [`READ_AHEAD`] files at once, each at most
//! `engine.memory_limit / 20` ([`FILE_SHARE`]) of bytes, as much of decoded rows (their
//! builders at most twice that) and as much of quarantine entries, and a copy of the rows of
//! the file being written when they span several days. On top of that comes
//! [`MEMORY_OVERHEAD`], a constant that does not depend on the input: decompression buffers and zstandard windows of the files being decoded,
//! the Parquet row groups and upload buffers of the days being written, and the run's
//! quarantine report.
//! On top of both comes only what the data itself justifies: a 128-bit fingerprint (about
//! 40 bytes with its hash table) per distinct event id of the days being written.

/// Records larger than this (their fields as JSON text, together) are quarantined.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// An Avro block may not decompress to more than this (the Avro libraries write blocks of
/// 16 to 64 KiB by default).
pub const MAX_BLOCK_BYTES: usize = 16 << 20;

/// The largest zstandard window a block may ask for (log2): a block of at most
/// [`MAX_BLOCK_BYTES`] needs no more.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Bytes of a file's schema (its JSON text; a Currents schema takes about 4 KiB).
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;

/// Memory a parsed JSON value (`serde_json::Value`, as a record's nested values and the schema
/// are built) can take per byte of its text, at worst: a one-entry object nested in another
/// takes a B-tree node of about 630 bytes for 6 bytes of text.
pub const JSON_VALUE_AMPLIFICATION: usize = 128;

/// Nodes of a file's schema with its named types expanded (a Currents schema has about 30); a
/// field name or enum symbol counts one more per 16 bytes.
pub const MAX_SCHEMA_NODES: usize = 10_000;

/// Nesting of a file's schema with its named types expanded.
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// Items of an array block whose items take no bytes at all (`null`, empty records).
pub const MAX_ZERO_SIZE_ITEMS: u64 = 1 << 16;

/// Files decoded ahead of the writer.
pub const READ_AHEAD: usize = 4;

/// Days written at once; opening one more closes (switches) the least recently used.
pub const MAX_OPEN_DAYS: usize = 8;

/// A day's row group in progress is flushed once its encoded size passes this.
pub const ROW_GROUP_BYTES: usize = 8 << 20;

/// Upload buffer of a day's object (a multipart part), and parts uploading at once.
pub const UPLOAD_PART_BYTES: usize = 5 << 20;
pub const UPLOAD_CONCURRENCY: usize = 2;

/// Record texts kept in a run's quarantine report; past it, entries keep their file, position
/// and reason but not the record.
pub const QUARANTINE_RECORD_BYTES: usize = 16 << 20;

/// Entries (file, position, reason) kept in a run's quarantine report; past it, they are only
/// counted (in the summary, and in a last line of the report).
pub const QUARANTINE_BYTES: usize = 16 << 20;

/// The part of an ingest's peak memory that does not scale with `engine.memory_limit`: for each
/// file being decoded, its block being decompressed (twice [`MAX_BLOCK_BYTES`]: buffers grow by
/// doubling), its zstandard window, and the parsed values of its schema or of the record being
/// built (one at a time); the row groups and upload buffers of the days being written; and the
/// run's quarantine report. Rounded up to 640 MiB.
pub const MEMORY_OVERHEAD: usize = 640 << 20;

const _: () = assert!(
    READ_AHEAD
        * (2 * MAX_BLOCK_BYTES
            + (1 << ZSTD_WINDOW_LOG_MAX)
            + JSON_VALUE_AMPLIFICATION * MAX_RECORD_BYTES)
        + MAX_OPEN_DAYS * (ROW_GROUP_BYTES + (1 + UPLOAD_CONCURRENCY) * UPLOAD_PART_BYTES)
        + QUARANTINE_RECORD_BYTES
        + QUARANTINE_BYTES
        <= MEMORY_OVERHEAD
);
const _: () = assert!(MAX_SCHEMA_BYTES <= MAX_RECORD_BYTES);

/// A file's share of `engine.memory_limit`: [`READ_AHEAD`] files of 4 shares each (bytes,
/// rows twice, quarantine), one share for the copy of a file's rows split by day, and three for
/// what grows with rows besides (their fingerprints, their Parquet encoding in progress).
pub const FILE_SHARE: u64 = 4 * READ_AHEAD as u64 + 1 + 3;

/// The smallest per-file budget, whatever `engine.memory_limit` says.
const MIN_FILE_BYTES: usize = 4 << 20;

/// What one file may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a file, and bytes of the rows decoded from it (each record counted by the
    /// JSON text of its fields, whether it is kept or quarantined).
    pub file_bytes: usize,
    /// Decompressed bytes of one Avro block.
    pub block_bytes: usize,
}

impl Limits {
    /// The limits of a run whose `engine.memory_limit` is `memory_limit`.
    pub fn for_memory(memory_limit: u64) -> Limits {
        let share = usize::try_from(memory_limit / FILE_SHARE).unwrap_or(usize::MAX);
        Limits {
            file_bytes: share.max(MIN_FILE_BYTES),
            block_bytes: MAX_BLOCK_BYTES,
        }
    }
}

impl Default for Limits {
    /// The limits under the default `engine.memory_limit` (1 GiB).
    fn default() -> Self {
        Limits::for_memory(1 << 30)
    }
}
