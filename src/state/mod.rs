//! The state area of the lake (`_cohort_bridge/` by default), all through `object_store` so it
//! behaves the same on local disk and S3. Per destination and cohort:
//!
//! ```text
//! <state>/cohorts/<destination>/<cohort_id>/
//!     current.json               the commit pointer: which snapshot the partner holds
//!     snapshots/<run_id>.parquet acknowledged membership (sorted user_id)
//!     snapshots/<run_id>.replica.parquet  the same bytes, so `state repair` can restore a
//!                                lost or damaged snapshot exactly
//!     pending/plan.json          an unfinished run's plan (present ⇔ a run must be resumed)
//!     pending/adds.parquet       its ids to add, sorted; batches numbered 1..=add_batches
//!                                (a first sync uses the target snapshot instead)
//!     pending/removes.parquet    its ids to remove, sorted; batches numbered after the adds
//!     pending/journal/<seq>.acks acknowledged batch numbers, one small object per group commit
//!     pending/dead/<batch>.json  ids of a batch the partner refused (400), isolated by splitting
//!     pending/started/<run_id>   a run whose target snapshot is written before its plan (a
//!                                first sync, a full resend, an adoption): that snapshot is
//!                                not committed until the pointer names it
//!     replaced/<run_id>.json     a pointer set aside by `sync --new-workspace`
//!     dead_letters/<run_id>.parquet  refused ids of committed runs, with the partner's reason
//!     lock-<generation>.json     the run lock (see `lock`)
//!     shards/<N>/<K>/            the same layout for shard K of N (`sync --shard K/N`)
//! ```
//!
//! A run writes its plan (adds, removes, then `plan.json`) before its first request, so a run
//! that dies before that has sent nothing and the next one starts over exactly; then the next
//! snapshot while its batches go out, journaling acknowledged batches as they are acked; a
//! missing next snapshot is rebuilt from the base snapshot, the adds and the removes. When every batch is acknowledged the pointer is switched
//! (one atomic put) and `pending/` removed. After a crash anywhere, the pointer names either the
//! old snapshot or the new one, and `pending/` says exactly what is left to send.
//!
//! `current.json` and `plan.json` carry a `format` (absent: 1, the format before it was
//! recorded). Format 2 adds the snapshot replica and a trailer line to every journal object (so a
//! truncated one is detected). A binary refuses state of a format newer than it understands.
//!
//! A state file that is missing where it must exist, or unreadable, stops a run with exit 2
//! naming the file and the `cohort-bridge state …` command that repairs it (see `cmd`).

pub mod cmd;

pub mod dead;
pub mod ids;
pub mod journal;
pub mod lock;
pub mod runs;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The state format this binary writes, and the newest it reads.
pub const FORMAT: u32 = 2;

fn format_1() -> u32 {
    1
}

/// Where one cohort's state lives at one destination.
#[derive(Clone)]
pub struct CohortState {
    pub store: Arc<dyn ObjectStore>,
    pub dir: Path,
    /// How commands name this state: the cohort, and `--shard K/N` for a shard.
    pub label: String,
}

/// `current.json`: the committed snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pointer {
    /// The state format (absent in state written before formats were recorded: 1).
    #[serde(default = "format_1")]
    pub format: u32,
    pub run_id: String,
    /// Which partner workspace holds this snapshot (see `sync::partner_identity`). A snapshot
    /// of another partner says nothing about this one.
    #[serde(default)]
    pub partner: String,
    /// Path of the snapshot, relative to the cohort's state folder.
    pub snapshot: String,
    pub members: u64,
    pub committed_at: DateTime<Utc>,
    /// Set by `state repair` when an unfinished run could not be read: what the partner holds is
    /// only known to be within the snapshot, so the next sync re-sends every member and removes
    /// every snapshot id not in the cohort (as `--full`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend_all: bool,
    /// What changed the partner identity of this state, and from what (`--rebind`,
    /// `--new-workspace`, `state repair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `pending/plan.json`: everything needed to resume a run exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanMeta {
    /// The state format (absent: 1). From 2 on, journal objects end with a trailer line.
    #[serde(default = "format_1")]
    pub format: u32,
    pub run_id: String,
    pub created_at: DateTime<Utc>,
    /// The run's logical time (`--at`).
    pub at: DateTime<Utc>,
    /// The snapshot this plan starts from (`None`: nothing committed yet).
    pub base_run_id: Option<String>,
    /// The partner workspace the plan is for.
    #[serde(default)]
    pub partner: String,
    /// The snapshot committed when every batch is acknowledged.
    pub target_snapshot: String,
    /// The ids to add (the target snapshot itself on a first sync), relative to the state folder.
    pub adds_file: String,
    /// The ids to remove.
    pub removes_file: String,
    pub target_members: u64,
    pub batch_size: usize,
    pub adds: u64,
    pub removes: u64,
    pub add_batches: u64,
    pub remove_batches: u64,
}

