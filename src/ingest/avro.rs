//! A schema-compiled reader of Avro object container files, straight into event columns.
//!
//! The generic route (`apache_avro::Reader` → `Value` → JSON map → event) allocates every field
//! name and value of every record; at millions of events it is the whole cost of an ingest.
//! Here the writer's schema is compiled once per file: each top-level field is either one of
//! the canonical columns, decoded as a borrowed slice of the block, or one of the record's
//! other fields, written straight to its JSON text for the `properties` column. Blocks are
//! decompressed one at a time (null, deflate, snappy with its CRC, zstandard), the sync marker
//! after every block is checked, and a block or record that cannot be read stops the file
//! there: every record before it is kept (the caller quarantines the file with the position).
//!
//! The values are the same as the generic route's: unions unwrapped, enums as their symbol,
//! bytes and fixed as lower-case hex, logical types as their underlying numbers, NaN as null,
//! and nested records and maps as JSON objects with sorted keys.
//!
//! **Hostile bytes.** Nothing the file says is allocated before the bytes present justify it
//! (see `limits.rs`): a block's record count, an array's or map's item count and a string's
//! length are checked against the bytes left (by the least size of an item, from the schema;
//! items of no size at all are capped), a block's decompressed size is capped (snappy's claimed
//! length is checked before its buffer exists), the schema's expanded size and depth are capped,
//! a record stops being built past [`MAX_RECORD_BYTES`] of JSON (its bytes are then only skipped,
//! and it is quarantined as too large), and all the JSON a file produces, kept or not, counts
//! against [`Limits::file_bytes`]. Every loop consumes input or that budget, so time is bounded
//! too.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use serde_json::{Map, Number, Value};

use super::event::{CANONICAL, Field, Parts};
use super::limits::{
    Limits, MAX_RECORD_BYTES, MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES,
    MAX_ZERO_SIZE_ITEMS, ZSTD_WINDOW_LOG_MAX,
};

/// A compiled schema node.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record(Vec<(String, Node)>),
    Enum(Vec<String>),
    /// The items, and the least number of bytes an item takes.
    Array(Box<Node>, usize),
    /// The values, and the least number of bytes an entry (key and value) takes.
    Map(Box<Node>, usize),
    Union(Vec<Node>),
    Fixed(usize),
}

