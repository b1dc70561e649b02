//! The state area of the lake (`_cohort_bridge/` by default), all through `object_store` so it
//! behaves the same on local disk and S3. Per destination and cohort:
//!
//! ```text
//! <state>/cohorts/<destination>/<cohort_id>/
//!     current.json               the commit pointer: which snapshot the partner holds
//!     snapshots/<run_id>.parquet acknowledged membership (sorted user_id)
//!     snapshots/<run_id>.replica.parquet  the same bytes, so `state repair` can restore a
//!                                lost or damaged snapshot exactly
//!     snapshots/<run_id>.adds.parquet, .removes.parquet (each with a .replica)  a delta: an
//!                                incremental run's change, committed on top of the snapshot
//!                                instead of rewriting it (format 3, see "Deltas" below)
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
//! <state>/history/...            what each committed run changed (`history`, the
//!                                `cohort_changes` table)
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
//! Format 4 is state whose id lists hold member keys of the injective identity encoding that
//! earlier releases would read as other members (`cohort::identity`): an external id starting
//! with 0x01, a device or Braze id or an alias name holding 0x01. Only such state is written
//! as 4 (each such list is marked in its footer, `ids::KEY_FORMAT`), so other state stays
//! readable by the release before; lists without the mark are read as that release meant them.
//!
//! Deltas (format 3). An hourly sync changes ~1% of a cohort, yet rewriting its snapshot (and
//! replica) costs the whole membership every run: 800 MB of writes for 10M UUIDs. So an
//! incremental run's plan writes its adds and removes under `snapshots/` (with replicas), and
//! its commit names the chain `snapshot + deltas` (`Pointer::deltas`, in order) instead of a
//! new snapshot. The membership is the snapshot with the deltas applied in order (the last
//! change of an id wins). A run writes a full snapshot instead (compaction) when the chain
//! would exceed `state.max_deltas` deltas or hold more ids than a tenth of the cohort, on a
//! first sync, `--full`, a repaired state, or a run with dead letters. A pointer without deltas
//! is written as format 2, so state is readable by the previous release once compacted.
//!
//! A state file that is missing where it must exist, or unreadable, stops a run with exit 2
//! naming the file and the `cohort-bridge state …` command that repairs it (see `repair`).

pub mod dead;
pub mod history;
pub mod ids;
pub mod journal;
pub mod lock;
pub mod paths;
pub mod repair;
pub mod runs;
pub mod set_aside;
pub mod show;
pub mod tables;
pub mod target;
pub mod unlock;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::storage::Location;
// The JSON and object helpers state used to define, for the callers that still name them here.
pub use crate::storage::json::{Read, try_read_json, write_json};
pub use crate::storage::objects::delete_if_exists;

/// The newest state format this binary reads (and writes, for a plan sent in parts:
/// [`FORMAT_PARTS`]).
pub const FORMAT: u32 = 5;
/// The format of a plan sent while its cohort was still being sorted (`PlanMeta::open`,
/// `PlanMeta::add_parts`): a release before it would number its batches otherwise, so it
/// refuses such a plan. Pointers never need it (their lists are the same).
pub const FORMAT_PARTS: u32 = 5;
/// The format of state whose lists hold member keys of the injective encoding that releases
/// before it would read as other members (`cohort::identity`; such a list carries
/// `ids::KEY_FORMAT`). Those releases refuse it.
pub const FORMAT_KEYS: u32 = 4;
/// The format of state with deltas (readable by the release before [`FORMAT_KEYS`]).
pub const FORMAT_DELTAS: u32 = 3;
/// The format of state without deltas (readable by the release before deltas).
pub const FORMAT_NO_DELTAS: u32 = 2;

/// The format of a plan: [`FORMAT_KEYS`] when `keys` (its lists, or the membership it commits,
/// hold keys the release before would misread), else by whether it commits deltas. (A plan in
/// parts is [`FORMAT_PARTS`] whatever it holds.)
pub fn plan_format(deltas: bool, keys: bool) -> u32 {
    if keys {
        FORMAT_KEYS
    } else if deltas {
        FORMAT_DELTAS
    } else {
        FORMAT_NO_DELTAS
    }
}

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
    /// The logical time (`--at`) of the run that committed (absent in state of earlier
    /// releases, and after `state repair`). A sync at an earlier time is refused unless
    /// `--allow-rewind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// Set by `state repair` when an unfinished run could not be read: what the partner holds is
    /// only known to be within the snapshot, so the next sync re-sends every member and removes
    /// every snapshot id not in the cohort (as `--full`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend_all: bool,
    /// What changed the partner identity of this state, and from what (`--rebind`,
    /// `--new-workspace`, `state repair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Changes committed on top of `snapshot`, oldest first (format 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<Delta>,
}

/// One incremental run's change, committed on top of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub run_id: String,
    /// Its sorted adds and removes, relative to the cohort's state folder.
    pub adds: String,
    pub removes: String,
    pub add_count: u64,
    pub remove_count: u64,
}

