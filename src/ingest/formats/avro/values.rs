//! Values: a record's canonical fields (borrowing the block), its other fields as JSON text,
//! and values skipped without being built, each paid for from the budget.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use super::cursor::Cursor;
use super::schema::{Layout, Node, Target};
use super::{Budget, Fail};
use crate::ingest::event::Field;

/// The JSON text of the other fields of the record being decoded.
pub(super) struct Scratch {
    json: String,
    /// Range of each other field's JSON in `json`, by name rank.
    ranges: Vec<(usize, usize)>,
    pub(super) properties: String,
}

impl Scratch {
    pub(super) fn new(layout: &Layout) -> Self {
        Scratch {
            json: String::new(),
            ranges: vec![(0, 0); layout.other_keys.len()],
            properties: String::new(),
        }
    }

    /// Decodes one record: canonical values into `canonical` (borrowing the block), the other
    /// fields into `properties`.
    pub(super) fn decode<'a>(
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
pub(super) fn json_str(s: &str, out: &mut String) {
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
pub(super) fn skip(node: &Node, cur: &mut Cursor<'_>, budget: &mut Budget) -> Result<(), Fail> {
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
