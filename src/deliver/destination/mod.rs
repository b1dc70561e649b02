//! Destinations: everything partner-specific about delivering a plan. The sync core and the
//! sender name no destination; they hold an `Arc<dyn Destination>` made by [`open`].
//!
//! A destination turns a batch of ids (`Op::Add` / `Op::Remove`) into a request, says which
//! headers every request carries, what an answer means (documented success, transient,
//! permanent, or success with some items refused), which workspace it talks to, and how to
//! explain a refusal of its keys. One file per destination, holding its config type (its keys,
//! their checks, its credentials from the environment) beside its code; adding one is a new
//! file, an arm in [`open`] and [`identity`], and one in `config::DestinationKind`.

pub mod braze;
pub mod files;
pub mod users_track;
pub mod webhook;

use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, StringArray};
use futures::future::BoxFuture;
use reqwest::header::HeaderMap;

use crate::config::{Cohort, Credentials, DestinationConfig, DestinationKind};
use crate::deliver::Request;
use crate::deliver::retry::{self, Answer, Verdict};
use crate::error::{Error, Result};

/// What a batch does to its ids' membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
}

impl Op {
    /// `add` or `remove`, as dead letters and history record it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Remove => "remove",
        }
    }
}

/// What a partner refused of a request it acknowledged (the transport's type: `retry` reads
/// answers without knowing any destination).
pub use super::retry::Refused;

/// Everything partner-specific about delivering a plan.
pub trait Destination: Send + Sync {
    /// Sent once per run before any batch (Cohort Import creates or renames the cohort).
    fn setup(&self, at: DateTime<Utc>) -> Option<Request>;

    /// The request applying `op` to `ids[range]`, numbered `batch` in the plan of `run_id` (the
    /// same on every retry and after a resume).
    fn batch(
        &self,
        run_id: &str,
        batch: u64,
        ids: &StringArray,
        range: Range<usize>,
        op: Op,
    ) -> Request;

    /// Headers every request carries besides `Content-Type: application/json`.
    fn headers(&self) -> &HeaderMap;

    /// What an answer means. The default: only the documented success JSON acknowledges.
    fn acknowledge(&self, answer: &Answer<'_>) -> Verdict {
        retry::classify(answer)
    }

    /// Adds what the user can do about a refused key (401/403) to the error.
    fn explain(&self, e: Error) -> Error {
        e
    }

    /// Refuses, before anything is planned, members this destination cannot identify (sorted
    /// ids: see `cohort::identity`). The default accepts every kind.
    fn accepts(&self, _ids: &StringArray) -> Result<()> {
        Ok(())
    }
}

/// A plan's lists for a [`Lists`] destination.
pub struct ListsOf {
    pub adds: Arc<StringArray>,
    pub removes: Arc<StringArray>,
    /// The whole membership once the plan is delivered, when [`Lists::wants_members`] (of
    /// the shard only, under `--shard`).
    pub members: Option<Arc<StringArray>>,
    /// `K/N` under `--shard K/N`: the lists (members included) are that shard's only.
    pub shard: Option<String>,
}

/// A destination that takes each plan's lists whole rather than as requests (files). The sync
/// core hands it the plan's adds and removes once, and again when it resumes the plan: `write`
/// must be idempotent for a run id.
pub trait Lists: Send + Sync {
    fn write<'a>(
        &'a self,
        run_id: &'a str,
        at: DateTime<Utc>,
        lists: ListsOf,
    ) -> BoxFuture<'a, Result<()>>;

    /// Whether `write` takes the whole membership too.
    fn wants_members(&self) -> bool {
        false
    }

    /// As [`Destination::accepts`].
    fn accepts(&self, _ids: &StringArray) -> Result<()> {
        Ok(())
    }
}

/// How a destination takes a plan.
pub enum Delivery {
    /// A request per batch, through the sender (its pacing, retries and journal).
    Requests(Arc<dyn Destination>),
    /// The plan's lists, whole.
    Lists(Arc<dyn Lists>),
}

/// The destination a cohort is delivered to, with its keys (`base` anchors relative paths).
pub fn open(
    dest: &DestinationConfig,
    credentials: &Credentials,
    cohort: &Cohort,
    base: &std::path::Path,
) -> Result<Delivery> {
    Ok(match &dest.kind {
        DestinationKind::Braze(c) => {
            Delivery::Requests(Arc::new(braze::Braze::new(c, credentials, cohort)?))
        }
        DestinationKind::BrazeUsersTrack(c) => Delivery::Requests(Arc::new(
            users_track::UsersTrack::new(c, credentials, cohort)?,
        )),
        DestinationKind::Webhook(c) => {
            Delivery::Requests(Arc::new(webhook::Webhook::new(c, credentials, cohort)?))
        }
        DestinationKind::Files(c) => Delivery::Lists(Arc::new(files::Files::new(c, cohort, base)?)),
    })
}

