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

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use serde_json::{Map, Number, Value};

use super::event::{CANONICAL, Field, Parts};

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
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    Fixed(usize),
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

/// Reads one file, calling `record` for every record with its position (0-based index in the
/// file) and its parts. Returns where and why the file could not be read to the end, if so.
pub fn read_file(bytes: &[u8], mut record: impl FnMut(u64, &Parts<'_>)) -> Option<(u64, String)> {
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
    while cur.pos < cur.buf.len() {
        let at = index;
        let damaged = |e: String| {
            Some((
                at,
                format!("corrupt or truncated Avro data at record {at}: {e}"),
            ))
        };
        let (count, size) = match (cur.long(), cur.long()) {
            (Ok(c), Ok(s)) if c >= 0 && s >= 0 => (c as u64, s as usize),
            (Ok(c), Ok(s)) => return damaged(format!("bad block header (count {c}, size {s})")),
            (Err(e), _) | (_, Err(e)) => return damaged(e),
        };
        let data = match cur.take(size) {
            Ok(d) => d,
            Err(_) => return damaged(format!("a block of {size} bytes is cut short")),
        };
        match cur.take(16) {
            Ok(sync) if sync == header.sync => {}
            Ok(_) => return damaged("the sync marker after a block does not match".into()),
            Err(_) => return damaged("the file ends before the sync marker of a block".into()),
        }
        let data: &[u8] = match decompress(header.codec, data, &mut block) {
            Ok(true) => &block,
            Ok(false) => data,
            Err(e) => return damaged(e),
        };
        let mut rec = Cursor { buf: data, pos: 0 };
        let mut canonical = vec![Field::Missing; CANONICAL.len()];
        for _ in 0..count {
            if let Err(e) = scratch.decode(&layout, &mut rec, &mut canonical) {
                return Some(damage(index, e));
            }
            record(
                index,
                &Parts {
                    canonical: &canonical,
                    properties: &scratch.properties,
                },
            );
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
        let mut count = cur.long()?;
        if count == 0 {
            break;
        }
        if count < 0 {
            count = -count;
            cur.long()?;
        }
        for _ in 0..count {
            let key = cur.string()?;
            let value = cur.bytes()?;
            match key {
                "avro.schema" => {
                    let json: Value = serde_json::from_slice(value)
                        .map_err(|e| format!("the schema is not JSON: {e}"))?;
                    schema = Some(Compiler::default().node(&json, None)?);
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
                                String::from_utf8_lossy(other)
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let sync = cur.take(16)?.try_into().expect("16 bytes");
    Ok(Header {
        schema: schema.ok_or("the header has no `avro.schema`")?,
        codec,
        sync,
    })
}

/// Decompresses a block into `out`; `false` when the block is stored as is.
fn decompress(codec: Codec, data: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
    out.clear();
    match codec {
        Codec::Null => return Ok(false),
        Codec::Deflate => {
            flate2::read::DeflateDecoder::new(data)
                .read_to_end(out)
                .map_err(|e| format!("deflate: {e}"))?;
        }
        Codec::Snappy => {
            let (body, crc) = data
                .split_last_chunk::<4>()
                .ok_or("a snappy block is shorter than its checksum")?;
            let len = snap::raw::decompress_len(body).map_err(|e| format!("snappy: {e}"))?;
            out.resize(len, 0);
            snap::raw::Decoder::new()
                .decompress(body, out)
                .map_err(|e| format!("snappy: {e}"))?;
            if crc32fast::hash(out) != u32::from_be_bytes(*crc) {
                return Err("snappy block checksum mismatch".into());
            }
        }
        Codec::Zstandard => {
            zstd::stream::read::Decoder::new(data)
                .and_then(|mut d| d.read_to_end(out))
                .map_err(|e| format!("zstandard: {e}"))?;
        }
    }
    Ok(true)
}

/// Schema JSON to nodes, resolving named types (by full name or simple name).
#[derive(Default)]
struct Compiler {
    named: HashMap<String, Node>,
}

impl Compiler {
    fn node(&mut self, json: &Value, namespace: Option<&str>) -> Result<Node, String> {
        match json {
            Value::String(name) => self.by_name(name, namespace),
            Value::Array(branches) => Ok(Node::Union(
                branches
                    .iter()
                    .map(|b| self.node(b, namespace))
                    .collect::<Result<_, _>>()?,
            )),
            Value::Object(o) => {
                let ty = o
                    .get("type")
                    .ok_or_else(|| format!("a schema object without `type`: {json}"))?;
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
                let node = match ty.as_str() {
                    "record" | "error" => {
                        // Register a placeholder first so a recursive reference resolves.
                        let fields = o
                            .get("fields")
                            .and_then(Value::as_array)
                            .ok_or_else(|| format!("record {name:?} has no `fields`"))?;
                        let mut out = Vec::with_capacity(fields.len());
                        for f in fields {
                            let fname = f
                                .get("name")
                                .and_then(Value::as_str)
                                .ok_or_else(|| format!("a field of record {name:?} has no name"))?;
                            let fty = f
                                .get("type")
                                .ok_or_else(|| format!("field `{fname}` has no type"))?;
                            out.push((fname.to_string(), self.node(fty, ns.as_deref())?));
                        }
                        Node::Record(out)
                    }
                    "enum" => Node::Enum(
                        o.get("symbols")
                            .and_then(Value::as_array)
                            .ok_or_else(|| format!("enum {name:?} has no `symbols`"))?
                            .iter()
                            .map(|s| s.as_str().unwrap_or_default().to_string())
                            .collect(),
                    ),
                    "array" => Node::Array(Box::new(self.node(
                        o.get("items").ok_or("an array schema without `items`")?,
                        ns.as_deref(),
                    )?)),
                    "map" => Node::Map(Box::new(self.node(
                        o.get("values").ok_or("a map schema without `values`")?,
                        ns.as_deref(),
                    )?)),
                    "fixed" => Node::Fixed(
                        o.get("size")
                            .and_then(Value::as_u64)
                            .ok_or_else(|| format!("fixed {name:?} has no `size`"))?
                            as usize,
                    ),
                    other => self.by_name(other, ns.as_deref())?,
                };
                if let Some(name) = name {
                    let full = match (&ns, name.contains('.')) {
                        (Some(ns), false) if !ns.is_empty() => format!("{ns}.{name}"),
                        _ => name.to_string(),
                    };
                    let simple = full.rsplit('.').next().unwrap_or(&full).to_string();
                    self.named.insert(full, node.clone());
                    self.named.entry(simple).or_insert_with(|| node.clone());
                }
                Ok(node)
            }
            other => Err(format!("not a schema: {other}")),
        }
    }

    fn by_name(&self, name: &str, namespace: Option<&str>) -> Result<Node, String> {
        Ok(match name {
            "null" => Node::Null,
            "boolean" => Node::Boolean,
            "int" => Node::Int,
            "long" => Node::Long,
            "float" => Node::Float,
            "double" => Node::Double,
            "bytes" => Node::Bytes,
            "string" => Node::String,
            _ => namespace
                .and_then(|ns| self.named.get(&format!("{ns}.{name}")))
                .or_else(|| self.named.get(name))
                .or_else(|| self.named.get(name.rsplit('.').next().unwrap_or(name)))
                .cloned()
                .ok_or_else(|| format!("unknown type `{name}`"))?,
        })
    }
}

/// The top-level record compiled against the canonical columns.
struct Layout {
    fields: Vec<(Node, Target)>,
    /// `"name":` of each other field, JSON-escaped, in name order.
    other_keys: Vec<String>,
}

impl Layout {
    fn compile(schema: &Node) -> Result<Layout, String> {
        let Node::Record(fields) = schema else {
            return Err("the file's schema is not a record (events are records)".into());
        };
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
        Ok(Layout {
            fields: fields.iter().map(|(_, n)| n.clone()).zip(targets).collect(),
            other_keys: others
                .iter()
                .map(|(name, _)| serde_json::to_string(name).expect("a string is JSON") + ":")
                .collect(),
        })
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
    ) -> Result<(), String> {
        // No reset of `canonical_values`: the layout is the file's, so every canonical field it
        // has is overwritten below and the others stay `Missing`.
        self.json.clear();
        for (node, target) in &layout.fields {
            match target {
                Target::Canonical(c) => canonical_values[*c] = canonical(node, cur)?,
                Target::Other(rank) => {
                    let start = self.json.len();
                    write_json(node, cur, &mut self.json)?;
                    self.ranges[*rank] = (start, self.json.len());
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
            let (a, b) = self.ranges[rank];
            // Every fragment was written from valid UTF-8 (JSON text of checked strings).
            self.properties.push_str(&self.json[a..b]);
        }
        self.properties.push('}');
        Ok(())
    }
}

/// A canonical field's value; strings borrow the block.
fn canonical<'a>(node: &Node, cur: &mut Cursor<'a>) -> Result<Field<'a>, String> {
    Ok(match node {
        Node::Null => Field::Null,
        Node::String => Field::Str(Cow::Borrowed(cur.string()?)),
        Node::Enum(symbols) => Field::Str(Cow::Owned(symbol(symbols, cur)?.to_string())),
        Node::Int | Node::Long => Field::Int(cur.long()?),
        Node::Bytes => Field::Str(Cow::Owned(hex(cur.bytes()?))),
        Node::Fixed(n) => Field::Str(Cow::Owned(hex(cur.take(*n)?))),
        Node::Union(branches) => canonical(branch(branches, cur)?, cur)?,
        Node::Float | Node::Double => {
            let mut text = String::new();
            write_json(node, cur, &mut text)?;
            match text.as_str() {
                "null" => Field::Null,
                _ => Field::Number(text),
            }
        }
        other => {
            let mut text = String::new();
            write_json(other, cur, &mut text)?;
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
fn write_json(node: &Node, cur: &mut Cursor<'_>, out: &mut String) -> Result<(), String> {
    match node {
        Node::Null => out.push_str("null"),
        Node::Boolean => out.push_str(if cur.bool()? { "true" } else { "false" }),
        Node::Int | Node::Long => {
            use std::fmt::Write;
            let _ = write!(out, "{}", cur.long()?);
        }
        Node::String => json_str(cur.string()?, out),
        Node::Union(branches) => write_json(branch(branches, cur)?, cur, out)?,
        other => {
            out.push_str(&serde_json::to_string(&to_value(other, cur)?).map_err(|e| e.to_string())?)
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
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            use std::fmt::Write;
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn to_value(node: &Node, cur: &mut Cursor<'_>) -> Result<Value, String> {
    Ok(match node {
        Node::Null => Value::Null,
        Node::Boolean => Value::Bool(cur.bool()?),
        Node::Int | Node::Long => Value::from(cur.long()?),
        Node::Float => {
            let f = f32::from_le_bytes(cur.take(4)?.try_into().expect("4 bytes"));
            Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)
        }
        Node::Double => {
            let f = f64::from_le_bytes(cur.take(8)?.try_into().expect("8 bytes"));
            Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        Node::Bytes => Value::String(hex(cur.bytes()?)),
        Node::Fixed(n) => Value::String(hex(cur.take(*n)?)),
        Node::String => Value::String(cur.string()?.to_string()),
        Node::Enum(symbols) => Value::String(symbol(symbols, cur)?.to_string()),
        Node::Union(branches) => to_value(branch(branches, cur)?, cur)?,
        Node::Record(fields) => {
            let mut m = Map::new();
            for (name, f) in fields {
                m.insert(name.clone(), to_value(f, cur)?);
            }
            Value::Object(m)
        }
        Node::Array(items) => {
            let mut out = Vec::new();
            cur.blocks(|cur| {
                out.push(to_value(items, cur)?);
                Ok(())
            })?;
            Value::Array(out)
        }
        Node::Map(values) => {
            let mut m = Map::new();
            cur.blocks(|cur| {
                let k = cur.string()?.to_string();
                m.insert(k, to_value(values, cur)?);
                Ok(())
            })?;
            Value::Object(m)
        }
    })
}

/// Avro binary primitives over a byte slice.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("needs {n} bytes, {} left", self.buf.len() - self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
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
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("a boolean byte is {b}")),
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

    /// Array and map items: blocks of `count` items until a zero count; a negative count is
    /// followed by the block's size in bytes.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Cursor<'a>) -> Result<(), String>,
    ) -> Result<(), String> {
        loop {
            let mut count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                count = count.checked_neg().ok_or("a bad block count")?;
                self.long()?;
            }
            for _ in 0..count {
                item(self)?;
            }
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
        let broken = read_file(bytes, |i, parts| {
            assert_eq!(i as usize, out.len());
            match crate::ingest::event::parts_to_json(parts) {
                Value::Object(m) => out.push(m),
                _ => unreachable!(),
            }
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
        read_file(&bytes, |i, p| {
            if i == 2 {
                first = Some(p.properties.to_string());
            }
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
}
