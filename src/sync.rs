//! `sync`: one cohort from SQL to the partner — resume an interrupted run, diff the cohort
//! against the committed snapshot, send the adds and removes under a lock with every
//! acknowledged batch journaled, commit the new snapshot — and the one-line summary a
//! scheduler reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use serde::Serialize;
use tracing::{info, warn};

use crate::cohort::shard::Shard;
use crate::cohort::{self, diff};
use crate::config::{Cohort, Config, Credentials, DestinationConfig};
use crate::deliver::destination::braze::Braze;
use crate::deliver::plan::{batches, encode_in_background};
use crate::deliver::sender::Sender;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::sql::Params;
use crate::parallel::on_rayon;
use crate::progress::Progress;
use crate::state::dead::{self, DeadLetter};
use crate::state::journal::{self, Journal};
use crate::state::lock::{self, Lock};
use crate::state::{self, CohortState, PlanMeta, Pointer, ids, new_run_id};
use datafusion::arrow::array::{Array, StringArray};

/// How a run was asked to behave.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// The run's logical time: `$run_ts`, `$run_date`, and the cohort's `created_at`.
    pub at: DateTime<Utc>,
    /// Draw a progress bar (only ever on a terminal).
    pub progress: bool,
    /// Compute and report the change; send nothing, write nothing, take no lock.
    pub dry_run: bool,
    /// Re-send every member (repair after loss at the partner), not only the adds.
    pub full: bool,
    /// Send removals even when the query returned nothing or they exceed
    /// `state.max_removal_share` of the snapshot.
    pub allow_mass_removal: bool,
    /// Deliver only this shard's members, with its own plan, journal, lock and snapshot.
    pub shard: Option<Shard>,
    /// Requests per second for this run, instead of the destination's (a shard's default is
    /// the destination's divided by the shard count).
    pub requests_per_second: Option<f64>,
}

impl SyncOptions {
    pub fn at(at: DateTime<Utc>) -> Self {
        SyncOptions {
            at,
            progress: false,
            dry_run: false,
            full: false,
            allow_mass_removal: false,
            shard: None,
            requests_per_second: None,
        }
    }
}

/// The one-line JSON summary printed on stdout per cohort.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncSummary {
    pub cohort: String,
    pub cohort_id: String,
    pub destination: String,
    /// `K/N` when the run delivered one shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub run_id: String,
    /// `delivered`, `unchanged` or `dry_run`.
    pub outcome: &'static str,
    pub members: u64,
    pub rows: u64,
    pub nulls_skipped: u64,
    pub empty_skipped: u64,
    pub duplicates_removed: u64,
    /// Members the partner held (the committed snapshot) before this run.
    pub snapshot_members: u64,
    pub adds: u64,
    pub removes: u64,
    /// Removals not sent (zero-row result or mass removal without `--allow-mass-removal`).
    pub removes_held_back: u64,
    /// Batches of an interrupted earlier run sent by this one.
    pub resumed_batches: u64,
    /// Batches of an interrupted run that its journal showed acknowledged (not re-sent).
    pub skipped_batches: u64,
    /// Ids the partner refused (400), written to `dead_letters/` and retried next run.
    pub dead_letters: u64,
    pub batches: u64,
    pub requests: u64,
    pub retries: u64,
    /// Query plus reading the committed snapshot (they overlap).
    pub query_seconds: f64,
    pub seconds: f64,
    /// `--dry-run` only: up to 5 ids of each kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_adds: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_removes: Option<Vec<String>>,
}

