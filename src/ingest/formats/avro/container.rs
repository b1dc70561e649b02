//! The container around the records: the header (schema, codec, sync marker) and each
//! block's decompression, capped.

use std::io::Read;

use serde_json::Value;

use super::cursor::Cursor;
use super::schema::{Compiler, Node};
use crate::ingest::limits::{MAX_SCHEMA_BYTES, ZSTD_WINDOW_LOG_MAX};

#[derive(Debug, Clone, Copy)]
pub(super) enum Codec {
    Null,
    Deflate,
    Snappy,
    Zstandard,
}

pub(super) struct Header {
    pub(super) schema: Node,
    pub(super) codec: Codec,
    pub(super) sync: [u8; 16],
}

pub(super) fn read_header(cur: &mut Cursor<'_>) -> Result<Header, String> {
    if cur.take(4).ok() != Some(b"Obj\x01".as_slice()) {
        return Err("no Avro object container magic (`Obj` 1) at the start".into());
    }
    let mut schema = None;
    let mut codec = Codec::Null;
    loop {
        let count = cur.long()?;
        if count == 0 {
            break;
        }
        if count < 0 {
            cur.long()?;
        }
        // Each entry takes at least two bytes (two lengths): the loop ends with the data.
        for _ in 0..count.unsigned_abs() {
            let key = cur.string()?;
            let value = cur.bytes()?;
            match key {
                "avro.schema" => {
                    if value.len() > MAX_SCHEMA_BYTES {
                        return Err(format!(
                            "the schema is {} bytes, more than the limit of {MAX_SCHEMA_BYTES}",
                            value.len()
                        ));
                    }
                    let json: Value = serde_json::from_slice(value)
                        .map_err(|e| format!("the schema is not JSON: {e}"))?;
                    schema = Some(Compiler::default().node(&json, None)?.0);
                }
                "avro.codec" => {
                    codec = match value {
                        b"null" | b"" => Codec::Null,
                        b"deflate" => Codec::Deflate,
                        b"snappy" => Codec::Snappy,
                        b"zstandard" => Codec::Zstandard,
                        other => {
                            return Err(format!(
                                "codec `{}` is not supported (null, deflate, snappy, zstandard are)",
                                String::from_utf8_lossy(other.get(..64).unwrap_or(other))
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let sync = cur
        .take(16)?
        .try_into()
        .map_err(|_| "a sync marker is not 16 bytes")?;
    Ok(Header {
        schema: schema.ok_or("the header has no `avro.schema`")?,
        codec,
        sync,
    })
}

/// Snappy encodes at most 64 bytes in a 3-byte copy: no block decompresses to more than 22
/// times its size.
const SNAPPY_MAX_RATIO: usize = 22;

/// Decompresses a block into `out`, at most `cap` bytes; `false` when the block is stored as
/// is.
pub(super) fn decompress(
    codec: Codec,
    data: &[u8],
    out: &mut Vec<u8>,
    cap: usize,
) -> Result<bool, String> {
    out.clear();
    match codec {
        Codec::Null => return Ok(false),
        Codec::Deflate => {
            read_capped(flate2::read::DeflateDecoder::new(data), out, cap, "deflate")?
        }
        Codec::Snappy => {
            let (body, crc) = data
                .split_last_chunk::<4>()
                .ok_or("a snappy block is shorter than its checksum")?;
            let len = snap::raw::decompress_len(body).map_err(|e| format!("snappy: {e}"))?;
            if len > cap {
                return Err(format!(
                    "a snappy block claims {len} bytes decompressed, more than the limit of {cap} \
                     bytes per block"
                ));
            }
            if len > body.len().saturating_mul(SNAPPY_MAX_RATIO) {
                return Err(format!(
                    "a snappy block of {} bytes claims {len} bytes decompressed, more than snappy \
                     can encode in it",
                    body.len()
                ));
            }
            out.resize(len, 0);
            snap::raw::Decoder::new()
                .decompress(body, out)
                .map_err(|e| format!("snappy: {e}"))?;
            if crc32fast::hash(out) != u32::from_be_bytes(*crc) {
                return Err("snappy block checksum mismatch".into());
            }
        }
        Codec::Zstandard => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| format!("zstandard: {e}"))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| format!("zstandard: {e}"))?;
            read_capped(decoder, out, cap, "zstandard")?;
        }
    }
    Ok(true)
}

/// Reads a decompressor to its end or to `cap` bytes, whichever comes first.
fn read_capped(reader: impl Read, out: &mut Vec<u8>, cap: usize, what: &str) -> Result<(), String> {
    reader
        .take(cap as u64 + 1)
        .read_to_end(out)
        .map_err(|e| format!("{what}: {e}"))?;
    if out.len() > cap {
        return Err(format!(
            "a {what} block decompresses to more than the limit of {cap} bytes per block"
        ));
    }
    Ok(())
}