impl Node {
    /// The least number of bytes a value takes. Zero only for values that never take any
    /// (`null`, empty fixed, records of those).
    fn min_size(&self) -> usize {
        match self {
            Node::Null => 0,
            Node::Boolean
            | Node::Int
            | Node::Long
            | Node::Bytes
            | Node::String
            | Node::Enum(_)
            | Node::Array(..)
            | Node::Map(..) => 1,
            Node::Float => 4,
            Node::Double => 8,
            Node::Fixed(n) => *n,
            Node::Record(fields) => fields
                .iter()
                .fold(0, |sum, (_, f)| sum.saturating_add(f.min_size())),
            Node::Union(branches) => branches
                .iter()
                .map(Node::min_size)
                .min()
                .unwrap_or(0)
                .saturating_add(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Codec {
    Null,
    Deflate,
    Snappy,
    Zstandard,
}

/// Where a top-level field goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Index into [`CANONICAL`].
    Canonical(usize),
    /// Position among the other fields, in name order.
    Other(usize),
}

/// Why decoding stopped.
#[derive(Debug)]
enum Fail {
    /// The bytes are not what the schema says.
    Corrupt(String),
    /// The record being built passed [`MAX_RECORD_BYTES`].
    RecordTooLarge,
    /// The file passed [`Limits::file_bytes`].
    FileTooLarge,
}

impl From<String> for Fail {
    fn from(e: String) -> Self {
        Fail::Corrupt(e)
    }
}

impl From<&str> for Fail {
    fn from(e: &str) -> Self {
        Fail::Corrupt(e.to_string())
    }
}

/// What decoding may still spend: JSON bytes of the record being built, and work (JSON bytes
/// and schema nodes visited) of the whole file.
struct Budget {
    record: usize,
    file: usize,
}

impl Budget {
    fn spend(&mut self, n: usize) -> Result<(), Fail> {
        self.file = self.file.checked_sub(n).ok_or(Fail::FileTooLarge)?;
        self.record = self.record.checked_sub(n).ok_or(Fail::RecordTooLarge)?;
        Ok(())
    }

    /// One step of skipping (no JSON is built, but time is spent).
    fn visit(&mut self) -> Result<(), Fail> {
        self.file = self.file.checked_sub(1).ok_or(Fail::FileTooLarge)?;
        Ok(())
    }
}

/// Reads one file, calling `record` for every record with its position (0-based index in the
/// file) and its parts, or why it cannot be an event (too large). `record` returns `Err` to
/// stop reading the file (with that reason). Returns where and why the file could not be read
/// to the end, if so.
pub fn read_file(
    bytes: &[u8],
    limits: &Limits,
    mut record: impl FnMut(u64, Result<&Parts<'_>, String>) -> Result<(), String>,
) -> Option<(u64, String)> {
    let mut cur = Cursor { buf: bytes, pos: 0 };
    let header = match read_header(&mut cur) {
        Ok(h) => h,
        Err(e) => return Some((0, format!("not a readable Avro file: {e}"))),
    };
    let layout = match Layout::compile(&header.schema) {
        Ok(l) => l,
        Err(e) => return Some((0, format!("not a readable Avro file: {e}"))),
    };
    let mut index = 0u64;
    let mut block = Vec::new();
    let mut scratch = Scratch::new(&layout);
    let mut budget = Budget {
        record: 0,
        file: limits.file_bytes,
    };
    let too_large = |at: u64| {
        Some((
            at,
            format!(
                "the file decodes to more than {} bytes of records (the per-file limit, \
                 engine.memory_limit / 20) at record {at}; the records before it are kept: \
                 raise `engine.memory_limit` and backfill its days to read the rest",
                limits.file_bytes
            ),
        ))
    };
    while cur.pos < cur.buf.len() {
        let at = index;
        let damaged = |e: String| {
            Some((
                at,
                format!("corrupt or truncated Avro data at record {at}: {e}"),
            ))
        };
        let (count, size) = match (cur.long(), cur.long()) {
            (Ok(c), Ok(s)) if c >= 0 && s >= 0 => (c as u64, s as u64),
            (Ok(c), Ok(s)) => return damaged(format!("bad block header (count {c}, size {s})")),
            (Err(e), _) | (_, Err(e)) => return damaged(e),
        };
        let data = match usize::try_from(size).map(|s| cur.take(s)) {
            Ok(Ok(d)) => d,
            _ => return damaged(format!("a block of {size} bytes is cut short")),
        };
        match cur.take(16) {
            Ok(sync) if sync == header.sync => {}
            Ok(_) => return damaged("the sync marker after a block does not match".into()),
            Err(_) => return damaged("the file ends before the sync marker of a block".into()),
        }
        let data: &[u8] = match decompress(header.codec, data, &mut block, limits.block_bytes) {
            Ok(true) => &block,
            Ok(false) => data,
            Err(e) => return damaged(e),
        };
        // Every record takes at least `min_size` bytes: a count the block cannot hold is a lie.
        let fits = data.len().checked_div(layout.min_size).unwrap_or(0);
        if count > fits as u64 {
            return damaged(format!(
                "a block claims {count} records but its {} bytes can hold at most {fits}",
                data.len()
            ));
        }
        let mut rec = Cursor { buf: data, pos: 0 };
        let mut canonical = vec![Field::Missing; CANONICAL.len()];
        for _ in 0..count {
            let start = rec.pos;
            budget.record = MAX_RECORD_BYTES;
            let outcome = match scratch.decode(&layout, &mut rec, &mut canonical, &mut budget) {
                Ok(()) => Ok(()),
                Err(Fail::RecordTooLarge) => {
                    // Only skip the rest of its bytes: it is quarantined, not built.
                    rec.pos = start;
                    match layout.skip(&mut rec, &mut budget) {
                        Ok(()) => Err(format!(
                            "record is too large (its fields take more than {MAX_RECORD_BYTES} \
                             bytes as JSON)"
                        )),
                        Err(Fail::Corrupt(e)) => return Some(damage(index, e)),
                        Err(_) => return too_large(index),
                    }
                }
                Err(Fail::FileTooLarge) => return too_large(index),
                Err(Fail::Corrupt(e)) => return Some(damage(index, e)),
            };
            let parts = Parts {
                canonical: &canonical,
                properties: &scratch.properties,
            };
            if let Err(stop) = record(index, outcome.map(|()| &parts)) {
                return Some((index, stop));
            }
            index += 1;
        }
        if rec.pos != data.len() {
            return Some((
                index,
                format!(
                    "corrupt Avro data after record {}: {} bytes left over at the end of a block",
                    index.saturating_sub(1),
                    data.len() - rec.pos
                ),
            ));
        }
    }
    None
}

/// Where and why a file stops being readable.
fn damage(at: u64, e: String) -> (u64, String) {
    (
        at,
        format!("corrupt or truncated Avro data at record {at}: {e}"),
    )
}

struct Header {
    schema: Node,
    codec: Codec,
    sync: [u8; 16],
}

fn read_header(cur: &mut Cursor<'_>) -> Result<Header, String> {
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
fn decompress(codec: Codec, data: &[u8], out: &mut Vec<u8>, cap: usize) -> Result<bool, String> {
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

/// Schema JSON to nodes, resolving named types (by full name or simple name). Named types are
/// expanded where they are used, so the expanded size and depth are counted and capped (a
/// schema that doubles a type at each of 60 levels would otherwise expand to 2⁶⁰ nodes). A
/// node counts one, a field name or enum symbol one more per 16 bytes, as they are copied too.
#[derive(Default)]
struct Compiler {
    /// Each named type with its expanded size (nodes) and height.
    named: HashMap<String, (Node, usize, usize)>,
    /// Nodes built so far, references expanded.
    nodes: usize,
}

impl Compiler {
    /// A node with its height (1 for a leaf).
    fn node(&mut self, json: &Value, namespace: Option<&str>) -> Result<(Node, usize), String> {
        let before = self.nodes;
        self.count(1)?;
        let (node, height) = match json {
            Value::String(name) => self.by_name(name, namespace)?,
            Value::Array(branches) => {
                let mut out = Vec::with_capacity(branches.len().min(MAX_SCHEMA_NODES));
                let mut height = 0;
                for b in branches {
                    let (n, h) = self.node(b, namespace)?;
                    out.push(n);
                    height = height.max(h);
                }
                (Node::Union(out), height + 1)
            }
            Value::Object(o) => {
                let ty = o
                    .get("type")
                    .ok_or_else(|| format!("a schema object without `type`: {}", short(json)))?;
                let Value::String(ty) = ty else {
                    // {"type": {...}} or {"type": [...]}: a wrapped schema.
                    return self.node(ty, namespace);
                };
                let name = o.get("name").and_then(Value::as_str);
                let ns = o
                    .get("namespace")
                    .and_then(Value::as_str)
                    .or(namespace)
                    .map(str::to_string);
                let (node, height) = match ty.as_str() {
                    "record" | "error" => {
                        let fields = o
                            .get("fields")
                            .and_then(Value::as_array)
                            .ok_or_else(|| format!("record {name:?} has no `fields`"))?;
                        let mut out = Vec::with_capacity(fields.len().min(MAX_SCHEMA_NODES));
                        let mut height = 0;
                        for f in fields {
                            let fname = f
                                .get("name")
                                .and_then(Value::as_str)
                                .ok_or_else(|| format!("a field of record {name:?} has no name"))?;
                            let fty = f
                                .get("type")
                                .ok_or_else(|| format!("field `{fname}` has no type"))?;
                            // Names are copied with their record: long ones count more.
                            self.count(fname.len() / 16)?;
                            let (n, h) = self.node(fty, ns.as_deref())?;
                            out.push((fname.to_string(), n));
                            height = height.max(h);
                        }
                        (Node::Record(out), height + 1)
                    }
                    "enum" => {
                        let symbols = o
                            .get("symbols")
                            .and_then(Value::as_array)
                            .ok_or_else(|| format!("enum {name:?} has no `symbols`"))?;
                        let symbols: Vec<String> = symbols
                            .iter()
                            .map(|s| s.as_str().unwrap_or_default().to_string())
                            .collect();
                        // Symbols are copied with their enum: each counts.
                        self.count(symbols.iter().map(|s| 1 + s.len() / 16).sum())?;
                        (Node::Enum(symbols), 1)
                    }
                    "array" => {
                        let (items, h) = self.node(
                            o.get("items").ok_or("an array schema without `items`")?,
                            ns.as_deref(),
                        )?;
                        let min = items.min_size();
                        (Node::Array(Box::new(items), min), h + 1)
                    }
                    "map" => {
                        let (values, h) = self.node(
                            o.get("values").ok_or("a map schema without `values`")?,
                            ns.as_deref(),
                        )?;
                        let min = values.min_size().saturating_add(1);
                        (Node::Map(Box::new(values), min), h + 1)
                    }
                    "fixed" => (
                        Node::Fixed(
                            o.get("size")
                                .and_then(Value::as_u64)
                                .and_then(|s| usize::try_from(s).ok())
                                .ok_or_else(|| format!("fixed {name:?} has no `size`"))?,
                        ),
                        1,
                    ),
                    other => self.by_name(other, ns.as_deref())?,
                };
                if let Some(name) = name {
                    let full = match (&ns, name.contains('.')) {
                        (Some(ns), false) if !ns.is_empty() => format!("{ns}.{name}"),
                        _ => name.to_string(),
                    };
                    let simple = full.rsplit('.').next().unwrap_or(&full).to_string();
                    let size = self.nodes - before;
                    self.named.insert(full, (node.clone(), size, height));
                    self.named
                        .entry(simple)
                        .or_insert_with(|| (node.clone(), size, height));
                }
                (node, height)
            }
            other => return Err(format!("not a schema: {}", short(other))),
        };
        if height > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
            ));
        }
        Ok((node, height))
    }

    fn count(&mut self, n: usize) -> Result<(), String> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_SCHEMA_NODES {
            return Err(format!(
                "the schema has more than {MAX_SCHEMA_NODES} types once its named types are \
                 expanded"
            ));
        }
        Ok(())
    }

    fn lookup(&self, name: &str, namespace: Option<&str>) -> Option<&(Node, usize, usize)> {
        namespace
            .and_then(|ns| self.named.get(&format!("{ns}.{name}")))
            .or_else(|| self.named.get(name))
            .or_else(|| self.named.get(name.rsplit('.').next().unwrap_or(name)))
    }

    fn by_name(&mut self, name: &str, namespace: Option<&str>) -> Result<(Node, usize), String> {
        Ok(match name {
            "null" => (Node::Null, 1),
            "boolean" => (Node::Boolean, 1),
            "int" => (Node::Int, 1),
            "long" => (Node::Long, 1),
            "float" => (Node::Float, 1),
            "double" => (Node::Double, 1),
            "bytes" => (Node::Bytes, 1),
            "string" => (Node::String, 1),
            _ => {
                let (size, height) = self
                    .lookup(name, namespace)
                    .map(|(_, size, height)| (*size, *height))
                    .ok_or_else(|| format!("unknown type `{}`", short_str(name)))?;
                // Counted before it is copied.
                self.count(size)?;
                let node = self
                    .lookup(name, namespace)
                    .map(|(node, _, _)| node.clone())
                    .ok_or_else(|| format!("unknown type `{}`", short_str(name)))?;
                (node, height)
            }
        })
    }
}

/// A JSON value for a message: at most 100 characters of it.
fn short(v: &Value) -> String {
    short_str(&v.to_string()).to_string()
}

fn short_str(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The top-level record compiled against the canonical columns.
struct Layout {
    fields: Vec<(Node, Target)>,
    /// `"name":` of each other field, JSON-escaped, in name order.
    other_keys: Vec<String>,
    /// The JSON bytes of a record's properties besides their values: braces, keys, commas.
    frame_bytes: usize,
    /// The least number of bytes a record takes (at least 1).
    min_size: usize,
}

impl Layout {
    fn compile(schema: &Node) -> Result<Layout, String> {
        let Node::Record(fields) = schema else {
            return Err("the file's schema is not a record (events are records)".into());
        };
        let min_size = schema.min_size();
        if min_size == 0 {
            return Err(
                "the file's records take no bytes (every field is null): they cannot be events"
                    .into(),
            );
        }
        let mut others: Vec<(&str, usize)> = Vec::new();
        let mut targets = Vec::with_capacity(fields.len());
        for (i, (name, _)) in fields.iter().enumerate() {
            match CANONICAL.iter().position(|c| c == name) {
                Some(c) => targets.push(Target::Canonical(c)),
                None => {
                    others.push((name, i));
                    targets.push(Target::Other(0));
                }
            }
        }
        others.sort();
        for (rank, (_, i)) in others.iter().enumerate() {
            targets[*i] = Target::Other(rank);
        }
        let other_keys: Vec<String> = others
            .iter()
            .map(|(name, _)| serde_json::to_string(name).unwrap_or_default() + ":")
            .collect();
        Ok(Layout {
            fields: fields.iter().map(|(_, n)| n.clone()).zip(targets).collect(),
            frame_bytes: 2 + other_keys.iter().map(|k| k.len() + 1).sum::<usize>(),
            other_keys,
            min_size,
        })
    }

    /// Skips one record's bytes without building anything.
    fn skip(&self, cur: &mut Cursor<'_>, budget: &mut Budget) -> Result<(), Fail> {
        for (node, _) in &self.fields {
            skip(node, cur, budget)?;
        }
        Ok(())
    }
}

/// The JSON text of the other fields of the record being decoded.
struct Scratch {
    json: String,
    /// Range of each other field's JSON in `json`, by name rank.
    ranges: Vec<(usize, usize)>,
    properties: String,
}

impl Scratch {
    fn new(layout: &Layout) -> Self {
        Scratch {
            json: String::new(),
            ranges: vec![(0, 0); layout.other_keys.len()],
            properties: String::new(),
        }
    }

    /// Decodes one record: canonical values into `canonical` (borrowing the block), the other
    /// fields into `properties`.
    fn decode<'a>(
        &mut self,
        layout: &Layout,
        cur: &mut Cursor<'a>,
        canonical_values: &mut [Field<'a>],
        budget: &mut Budget,
    ) -> Result<(), Fail> {
        // No reset of `canonical_values`: the layout is the file's, so every canonical field it
        // has is overwritten below and the others stay `Missing`.
        budget.spend(layout.frame_bytes)?;
        self.json.clear();
        for (node, target) in &layout.fields {
            match target {
                Target::Canonical(c) => {
                    let value = canonical(node, cur, budget)?;
                    if let Some(slot) = canonical_values.get_mut(*c) {
                        *slot = value;
                    }
                }
                Target::Other(rank) => {
                    let start = self.json.len();
                    write_json(node, cur, &mut self.json, budget)?;
                    if let Some(range) = self.ranges.get_mut(*rank) {
                        *range = (start, self.json.len());
                    }
                }
            }
        }
        self.properties.clear();
        self.properties.push('{');
        for (rank, key) in layout.other_keys.iter().enumerate() {
            if rank > 0 {
                self.properties.push(',');
            }
            self.properties.push_str(key);
            let (a, b) = self.ranges.get(rank).copied().unwrap_or((0, 0));
            // Every fragment was written from valid UTF-8 (JSON text of checked strings).
            self.properties
                .push_str(self.json.get(a..b).unwrap_or("null"));
        }
        self.properties.push('}');
        Ok(())
    }
}

/// The length of an integer's decimal text.
fn digits(n: i64) -> usize {
    n.unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1)
        + usize::from(n < 0)
}

/// A canonical field's value; strings borrow the block.
fn canonical<'a>(
    node: &Node,
    cur: &mut Cursor<'a>,
    budget: &mut Budget,
) -> Result<Field<'a>, Fail> {
    Ok(match node {
        Node::Null => {
            budget.spend(4)?;
            Field::Null
        }
        Node::String => {
            let s = cur.string()?;
            budget.spend(s.len() + 2)?;
            Field::Str(Cow::Borrowed(s))
        }
        Node::Enum(symbols) => {
            let s = symbol(symbols, cur)?;
            budget.spend(s.len() + 2)?;
            Field::Str(Cow::Owned(s.to_string()))
        }
        Node::Int | Node::Long => {
            let n = cur.long()?;
            budget.spend(digits(n))?;
            Field::Int(n)
        }
        Node::Bytes => {
            let b = cur.bytes()?;
            budget.spend(2 * b.len() + 2)?;
            Field::Str(Cow::Owned(hex(b)))
        }
        Node::Fixed(n) => {
            let b = cur.take(*n)?;
            budget.spend(2 * b.len() + 2)?;
            Field::Str(Cow::Owned(hex(b)))
        }
        Node::Union(branches) => canonical(branch(branches, cur)?, cur, budget)?,
        Node::Float | Node::Double => {
            let mut text = String::new();
            write_json(node, cur, &mut text, budget)?;
            match text.as_str() {
                "null" => Field::Null,
                _ => Field::Number(text),
            }
        }
        other => {
            let mut text = String::new();
            write_json(other, cur, &mut text, budget)?;
            Field::Other(text)
        }
    })
}