/// Syncs one cohort: resumes an interrupted run if there is one, then sends the change between
/// the committed snapshot and the cohort now, and commits the new snapshot once every batch is
/// acknowledged.
pub async fn sync_cohort(
    config: &Config,
    lake: &Lake,
    name: &str,
    credentials: &Credentials,
    options: SyncOptions,
) -> Result<SyncSummary> {
    let started = Instant::now();
    let cohort = config
        .cohort(name)
        .map_err(|m| Error::config(config.file.clone(), m))?;
    if let Some(rate) = options.requests_per_second {
        crate::config::check_rate(rate)
            .map_err(|e| Error::config(None, format!("--requests-per-second: {e}")))?;
    }
    let mut dest = config.destination(&cohort.destination)?.clone();
    // Shards share the partner's one rate limit.
    match (options.requests_per_second, options.shard) {
        (Some(rate), _) => dest.requests_per_second = rate,
        (None, Some(shard)) => dest.requests_per_second /= f64::from(shard.count),
        (None, None) => {}
    }
    let root = CohortState::new(
        lake.state.store.clone(),
        &lake.state.root,
        &cohort.destination,
        &cohort.cohort_id,
    );
    let state = match options.shard {
        Some(shard) => root.shard(shard.index, shard.count),
        None => root.clone(),
    };
    let run_id = new_run_id();
    let mut summary = SyncSummary {
        cohort: cohort.name.clone(),
        cohort_id: cohort.cohort_id.clone(),
        destination: cohort.destination.clone(),
        shard: options.shard.map(|s| s.to_string()),
        run_id: run_id.clone(),
        ..SyncSummary::default()
    };
    let dest = &dest;
    let run = Run {
        partner: partner_identity(dest, credentials),
        config,
        dest,
        root: &root,
        cohort: &cohort,
        credentials,
        state: &state,
        options,
    };

    if options.dry_run {
        let change = run.change(lake, &mut summary, &started).await?;
        summary.outcome = "dry_run";
        summary.batches = (change.adds.len().div_ceil(dest.batch_size)
            + change.removes.len().div_ceil(dest.batch_size)) as u64;
        summary.requests = summary.batches + 1;
        summary.sample_adds = Some(sample(&change.adds));
        summary.sample_removes = Some(sample(&change.removes));
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }

    let lock = Lock::acquire(&state, &run_id, config.state.lock_ttl).await?;
    let kept = lock::keep_alive(lock);
    let result = run.sync(lake, &mut summary, &started, &kept).await;
    let released = kept.release().await;
    result?;
    released?;
    summary.seconds = started.elapsed().as_secs_f64();
    info!(cohort = %summary.cohort, adds = summary.adds, removes = summary.removes,
        batches = summary.batches, requests = summary.requests, retries = summary.retries,
        seconds = summary.seconds, "cohort synced");
    Ok(summary)
}

/// Names the partner workspace a snapshot belongs to: the endpoint, the partner path and a short
/// fingerprint of the workspace key (32 bits of a hash: enough to tell workspaces apart, far too
/// little to recover anything). Changing any of them means the partner holds nothing we
/// know of, so the next sync is a full one.
pub fn partner_identity(dest: &DestinationConfig, credentials: &Credentials) -> String {
    // FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
    let hash = credentials
        .client_secret
        .expose()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!(
        "{}/partners/{}#workspace-{:08x}",
        dest.base_url.trim_end_matches('/'),
        dest.partner,
        hash >> 32
    )
}

fn sample(ids: &StringArray) -> Vec<String> {
    ids.iter().flatten().take(5).map(str::to_string).collect()
}

/// What this run will send, and the snapshot it commits once sent.
struct Change {
    base: Option<Pointer>,
    adds: Arc<StringArray>,
    removes: Arc<StringArray>,
    target: Arc<StringArray>,
}

struct Run<'a> {
    /// Which partner workspace this run talks to (`partner_identity`).
    partner: String,
    config: &'a Config,
    dest: &'a DestinationConfig,
    cohort: &'a Cohort,
    credentials: &'a Credentials,
    /// The cohort's state folder (unsharded runs use it; shards live under `shards/`).
    root: &'a CohortState,
    /// This run's state: the root, or its shard's folder.
    state: &'a CohortState,
    options: SyncOptions,
}