impl CohortState {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        state_root: &Path,
        destination: &str,
        cohort_id: &str,
    ) -> Self {
        let dir = state_root
            .clone()
            .join("cohorts")
            .join(destination)
            .join(cohort_id);
        let label = cohort_id.to_string();
        CohortState { store, dir, label }
    }

    /// Names the state by its cohort's name in messages (`cohort-bridge state repair NAME`).
    pub fn named(mut self, name: &str) -> Self {
        self.label = name.to_string();
        self
    }

    /// `cohort-bridge state <what> <label> [flags]`: the command that unsticks this state
    /// (`what` is the subcommand, then any flags: `"unlock --force"`).
    pub fn fix(&self, what: &str) -> String {
        match what.split_once(' ') {
            Some((command, flags)) => {
                format!("`cohort-bridge state {command} {} {flags}`", self.label)
            }
            None => format!("`cohort-bridge state {what} {}`", self.label),
        }
    }

    /// A state file that is there but cannot be used: exit 2, naming it and the repair.
    pub fn unreadable(&self, path: &Path, why: &str, fix: &str) -> Error {
        Error::config(
            None,
            format!(
                "state file {path} is unreadable ({why}); nothing was sent. Inspect with {}, then \
                 run {}",
                self.fix("show"),
                self.fix(fix)
            ),
        )
    }

    /// Shard `index` of `count` of this cohort: `shards/<count>/<index>/` under its folder.
    pub fn shard(&self, index: u32, count: u32) -> CohortState {
        CohortState {
            store: self.store.clone(),
            dir: self
                .dir
                .clone()
                .join("shards")
                .join(count.to_string())
                .join(index.to_string()),
            label: format!("{} --shard {index}/{count}", self.label),
        }
    }

    /// The shard counts this cohort has state for.
    pub async fn shard_counts(&self) -> Result<Vec<u32>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.dir.clone().join("shards")))
            .await?;
        let mut counts: Vec<u32> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.parse().ok())
            .filter(|n| *n > 0)
            .collect();
        counts.sort_unstable();
        Ok(counts)
    }

    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.dir.clone();
        for part in rel.split('/') {
            p = p.join(part);
        }
        p
    }

    /// `current.json`; unreadable or of a newer format: exit 2 naming `state repair`.
    pub async fn pointer(&self) -> Result<Option<Pointer>> {
        let path = self.path("current.json");
        match try_read_json::<Pointer>(self.store.as_ref(), &path).await? {
            Read::Missing => Ok(None),
            Read::Corrupt(why) => Err(self.unreadable(&path, &why, "repair")),
            Read::Ok(p) => {
                check_format(&path, p.format)?;
                Ok(Some(p))
            }
        }
    }

    /// `pending/plan.json`; unreadable or of a newer format: exit 2 naming `state repair`.
    pub async fn plan(&self) -> Result<Option<PlanMeta>> {
        let path = self.path("pending/plan.json");
        match try_read_json::<PlanMeta>(self.store.as_ref(), &path).await? {
            Read::Missing => Ok(None),
            Read::Corrupt(why) => Err(self.unreadable(&path, &why, "repair")),
            Read::Ok(p) => {
                check_format(&path, p.format)?;
                Ok(Some(p))
            }
        }
    }

    /// An id list of this state (snapshot, plan lists); missing or unreadable: exit 2 naming
    /// `state repair`.
    pub async fn ids(&self, rel: &str) -> Result<Arc<datafusion::arrow::array::StringArray>> {
        let path = self.path(rel);
        ids::try_read(&self.store, &path)
            .await?
            .map_err(|why| self.unreadable(&path, &why, "repair"))
    }

    /// The committed membership (empty when nothing was ever committed).
    pub async fn snapshot(
        &self,
        pointer: Option<&Pointer>,
    ) -> Result<Arc<datafusion::arrow::array::StringArray>> {
        match pointer {
            Some(p) => self.ids(&p.snapshot).await,
            None => Ok(Arc::new(datafusion::arrow::array::StringArray::from(
                Vec::<&str>::new(),
            ))),
        }
    }

    /// Snapshot run ids (file stems, replicas folded in), with the newest modification time.
    pub async fn snapshot_runs(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.path("snapshots")))
            .try_collect()
            .await?;
        let mut runs: std::collections::BTreeMap<String, DateTime<Utc>> = Default::default();
        for meta in listed {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".parquet") else {
                continue;
            };
            let stem = stem.strip_suffix(".replica").unwrap_or(stem).to_string();
            let at = runs.entry(stem).or_insert(meta.last_modified);
            *at = (*at).max(meta.last_modified);
        }
        Ok(runs.into_iter().collect())
    }

    /// Runs whose target snapshot was written before their plan (see the module docs).
    pub async fn started(&self) -> Result<Vec<String>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.path(STARTED)))
            .try_collect()
            .await?;
        Ok(listed
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }

    /// Marks `run_id`'s snapshot as not committed (yet).
    pub async fn mark_started(&self, run_id: &str) -> Result<()> {
        let path = self.path(&format!("{STARTED}/{run_id}"));
        self.store
            .put(&path, bytes::Bytes::new().into())
            .await
            .map_err(|e| Error::Storage(format!("{path}: {e}")))?;
        Ok(())
    }

    /// The atomic switch: from now on the partner is known to hold `snapshot`.
    pub async fn commit(&self, plan: &PlanMeta, members: u64) -> Result<Pointer> {
        let pointer = Pointer {
            format: FORMAT,
            run_id: plan.run_id.clone(),
            partner: plan.partner.clone(),
            snapshot: plan.target_snapshot.clone(),
            members,
            committed_at: Utc::now(),
            resend_all: false,
            note: None,
        };
        self.write_pointer(&pointer).await?;
        Ok(pointer)
    }

    pub async fn write_pointer(&self, pointer: &Pointer) -> Result<()> {
        write_json(self.store.as_ref(), &self.path("current.json"), pointer).await
    }

    /// Removes `pending/` and snapshots no pointer names any more (the kept one's replica stays).
    /// The journal goes first (a journal without a plan means a lost plan), then the plan (a
    /// crash half-way leaves no plan to resume), then the started marks, then the rest.
    pub async fn clean_up(&self, keep_snapshot: &str) -> Result<()> {
        let keep = [self.path(keep_snapshot), self.path(&replica(keep_snapshot))];
        self.delete_all("pending/journal", &keep).await?;
        delete_if_exists(self.store.as_ref(), &self.path("pending/plan.json")).await?;
        for prefix in [STARTED, "pending", "snapshots"] {
            self.delete_all(prefix, &keep).await?;
        }
        Ok(())
    }

    async fn delete_all(&self, prefix: &str, keep: &[Path]) -> Result<()> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.path(prefix)))
            .try_collect()
            .await?;
        for meta in listed {
            if !keep.contains(&meta.location) {
                delete_if_exists(self.store.as_ref(), &meta.location).await?;
            }
        }
        Ok(())
    }
}

