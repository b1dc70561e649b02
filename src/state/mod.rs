//! The state area of the lake (`_cohort_bridge/` by default), all through `object_store` so it
//! behaves the same on local disk and S3. Per destination and cohort:
//!
//! ```text
//! <state>/cohorts/<destination>/<cohort_id>/
//!     current.json               the commit pointer: which snapshot the partner holds
//!     snapshots/<run_id>.parquet acknowledged membership (sorted user_id)
//!     pending/plan.json          an unfinished run's plan (present ⇔ a run must be resumed)
//!     pending/adds.parquet       its ids to add, sorted; batches numbered 1..=add_batches
//!                                (a first sync uses the target snapshot instead)
//!     pending/removes.parquet    its ids to remove, sorted; batches numbered after the adds
//!     pending/journal/<seq>.acks acknowledged batch numbers, one small object per group commit
//!     pending/dead/<batch>.json  ids of a batch the partner refused (400), isolated by splitting
//!     dead_letters/<run_id>.parquet  refused ids of committed runs, with the partner's reason
//!     lock-<generation>.json     the run lock (see `lock`)
//!     shards/<N>/<K>/            the same layout for shard K of N (`sync --shard K/N`)
//! ```
//!
//! A run writes its plan (adds, removes, then `plan.json`) and the next snapshot while its first
//! batches go out; acknowledged batches are journaled as they are acked, but only once
//! `plan.json` is durable (before that a crash leaves nothing to resume: the next run starts
//! over, and re-sending is harmless); a missing next snapshot is rebuilt from the base snapshot,
//! the adds and the removes. When every batch is acknowledged the pointer is switched
//! (one atomic put) and `pending/` removed. After a crash anywhere, the pointer names either the
//! old snapshot or the new one, and `pending/` says exactly what is left to send.

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

/// Where one cohort's state lives at one destination.
#[derive(Clone)]
pub struct CohortState {
    pub store: Arc<dyn ObjectStore>,
    pub dir: Path,
}

/// `current.json`: the committed snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pointer {
    pub run_id: String,
    /// Which partner workspace holds this snapshot (see `sync::partner_identity`). A snapshot
    /// of another partner says nothing about this one.
    #[serde(default)]
    pub partner: String,
    /// Path of the snapshot, relative to the cohort's state folder.
    pub snapshot: String,
    pub members: u64,
    pub committed_at: DateTime<Utc>,
}

/// `pending/plan.json`: everything needed to resume a run exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanMeta {
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
        CohortState { store, dir }
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

    pub async fn pointer(&self) -> Result<Option<Pointer>> {
        read_json(self.store.as_ref(), &self.path("current.json")).await
    }

    pub async fn plan(&self) -> Result<Option<PlanMeta>> {
        read_json(self.store.as_ref(), &self.path("pending/plan.json")).await
    }

    /// The committed membership (empty when nothing was ever committed).
    pub async fn snapshot(
        &self,
        pointer: Option<&Pointer>,
    ) -> Result<Arc<datafusion::arrow::array::StringArray>> {
        match pointer {
            Some(p) => ids::read(self.store.as_ref(), &self.path(&p.snapshot)).await,
            None => Ok(Arc::new(datafusion::arrow::array::StringArray::from(
                Vec::<&str>::new(),
            ))),
        }
    }

    /// The atomic switch: from now on the partner is known to hold `snapshot`.
    pub async fn commit(&self, plan: &PlanMeta, members: u64) -> Result<Pointer> {
        let pointer = Pointer {
            run_id: plan.run_id.clone(),
            partner: plan.partner.clone(),
            snapshot: plan.target_snapshot.clone(),
            members,
            committed_at: Utc::now(),
        };
        write_json(self.store.as_ref(), &self.path("current.json"), &pointer).await?;
        Ok(pointer)
    }

    /// Removes `pending/` (plan first, so a crash half-way leaves no plan to resume) and
    /// snapshots no pointer names any more.
    pub async fn clean_up(&self, keep_snapshot: &str) -> Result<()> {
        delete_if_exists(self.store.as_ref(), &self.path("pending/plan.json")).await?;
        for prefix in ["pending", "snapshots"] {
            let listed: Vec<_> = self
                .store
                .list(Some(&self.path(prefix)))
                .try_collect()
                .await?;
            for meta in listed {
                if meta.location == self.path(keep_snapshot) {
                    continue;
                }
                delete_if_exists(self.store.as_ref(), &meta.location).await?;
            }
        }
        Ok(())
    }
}

pub async fn read_json<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Option<T>> {
    match store.get(path).await {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| Error::Storage(format!("{path}: {e}")))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Storage(format!("{path}: corrupt state file: {e}")))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::Storage(format!("{path}: {e}"))),
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