impl Run<'_> {
    async fn sync(
        &self,
        lake: &Lake,
        summary: &mut SyncSummary,
        started: &Instant,
        lock: &lock::KeptLock,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::from_std(*started) + self.dest.deadline;
        let sender = Sender::new(self.dest, deadline)?;
        let braze = Arc::new(Braze::new(self.dest, self.credentials, self.cohort));

        // 1. An interrupted run first: finish exactly its plan.
        if let Some(plan) = self.state.plan().await? {
            let pointer = self.state.pointer().await?;
            if plan.partner != self.partner {
                warn!(cohort = %self.cohort.name, run = %plan.run_id, plan_partner = %plan.partner,
                    partner = %self.partner, "discarding an interrupted run planned for another partner endpoint or workspace");
                let keep = pointer
                    .as_ref()
                    .map(|p| p.snapshot.clone())
                    .unwrap_or_default();
                self.state.clean_up(&keep).await?;
            } else if pointer.as_ref().is_some_and(|p| p.run_id == plan.run_id) {
                // It committed and died while cleaning up.
                self.state.clean_up(&plan.target_snapshot).await?;
            } else {
                info!(cohort = %self.cohort.name, run = %plan.run_id, "resuming an interrupted run");
                let (sent, skipped) = self.deliver(&plan, &braze, &sender, None, None).await?;
                summary.resumed_batches = sent;
                summary.skipped_batches = skipped;
                summary.batches += sent;
                lock.check()?;
                self.finish(&plan, summary).await?;
            }
        }

        // 2. This run's change.
        let change = self.change(lake, summary, started).await?;
        let nothing_to_send = change.adds.is_empty() && change.removes.is_empty();
        if nothing_to_send && change.base.is_some() && summary.removes_held_back == 0 {
            summary.outcome = "unchanged";
        } else {
            // Sending starts at once; the plan files are written meanwhile, and the journal
            // records acknowledgements only once `plan.json` is durable (before that, a crash
            // leaves nothing to resume and the next run simply starts over).
            let plan = self.plan_meta(&change, &summary.run_id);
            let (durable, plan_durable) = tokio::sync::oneshot::channel();
            let write = async {
                self.write_plan(&change, &plan).await?;
                let _ = durable.send(());
                if plan.adds_file != plan.target_snapshot {
                    let path = self.state.path(&plan.target_snapshot);
                    ids::write(self.state.store.as_ref(), &path, change.target.clone()).await?;
                }
                Ok::<(), Error>(())
            };
            let lists = Some([change.adds.clone(), change.removes.clone()]);
            let (delivered, written) = tokio::join!(
                self.deliver(&plan, &braze, &sender, lists, Some(plan_durable)),
                write
            );
            let (sent, _) = delivered?;
            written?;
            summary.batches += sent;
            lock.check()?;
            self.finish(&plan, summary).await?;
            summary.outcome = "delivered";
        }
        let stats = sender.stats();
        summary.requests = stats.requests;
        summary.retries = stats.retries;
        Ok(())
    }

    /// Runs the query and diffs it against the committed snapshot.
    async fn change(
        &self,
        lake: &Lake,
        summary: &mut SyncSummary,
        started: &Instant,
    ) -> Result<Change> {
        // The query and the snapshot read overlap: one is CPU on the query runtime, the other
        // mostly I/O and decoding on rayon.
        let params = Params {
            run_ts: self.options.at,
        };
        let (members, snapshot) =
            tokio::join!(cohort::members(lake, self.cohort, &params), self.base());
        let (mut members, (base, snapshot)) = (members?, snapshot?);
        if let Some(shard) = self.options.shard {
            let all = members.ids.clone();
            members.ids = Arc::new(on_rayon(move || shard.filter(&all)).await);
        }
        summary.query_seconds = started.elapsed().as_secs_f64();
        summary.members = members.ids.len() as u64;
        summary.rows = members.rows;
        summary.nulls_skipped = members.nulls_skipped;
        summary.empty_skipped = members.empty_skipped;
        summary.duplicates_removed = members.duplicates_removed;
        info!(cohort = %self.cohort.name, members = members.ids.len(), nulls_skipped = members.nulls_skipped,
            duplicates_removed = members.duplicates_removed, seconds = summary.query_seconds, "cohort computed");

        summary.snapshot_members = snapshot.len() as u64;
        let now = members.ids.clone();
        let full = self.options.full;
        // `adds` is the members array itself (not a copy) when everything is sent: the plan
        // then stores it once, as the target snapshot.
        let (adds, removes) = if snapshot.is_empty() {
            (now, Arc::new(StringArray::from(Vec::<&str>::new())))
        } else {
            on_rayon(move || {
                let d = diff::diff(&snapshot, &now);
                let adds = if full { now } else { Arc::new(d.adds) };
                (adds, Arc::new(d.removes))
            })
            .await
        };

        // Safe removals: a query that returns nothing, or drops a large share of the cohort,
        // is more often a bug (an empty partition, a broken filter) than a real exodus.
        let share = if summary.snapshot_members == 0 {
            0.0
        } else {
            removes.len() as f64 / summary.snapshot_members as f64
        };
        let suspicious = !removes.is_empty()
            && (members.ids.is_empty() || share > self.config.state.max_removal_share);
        let (removes, target) = if suspicious && !self.options.allow_mass_removal {
            warn!(
                cohort = %self.cohort.name, removes = removes.len(), members = members.ids.len(),
                snapshot = summary.snapshot_members,
                "holding back removals: {}; pass --allow-mass-removal if this is intended",
                if members.ids.is_empty() {
                    "the query returned no members".to_string()
                } else {
                    format!("{:.0}% of the cohort would leave (state.max_removal_share = {})",
                        share * 100.0, self.config.state.max_removal_share)
                }
            );
            summary.removes_held_back = removes.len() as u64;
            let (ids, held) = (members.ids.clone(), removes.clone());
            let target = on_rayon(move || Arc::new(diff::union(&ids, &held))).await;
            (Arc::new(StringArray::from(Vec::<&str>::new())), target)
        } else {
            (removes, members.ids.clone())
        };
        summary.adds = adds.len() as u64;
        summary.removes = removes.len() as u64;
        Ok(Change {
            base,
            adds,
            removes,
            target,
        })
    }

    /// Writes the target snapshot and the plan's id lists, then the plan itself: once
    /// `plan.json` exists, the run is resumable.
    fn plan_meta(&self, change: &Change, run_id: &str) -> PlanMeta {
        let target_snapshot = format!("snapshots/{run_id}.parquet");
        // A first sync adds the whole target: one file serves as both.
        let adds_file = if Arc::ptr_eq(&change.adds, &change.target) {
            target_snapshot.clone()
        } else {
            "pending/adds.parquet".to_string()
        };
        let size = self.dest.batch_size;
        PlanMeta {
            run_id: run_id.to_string(),
            created_at: Utc::now(),
            at: self.options.at,
            base_run_id: change.base.as_ref().map(|p| p.run_id.clone()),
            partner: self.partner.clone(),
            target_snapshot,
            adds_file,
            removes_file: "pending/removes.parquet".to_string(),
            target_members: change.target.len() as u64,
            batch_size: size,
            adds: change.adds.len() as u64,
            removes: change.removes.len() as u64,
            add_batches: change.adds.len().div_ceil(size) as u64,
            remove_batches: change.removes.len().div_ceil(size) as u64,
        }
    }

    /// Writes the plan's id lists, then `plan.json`: from then on the run is resumable.
    /// An incremental plan needs only its adds and removes for that (the target snapshot is
    /// written afterwards, and rebuilt by `finish` if a crash came first); a first sync's adds
    /// *are* the target.
    async fn write_plan(&self, change: &Change, plan: &PlanMeta) -> Result<()> {
        let store = self.state.store.as_ref();
        let write = |file: &str, ids: &Arc<StringArray>| {
            let (path, ids) = (self.state.path(file), ids.clone());
            async move { ids::write(store, &path, ids).await }
        };
        tokio::try_join!(
            write(&plan.adds_file, &change.adds),
            write(&plan.removes_file, &change.removes),
        )?;
        state::write_json(store, &self.state.path("pending/plan.json"), plan).await
    }

    /// Sends every batch of `plan` its journal does not hold; returns (sent, skipped).
    /// A batch the partner refuses with 400 is split until the refused ids are isolated; they
    /// are recorded as dead letters and the rest of the batch is delivered.
    async fn deliver(
        &self,
        plan: &PlanMeta,
        braze: &Arc<Braze>,
        sender: &Sender,
        // The plan's adds and removes when this process made it (else read from the plan).
        in_memory: Option<[Arc<StringArray>; 2]>,
        // Resolves when `plan.json` is durable (a plan being written while it is sent).
        plan_durable: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Result<(u64, u64)> {
        let store = self.state.store.as_ref();
        let acked = journal::read(self.state).await?;
        sender
            .send(&braze.create_cohort(plan.at))
            .await
            .map_err(|e| explain_rejection(e, self.config, &self.cohort.destination))?;

        let journal = Journal::start(self.state.clone(), new_run_id(), plan_durable);
        let total = plan.add_batches + plan.remove_batches;
        let todo = total - acked.iter().filter(|&&n| n >= 1 && n <= total).count() as u64;
        let progress = Progress::new(self.options.progress, todo, &self.cohort.name);
        let window = (self.dest.max_in_flight * 2).max(16);
        let breaker = Breaker::new(total);
        let breaker = &breaker;
        let mut result = Ok(());
        for (k, remove, file, offset) in [
            (0, false, &plan.adds_file, 0),
            (1, true, &plan.removes_file, plan.add_batches),
        ] {
            let ids = match &in_memory {
                Some(lists) => lists[k].clone(),
                None => ids::read(store, &self.state.path(file)).await?,
            };
            let batches: Vec<_> = batches(ids.len(), plan.batch_size)
                .into_iter()
                .map(|(n, range)| (n + offset, range))
                .filter(|(n, _)| !acked.contains(n))
                .collect();
            if batches.is_empty() {
                continue;
            }
            let requests =
                encode_in_background(braze.clone(), ids.clone(), batches, remove, window);
            let (journal, progress) = (&journal, &progress);
            result = sender
                .for_each(requests, |request| {
                    let ids = ids.clone();
                    async move {
                        match sender.send(&request).await {
                            Ok(()) => {}
                            Err(Error::PartnerRejected { status: 400, message, .. }) if request.ids > 0 => {
                                let start = (request.batch - offset - 1) as usize * plan.batch_size;
                                let range = start..start + request.ids;
                                let dead = isolate(sender, braze, breaker, &ids, request.batch, range, remove, message).await?;
                                warn!(cohort = %self.cohort.name, batch = request.batch, refused = dead.len(),
                                    first = %dead.first().map(|d| d.reason.as_str()).unwrap_or(""),
                                    "the partner refused ids; they are dead-lettered and retried next run");
                                dead::record(self.state, request.batch, &dead).await?;
                            }
                            Err(e) => return Err(e),
                        }
                        journal.ack(request.batch);
                        progress.inc();
                        Ok(())
                    }
                })
                .await
                .map_err(|e| explain_rejection(e, self.config, &self.cohort.destination));
            if result.is_err() {
                break;
            }
        }
        progress.finish();
        // Whatever happened, what was acknowledged is journaled before we report.
        let journaled = journal.finish().await;
        result?;
        journaled?;
        Ok((todo, total - todo))
    }

    /// Every batch of `plan` is acknowledged or dead-lettered: leave the refused ids out of
    /// the snapshot (a refused add is not a member at the partner; a refused remove still is),
    /// write the dead letters, then switch the pointer. Safe to repeat after a crash.
    async fn finish(&self, plan: &PlanMeta, summary: &mut SyncSummary) -> Result<()> {
        let store = self.state.store.as_ref();
        let target_path = self.state.path(&plan.target_snapshot);
        if let Err(object_store::Error::NotFound { .. }) = store.head(&target_path).await {
            self.rebuild_target(plan).await?;
        }
        let dead = dead::pending(self.state).await?;
        let mut members = plan.target_members;
        if !dead.is_empty() {
            let target = ids::read(store, &target_path).await?;
            let pick = |change: &str| {
                let mut v: Vec<&str> = dead
                    .iter()
                    .filter(|d| d.change == change)
                    .map(|d| d.user_id.as_str())
                    .collect();
                v.sort_unstable();
                v.dedup();
                StringArray::from(v)
            };
            let (refused_adds, refused_removes) = (pick("add"), pick("remove"));
            let adjusted = on_rayon(move || {
                let kept = diff::diff(&refused_adds, &target).adds;
                Arc::new(diff::union(&kept, &refused_removes))
            })
            .await;
            members = adjusted.len() as u64;
            ids::write(store, &target_path, adjusted).await?;
            dead::write(
                self.state,
                &plan.run_id,
                &self.cohort.cohort_id,
                plan.at,
                &dead,
            )
            .await?;
            summary.dead_letters += dead.len() as u64;
        }
        self.state.commit(plan, members).await?;
        self.state.clean_up(&plan.target_snapshot).await
    }
}