impl Delta {
    /// The delta files of run `run_id`.
    pub fn of(run_id: &str, add_count: u64, remove_count: u64) -> Delta {
        Delta {
            run_id: run_id.to_string(),
            adds: paths::delta_adds(run_id),
            removes: paths::delta_removes(run_id),
            add_count,
            remove_count,
        }
    }

    pub fn ids(&self) -> u64 {
        self.add_count + self.remove_count
    }
}

/// What a commit names: a snapshot and the deltas on top of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    pub snapshot: String,
    pub deltas: Vec<Delta>,
}

impl Pointer {
    /// Every file the committed membership is made of (without replicas): the snapshot, then
    /// each delta's adds and removes.
    pub fn files(&self) -> Vec<String> {
        let mut out = vec![self.snapshot.clone()];
        for d in &self.deltas {
            out.push(d.adds.clone());
            out.push(d.removes.clone());
        }
        out
    }

    /// Ids held in deltas (what reading the membership costs beyond the snapshot).
    pub fn delta_ids(&self) -> u64 {
        self.deltas.iter().map(Delta::ids).sum()
    }
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
    /// Set when the run commits as a delta (format 3): the chain its pointer will name (the
    /// base's snapshot and deltas, then this run's, whose files are `adds_file` and
    /// `removes_file`). `target_snapshot` is then only written if the run compacts after all
    /// (dead letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Chain>,
    /// A plan sent while its cohort was still being sorted (format 5), its parts still being
    /// planned: the adds planned so far are the lists under `pending/parts/` (each durable
    /// before any of its batches was sent), and the totals and lists above are not set yet. A
    /// run that resumes it closes it with those parts alone (`sync::resume`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// The ids of each part of `adds_file`, in order, when the plan was made in parts: each
    /// part's batches are numbered after the previous part's (its last batch may be short).
    /// Empty: one part (`add_batches` batches of `batch_size`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_parts: Vec<u64>,
}

impl PlanMeta {
    /// The plan's add batches: (number, range of `adds_file`), numbered from 1, part by part.
    pub fn add_batches_by_part(&self) -> Vec<(u64, std::ops::Range<usize>)> {
        let parts = if self.add_parts.is_empty() {
            vec![self.adds]
        } else {
            self.add_parts.clone()
        };
        let mut out = Vec::with_capacity(self.add_batches as usize);
        let (mut start, mut next) = (0usize, 1u64);
        for n in parts.into_iter().map(|n| n as usize) {
            for from in (0..n).step_by(self.batch_size.max(1)) {
                out.push((next, start + from..start + (from + self.batch_size).min(n)));
                next += 1;
            }
            start += n;
        }
        out
    }
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
        let path = self.path(paths::POINTER);
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
        let path = self.path(paths::PLAN);
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

    /// An id list of this state as [`CohortState::ids`] reads it, in arrays of up to 2 GiB of
    /// ids each, in order (a snapshot, or a first sync's adds, of 100M UUIDs is past one).
    pub async fn id_arrays(&self, rel: &str) -> Result<Vec<datafusion::arrow::array::StringArray>> {
        let path = self.path(rel);
        ids::try_read_arrays(&self.store, &path)
            .await?
            .map_err(|why| self.unreadable(&path, &why, "repair"))
    }

    /// The committed membership (empty when nothing was ever committed): the snapshot with
    /// the pointer's deltas applied.
    pub async fn snapshot(
        &self,
        pointer: Option<&Pointer>,
    ) -> Result<Arc<datafusion::arrow::array::StringArray>> {
        let base = self.base(pointer).await?;
        let at = pointer.map(|p| self.path(&p.snapshot));
        crate::parallel::on_rayon(move || base.materialize())
            .await
            .map_err(|why| Error::storage(format!("{}: {why}", at.unwrap_or_default())))
    }

    /// The committed membership as its snapshot and the net change of the pointer's deltas,
    /// not applied (`diff::Base`), its member count checked against the pointer's.
    pub async fn base(&self, pointer: Option<&Pointer>) -> Result<crate::cohort::diff::Base> {
        use crate::cohort::diff::Base;
        let Some(p) = pointer else {
            return Ok(Base::whole(Arc::new(
                datafusion::arrow::array::StringArray::from(Vec::<&str>::new()),
            )));
        };
        if p.deltas.is_empty() {
            let base = Base::in_chunks(self.id_arrays(&p.snapshot).await?);
            return self.counted(base, p);
        }
        let (base, changes) = futures::try_join!(self.id_arrays(&p.snapshot), async {
            let mut changes = Vec::with_capacity(p.deltas.len());
            for d in &p.deltas {
                changes.push((self.ids(&d.adds).await?, self.ids(&d.removes).await?));
            }
            Ok(changes)
        })?;
        let members = crate::parallel::on_rayon(move || {
            let (adds, removes) = crate::cohort::diff::net(&changes);
            Base::with_changes(base, Arc::new(adds), Arc::new(removes))
        })
        .await;
        self.counted(members, p)
    }