const STARTED: &str = "pending/started";

/// The replica of a snapshot: `snapshots/X.parquet` → `snapshots/X.replica.parquet`.
pub fn replica(snapshot: &str) -> String {
    match snapshot.strip_suffix(".parquet") {
        Some(stem) => format!("{stem}.replica.parquet"),
        None => format!("{snapshot}.replica"),
    }
}

/// Refuses state written by a newer binary.
pub fn check_format(path: &Path, format: u32) -> Result<()> {
    if format > FORMAT {
        return Err(Error::config(
            None,
            format!(
                "state file {path} has state format {format}, written by a newer cohort-bridge; \
                 this one ({}) understands formats up to {FORMAT}. Upgrade cohort-bridge; \
                 nothing was changed",
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    Ok(())
}

/// A state object, as read.
pub enum Read<T> {
    Missing,
    /// There, but not what it should be (the reason).
    Corrupt(String),
    Ok(T),
}

/// Reads a JSON state object; store failures (transient) are errors, a missing object or one
/// that does not parse is reported as such.
pub async fn try_read_json<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Read<T>> {
    match store.get(path).await {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| Error::Storage(format!("{path}: {e}")))?;
            Ok(match serde_json::from_slice(&bytes) {
                Ok(v) => Read::Ok(v),
                Err(e) => Read::Corrupt(format!("not valid JSON of its kind: {e}")),
            })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(Read::Missing),
        Err(e) => Err(Error::Storage(format!("{path}: {e}"))),
    }
}

pub async fn read_json<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Option<T>> {
    match try_read_json(store, path).await? {
        Read::Ok(v) => Ok(Some(v)),
        Read::Missing => Ok(None),
        Read::Corrupt(why) => Err(Error::Storage(format!("{path}: corrupt state file: {why}"))),
    }
}

pub async fn write_json<T: Serialize>(
    store: &dyn ObjectStore,
    path: &Path,
    value: &T,
) -> Result<()> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    store
        .put(path, body.into())
        .await
        .map_err(|e| Error::Storage(format!("{path}: {e}")))?;
    Ok(())
}

pub async fn delete_if_exists(store: &dyn ObjectStore, path: &Path) -> Result<()> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::Storage(format!("{path}: {e}"))),
    }
}