/// The committed state of one way of splitting a cohort: unsharded, or N shards.
struct Layout {
    /// `None`: unsharded.
    shards: Option<u32>,
    /// Each part's state and its committed pointer (for this partner), in shard order.
    parts: Vec<(CohortState, Option<Pointer>)>,
    /// A part has an unfinished run, or a run holds a part's lock now.
    busy: bool,
    /// Where its state lives (to name it in messages).
    dir: String,
}

impl Layout {
    fn name(&self) -> String {
        match self.shards {
            None => "unsharded".into(),
            Some(n) => format!("{n} shards"),
        }
    }

    /// The latest commit of any part.
    fn latest(&self) -> Option<DateTime<Utc>> {
        self.parts
            .iter()
            .filter_map(|(_, p)| p.as_ref().map(|p| p.committed_at))
            .max()
    }

    /// Every part committed: the oldest of their commits.
    fn oldest(&self) -> Option<DateTime<Utc>> {
        self.parts
            .iter()
            .map(|(_, p)| p.as_ref().map(|p| p.committed_at))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()
    }
}

impl Run<'_> {
    /// The committed snapshot this run diffs against (empty when there is none).
    ///
    /// Normally this run's own. When the cohort has committed under another layout (unsharded,
    /// or another shard count) since this run's own snapshot, the partner holds what that layout
    /// sent: this run adopts the ids it owns of that layout's snapshots — written as its own
    /// snapshot and pointer before anything is sent, so later steps (resume, rebuild) see an
    /// ordinary committed base. That needs every part of that layout to have committed after
    /// anything else touched the cohort (commit times come from the machines' clocks: keep
    /// them in sync). Otherwise, or while another layout is running or has an unfinished run,
    /// what the partner holds is unknown for some ids, and the run is refused with what to do.
    async fn base(&self) -> Result<(Option<Pointer>, Arc<StringArray>)> {
        let own = match self.state.pointer().await? {
            Some(p) if p.partner != self.partner => {
                warn!(cohort = %self.cohort.name, snapshot_partner = %p.partner, partner = %self.partner,
                    "the committed snapshot is of another partner endpoint or workspace; sending the whole cohort");
                None
            }
            other => other,
        };
        let own_at = own.as_ref().map(|p| p.committed_at);
        let layouts = self.other_layouts().await?;
        let refuse = |layout: &Layout, why: &str| {
            Error::config(
                self.config.file.clone(),
                format!(
                    "cohort `{}` also ran {} ({why}), so what the partner holds is not known \
                     here. Let that layout's runs finish and run every part of it once \
                     (`sync {} {}`), then switch; or, if that layout is abandoned, delete its \
                     state ({})",
                    self.cohort.name,
                    layout.name(),
                    self.cohort.name,
                    if layout.shards.is_some() {
                        "--shard K/N for each K"
                    } else {
                        "without --shard"
                    },
                    layout.dir,
                ),
            )
        };
        if let Some(busy) = layouts.iter().find(|l| l.busy) {
            return Err(refuse(busy, "a run of it is in progress or unfinished"));
        }
        let Some(newest) = layouts
            .iter()
            .filter(|l| l.latest() > own_at)
            .max_by_key(|l| l.latest())
        else {
            let ids = self.state.snapshot(own.as_ref()).await?;
            return Ok((own, ids));
        };
        let others = layouts
            .iter()
            .filter(|l| !std::ptr::eq(*l, newest))
            .filter_map(Layout::latest)
            .chain(own_at)
            .max();
        match newest.oldest() {
            Some(oldest) if Some(oldest) >= others => {
                let ids = self.adopt(newest).await?;
                let pointer = if self.options.dry_run {
                    own
                } else {
                    self.state.pointer().await?
                };
                Ok((pointer, ids))
            }
            _ => Err(refuse(
                newest,
                "more recently, but not every part of it has committed since",
            )),
        }
    }

    /// The other layouts of this cohort that hold anything for this partner.
    async fn other_layouts(&self) -> Result<Vec<Layout>> {
        let mut counts: Vec<Option<u32>> = vec![None];
        counts.extend(self.root.shard_counts().await?.into_iter().map(Some));
        let own = self.options.shard.map(|s| s.count);
        let mut out = Vec::new();
        for shards in counts.into_iter().filter(|n| *n != own) {
            let states: Vec<CohortState> = match shards {
                None => vec![self.root.clone()],
                Some(n) => (0..n).map(|k| self.root.shard(k, n)).collect(),
            };
            let mut layout = Layout {
                shards,
                parts: Vec::new(),
                busy: false,
                dir: match shards {
                    None => self.root.dir.to_string(),
                    Some(n) => format!("{}/shards/{n}", self.root.dir),
                },
            };
            for state in states {
                let pointer = state.pointer().await?.filter(|p| p.partner == self.partner);
                let plan = state.plan().await?;
                layout.busy |= plan.is_some_and(|p| p.partner == self.partner)
                    || lock::holder(&state).await?.is_some();
                layout.parts.push((state, pointer));
            }
            if layout.busy || layout.parts.iter().any(|(_, p)| p.is_some()) {
                out.push(layout);
            }
        }
        Ok(out)
    }

    /// The ids this run owns of `layout`'s snapshots, made this run's committed base (unless it
    /// is a dry run, which writes nothing).
    async fn adopt(&self, layout: &Layout) -> Result<Arc<StringArray>> {
        let mut parts = Vec::new();
        for (state, pointer) in &layout.parts {
            let ids = state.snapshot(pointer.as_ref()).await?;
            let mine = match self.options.shard {
                Some(shard) => on_rayon(move || shard.filter(&ids)).await,
                None => ids.as_ref().clone(),
            };
            parts.push(mine);
        }
        let ids = on_rayon(move || cohort::distinct_sorted(&parts).ids).await;
        info!(cohort = %self.cohort.name, from = %layout.name(), ids = ids.len(),
            "adopting the membership committed under another layout");
        if !self.options.dry_run {
            let run_id = format!("adopted-{}", new_run_id());
            let snapshot = format!("snapshots/{run_id}.parquet");
            ids::write(
                self.state.store.as_ref(),
                &self.state.path(&snapshot),
                ids.clone(),
            )
            .await?;
            let pointer = Pointer {
                run_id,
                partner: self.partner.clone(),
                snapshot,
                members: ids.len() as u64,
                // As current as the layout it was taken from.
                committed_at: layout.latest().unwrap_or_else(Utc::now),
            };
            state::write_json(
                self.state.store.as_ref(),
                &self.state.path("current.json"),
                &pointer,
            )
            .await?;
        }
        Ok(ids)
    }
}

