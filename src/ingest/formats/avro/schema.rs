//! The writer's schema compiled: JSON to nodes (named types expanded, size and depth capped),
//! and the top-level record laid out against the canonical event columns.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::cursor::Cursor;
use super::values::skip;
use super::{Budget, Fail};
use crate::ingest::event::CANONICAL;
use crate::ingest::limits::{MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES};

/// A compiled schema node.
#[derive(Debug, Clone)]
pub(super) enum Node {
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
    pub(super) fn min_size(&self) -> usize {
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

/// Where a top-level field goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    /// Index into [`CANONICAL`].
    Canonical(usize),
    /// Position among the other fields, in name order.
    Other(usize),
}

/// Schema JSON to nodes, resolving named types (by full name or simple name). Named types are
/// expanded where they are used, so the expanded size and depth are counted and capped (a
/// schema that doubles a type at each of 60 levels would otherwise expand to 2⁶⁰ nodes). A
/// node counts one, a field name or enum symbol one more per 16 bytes, as they are copied too.
#[derive(Default)]
pub(super) struct Compiler {
    /// Each named type with its expanded size (nodes) and height.
    named: HashMap<String, (Node, usize, usize)>,
    /// Nodes built so far, references expanded.
    nodes: usize,
}

impl Compiler {
    /// A node with its height (1 for a leaf).
    pub(super) fn node(
        &mut self,
        json: &Value,
        namespace: Option<&str>,
    ) -> Result<(Node, usize), String> {
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
            Value::Object(o) => self.object(json, o, namespace, before)?,
            other => return Err(format!("not a schema: {}", short(other))),
        };
        if height > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
            ));
        }
        Ok((node, height))
    }

    /// A schema object: a named or complex type, or a wrapped schema (`before`: the nodes
    /// counted before it, for the size of a named type).
    fn object(
        &mut self,
        json: &Value,
        o: &Map<String, Value>,
        namespace: Option<&str>,
        before: usize,
    ) -> Result<(Node, usize), String> {
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
            "record" | "error" => self.record(o, name, ns.as_deref())?,
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
        Ok((node, height))
    }

    /// A record's fields, each compiled in the record's namespace `ns`.
    fn record(
        &mut self,
        o: &Map<String, Value>,
        name: Option<&str>,
        ns: Option<&str>,
    ) -> Result<(Node, usize), String> {
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
            let (n, h) = self.node(fty, ns)?;
            out.push((fname.to_string(), n));
            height = height.max(h);
        }
        Ok((Node::Record(out), height + 1))
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
pub(super) struct Layout {
    pub(super) fields: Vec<(Node, Target)>,
    /// `"name":` of each other field, JSON-escaped, in name order.
    pub(super) other_keys: Vec<String>,
    /// The JSON bytes of a record's properties besides their values: braces, keys, commas.
    pub(super) frame_bytes: usize,
    /// The least number of bytes a record takes (at least 1).
    pub(super) min_size: usize,
}

impl Layout {
    pub(super) fn compile(schema: &Node) -> Result<Layout, String> {
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
    pub(super) fn skip(&self, cur: &mut Cursor<'_>, budget: &mut Budget) -> Result<(), Fail> {
        for (node, _) in &self.fields {
            skip(node, cur, budget)?;
        }
        Ok(())
    }
}
