//! Source formats behind one decoder interface: a file's format is picked by its name
//! ([`format_of`]), and its [`Decoder`] hands every record of the file, in order, to one sink as
//! a [`Record`] (its fields split for the event columns, and its JSON text for the quarantine)
//! or as why it is not one. The rest of an ingest (`decode.rs`: records to event columns and
//! quarantine entries) is the same for every format.
//!
//! Adding a source format: a file here with a unit struct implementing [`Decoder`] (the file
//! name endings it claims, and its `decode`), then a variant of [`Format`] and its row in
//! [`DECODERS`].

pub mod avro;
pub mod ndjson;

use super::event::Parts;
use super::limits::Limits;

/// The formats of source files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Avro,
    NdJson,
}

/// Each format's decoder: one row a format.
pub const DECODERS: [(Format, &dyn Decoder); 2] = [
    (Format::Avro, &avro::Avro),
    (Format::NdJson, &ndjson::NdJson),
];

/// Where a decoder hands each record (or why it is not one), with its position; `Err` stops
/// the file with that reason.
pub type Sink<'a> = dyn FnMut(u64, Result<&dyn Record, String>) -> Result<(), String> + 'a;

/// How a format's files are told and read.
pub trait Decoder: Sync {
    /// The endings of its file names (lower case, with the dot).
    fn extensions(&self) -> &'static [&'static str];

    /// Decodes a whole file within `limits`, handing `sink` every record in order with its
    /// position (as the format counts: a record index, a line number), or why that record
    /// cannot be read. `sink` returns `Err` to stop the file (with that reason). Returns where
    /// and why the file stopped before its end, if it did. Never panics on any bytes; what it
    /// allocates is bounded by `limits`.
    fn decode(&self, bytes: &[u8], limits: &Limits, sink: &mut Sink<'_>) -> Option<(u64, String)>;
}

/// One record of a file, as its decoder hands it over.
pub trait Record {
    /// Its fields, split into the canonical ones and the JSON object of the rest.
    fn parts(&self) -> Parts<'_>;
    /// The record as JSON text, for the quarantine (`None`: it cannot be written).
    fn json_text(&self) -> Option<String>;
}

impl Format {
    pub fn decoder(self) -> &'static dyn Decoder {
        DECODERS
            .iter()
            .find(|(format, _)| *format == self)
            .map(|(_, decoder)| *decoder)
            .expect("every format has its row in DECODERS")
    }
}

/// The format of a file, by the end of its name; `None` for files that are not events
/// (skipped).
pub fn format_of(path: &str) -> Option<Format> {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    DECODERS
        .iter()
        .find(|(_, decoder)| decoder.extensions().iter().any(|e| name.ends_with(e)))
        .map(|(format, _)| *format)
}