impl Run<'_> {
    /// A crash came before the target snapshot was written: it is `(base − removes) ∪ adds`,
    /// and the base is still there (it is only deleted after the pointer moves past it).
    async fn rebuild_target(&self, plan: &PlanMeta) -> Result<()> {
        let store = self.state.store.as_ref();
        let base = match &plan.base_run_id {
            None => Arc::new(StringArray::from(Vec::<&str>::new())),
            Some(run) => {
                let pointer = self.state.pointer().await?;
                match pointer {
                    Some(p) if &p.run_id == run => self.state.snapshot(Some(&p)).await?,
                    _ => {
                        return Err(Error::Storage(format!(
                            "{}: the plan's base snapshot (run {run}) is no longer the committed one; \
                             cannot rebuild its target. Run with --full to repair.",
                            self.state.dir
                        )));
                    }
                }
            }
        };
        let adds = ids::read(store, &self.state.path(&plan.adds_file)).await?;
        let removes = ids::read(store, &self.state.path(&plan.removes_file)).await?;
        let target = on_rayon(move || {
            let kept = diff::diff(&removes, &base).adds;
            Arc::new(diff::union(&kept, &adds))
        })
        .await;
        ids::write(store, &self.state.path(&plan.target_snapshot), target).await
    }
}

/// The circuit breaker of isolation: when the partner refuses (400) nearly everything — a
/// wrong cohort id, a body it no longer accepts — splitting every batch down to single ids
/// would cost two requests per id and dead-letter the whole cohort. Isolation stops, and the
/// run fails with the partner's message, once more ids have been refused than delivered after
/// `MIN_SAMPLE` isolating requests, or once isolation spent more than its budget (100 requests
/// plus 10 per batch of the plan).
struct Breaker {
    budget: u64,
    spent: AtomicU64,
    refused_ids: AtomicU64,
    delivered_ids: AtomicU64,
}