/// A run id: sortable by time, unique across hosts and processes.
pub fn new_run_id() -> String {
    let now = Utc::now();
    let nanos = now.timestamp_subsec_nanos();
    let rnd = std::collections::hash_map::RandomState::new();
    use std::hash::BuildHasher;
    let salt = rnd.hash_one((std::process::id(), nanos)) & 0xffff_ffff;
    format!("{}-{:08x}", now.format("%Y%m%dT%H%M%S%.3fZ"), salt)
}

/// The state area of a project: `state.url`, or `_cohort_bridge/` under the lake.
pub fn area(
    config: &crate::config::Config,
    lake: &crate::lake::Location,
) -> Result<crate::lake::Location> {
    match &config.state.url {
        None => {
            let url = url::Url::parse(&lake.child_url(DEFAULT_DIR))
                .map_err(|e| Error::Internal(format!("state URL: {e}")))?;
            Ok(crate::lake::Location {
                url,
                store: lake.store.clone(),
                root: lake.child(DEFAULT_DIR),
            })
        }
        Some(url) => crate::lake::Location::parse(url, &config.base_dir(), &config.lake.options)
            .map_err(|e| match e {
                Error::Config { message, .. } => {
                    Error::config(config.file.clone(), format!("state.url: {message}"))
                }
                other => other,
            }),
    }
}

/// The state folder under the lake unless `state.url` says otherwise.
pub const DEFAULT_DIR: &str = "_cohort_bridge";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_written_before_formats_reads_as_format_1() {
        let old = r#"{"run_id":"r1","partner":"http://x/partners/p#workspace-1","snapshot":"snapshots/r1.parquet","members":3,"committed_at":"2026-11-26T12:00:00Z"}"#;
        let p: Pointer = serde_json::from_str(old).unwrap();
        assert_eq!(
            (p.format, p.resend_all, p.note.as_deref()),
            (1, false, None)
        );
        assert!(check_format(&Path::from("current.json"), p.format).is_ok());
        let err = check_format(&Path::from("current.json"), FORMAT + 1).unwrap_err();
        assert!(err.to_string().contains("newer cohort-bridge"), "{err}");
        assert_eq!(err.exit_code(), crate::error::exit::USAGE);
    }

    #[test]
    fn a_replica_sits_beside_its_snapshot() {
        assert_eq!(
            replica("snapshots/r1.parquet"),
            "snapshots/r1.replica.parquet"
        );
    }
}