/// Names the partner workspace a destination writes to: when it changes between runs, a sync
/// refuses until told whether it is the same workspace (`--rebind`) or a new one
/// (`--new-workspace`). The endpoint and a short fingerprint of the workspace's key.
pub fn identity(dest: &DestinationConfig, credentials: &Credentials) -> String {
    let base = dest
        .kind
        .base_url()
        .unwrap_or_default()
        .trim_end_matches('/');
    let key = credentials
        .workspace_key()
        .map(|k| fingerprint(k.expose()))
        .unwrap_or_default();
    match &dest.kind {
        // The format earlier releases recorded in every snapshot: unchanged, so upgrading is
        // not a change of workspace.
        DestinationKind::Braze(c) => format!("{base}/partners/{}#workspace-{key}", c.partner),
        DestinationKind::BrazeUsersTrack(_) => format!("{base}/users/track#workspace-{key}"),
        // A receiver is its URL (its query included: it may select a tenant); the signing
        // secret can rotate without making it another destination.
        DestinationKind::Webhook(_) => format!("webhook:{base}"),
        // Files are where they are written.
        DestinationKind::Files(c) => format!("files:{}", c.url.trim_end_matches('/')),
    }
}

/// A 32-bit fingerprint of a workspace key: enough to tell workspaces apart, far too little to
/// recover anything. FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
pub fn fingerprint(key: &str) -> String {
    format!("{:08x}", crate::hash::fnv1a64(key.as_bytes()) >> 32)
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Ids are almost always plain ASCII; escape only when needed.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    }
}

/// A body of `fixed` bytes around the ids of `range`, each with `per_id` bytes of its own.
pub fn body_for(ids: &StringArray, range: &Range<usize>, fixed: usize, per_id: usize) -> Vec<u8> {
    let offsets = ids.value_offsets();
    let bytes = (offsets[range.end] - offsets[range.start]) as usize;
    Vec::with_capacity(fixed + bytes + range.len() * (per_id + 3))
}

/// Appends one member as the JSON fields that identify it: `"<external>":"…"`,
/// `"alias_name":"…","alias_label":"…"` (or `"<alias_key>":{"alias_name":…}` when `alias_key` is
/// set) or `"device_id":"…"`.
pub fn push_identity(out: &mut Vec<u8>, key: &str, external: &str, alias_key: Option<&str>) {
    use crate::cohort::identity::{Id, parse};
    match parse(key) {
        Id::External(id) => {
            push_json_str(out, external);
            out.push(b':');
            push_json_str(out, id);
        }
        Id::Alias { name, label } => {
            if let Some(k) = alias_key {
                push_json_str(out, k);
                out.extend_from_slice(b":{");
            }
            out.extend_from_slice(b"\"alias_name\":");
            push_json_str(out, name);
            out.extend_from_slice(b",\"alias_label\":");
            push_json_str(out, label);
            if alias_key.is_some() {
                out.push(b'}');
            }
        }
        Id::Device(id) => {
            out.extend_from_slice(b"\"device_id\":");
            push_json_str(out, id);
        }
        Id::Braze(id) => {
            out.extend_from_slice(b"\"braze_id\":");
            push_json_str(out, id);
        }
        // Never built, and refused when state is read; were one here, the object names no
        // user (the partner refuses it) rather than some other user.
        Id::Malformed(_) => out.extend_from_slice(b"\"identity\":null"),
    }
}

/// Appends the members of `ids[range]` as JSON objects, comma-separated: `{`, the fields that
/// identify the member (see [`push_identity`]), then `after` (which closes the object). A batch
/// of external ids only takes [`push_ids`]' fast path.
pub fn push_identities(
    out: &mut Vec<u8>,
    ids: &StringArray,
    range: Range<usize>,
    external: &str,
    alias_key: Option<&str>,
    after: &[u8],
) {
    if !crate::cohort::identity::any_tagged(ids, range.clone()) {
        let before = format!("{{\"{external}\":");
        push_ids(out, ids, range, before.as_bytes(), after);
        return;
    }
    for (n, i) in range.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'{');
        push_identity(out, ids.value(i), external, alias_key);
        out.extend_from_slice(after);
    }
}

/// Appends `ids[range]` as JSON strings, comma-separated, each between `before` and `after`.
///
/// The batch's ids are one contiguous run of the array's bytes: they are checked for
/// characters JSON must escape in one pass, then copied id by id without a per-byte test
/// (~3x cheaper than testing each id on 10M UUIDs).
pub fn push_ids(
    out: &mut Vec<u8>,
    ids: &StringArray,
    range: Range<usize>,
    before: &[u8],
    after: &[u8],
) {
    let plain = plain_json(ids, &range);
    for (n, i) in range.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        debug_assert!(!ids.is_null(i));
        out.extend_from_slice(before);
        if plain {
            out.push(b'"');
            out.extend_from_slice(ids.value(i).as_bytes());
            out.push(b'"');
        } else {
            push_json_str(out, ids.value(i));
        }
        out.extend_from_slice(after);
    }
}

/// Whether the ids of `range` need no JSON escaping: one pass over their contiguous bytes that
/// the compiler vectorises (no early exit).
fn plain_json(ids: &StringArray, range: &Range<usize>) -> bool {
    let offsets = ids.value_offsets();
    let (lo, hi) = (offsets[range.start] as usize, offsets[range.end] as usize);
    ids.value_data()[lo..hi]
        .iter()
        .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'))
}