impl Breaker {
    const MIN_SAMPLE: u64 = 32;

    fn new(batches: u64) -> Self {
        Breaker {
            budget: 100 + 10 * batches,
            spent: AtomicU64::new(0),
            refused_ids: AtomicU64::new(0),
            delivered_ids: AtomicU64::new(0),
        }
    }

    /// Called before each isolating request: an error when the breaker has tripped.
    fn spend(&self, message: &str) -> Result<()> {
        let spent = self.spent.fetch_add(1, Ordering::Relaxed) + 1;
        let refused = self.refused_ids.load(Ordering::Relaxed);
        let delivered = self.delivered_ids.load(Ordering::Relaxed);
        let why = if spent > self.budget {
            format!("isolation spent its budget of {} requests", self.budget)
        } else if spent > Self::MIN_SAMPLE && refused > delivered {
            format!("{refused} ids refused and only {delivered} accepted among those isolated")
        } else {
            return Ok(());
        };
        Err(Error::PartnerRejected {
            what: "most batches".into(),
            status: 400,
            message: format!(
                "{message} — stopped splitting refused batches ({why}, after {spent} requests): \
                 the partner refuses nearly everything, so the cause is likely the request \
                 (cohort id, destination settings) rather than some ids. Nothing was committed; \
                 fix the cause and rerun: acknowledged batches are not re-sent"
            ),
        })
    }
}