fn branch<'n>(branches: &'n [Node], cur: &mut Cursor<'_>) -> Result<&'n Node, String> {
    let i = cur.long()?;
    usize::try_from(i)
        .ok()
        .and_then(|i| branches.get(i))
        .ok_or_else(|| format!("union branch {i} does not exist"))
}

fn symbol<'n>(symbols: &'n [String], cur: &mut Cursor<'_>) -> Result<&'n str, String> {
    let i = cur.long()?;
    usize::try_from(i)
        .ok()
        .and_then(|i| symbols.get(i))
        .map(String::as_str)
        .ok_or_else(|| format!("enum symbol {i} does not exist"))
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Writes one value as JSON text. Scalars directly; nested records, maps and arrays through a
/// `serde_json::Value` (so object keys come out sorted, as the generic route does).
fn write_json(
    node: &Node,
    cur: &mut Cursor<'_>,
    out: &mut String,
    budget: &mut Budget,
) -> Result<(), Fail> {
    match node {
        Node::Null => {
            budget.spend(4)?;
            out.push_str("null");
        }
        Node::Boolean => {
            let b = cur.bool()?;
            budget.spend(5)?;
            out.push_str(if b { "true" } else { "false" });
        }
        Node::Int | Node::Long => {
            use std::fmt::Write;
            let n = cur.long()?;
            budget.spend(digits(n))?;
            let _ = write!(out, "{n}");
        }
        Node::String => {
            let s = cur.string()?;
            budget.spend(s.len() + 2)?;
            let start = out.len();
            json_str(s, out);
            // Escapes make it longer (at most 6 bytes a byte).
            budget.spend((out.len() - start).saturating_sub(s.len() + 2))?;
        }
        Node::Union(branches) => write_json(branch(branches, cur)?, cur, out, budget)?,
        other => {
            let value = to_value(other, cur, budget)?;
            out.push_str(&serde_json::to_string(&value).map_err(|e| e.to_string())?)
        }
    }
    Ok(())
}

/// A JSON string literal, escaped as serde_json does (`"`, `\\`, control characters).
fn json_str(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // ASCII bytes are char boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            use std::fmt::Write;
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

/// A nested value as a `serde_json::Value`, each part paid for (by a lower bound of its JSON
/// length) before it is allocated.
fn to_value(node: &Node, cur: &mut Cursor<'_>, budget: &mut Budget) -> Result<Value, Fail> {
    Ok(match node {
        Node::Null => {
            budget.spend(4)?;
            Value::Null
        }
        Node::Boolean => {
            let b = cur.bool()?;
            budget.spend(4)?;
            Value::Bool(b)
        }
        Node::Int | Node::Long => {
            let n = cur.long()?;
            budget.spend(digits(n))?;
            Value::from(n)
        }
        Node::Float => {
            let f = f32::from_le_bytes(cur.array()?);
            budget.spend(3)?;
            Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)
        }
        Node::Double => {
            let f = f64::from_le_bytes(cur.array()?);
            budget.spend(3)?;
            Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        Node::Bytes => {
            let b = cur.bytes()?;
            budget.spend(2 * b.len() + 2)?;
            Value::String(hex(b))
        }
        Node::Fixed(n) => {
            let b = cur.take(*n)?;
            budget.spend(2 * b.len() + 2)?;
            Value::String(hex(b))
        }
        Node::String => {
            let s = cur.string()?;
            budget.spend(s.len() + 2)?;
            Value::String(s.to_string())
        }
        Node::Enum(symbols) => {
            let s = symbol(symbols, cur)?;
            budget.spend(s.len() + 2)?;
            Value::String(s.to_string())
        }
        Node::Union(branches) => to_value(branch(branches, cur)?, cur, budget)?,
        Node::Record(fields) => {
            budget.spend(2)?;
            let mut m = Map::new();
            for (name, f) in fields {
                budget.spend(name.len() + 4)?;
                m.insert(name.clone(), to_value(f, cur, budget)?);
            }
            Value::Object(m)
        }
        Node::Array(items, min) => {
            budget.spend(2)?;
            let mut out = Vec::new();
            loop {
                let n = cur.block_count(*min)?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    budget.spend(1)?;
                    out.push(to_value(items, cur, budget)?);
                }
            }
            Value::Array(out)
        }
        Node::Map(values, min) => {
            budget.spend(2)?;
            let mut m = Map::new();
            loop {
                let n = cur.block_count(*min)?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    let k = cur.string()?;
                    budget.spend(k.len() + 4)?;
                    let v = to_value(values, cur, budget)?;
                    m.insert(k.to_string(), v);
                }
            }
            Value::Object(m)
        }
    })
}