    /// `base`, unless its members are not the pointer's count.
    fn counted(
        &self,
        base: crate::cohort::diff::Base,
        p: &Pointer,
    ) -> Result<crate::cohort::diff::Base> {
        if base.len() as u64 != p.members {
            return Err(self.unreadable(
                &self.path(paths::POINTER),
                &format!(
                    "its snapshot and {} deltas make {} members, it records {}",
                    p.deltas.len(),
                    base.len(),
                    p.members
                ),
                "repair",
            ));
        }
        Ok(base)
    }

    /// Runs with a full snapshot (file stems, replicas folded in), with the newest
    /// modification time.
    pub async fn snapshot_runs(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        self.runs_of(false).await
    }

    /// Runs with delta files (adds, removes), with the newest modification time.
    pub async fn delta_runs(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        self.runs_of(true).await
    }

    async fn runs_of(&self, deltas: bool) -> Result<Vec<(String, DateTime<Utc>)>> {
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
            let stem = stem.strip_suffix(".replica").unwrap_or(stem);
            let delta = stem
                .strip_suffix(".adds")
                .or_else(|| stem.strip_suffix(".removes"));
            let stem = match (delta, deltas) {
                (Some(run), true) => run.to_string(),
                (None, false) => stem.to_string(),
                _ => continue,
            };
            let at = runs.entry(stem).or_insert(meta.last_modified);
            *at = (*at).max(meta.last_modified);
        }
        Ok(runs.into_iter().collect())
    }

    /// Runs whose target snapshot was written before their plan (see the module docs).
    pub async fn started(&self) -> Result<Vec<String>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.path(paths::STARTED)))
            .try_collect()
            .await?;
        Ok(listed
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }

    /// Marks `run_id`'s snapshot as not committed (yet).
    pub async fn mark_started(&self, run_id: &str) -> Result<()> {
        let path = self.path(&paths::started(run_id));
        self.store
            .put(&path, bytes::Bytes::new().into())
            .await
            .map_err(|e| Error::storage_at(&path, e))?;
        Ok(())
    }

    /// The atomic switch: from now on the partner is known to hold `chain` (a delta commit) or
    /// the plan's target snapshot.
    pub async fn commit(
        &self,
        plan: &PlanMeta,
        members: u64,
        chain: Option<&Chain>,
    ) -> Result<Pointer> {
        let (snapshot, deltas) = match chain {
            Some(c) => (c.snapshot.clone(), c.deltas.clone()),
            None => (plan.target_snapshot.clone(), Vec::new()),
        };
        let pointer = Pointer {
            format: FORMAT,
            run_id: plan.run_id.clone(),
            partner: plan.partner.clone(),
            snapshot,
            members,
            committed_at: Utc::now(),
            at: Some(plan.at),
            resend_all: false,
            note: None,
            deltas,
        };
        self.write_pointer(&pointer).await?;
        Ok(pointer)
    }

    /// Writes `current.json`: format 4 when a list it names holds keys the release before
    /// would misread (read from each list's footer), else 3 when it has deltas, else 2.
    pub async fn write_pointer(&self, pointer: &Pointer) -> Result<()> {
        let mut p = pointer.clone();
        let mut keys = false;
        for file in p.files() {
            if ids::marked(&self.store, &self.path(&file)).await? {
                keys = true;
                break;
            }
        }
        p.format = plan_format(!p.deltas.is_empty(), keys);
        write_json(self.store.as_ref(), &self.path(paths::POINTER), &p).await
    }

    /// Removes `pending/` and every snapshot and delta file but `keep` (and their replicas).
    /// The journal goes first (a journal without a plan means a lost plan), then the plan (a
    /// crash half-way leaves no plan to resume), then the started marks, then the rest.
    pub async fn clean_up(&self, keep: &[String]) -> Result<()> {
        let keep: Vec<Path> = keep
            .iter()
            .flat_map(|f| [self.path(f), self.path(&replica(f))])
            .collect();
        self.delete_all(paths::JOURNAL, &keep).await?;
        delete_if_exists(self.store.as_ref(), &self.path(paths::PLAN)).await?;
        for prefix in [paths::STARTED, "pending", "snapshots"] {
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
pub fn area(config: &crate::config::Config, lake: &Location) -> Result<Location> {
    match &config.state.url {
        None => {
            let url = url::Url::parse(&lake.child_url(DEFAULT_DIR))
                .map_err(|e| Error::Internal(format!("state URL: {e}")))?;
            Ok(Location {
                url,
                store: lake.store.clone(),
                root: lake.child(DEFAULT_DIR),
            })
        }
        Some(url) => {
            Location::parse(url, &config.base_dir(), &config.lake.options).map_err(|e| match e {
                Error::Config { message, .. } => {
                    Error::config(config.file.clone(), format!("state.url: {message}"))
                }
                other => other,
            })
        }
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