/// Splits a refused range until every refused id is alone; the rest is delivered.
#[allow(clippy::too_many_arguments)]
async fn isolate(
    sender: &Sender,
    braze: &Braze,
    breaker: &Breaker,
    ids: &StringArray,
    batch: u64,
    range: std::ops::Range<usize>,
    remove: bool,
    message: String,
) -> Result<Vec<DeadLetter>> {
    let mut dead = Vec::new();
    let mut refused = vec![(range, message)];
    while let Some((range, message)) = refused.pop() {
        if range.len() == 1 {
            breaker.refused_ids.fetch_add(1, Ordering::Relaxed);
            dead.push(DeadLetter {
                user_id: ids.value(range.start).to_string(),
                change: if remove { "remove" } else { "add" }.to_string(),
                reason: message,
                batch,
            });
            continue;
        }
        let mid = range.start + range.len() / 2;
        for half in [range.start..mid, mid..range.end] {
            breaker.spend(&message)?;
            match sender
                .send(&braze.change_members(batch, ids, half.clone(), remove))
                .await
            {
                Ok(()) => {
                    breaker
                        .delivered_ids
                        .fetch_add(half.len() as u64, Ordering::Relaxed);
                }
                Err(Error::PartnerRejected {
                    status: 400,
                    message,
                    ..
                }) => refused.push((half, message)),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(dead)
}

/// A 401 names the environment variables that hold the keys, so the fix is obvious.
fn explain_rejection(e: Error, config: &Config, destination: &str) -> Error {
    match e {
        Error::PartnerRejected {
            what,
            status: 401,
            message,
        } => {
            let hint = config
                .destinations
                .get(destination)
                .map(|d| {
                    format!(
                        " (check {} and {} for destination `{destination}`)",
                        d.partner_api_key_env, d.client_secret_env
                    )
                })
                .unwrap_or_default();
            Error::PartnerRejected {
                what,
                status: 401,
                message: format!("{message}{hint}"),
            }
        }
        other => other,
    }
}