/// Consumes one value without building it. Values that take no bytes are not visited one by
/// one, so every step consumes input or the file's budget.
fn skip(node: &Node, cur: &mut Cursor<'_>, budget: &mut Budget) -> Result<(), Fail> {
    budget.visit()?;
    match node {
        Node::Null => {}
        Node::Boolean => {
            cur.bool()?;
        }
        Node::Int | Node::Long => {
            cur.long()?;
        }
        Node::Enum(symbols) => {
            symbol(symbols, cur)?;
        }
        Node::Float => {
            cur.take(4)?;
        }
        Node::Double => {
            cur.take(8)?;
        }
        Node::Bytes => {
            cur.bytes()?;
        }
        Node::String => {
            cur.string()?;
        }
        Node::Fixed(n) => {
            cur.take(*n)?;
        }
        Node::Union(branches) => skip(branch(branches, cur)?, cur, budget)?,
        Node::Record(fields) => {
            for (_, f) in fields {
                skip(f, cur, budget)?;
            }
        }
        Node::Array(items, min) => loop {
            let n = cur.block_count(*min)?;
            if n == 0 {
                break;
            }
            budget.visit()?;
            if *min > 0 {
                for _ in 0..n {
                    skip(items, cur, budget)?;
                }
            }
        },
        Node::Map(values, min) => loop {
            let n = cur.block_count(*min)?;
            if n == 0 {
                break;
            }
            for _ in 0..n {
                cur.string()?;
                skip(values, cur, budget)?;
            }
        },
    }
    Ok(())
}

/// Avro binary primitives over a byte slice.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("needs {n} bytes, {} left", self.left()))?;
        let s = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?
            .try_into()
            .map_err(|_| format!("needs {N} bytes"))
    }

    /// A zig-zag varint (int and long share the encoding).
    fn long(&mut self) -> Result<i64, String> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or("a number is cut short by the end of the data")?;
            self.pos += 1;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("a number is longer than 10 bytes".into());
            }
        }
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    fn bool(&mut self) -> Result<bool, String> {
        match self.array::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(format!("a boolean byte is {b}")),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("a negative length {n}"))?;
        self.take(n)
    }

    fn string(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|e| format!("a string is not UTF-8: {e}"))
    }

    /// The item count of the next block of an array or map (0: the end). A negative count is
    /// followed by the block's size in bytes. A count the bytes left cannot hold (each item
    /// takes at least `min_item` bytes; items of no size are capped) is refused before any
    /// item is read.
    fn block_count(&mut self, min_item: usize) -> Result<u64, String> {
        let count = self.long()?;
        if count < 0 {
            self.long()?;
        }
        let count = count.unsigned_abs();
        match min_item {
            0 if count > MAX_ZERO_SIZE_ITEMS => Err(format!(
                "a block claims {count} items of no size (at most {MAX_ZERO_SIZE_ITEMS} are read)"
            )),
            0 => Ok(count),
            n if count > (self.left() / n) as u64 => Err(format!(
                "a block claims {count} items but the {} bytes left can hold at most {}",
                self.left(),
                self.left() / n
            )),
            _ => Ok(count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::{Record, Value as Avro};
    use apache_avro::{Codec as AvroCodec, DeflateSettings, Schema, Writer};

    const SCHEMA: &str = r#"{"type":"record","name":"E","namespace":"t","fields":[
        {"name":"id","type":"string"},{"name":"time","type":"long"},
        {"name":"user_id","type":["null","string"]},
        {"name":"zeta","type":["null","double"]},
        {"name":"flag","type":"boolean"},
        {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
        {"name":"raw","type":"bytes"},
        {"name":"fx","type":{"type":"fixed","name":"F","size":2}},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"attrs","type":{"type":"map","values":["null","long"]}},
        {"name":"inner","type":{"type":"record","name":"I","fields":[{"name":"b","type":"K"},{"name":"a","type":"float"}]}},
        {"name":"url","type":["null","string"]},
        {"name":"note","type":"string"}]}"#;

    fn file(codec: AvroCodec, n: usize) -> Vec<u8> {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let mut w = Writer::with_codec(&schema, Vec::new(), codec).unwrap();
        for i in 0..n {
            let mut r = Record::new(&schema).unwrap();
            r.put("id", format!("e{i}"));
            r.put("time", 1_764_000_000i64 + i as i64);
            r.put(
                "user_id",
                Avro::Union(
                    if i % 3 == 0 { 0 } else { 1 },
                    Box::new(if i % 3 == 0 {
                        Avro::Null
                    } else {
                        Avro::String(format!("b{i}"))
                    }),
                ),
            );
            r.put(
                "zeta",
                Avro::Union(
                    1,
                    Box::new(Avro::Double(if i == 1 { f64::NAN } else { i as f64 / 4.0 })),
                ),
            );
            r.put("flag", i % 2 == 0);
            r.put("kind", Avro::Enum((i % 2) as u32, ["A", "B"][i % 2].into()));
            r.put("raw", Avro::Bytes(vec![i as u8, 0xff]));
            r.put("fx", Avro::Fixed(2, vec![0xab, i as u8]));
            r.put(
                "tags",
                Avro::Array(vec![Avro::String("x\"y".into()); i % 3]),
            );
            r.put(
                "attrs",
                Avro::Map(
                    [
                        (
                            "k2".to_string(),
                            Avro::Union(1, Box::new(Avro::Long(i as i64))),
                        ),
                        ("k1".to_string(), Avro::Union(0, Box::new(Avro::Null))),
                    ]
                    .into_iter()
                    .collect(),
                ),
            );
            r.put(
                "inner",
                Avro::Record(vec![
                    ("b".into(), Avro::Enum(1, "B".into())),
                    ("a".into(), Avro::Float(0.5)),
                ]),
            );
            r.put("url", Avro::Union(0, Box::new(Avro::Null)));
            r.put("note", format!("ünïcode \n {i}"));
            w.append_value(r).unwrap();
            if i % 7 == 6 {
                w.flush().unwrap(); // several blocks
            }
        }
        w.into_inner().unwrap()
    }

    /// Every record as the generic reader sees it: `apache_avro::Reader` values to JSON.
    fn reference(bytes: &[u8]) -> Vec<Map<String, Value>> {
        fn json(v: Avro) -> Value {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            match v {
                Avro::Null => Value::Null,
                Avro::Boolean(b) => Value::Bool(b),
                Avro::Int(i) => Value::from(i),
                Avro::Long(i) => Value::from(i),
                Avro::Float(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
                Avro::Double(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
                Avro::Bytes(b) | Avro::Fixed(_, b) => Value::String(hex(&b)),
                Avro::String(s) | Avro::Enum(_, s) => Value::String(s),
                Avro::Union(_, inner) => json(*inner),
                Avro::Array(items) => Value::Array(items.into_iter().map(json).collect()),
                Avro::Map(m) => Value::Object(m.into_iter().map(|(k, v)| (k, json(v))).collect()),
                Avro::Record(f) => {
                    Value::Object(f.into_iter().map(|(k, v)| (k, json(v))).collect())
                }
                other => panic!("{other:?}"),
            }
        }
        apache_avro::Reader::new(bytes)
            .unwrap()
            .map(|r| match json(r.unwrap()) {
                Value::Object(m) => m,
                _ => unreachable!(),
            })
            .collect()
    }

    type Records = Vec<Map<String, Value>>;

    /// What `read_file` saw, rebuilt as one JSON object per record.
    fn ours(bytes: &[u8]) -> (Records, Option<(u64, String)>) {
        let mut out = Vec::new();
        let broken = read_file(bytes, &Limits::default(), |i, parts| {
            assert_eq!(i as usize, out.len());
            match crate::ingest::event::parts_to_json(parts.unwrap()) {
                Value::Object(m) => out.push(m),
                _ => unreachable!(),
            }
            Ok(())
        });
        (out, broken)
    }

    #[test]
    fn every_codec_reads_the_same_values_as_the_generic_reader() {
        for codec in [
            AvroCodec::Null,
            AvroCodec::Deflate(DeflateSettings::default()),
            AvroCodec::Snappy,
        ] {
            let bytes = file(codec, 40);
            let (got, broken) = ours(&bytes);
            assert_eq!(broken, None, "{codec:?}");
            assert_eq!(got, reference(&bytes), "{codec:?}");
        }
    }

    #[test]
    fn properties_keys_are_sorted_and_nested_objects_too() {
        let bytes = file(AvroCodec::Null, 3);
        let mut first = None;
        read_file(&bytes, &Limits::default(), |i, p| {
            if i == 2 {
                first = Some(p.unwrap().properties.to_string());
            }
            Ok(())
        });
        let p = first.unwrap();
        let keys: Vec<&str> = [
            "\"attrs\"",
            "\"flag\"",
            "\"fx\"",
            "\"inner\"",
            "\"kind\"",
            "\"note\"",
            "\"raw\"",
            "\"tags\"",
            "\"zeta\"",
        ]
        .into_iter()
        .collect();
        let mut at = 0;
        for k in keys {
            let found = p[at..]
                .find(k)
                .unwrap_or_else(|| panic!("{k} in order in {p}"));
            at += found;
        }
        assert!(p.contains(r#""attrs":{"k1":null,"k2":2}"#), "{p}");
        assert!(p.contains(r#""inner":{"a":0.5,"b":"B"}"#), "{p}");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        let all: String = (0u8..0x80).map(char::from).collect::<String>() + "é✓\u{2028}";
        for s in [all.as_str(), "", "plain", "a\"b\\c\nd"] {
            let mut out = String::new();
            json_str(s, &mut out);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn damage_keeps_the_records_before_it() {
        let bytes = file(AvroCodec::Snappy, 20);
        // Cut in the third block (records 14..20).
        let cut = &bytes[..bytes.len() - 30];
        let (got, broken) = ours(cut);
        assert_eq!(got.len(), 14);
        let (at, why) = broken.unwrap();
        assert_eq!(at, 14);
        assert!(why.contains("at record 14"), "{why}");

        // A flipped byte inside a compressed block fails its checksum (or its decoding).
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 25] ^= 0x55;
        let (got, broken) = ours(&flipped);
        assert_eq!(got.len(), 14);
        assert!(broken.is_some());

        let (_, broken) = ours(b"Obj\x01 this is not avro");
        assert!(broken.unwrap().1.starts_with("not a readable Avro file"));
        let (_, broken) = ours(b"PAR1");
        assert!(broken.unwrap().1.contains("magic"));
    }

    use crate::ingest::craft::{container, varint};

    fn outcome(bytes: &[u8], limits: &Limits) -> (Vec<Result<String, String>>, Option<String>) {
        let mut seen = Vec::new();
        let broken = read_file(bytes, limits, |_, parts| {
            seen.push(parts.map(|p| p.properties.to_string()));
            Ok(())
        });
        (seen, broken.map(|(_, why)| why))
    }

    const EVENT: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"},
        {"name":"time","type":"long"},{"name":"tags","type":{"type":"array","items":"null"}}]}"#;

    #[test]
    fn crafted_counts_are_refused_before_anything_is_allocated() {
        let huge = 1i64 << 61;
        // 2^61 records of no size at all.
        let nothing = r#"{"type":"record","name":"N","fields":[{"name":"n","type":"null"}]}"#;
        let (seen, why) = outcome(
            &container(nothing, "null", &[(huge, vec![])]),
            &Limits::default(),
        );
        assert!(seen.is_empty());
        assert!(why.unwrap().contains("take no bytes"));
        // 2^61 records in a few bytes.
        let (_, why) = outcome(
            &container(EVENT, "null", &[(huge, vec![2, b'a', 2, 0])]),
            &Limits::default(),
        );
        assert!(why.unwrap().contains("can hold at most 1"));
        // A record with an array of 2^61 nulls.
        let mut data = vec![2, b'a', 2];
        data.extend(varint(huge));
        data.push(0);
        let (seen, why) = outcome(&container(EVENT, "null", &[(1, data)]), &Limits::default());
        assert!(seen.is_empty());
        assert!(why.unwrap().contains("claims 2305843009213693952 items"));
        // A map of 2^61 entries, a string of 2^61 bytes.
        let map = r#"{"type":"record","name":"M","fields":[{"name":"m","type":{"type":"map","values":"null"}}]}"#;
        let mut data = varint(huge);
        data.push(0);
        let (_, why) = outcome(&container(map, "null", &[(1, data)]), &Limits::default());
        assert!(why.unwrap().contains("claims"));
        let mut data = varint(huge);
        data.push(b'a');
        let (_, why) = outcome(&container(EVENT, "null", &[(1, data)]), &Limits::default());
        assert!(why.unwrap().contains("needs 2305843009213693952 bytes"));
        // A snappy block claiming 4 GiB.
        let mut block = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0];
        block.extend([0, 0, 0, 0]);
        let (_, why) = outcome(
            &container(EVENT, "snappy", &[(1, block)]),
            &Limits::default(),
        );
        let why = why.unwrap();
        assert!(why.contains("claims 4294967295 bytes"), "{why}");
        // And one that claims more than its bytes can encode.
        let mut block = vec![0x80, 0x80, 0x40];
        block.extend([0; 4]);
        let (_, why) = outcome(
            &container(EVENT, "snappy", &[(1, block)]),
            &Limits::default(),
        );
        assert!(why.unwrap().contains("more than snappy can encode"));
    }

    #[test]
    fn decompression_stops_at_the_block_limit() {
        let limits = Limits {
            block_bytes: 1 << 20,
            ..Limits::default()
        };
        let zeros = vec![0u8; 4 << 20];
        let zstd = zstd::encode_all(zeros.as_slice(), 3).unwrap();
        let (_, why) = outcome(&container(EVENT, "zstandard", &[(1, zstd)]), &limits);
        assert!(
            why.unwrap()
                .contains("more than the limit of 1048576 bytes")
        );
        let mut deflate = Vec::new();
        {
            use std::io::Write;
            let mut w =
                flate2::write::DeflateEncoder::new(&mut deflate, flate2::Compression::default());
            w.write_all(&zeros).unwrap();
            w.finish().unwrap();
        }
        let (_, why) = outcome(&container(EVENT, "deflate", &[(1, deflate)]), &limits);
        assert!(why.unwrap().contains("more than the limit"));
    }

    #[test]
    fn a_record_past_the_limit_is_skipped_and_the_next_one_read() {
        let schema = Schema::parse_str(EVENT).unwrap();
        let mut w = Writer::new(&schema, Vec::new()).unwrap();
        for nulls in [60_000, 2] {
            let mut r = Record::new(&schema).unwrap();
            r.put("id", "a");
            r.put("time", 1i64);
            r.put("tags", Avro::Array(vec![Avro::Null; nulls]));
            w.append_value(r).unwrap();
        }
        let (seen, why) = outcome(&w.into_inner().unwrap(), &Limits::default());
        assert_eq!(why, None);
        assert!(
            seen[0].as_ref().unwrap_err().contains("too large"),
            "{seen:?}"
        );
        assert_eq!(seen[1].as_ref().unwrap(), r#"{"tags":[null,null]}"#);
    }

    #[test]
    fn the_file_budget_stops_a_file_with_the_records_before_it() {
        let bytes = file(AvroCodec::Null, 40);
        let limits = Limits {
            file_bytes: 2_000,
            ..Limits::default()
        };
        let (seen, why) = outcome(&bytes, &limits);
        assert!(!seen.is_empty() && seen.len() < 40);
        assert!(why.unwrap().contains("more than 2000 bytes of records"));
    }

    #[test]
    fn schema_bombs_are_refused() {
        // An enum of 6,000 symbols, used twice.
        let symbols: Vec<String> = (0..6_000).map(|i| format!("\"S{i}\"")).collect();
        let schema = format!(
            r#"{{"type":"record","name":"Top","fields":[{{"name":"a","type":{{"type":"enum","name":"K","symbols":[{}]}}}},{{"name":"b","type":"K"}}]}}"#,
            symbols.join(",")
        );
        let (_, why) = outcome(&container(&schema, "null", &[]), &Limits::default());
        assert!(why.unwrap().contains("more than 10000 types"));
        // Each type holds the previous one twice: 2^40 nodes once expanded.
        let mut fields = String::from(
            r#"{"name":"t0","type":{"type":"record","name":"T0","fields":[{"name":"x","type":"int"}]}}"#,
        );
        for i in 1..40 {
            fields.push_str(&format!(
                r#",{{"name":"t{i}","type":{{"type":"record","name":"T{i}","fields":[{{"name":"a","type":"T{p}"}},{{"name":"b","type":"T{p}"}}]}}}}"#,
                p = i - 1
            ));
        }
        let schema = format!(r#"{{"type":"record","name":"Top","fields":[{fields}]}}"#);
        let (_, why) = outcome(&container(&schema, "null", &[]), &Limits::default());
        assert!(why.unwrap().contains("more than 10000 types"));
        // A chain of named types 100 deep.
        let mut fields = String::from(
            r#"{"name":"t0","type":{"type":"record","name":"T0","fields":[{"name":"x","type":"int"}]}}"#,
        );
        for i in 1..100 {
            fields.push_str(&format!(
                r#",{{"name":"t{i}","type":{{"type":"record","name":"T{i}","fields":[{{"name":"a","type":"T{p}"}}]}}}}"#,
                p = i - 1
            ));
        }
        let schema = format!(r#"{{"type":"record","name":"Top","fields":[{fields}]}}"#);
        let (_, why) = outcome(&container(&schema, "null", &[]), &Limits::default());
        assert!(why.unwrap().contains("deeper than 32"));
    }
}
