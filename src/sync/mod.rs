//! `sync`: one cohort from SQL to the partner — resume an interrupted run, diff the cohort
//! against the committed snapshot, send the adds and removes under a lock with every
//! acknowledged batch journaled, commit the new snapshot — and the one-line summary a
//! scheduler reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;
use tracing::{info, warn};

use crate::cohort::shard::Shard;
use crate::cohort::{self, diff};
use crate::config::{Cohort, Config, Credentials, DestinationConfig};
use crate::deliver::destination::{self, Delivery, Destination, Lists, ListsOf, Op, Refused};
use crate::deliver::plan::{batches, encode_in_background};
use crate::deliver::sender::{SendStats, Sender};
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
    /// The committed state is of another partner identity (endpoint, partner path or workspace
    /// key changed) but the workspace is the same: adopt the state under the current identity
    /// and send only the change.
    pub rebind: bool,
    /// The committed state is of another partner identity and the workspace is new: set the old
    /// state aside (under `replaced/`) and send every member.
    pub new_workspace: bool,
    /// Sync at an `at` earlier than the last committed run's (rolls the partner back).
    pub allow_rewind: bool,
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
            rebind: false,
            new_workspace: false,
            allow_rewind: false,
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
    /// Members held out of delivery (the cohort's `holdout` share): not counted in `members`,
    /// never sent, recorded in `cohort_changes` as `held_out`.
    pub held_out: u64,
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
    sync_cohort_via(config, lake, name, credentials, options, None).await
}

/// `sync_cohort` delivering through `given` instead of the destination its config opens (the
/// core's unit tests pass a fake one).
async fn sync_cohort_via(
    config: &Config,
    lake: &Lake,
    name: &str,
    credentials: &Credentials,
    options: SyncOptions,
    given: Option<Delivery>,
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
        (Some(rate), _) => dest.delivery.requests_per_second = rate,
        (None, Some(shard)) => dest.delivery.requests_per_second /= f64::from(shard.count),
        (None, None) => {}
    }
    let root = CohortState::new(
        lake.state.store.clone(),
        &lake.state.root,
        &cohort.destination,
        &cohort.cohort_id,
    )
    .named(&cohort.name);
    let state = match options.shard {
        Some(shard) => root.shard(shard.index, shard.count),
        None => root.clone(),
    };
    let run_id = new_run_id();
    let head = SyncSummary {
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
        history: lake.state.root.clone().join(state::history::DIR),
        given,
        lock: None,
        dead_counted: Default::default(),
    };

    if options.dry_run {
        let change = run.change(lake, &started).await?;
        let batches = (change.adds.len().div_ceil(dest.delivery.batch_size)
            + change.removes.len().div_ceil(dest.delivery.batch_size)) as u64;
        return Ok(SyncSummary {
            outcome: "dry_run",
            batches,
            requests: batches + 1,
            sample_adds: Some(sample(&change.adds)),
            sample_removes: Some(sample(&change.removes)),
            seconds: started.elapsed().as_secs_f64(),
            ..head.counted(&change.counts)
        });
    }

    crate::signals::check()?;
    let lock = Lock::acquire(&state, &run_id, config.state.lock_ttl).await?;
    let kept = lock::keep_alive(lock);
    let run = Run {
        lock: Some(&kept),
        ..run
    };
    let result = run.sync(lake, &run_id, &started).await;
    let released = kept.release().await;
    let done = result?;
    released?;
    let summary = SyncSummary {
        seconds: started.elapsed().as_secs_f64(),
        ..head.done(done)
    };
    info!(cohort = %summary.cohort, adds = summary.adds, removes = summary.removes,
        batches = summary.batches, requests = summary.requests, retries = summary.retries,
        seconds = summary.seconds, "cohort synced");
    Ok(summary)
}

/// Names the partner workspace a snapshot belongs to: the endpoint, the partner path and a short
/// fingerprint of the workspace key (32 bits of a hash: enough to tell workspaces apart, far too
/// little to recover anything). When any of them changes, a sync refuses until told whether
/// the workspace is the same (`--rebind`) or new (`--new-workspace`).
pub fn partner_identity(dest: &DestinationConfig, credentials: &Credentials) -> String {
    destination::identity(dest, credentials)
}

/// Why a change's removals look more like a bug (an empty partition, a broken filter) than a
/// real exodus: the query returned nobody, or more than `max_share` of the snapshot would
/// leave. `None` when they look real.
fn suspicious_removals(
    removes: usize,
    query_members: usize,
    snapshot_members: u64,
    max_share: f64,
) -> Option<String> {
    if removes == 0 {
        return None;
    }
    if query_members == 0 {
        return Some("the query returned no members".to_string());
    }
    let share = if snapshot_members == 0 {
        0.0
    } else {
        removes as f64 / snapshot_members as f64
    };
    (share > max_share).then(|| {
        format!(
            "{:.0}% of the cohort would leave (state.max_removal_share = {max_share})",
            share * 100.0
        )
    })
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
    /// The members held out (empty when the cohort holds out nobody).
    held: Arc<StringArray>,
    counts: Counts,
}

/// What the query and the diff found (`Run::change`).
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    members: u64,
    rows: u64,
    nulls_skipped: u64,
    empty_skipped: u64,
    duplicates_removed: u64,
    snapshot_members: u64,
    adds: u64,
    removes: u64,
    removes_held_back: u64,
    held_out: u64,
    query_seconds: f64,
}

/// What one plan's delivery did (`Run::deliver`, then `Run::finish` for its dead letters).
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    batches: u64,
    /// Batches the journal showed acknowledged by an earlier process.
    skipped: u64,
    dead_letters: u64,
}

/// What a sync run did, stage by stage (`Run::sync`).
#[derive(Debug, Default)]
struct Done {
    /// The interrupted run this one finished first.
    resumed: Option<Sent>,
    counts: Counts,
    /// This run's own change; `None` when there was nothing to send.
    delivered: Option<Sent>,
    stats: SendStats,
}

impl SyncSummary {
    fn counted(self, c: &Counts) -> SyncSummary {
        SyncSummary {
            members: c.members,
            rows: c.rows,
            nulls_skipped: c.nulls_skipped,
            empty_skipped: c.empty_skipped,
            duplicates_removed: c.duplicates_removed,
            snapshot_members: c.snapshot_members,
            adds: c.adds,
            removes: c.removes,
            removes_held_back: c.removes_held_back,
            held_out: c.held_out,
            query_seconds: c.query_seconds,
            ..self
        }
    }

    fn done(self, done: Done) -> SyncSummary {
        let (resumed, delivered) = (
            done.resumed.unwrap_or_default(),
            done.delivered.unwrap_or_default(),
        );
        let outcome = if done.resumed.is_some() || done.delivered.is_some() {
            "delivered"
        } else {
            "unchanged"
        };
        SyncSummary {
            outcome,
            resumed_batches: resumed.batches,
            skipped_batches: resumed.skipped,
            batches: resumed.batches + delivered.batches,
            dead_letters: resumed.dead_letters + delivered.dead_letters,
            requests: done.stats.requests,
            retries: done.stats.retries,
            ..self.counted(&done.counts)
        }
    }
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
    /// `<state>/history`: committed changes, the `cohort_changes` table.
    history: Path,
    /// The delivery to use instead of opening the configured destination.
    given: Option<Delivery>,
    /// The run's lock, once taken (a dry run takes none): asked before every request and
    /// immediately before every write to the state.
    lock: Option<&'a lock::KeptLock>,
    /// Ids dead-lettered by this run so far (a resumed plan's, then its own change's, which
    /// sends them again): each counts once.
    dead_counted: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl crate::deliver::sender::Fence for lock::Lease {
    fn guard(&self) -> futures::future::BoxFuture<'_, Result<()>> {
        Box::pin(lock::Lease::guard(self))
    }
}

impl Run<'_> {
    async fn sync(&self, lake: &Lake, run_id: &str, started: &Instant) -> Result<Done> {
        let deadline = tokio::time::Instant::from_std(*started) + self.dest.delivery.deadline;
        let opened;
        let delivery = match &self.given {
            Some(given) => given,
            None => {
                opened = destination::open(
                    self.dest,
                    self.credentials,
                    self.cohort,
                    &self.config.base_dir(),
                )?;
                &opened
            }
        };
        let sender = match delivery {
            Delivery::Requests(d) => {
                let sender = Sender::new(&self.dest.delivery, d.clone(), deadline)?;
                Some(match self.lock {
                    Some(lock) => sender.fenced(lock.lease()),
                    None => sender,
                })
            }
            Delivery::Lists(_) => None,
        };
        let sender = sender.as_ref();

        // 1. An interrupted run first: finish exactly its plan.
        let mut resumed = None;
        let plan = self.state.plan().await?;
        if plan.is_none() {
            self.refuse_lost_plan().await?;
        }
        if let Some(mut plan) = plan {
            let pointer = self.state.pointer().await?;
            let mut discard = false;
            if plan.partner != self.partner {
                if self.options.rebind {
                    warn!(cohort = %self.cohort.name, run = %plan.run_id, plan_partner = %plan.partner,
                        partner = %self.partner, "--rebind: resuming the interrupted run under the current partner identity");
                    plan.partner = self.partner.clone();
                    self.hold().await?;
                    state::write_json(
                        self.state.store.as_ref(),
                        &self.state.path("pending/plan.json"),
                        &plan,
                    )
                    .await?;
                } else if self.options.new_workspace {
                    warn!(cohort = %self.cohort.name, run = %plan.run_id, plan_partner = %plan.partner,
                        partner = %self.partner, "--new-workspace: discarding an interrupted run planned for the old partner");
                    discard = true;
                } else {
                    return Err(self.identity_refusal(
                        &format!("an interrupted run ({})", plan.run_id),
                        &plan.partner,
                    ));
                }
            }
            if discard {
                let keep = pointer.as_ref().map(Pointer::files).unwrap_or_default();
                self.hold().await?;
                self.state.clean_up(&keep).await?;
            } else if let Some(p) = pointer.as_ref().filter(|p| p.run_id == plan.run_id) {
                // It committed and died before its history was kept or while cleaning up.
                let dead = dead::pending(self.state).await?;
                self.hold().await?;
                self.record_history(&plan, p.committed_at, &dead).await?;
                self.hold().await?;
                self.state.clean_up(&p.files()).await?;
            } else {
                info!(cohort = %self.cohort.name, run = %plan.run_id, "resuming an interrupted run");
                // Everything the commit will need must be readable before anything is sent.
                dead::pending(self.state).await?;
                let sent = self.deliver(&plan, delivery, sender, None).await?;
                resumed = Some(self.commit(&plan, sent).await?);
            }
        }

        // 2. Time going backwards would roll the partner back to an older cohort.
        self.refuse_rewind().await?;

        // 3. This run's change (a signal during the query stops here: nothing was planned).
        let change = crate::signals::interruptible(self.change(lake, started)).await?;
        // Members the destination cannot identify are refused before anything is planned.
        match delivery {
            Delivery::Requests(d) => d.accepts(&change.adds)?,
            Delivery::Lists(l) => l.accepts(&change.adds)?,
        }
        let nothing_to_send = change.adds.is_empty() && change.removes.is_empty();
        let delivered =
            if nothing_to_send && change.base.is_some() && change.counts.removes_held_back == 0 {
                None
            } else {
                let (plan, sent) = self.send_change(&change, run_id, delivery, sender).await?;
                Some(self.commit(&plan, sent).await?)
            };
        self.record_holdout(change.held).await?;
        Ok(Done {
            resumed,
            counts: change.counts,
            delivered,
            stats: sender.map(Sender::stats).unwrap_or_default(),
        })
    }

    /// Plans `change` and sends it. Nothing is sent before the plan is durable: a run that dies
    /// before that has sent nothing, so starting over is exact (ids sent from a plan that no
    /// file records could be stranded at the partner if they left the cohort before the next
    /// run). The target snapshot of an incremental plan is written while its batches go out (a
    /// crash before it is written is repaired by `rebuild_target`).
    async fn send_change(
        &self,
        change: &Change,
        run_id: &str,
        delivery: &Delivery,
        sender: Option<&Sender>,
    ) -> Result<(PlanMeta, Sent)> {
        let plan = self.plan_meta(change, run_id);
        self.write_plan(change, &plan).await?;
        // The target snapshot (a first sync wrote it as its plan) and its replica; a delta
        // commit needs neither (its plan files are the delta).
        let write = async {
            if plan.chain.is_some() {
                return Ok(());
            }
            let mut paths = vec![self.state.path(&state::replica(&plan.target_snapshot))];
            if plan.adds_file != plan.target_snapshot {
                paths.push(self.state.path(&plan.target_snapshot));
            }
            ids::write_to(self.state.store.as_ref(), &paths, change.target.clone()).await
        };
        let lists = Some([
            change.adds.clone(),
            change.removes.clone(),
            change.target.clone(),
        ]);
        let (sent, written) = tokio::join!(self.deliver(&plan, delivery, sender, lists), write);
        let sent = sent?;
        written?;
        Ok((plan, sent))
    }

    /// Commits a delivered plan while this run still holds the lock; `sent` with the ids the
    /// commit dead-lettered.
    async fn commit(&self, plan: &PlanMeta, sent: Sent) -> Result<Sent> {
        self.hold().await?;
        let dead_letters = self.finish(plan).await?;
        Ok(Sent {
            dead_letters,
            ..sent
        })
    }

    /// Runs the query and diffs it against the committed snapshot.
    async fn change(&self, lake: &Lake, started: &Instant) -> Result<Change> {
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
        // The control group is split off before anything else: it is never diffed against what
        // the partner holds, so a member who moves into it is removed like one who left.
        let query_members = members.ids.len();
        let held = if self.cohort.holdout.is_active() {
            let (all, holdout) = (members.ids.clone(), self.cohort.holdout.clone());
            let (treated, held) = on_rayon(move || holdout.split(&all)).await;
            members.ids = Arc::new(treated);
            Arc::new(held)
        } else {
            Arc::new(StringArray::from(Vec::<&str>::new()))
        };
        let mut counts = Counts {
            held_out: held.len() as u64,
            query_seconds: started.elapsed().as_secs_f64(),
            members: members.ids.len() as u64,
            rows: members.rows,
            nulls_skipped: members.nulls_skipped,
            empty_skipped: members.empty_skipped,
            duplicates_removed: members.duplicates_removed,
            snapshot_members: snapshot.len() as u64,
            ..Counts::default()
        };
        info!(cohort = %self.cohort.name, members = members.ids.len(), nulls_skipped = members.nulls_skipped,
            duplicates_removed = members.duplicates_removed, seconds = counts.query_seconds, "cohort computed");

        let now = members.ids.clone();
        let repaired = base.as_ref().is_some_and(|p| p.resend_all);
        if repaired && !self.options.full {
            warn!(cohort = %self.cohort.name,
                "`state repair` set aside an unfinished run it could not read: re-sending every member and removing every snapshot id not in the cohort (as --full)");
        }
        let full = self.options.full || repaired;
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

        let suspicious = suspicious_removals(
            removes.len(),
            query_members,
            counts.snapshot_members,
            self.config.state.max_removal_share,
        );
        let (removes, target) = match suspicious.filter(|_| !self.options.allow_mass_removal) {
            Some(why) => {
                warn!(
                    cohort = %self.cohort.name, removes = removes.len(), members = members.ids.len(),
                    snapshot = counts.snapshot_members,
                    "holding back removals: {why}; pass --allow-mass-removal if this is intended"
                );
                counts.removes_held_back = removes.len() as u64;
                let (ids, held) = (members.ids.clone(), removes.clone());
                let target = on_rayon(move || Arc::new(diff::union(&ids, &held))).await;
                (Arc::new(StringArray::from(Vec::<&str>::new())), target)
            }
            None => (removes, members.ids.clone()),
        };
        counts.adds = adds.len() as u64;
        counts.removes = removes.len() as u64;
        Ok(Change {
            base,
            adds,
            removes,
            target,
            held,
            counts,
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
        let size = self.dest.delivery.batch_size;
        // An incremental change commits as a delta while the chain stays short and small
        // (see `state`); else the run writes a full snapshot (compaction).
        let chain = change.base.as_ref().and_then(|base| {
            let change_ids = (change.adds.len() + change.removes.len()) as u64;
            let fits = !Arc::ptr_eq(&change.adds, &change.target)
                && !self.options.full
                && !base.resend_all
                && base.deltas.len() < self.config.state.max_deltas as usize
                && (base.delta_ids() + change_ids) * 10 <= change.target.len() as u64;
            fits.then(|| {
                let mut deltas = base.deltas.clone();
                deltas.push(state::Delta::of(
                    run_id,
                    change.adds.len() as u64,
                    change.removes.len() as u64,
                ));
                state::Chain {
                    snapshot: base.snapshot.clone(),
                    deltas,
                }
            })
        });
        let (adds_file, removes_file) = match chain.as_ref().and_then(|c| c.deltas.last()) {
            Some(d) => (d.adds.clone(), d.removes.clone()),
            None => (adds_file, "pending/removes.parquet".to_string()),
        };
        // Keys an earlier release would misread: in the lists, the membership, or the chain.
        let keys = [&change.adds, &change.removes, &change.target]
            .iter()
            .any(|l| crate::cohort::identity::needs_format_2(l))
            || (chain.is_some()
                && change
                    .base
                    .as_ref()
                    .is_some_and(|b| b.format >= state::FORMAT_KEYS));
        PlanMeta {
            format: state::plan_format(chain.is_some(), keys),
            run_id: run_id.to_string(),
            created_at: Utc::now(),
            at: self.options.at,
            base_run_id: change.base.as_ref().map(|p| p.run_id.clone()),
            partner: self.partner.clone(),
            target_snapshot,
            adds_file,
            removes_file,
            target_members: change.target.len() as u64,
            batch_size: size,
            adds: change.adds.len() as u64,
            removes: change.removes.len() as u64,
            add_batches: change.adds.len().div_ceil(size) as u64,
            remove_batches: change.removes.len().div_ceil(size) as u64,
            chain,
        }
    }

    /// Writes the plan's id lists, then `plan.json`: from then on the run is resumable.
    /// An incremental plan needs only its adds and removes for that (the target snapshot is
    /// written afterwards, and rebuilt by `finish` if a crash came first); a first sync's adds
    /// *are* the target.
    async fn write_plan(&self, change: &Change, plan: &PlanMeta) -> Result<()> {
        let store = self.state.store.as_ref();
        let delta = plan.chain.is_some();
        self.hold().await?;
        if plan.adds_file == plan.target_snapshot || delta {
            // These files sit under snapshots/ before their plan exists: mark them as not
            // committed (`state repair` must not take them for a committed run's).
            self.state.mark_started(&plan.run_id).await?;
        }
        // A first sync's target snapshot gets its replica while the batches go out; a delta's
        // files get theirs now (they are small, and are what the commit will name).
        let write = |file: &str, ids: &Arc<StringArray>| {
            let mut paths = vec![self.state.path(file)];
            if delta {
                paths.push(self.state.path(&state::replica(file)));
            }
            let ids = ids.clone();
            async move { ids::write_to(store, &paths, ids).await }
        };
        tokio::try_join!(
            write(&plan.adds_file, &change.adds),
            write(&plan.removes_file, &change.removes),
        )?;
        self.hold().await?;
        state::write_json(store, &self.state.path("pending/plan.json"), plan).await
    }

    /// Sends every batch of `plan` its journal does not hold (`Sent` without dead letters:
    /// `finish` counts those).
    /// A batch the partner refuses with 400 is split until the refused ids are isolated; they
    /// are recorded as dead letters and the rest of the batch is delivered.
    async fn deliver(
        &self,
        plan: &PlanMeta,
        delivery: &Delivery,
        sender: Option<&Sender>,
        // The plan's adds, removes and target when this process made it (else read from the
        // plan).
        in_memory: Option<[Arc<StringArray>; 3]>,
    ) -> Result<Sent> {
        let (to, sender) = match (delivery, sender) {
            (Delivery::Lists(lists), _) => {
                return self.deliver_lists(plan, lists.as_ref(), in_memory).await;
            }
            (Delivery::Requests(d), Some(sender)) => (d, sender),
            (Delivery::Requests(_), None) => {
                return Err(Error::Internal(
                    "a request destination without a sender".into(),
                ));
            }
        };
        let acked = journal::read(self.state, plan).await?;
        // Everything the plan needs is read before anything is sent.
        let lists = match in_memory {
            Some([adds, removes, _]) => [adds, removes],
            None => [
                self.state.ids(&plan.adds_file).await?,
                self.state.ids(&plan.removes_file).await?,
            ],
        };
        if let Some(setup) = to.setup(plan.at) {
            sender.send(&setup).await.map_err(|e| to.explain(e))?;
        }

        let journal = Journal::start(
            self.state.clone(),
            journal::writer(&plan.run_id, &new_run_id()),
            None,
        );
        let total = plan.add_batches + plan.remove_batches;
        let todo = total - acked.iter().filter(|&&n| n >= 1 && n <= total).count() as u64;
        let progress = Progress::new(self.options.progress, todo, &self.cohort.name);
        let window = (self.dest.delivery.max_in_flight * 2).max(16);
        let breaker = Breaker::new(total);
        let breaker = &breaker;
        let mut result = Ok(());
        for (k, op, offset) in [(0, Op::Add, 0), (1, Op::Remove, plan.add_batches)] {
            if crate::signals::received().is_some() {
                break;
            }
            let ids = lists[k].clone();
            let batches: Vec<_> = batches(ids.len(), plan.batch_size)
                .into_iter()
                .map(|(n, range)| (n + offset, range))
                .filter(|(n, _)| !acked.contains(n))
                .collect();
            if batches.is_empty() {
                continue;
            }
            // After a signal no new request is pulled; those in flight finish and are journaled.
            let requests = crate::signals::until_signalled(encode_in_background(
                to.clone(),
                plan.run_id.as_str().into(),
                ids.clone(),
                batches,
                op,
                window,
            ));
            let (journal, progress) = (&journal, &progress);
            result = sender
                .for_each(requests, |request| {
                    let ids = ids.clone();
                    async move {
                        if crate::signals::received().is_some() {
                            return Ok(());
                        }
                        let start = (request.batch - offset - 1) as usize * plan.batch_size;
                        let range = start..start + request.ids;
                        let dead = match sender.send(&request).await {
                            Ok(refused) => {
                                breaker.delivered(request.ids.saturating_sub(refused.len()));
                                breaker.refused_ids.fetch_add(refused.len() as u64, Ordering::Relaxed);
                                dead_letters(&ids, &range, &refused, request.batch, op)
                            }
                            Err(Error::PartnerRejected { status: 400, message, .. }) if request.ids > 0 => {
                                isolate(sender, to.as_ref(), breaker, &plan.run_id, &ids, request.batch, range, op, message).await?
                            }
                            Err(e) => return Err(e),
                        };
                        if !dead.is_empty() {
                            let gone = dead.iter().filter(|d| d.change == dead::GONE).count();
                            if gone > 0 {
                                info!(cohort = %self.cohort.name, batch = request.batch, gone,
                                    "the partner has no profile for some ids removed; their removal is done");
                            }
                            if dead.len() > gone {
                                warn!(cohort = %self.cohort.name, batch = request.batch, refused = dead.len() - gone,
                                    first = %dead.iter().find(|d| d.change != dead::GONE).map(|d| d.reason.as_str()).unwrap_or(""),
                                    "the partner refused ids; they are dead-lettered and retried next run");
                            }
                            dead::record(self.state, request.batch, &dead).await?;
                        }
                        journal.ack(request.batch);
                        progress.inc();
                        Ok(())
                    }
                })
                .await
                .map_err(|e| to.explain(e));
            if result.is_err() {
                break;
            }
        }
        progress.finish();
        // Whatever happened, what was acknowledged is journaled before we report.
        let journaled = journal.finish().await;
        result?;
        journaled?;
        crate::signals::check()?;
        Ok(Sent {
            batches: todo,
            skipped: total - todo,
            dead_letters: 0,
        })
    }

    /// Hands a plan's lists whole to a destination that takes them so (files); again when the
    /// plan is resumed (the destination writes the same run's objects again).
    async fn deliver_lists(
        &self,
        plan: &PlanMeta,
        lists: &dyn Lists,
        in_memory: Option<[Arc<StringArray>; 3]>,
    ) -> Result<Sent> {
        let (adds, removes, target) = match in_memory {
            Some([adds, removes, target]) => (adds, removes, Some(target)),
            None => (
                self.state.ids(&plan.adds_file).await?,
                self.state.ids(&plan.removes_file).await?,
                None,
            ),
        };
        let members = match (lists.wants_members(), target) {
            (false, _) => None,
            (true, Some(target)) => Some(target),
            (true, None) => Some(self.target_of(plan).await?),
        };
        crate::signals::check()?;
        let of = ListsOf {
            adds,
            removes,
            members,
            shard: self.options.shard.map(|s| s.to_string()),
        };
        // The files are the delivery: a run fenced off writes none.
        self.hold().await?;
        lists.write(&plan.run_id, plan.at, of).await?;
        info!(cohort = %self.cohort.name, run = %plan.run_id, "lists written");
        Ok(Sent {
            batches: plan.add_batches + plan.remove_batches,
            ..Sent::default()
        })
    }

    /// Every batch of `plan` is acknowledged or dead-lettered: leave the refused ids out of
    /// the snapshot (a refused add is not a member at the partner; a refused remove still is),
    /// write the dead letters, then switch the pointer. Safe to repeat after a crash. Returns
    /// how many ids were dead-lettered that this run had not counted yet. A removal of a
    /// profile the partner no longer has is done: no dead letter, its reason in the history.
    async fn finish(&self, plan: &PlanMeta) -> Result<u64> {
        let store = self.state.store.as_ref();
        let target_path = self.state.path(&plan.target_snapshot);
        let pending = dead::pending(self.state).await?;
        let dead = dead::refusals(&pending);
        // Refused ids: a delta run compacts instead (its snapshot is rebuilt, then adjusted).
        if let Some(chain) = &plan.chain
            && dead.is_empty()
        {
            self.hold().await?;
            let pointer = self
                .state
                .commit(plan, plan.target_members, Some(chain))
                .await?;
            self.record_history(plan, pointer.committed_at, &pending)
                .await?;
            self.hold().await?;
            self.state.clean_up(&pointer.files()).await?;
            return Ok(0);
        }
        if plan.chain.is_some()
            || matches!(
                store.head(&target_path).await,
                Err(object_store::Error::NotFound { .. })
            )
        {
            self.rebuild_target(plan).await?;
        }
        let mut members = plan.target_members;
        if !dead.is_empty() {
            let target = ids::read(&self.state.store, &target_path).await?;
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
            let paths = [
                target_path.clone(),
                self.state.path(&state::replica(&plan.target_snapshot)),
            ];
            ids::write_to(store, &paths, adjusted).await?;
            dead::write(
                self.state,
                &plan.run_id,
                &self.cohort.cohort_id,
                plan.at,
                &dead,
            )
            .await?;
        } else {
            let replica = self.state.path(&state::replica(&plan.target_snapshot));
            if let Err(object_store::Error::NotFound { .. }) = store.head(&replica).await {
                ids::copy(store, &target_path, &replica).await?;
            }
        }
        self.hold().await?;
        let pointer = self.state.commit(plan, members, None).await?;
        self.record_history(plan, pointer.committed_at, &pending)
            .await?;
        self.hold().await?;
        self.state
            .clean_up(std::slice::from_ref(&plan.target_snapshot))
            .await?;
        let mut counted = self
            .dead_counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(dead
            .iter()
            .filter(|d| counted.insert(d.user_id.clone()))
            .count() as u64)
    }

    /// Keeps what a committed run changed at the partner under `history/` (the
    /// `cohort_changes` table): its adds and removes files, copied (a hard link on a local
    /// filesystem, a server-side copy on object stores, so a 10M-id first sync costs no
    /// rewrite), or, when the partner refused ids, the lists without them (and the removes
    /// with the reason of those the partner had no profile for, `dead::GONE`). Runs after the
    /// commit and before `pending/` is removed, so a run that dies in between records it on
    /// the next run; the same paths are written again, so that is idempotent.
    async fn record_history(
        &self,
        plan: &PlanMeta,
        committed_at: DateTime<Utc>,
        dead: &[dead::DeadLetter],
    ) -> Result<()> {
        let store = self.state.store.as_ref();
        let dir = state::history::run_dir(
            &self.history,
            &self.cohort.destination,
            &self.cohort.cohort_id,
            plan.at,
            committed_at,
        );
        for (op, file, count) in [
            ("add", &plan.adds_file, plan.adds),
            ("remove", &plan.removes_file, plan.removes),
        ] {
            if count == 0 {
                continue;
            }
            let to = state::history::file(&dir, op);
            let refused: Vec<&str> = dead
                .iter()
                .filter(|d| d.change == op)
                .map(|d| d.user_id.as_str())
                .collect();
            let gone: std::collections::HashMap<&str, &str> = dead
                .iter()
                .filter(|d| op == "remove" && d.change == dead::GONE)
                .map(|d| (d.user_id.as_str(), d.reason.as_str()))
                .collect();
            if !gone.is_empty() {
                // Refused removes are never gone ones (one answer per id).
                let ids = self.state.ids(file).await?;
                let mut refused = refused;
                refused.sort_unstable();
                refused.dedup();
                let refused = StringArray::from(refused);
                let kept = on_rayon(move || diff::diff(&refused, &ids).adds).await;
                state::history::write_with_reasons(store, &to, &kept, &gone).await?;
            } else if refused.is_empty() {
                let from = self.state.path(file);
                if let Err(e) = store.copy(&from, &to).await {
                    // Some S3-compatible servers refuse copies (s3s-fs: into a new prefix):
                    // read and write the bytes instead.
                    tracing::debug!(error = %e, "history: the store's copy failed; copying the bytes");
                    ids::copy(store, &from, &to).await?;
                }
            } else {
                let ids = self.state.ids(file).await?;
                let mut refused = refused;
                refused.sort_unstable();
                refused.dedup();
                let refused = StringArray::from(refused);
                let kept = on_rayon(move || Arc::new(diff::diff(&refused, &ids).adds)).await;
                ids::write(store, &to, kept).await?;
            }
        }
        Ok(())
    }
}

impl Run<'_> {
    /// Records who entered and who left the control group since the last run in
    /// `cohort_changes` (`held_out`, `held_out_left`), then keeps the group as
    /// `holdout/held.parquet` in this run's state. Nothing here reaches the partner, so it runs
    /// after the partner's part is committed; a run that dies between the history and the file
    /// records the same change again on the next run (same ops, a later `committed_at_ms`:
    /// "the latest op" answers the same). An unreadable file is logged and the whole group is
    /// recorded again.
    async fn record_holdout(&self, held: Arc<StringArray>) -> Result<()> {
        let store = self.state.store.as_ref();
        let path = self.state.path(HOLDOUT_FILE);
        let before = match ids::try_read(&self.state.store, &path).await? {
            Ok(ids) => ids,
            Err(why) => {
                if why != "missing" {
                    warn!(cohort = %self.cohort.name, file = %path, %why,
                        "the holdout list is unreadable: recording the whole holdout again");
                }
                Arc::new(StringArray::from(Vec::<&str>::new()))
            }
        };
        if before.is_empty() && held.is_empty() {
            return Ok(());
        }
        let (now, was) = (held.clone(), before);
        let d = on_rayon(move || diff::diff(&was, &now)).await;
        if d.adds.is_empty() && d.removes.is_empty() {
            return Ok(());
        }
        self.hold().await?;
        let dir = state::history::run_dir(
            &self.history,
            &self.cohort.destination,
            &self.cohort.cohort_id,
            self.options.at,
            Utc::now(),
        );
        for (op, list) in [("held_out", d.adds), ("held_out_left", d.removes)] {
            if !list.is_empty() {
                ids::write(store, &state::history::file(&dir, op), Arc::new(list)).await?;
            }
        }
        if held.is_empty() {
            state::delete_if_exists(store, &path).await
        } else {
            ids::write(store, &path, held).await
        }
    }
}

/// Where a cohort's (or shard's) control group is kept between runs.
pub const HOLDOUT_FILE: &str = "holdout/held.parquet";

/// The committed state of one way of splitting a cohort: unsharded, or N shards.
struct Layout {
    /// `None`: unsharded.
    shards: Option<u32>,
    /// Each part's state and its committed pointer (for this partner), in shard order.
    parts: Vec<(CohortState, Option<Pointer>)>,
    /// A part has an unfinished run, or a run holds a part's lock now.
    busy: bool,
    /// Commits of parts for another partner identity (when they are not taken as this one's).
    foreign: Vec<(String, DateTime<Utc>)>,
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
                if self.options.rebind {
                    Some(self.rebind(p).await?)
                } else if self.options.new_workspace {
                    self.set_aside(&p).await?;
                    None
                } else {
                    return Err(self.identity_refusal(
                        &format!(
                            "the committed snapshot (run {}, {} members)",
                            p.run_id, p.members
                        ),
                        &p.partner,
                    ));
                }
            }
            Some(p) => {
                if self.options.rebind || self.options.new_workspace {
                    info!(cohort = %self.cohort.name,
                        "the committed snapshot is already this partner's: nothing to rebind or start over; syncing the change");
                }
                Some(p)
            }
            None => {
                if !self.options.new_workspace {
                    self.refuse_orphans().await?;
                }
                None
            }
        };
        let own_at = own.as_ref().map(|p| p.committed_at);
        let layouts = self.other_layouts().await?;
        if !self.options.new_workspace
            && let Some((partner, _)) = layouts
                .iter()
                .flat_map(|l| &l.foreign)
                .find(|(_, at)| Some(*at) > own_at)
        {
            return Err(self.identity_refusal(
                "a more recent commit of another layout (unsharded or another shard count)",
                partner,
            ));
        }
        let refuse = |layout: &Layout, why: &str| {
            let (sync, show) = match layout.shards {
                Some(_) => (
                    format!(
                        "cohort-bridge sync {} --shard K/N` for each K",
                        self.cohort.name
                    ),
                    format!("cohort-bridge state show {} --shard K/N", self.cohort.name),
                ),
                None => (
                    format!("cohort-bridge sync {}` without --shard", self.cohort.name),
                    format!("cohort-bridge state show {}", self.cohort.name),
                ),
            };
            Error::config(
                self.config.file.clone(),
                format!(
                    "cohort `{}` also ran {} ({why}), so what the partner holds is not known \
                     here. Let that layout's runs finish and run every part of it once \
                     (`{sync}; `{show}` shows a part's lock and unfinished run, `state unlock` \
                     releases a dead run's lock), then switch; or, if that layout is abandoned, \
                     delete its state ({})",
                    self.cohort.name,
                    layout.name(),
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
                foreign: Vec::new(),
                dir: match shards {
                    None => self.root.dir.to_string(),
                    Some(n) => format!("{}/shards/{n}", self.root.dir),
                },
            };
            for state in states {
                let pointer = match state.pointer().await? {
                    // `--rebind` takes every layout's commits as this partner's.
                    Some(p) if p.partner != self.partner && !self.options.rebind => {
                        layout.foreign.push((p.partner, p.committed_at));
                        None
                    }
                    other => other,
                };
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
            // Not committed until the pointer names it.
            self.hold().await?;
            self.state.mark_started(&run_id).await?;
            let paths = [
                self.state.path(&snapshot),
                self.state.path(&state::replica(&snapshot)),
            ];
            ids::write_to(self.state.store.as_ref(), &paths, ids.clone()).await?;
            self.hold().await?;
            let pointer = Pointer {
                format: state::FORMAT,
                run_id: run_id.clone(),
                partner: self.partner.clone(),
                snapshot,
                members: ids.len() as u64,
                // As current as the layout it was taken from.
                committed_at: layout.latest().unwrap_or_else(Utc::now),
                at: None,
                resend_all: false,
                note: Some(format!("adopted from {}", layout.name())),
                deltas: Vec::new(),
            };
            self.state.write_pointer(&pointer).await?;
            state::delete_if_exists(
                self.state.store.as_ref(),
                &self.state.path(&format!("pending/started/{run_id}")),
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
        let target = self.target_of(plan).await?;
        let store = self.state.store.as_ref();
        ids::write(store, &self.state.path(&plan.target_snapshot), target).await
    }

    /// The membership once `plan` is delivered, rebuilt from its base and its lists.
    async fn target_of(&self, plan: &PlanMeta) -> Result<Arc<StringArray>> {
        let base = match &plan.base_run_id {
            None => Arc::new(StringArray::from(Vec::<&str>::new())),
            Some(run) => {
                let pointer = self.state.pointer().await?;
                match pointer {
                    Some(p) if &p.run_id == run => self.state.snapshot(Some(&p)).await?,
                    _ => {
                        return Err(Error::config(
                            None,
                            format!(
                                "{}: the unfinished run's base snapshot (run {run}) is no longer \
                                 the committed one, so its target cannot be rebuilt; nothing was \
                                 committed. Run {} (it sets the unfinished run aside and makes \
                                 the next sync re-send everything and remove what left)",
                                self.state.dir,
                                self.state.fix("repair")
                            ),
                        ));
                    }
                }
            }
        };
        let adds = self.state.ids(&plan.adds_file).await?;
        let removes = self.state.ids(&plan.removes_file).await?;
        Ok(on_rayon(move || {
            let kept = diff::diff(&removes, &base).adds;
            Arc::new(diff::union(&kept, &adds))
        })
        .await)
    }
}

/// The circuit breaker of isolation: when the partner refuses (400) nearly everything — a
/// wrong cohort id, a body it no longer accepts — splitting every batch down to single ids
/// would cost two requests per id and dead-letter the whole cohort. Isolation stops, and the
/// run fails with the partner's message, once it has made `MIN_SAMPLE` requests and the ids
/// refused outnumber four times those the partner accepted in this run (whole batches and
/// isolated halves alike: refused ids often cluster, ids being sorted, so isolation alone
/// would see a dense cluster as "everything"), or once isolation spent its budget (200
/// requests plus 20 per batch of the plan).
struct Breaker {
    budget: u64,
    spent: AtomicU64,
    refused_ids: AtomicU64,
    delivered_ids: AtomicU64,
}

impl Breaker {
    const MIN_SAMPLE: u64 = 64;

    fn new(batches: u64) -> Self {
        Breaker {
            budget: 200 + 20 * batches,
            spent: AtomicU64::new(0),
            refused_ids: AtomicU64::new(0),
            delivered_ids: AtomicU64::new(0),
        }
    }

    /// `ids` were accepted.
    fn delivered(&self, ids: usize) {
        self.delivered_ids.fetch_add(ids as u64, Ordering::Relaxed);
    }

    /// Called before each isolating request: an error when the breaker has tripped.
    fn spend(&self, message: &str) -> Result<()> {
        let spent = self.spent.fetch_add(1, Ordering::Relaxed) + 1;
        let refused = self.refused_ids.load(Ordering::Relaxed);
        let delivered = self.delivered_ids.load(Ordering::Relaxed);
        let why = if spent > self.budget {
            format!("isolation spent its budget of {} requests", self.budget)
        } else if spent > Self::MIN_SAMPLE && refused > 4 * delivered {
            format!("{refused} ids refused and only {delivered} accepted so far")
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

impl Run<'_> {
    /// Immediately before a write to the state: fails (exit 5, nothing written) unless this
    /// run still holds its lock. A dry run holds none and writes nothing.
    async fn hold(&self) -> Result<()> {
        match self.lock {
            Some(lock) => lock.hold().await,
            None => Ok(()),
        }
    }

    /// `sync` without `--shard K/N`, or with this run's.
    fn sync_command(&self) -> String {
        match self.options.shard {
            Some(shard) => format!("cohort-bridge sync {} --shard {shard}", self.cohort.name),
            None => format!("cohort-bridge sync {}", self.cohort.name),
        }
    }

    /// The state is of another partner identity: what to do about it.
    fn identity_refusal(&self, what: &str, theirs: &str) -> Error {
        let sync = self.sync_command();
        Error::config(
            self.config.file.clone(),
            format!(
                "cohort `{}`: {what} is for partner `{theirs}`, but destination `{}` is now \
                 `{}` (its base_url, partner or workspace key changed). Nothing was sent: \
                 starting over would leave members who left at the partner. If it is the same \
                 workspace under a new URL or key, keep what it holds and send only the change: \
                 `{sync} --rebind`. If it is a new, empty workspace, send every member there: \
                 `{sync} --new-workspace` (the old state is kept under replaced/). See `{}`",
                self.cohort.name,
                self.cohort.destination,
                self.partner,
                self.state.fix("show").trim_matches('`'),
            ),
        )
    }

    /// `--rebind`: the committed snapshot, under the current partner identity.
    async fn rebind(&self, mut pointer: Pointer) -> Result<Pointer> {
        warn!(cohort = %self.cohort.name, from = %pointer.partner, to = %self.partner,
            "--rebind: the committed snapshot is taken as held by the current partner identity");
        pointer.note = Some(format!(
            "rebound at {} from {}",
            Utc::now().to_rfc3339(),
            pointer.partner
        ));
        pointer.partner = self.partner.clone();
        pointer.format = state::FORMAT;
        if !self.options.dry_run {
            self.hold().await?;
            self.state.write_pointer(&pointer).await?;
        }
        Ok(pointer)
    }

    /// `--new-workspace`: keeps the old pointer and its snapshot under `replaced/` (what the
    /// old workspace was sent), then the run starts from nothing.
    async fn set_aside(&self, old: &Pointer) -> Result<()> {
        warn!(cohort = %self.cohort.name, from = %old.partner, to = %self.partner, run = %old.run_id,
            members = old.members,
            "--new-workspace: sending every member; the old partner's state is kept under replaced/");
        if self.options.dry_run {
            return Ok(());
        }
        self.hold().await?;
        let store = self.state.store.as_ref();
        let name = format!("replaced/{}", old.run_id);
        // The pointer set aside names the membership as one file (its deltas applied).
        let mut kept = old.clone();
        kept.snapshot = format!("{name}.parquet");
        kept.deltas.clear();
        state::write_json(store, &self.state.path(&format!("{name}.json")), &kept).await?;
        let copied = async {
            let members = self.state.snapshot(Some(old)).await?;
            ids::write(store, &self.state.path(&kept.snapshot), members).await
        };
        if let Err(e) = copied.await {
            warn!(error = %e, "cannot keep the old snapshot under replaced/");
        }
        // `current.json` stays until this run commits: a crash before that refuses again.
        Ok(())
    }

    /// No `plan.json`, but a journal: the plan of a run that delivered batches was lost, and
    /// starting over could strand ids it sent.
    async fn refuse_lost_plan(&self) -> Result<()> {
        let journal = self.state.path("pending/journal");
        let listed = self.state.store.list_with_delimiter(Some(&journal)).await?;
        if listed.objects.is_empty() {
            return Ok(());
        }
        // Acks a fenced-off run flushed late for a plan made before the last commit: that plan
        // was finished, discarded or set aside since (a commit comes only after the pending
        // plan is done), so they are no lost plan's.
        let committed = self.state.pointer().await?.map(|p| p.committed_at);
        let lost = listed.objects.iter().any(|m| {
            let made = m
                .location
                .filename()
                .and_then(journal::plan_of)
                .and_then(run_started);
            !matches!((made, committed), (Some(made), Some(at)) if made < at)
        });
        if !lost {
            return Ok(());
        }
        Err(Error::config(
            None,
            format!(
                "state file {} is missing, but {journal} shows an unfinished run delivered \
                 batches; starting over could leave ids it sent at the partner. Nothing was sent. \
                 Run {} (it sets that run aside; the next sync re-sends every member and removes \
                 every id that run may have sent that is not in the cohort)",
                self.state.path("pending/plan.json"),
                self.state.fix("repair"),
            ),
        ))
    }

    /// `--at` earlier than the last committed run's: refused (exit 2) unless `--allow-rewind`.
    async fn refuse_rewind(&self) -> Result<()> {
        let Some(last) = self.state.pointer().await?.and_then(|p| p.at) else {
            return Ok(());
        };
        if self.options.at >= last || self.options.allow_rewind {
            return Ok(());
        }
        Err(Error::config(
            None,
            format!(
                "cohort `{}`: --at {} is earlier than the last committed run's ({}); syncing \
                 would roll the partner back to the cohort as it was then. Nothing was sent. \
                 If that is what you want (a deliberate re-run of the past), add \
                 --allow-rewind; otherwise leave --at out (now) or give a later time",
                self.cohort.name,
                self.options
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                last.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
        ))
    }

    /// No pointer: fine if nothing was ever committed; but snapshots of committed runs mean the
    /// pointer was lost, and starting over would strand members.
    async fn refuse_orphans(&self) -> Result<()> {
        let mut uncommitted = self.state.started().await?;
        if let Some(plan) = self.state.plan().await? {
            uncommitted.push(plan.run_id);
        }
        let orphans: Vec<String> = self
            .state
            .snapshot_runs()
            .await?
            .into_iter()
            .map(|(run, _)| run)
            .filter(|run| !uncommitted.contains(run))
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        Err(Error::config(
            None,
            format!(
                "state file {} is missing, but snapshots of committed runs are there ({}): what \
                 the partner holds is recorded, only the pointer is lost. Nothing was sent. Run \
                 {} to restore it from the newest complete snapshot; or, if the partner \
                 workspace is new and empty, `{} --new-workspace`",
                self.state.path("current.json"),
                orphans.join(", "),
                self.state.fix("repair"),
                self.sync_command(),
            ),
        ))
    }
}

/// When run `run_id` started, from its id (`new_run_id`: `%Y%m%dT%H%M%S%.3fZ-<salt>`).
fn run_started(run_id: &str) -> Option<DateTime<Utc>> {
    let (stamp, _) = run_id.rsplit_once('-')?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ")
        .ok()
        .map(|t| t.and_utc())
}

/// The dead letters of the items a partner acknowledged but did not apply (`range` is the
/// batch's place in `ids`; an index past it is ignored: the partner cannot refuse what was
/// not sent). A removal refused because the partner has no such profile is `dead::GONE`:
/// done, not refused.
fn dead_letters(
    ids: &StringArray,
    range: &std::ops::Range<usize>,
    refused: &[Refused],
    batch: u64,
    op: Op,
) -> Vec<DeadLetter> {
    refused
        .iter()
        .filter(|r| r.index < range.len())
        .map(|r| DeadLetter {
            user_id: ids.value(range.start + r.index).to_string(),
            change: match op {
                Op::Remove if r.no_profile => dead::GONE,
                op => op.name(),
            }
            .to_string(),
            reason: r.reason.clone(),
            batch,
        })
        .collect()
}

/// Splits a range refused with 400 until every refused id is alone; the rest is delivered (an
/// acknowledged half's item-level refusals are dead letters too).
#[allow(clippy::too_many_arguments)]
async fn isolate(
    sender: &Sender,
    destination: &dyn Destination,
    breaker: &Breaker,
    run_id: &str,
    ids: &StringArray,
    batch: u64,
    range: std::ops::Range<usize>,
    op: Op,
    message: String,
) -> Result<Vec<DeadLetter>> {
    let mut dead = Vec::new();
    let mut refused = vec![(range, message)];
    while let Some((range, message)) = refused.pop() {
        if range.len() == 1 {
            breaker.refused_ids.fetch_add(1, Ordering::Relaxed);
            dead.push(DeadLetter {
                user_id: ids.value(range.start).to_string(),
                change: op.name().to_string(),
                reason: message,
                batch,
            });
            continue;
        }
        let mid = range.start + range.len() / 2;
        for half in [range.start..mid, mid..range.end] {
            breaker.spend(&message)?;
            match sender
                .send(&destination.batch(run_id, batch, ids, half.clone(), op))
                .await
            {
                Ok(items) => {
                    breaker.delivered(half.len().saturating_sub(items.len()));
                    breaker
                        .refused_ids
                        .fetch_add(items.len() as u64, Ordering::Relaxed);
                    dead.extend(dead_letters(ids, &half, &items, batch, op));
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

/// The core (members → diff → plan → deliver → commit, and resume) against a fake destination
/// that takes lists and records them: no HTTP, no partner code.
#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use futures::future::BoxFuture;

    use super::*;

    /// What the fake destination was given: (run id, adds, removes) per write.
    type Writes = Vec<(String, Vec<String>, Vec<String>)>;

    #[derive(Default)]
    struct Recorder {
        writes: Mutex<Writes>,
        down: AtomicBool,
    }

    fn strings(ids: &StringArray) -> Vec<String> {
        ids.iter().flatten().map(str::to_string).collect()
    }

    impl Lists for Recorder {
        fn write<'a>(
            &'a self,
            run_id: &'a str,
            _at: DateTime<Utc>,
            lists: ListsOf,
        ) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(Error::Delivery("the fake destination is down".into()));
                }
                let entry = (
                    run_id.to_string(),
                    strings(&lists.adds),
                    strings(&lists.removes),
                );
                self.writes.lock().unwrap().push(entry);
                Ok(())
            })
        }
    }

    /// A project whose `users` table holds `ids`, the cohort `c` selecting them all.
    struct Project {
        dir: tempfile::TempDir,
        config: Config,
    }

    impl Project {
        fn new() -> Project {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("lake/users")).unwrap();
            std::fs::create_dir_all(dir.path().join("queries/cohorts")).unwrap();
            std::fs::write(
                dir.path().join("queries/cohorts/c.sql"),
                "SELECT user_id FROM users",
            )
            .unwrap();
            let config = Config::parse(
                "[lake]\nurl = \"lake\"\n\n[tables.users]\npath = \"users\"\n\n\
                 [destinations.out]\nkind = \"files\"\nurl = \"out\"\n\n[cohorts.c]\n",
                &dir.path().join("cohort-bridge.toml"),
            )
            .unwrap();
            Project { dir, config }
        }

        fn users(&self, ids: &[&str]) {
            let folder = self.dir.path().join("lake/users");
            for old in std::fs::read_dir(&folder).unwrap() {
                std::fs::remove_file(old.unwrap().path()).unwrap();
            }
            let schema = Arc::new(Schema::new(vec![Field::new(
                "user_id",
                DataType::Utf8,
                false,
            )]));
            let column = Arc::new(StringArray::from(ids.to_vec()));
            let batch = RecordBatch::try_new(schema.clone(), vec![column]).unwrap();
            let file = std::fs::File::create(folder.join(format!("{}.parquet", new_run_id())));
            let mut w = ArrowWriter::try_new(file.unwrap(), schema, None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }

        async fn sync(&self, to: &Arc<Recorder>) -> Result<SyncSummary> {
            let lake = crate::project::open_lake(&self.config).await?;
            let credentials = self.config.credentials("out", &|_| None)?;
            let given = Delivery::Lists(to.clone());
            let options = SyncOptions::at(Utc::now());
            sync_cohort_via(&self.config, &lake, "c", &credentials, options, Some(given)).await
        }
    }

    fn write(adds: &[&str], removes: &[&str]) -> (Vec<String>, Vec<String>) {
        let owned = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect();
        (owned(adds), owned(removes))
    }

    #[test]
    fn removals_are_suspicious_when_the_query_is_empty_or_too_many_leave() {
        assert_eq!(suspicious_removals(0, 0, 10, 0.5), None);
        let empty = suspicious_removals(3, 0, 3, 0.5).unwrap();
        assert!(empty.contains("no members"), "{empty}");
        assert_eq!(
            suspicious_removals(5, 5, 10, 0.5),
            None,
            "exactly the share is allowed"
        );
        let many = suspicious_removals(6, 4, 10, 0.5).unwrap();
        assert!(
            many.contains("60% of the cohort") && many.contains("= 0.5"),
            "{many}"
        );
        assert_eq!(
            suspicious_removals(1, 9, 0, 0.0),
            None,
            "no snapshot, no share"
        );
    }

    #[tokio::test]
    async fn sends_changes_only_and_finishes_an_interrupted_plan_exactly() {
        let project = Project::new();
        let to = Arc::new(Recorder::default());
        let sent = |from: usize| -> Vec<(Vec<String>, Vec<String>)> {
            let writes = to.writes.lock().unwrap();
            writes[from..]
                .iter()
                .map(|(_, a, r)| (a.clone(), r.clone()))
                .collect()
        };

        project.users(&["c", "a", "b"]);
        let first = project.sync(&to).await.unwrap();
        assert_eq!((first.adds, first.removes), (3, 0));
        assert_eq!(sent(0), [write(&["a", "b", "c"], &[])]);

        project.users(&["d", "b", "c"]);
        let second = project.sync(&to).await.unwrap();
        assert_eq!((second.adds, second.removes), (1, 1));
        assert_eq!(sent(1), [write(&["d"], &["a"])]);
        assert_ne!(to.writes.lock().unwrap()[1].0, first.run_id);

        // The destination fails: the run errs, nothing is committed.
        project.users(&["c", "d", "e"]);
        to.down.store(true, Ordering::SeqCst);
        let err = project.sync(&to).await.unwrap_err().to_string();
        assert!(err.contains("the fake destination is down"), "{err}");
        assert_eq!(sent(2), []);

        // The next run finishes that plan exactly (its change, not a recomputed one), then
        // sends what changed since.
        project.users(&["d", "e"]);
        to.down.store(false, Ordering::SeqCst);
        let resumed = project.sync(&to).await.unwrap();
        assert_eq!(sent(2), [write(&["e"], &["b"]), write(&[], &["c"])]);
        assert_eq!(resumed.outcome, "delivered");
        assert!(resumed.resumed_batches > 0, "{resumed:?}");
        assert_eq!((resumed.adds, resumed.removes), (0, 1));

        // Nothing changed: nothing is sent.
        let idle = project.sync(&to).await.unwrap();
        assert_eq!((idle.adds, idle.removes), (0, 0));
        assert_eq!((idle.outcome, idle.batches), ("unchanged", 0));
        assert_eq!(sent(4), []);
    }

    #[test]
    fn the_summary_adds_up_what_each_stage_returned() {
        let counts = Counts {
            members: 7,
            adds: 2,
            removes: 1,
            ..Counts::default()
        };
        let resumed = Sent {
            batches: 3,
            skipped: 4,
            dead_letters: 1,
        };
        let delivered = Sent {
            batches: 2,
            skipped: 0,
            dead_letters: 5,
        };
        let stats = SendStats {
            requests: 9,
            retries: 2,
            ..SendStats::default()
        };
        let both = SyncSummary::default().done(Done {
            resumed: Some(resumed),
            counts,
            delivered: Some(delivered),
            stats,
        });
        assert_eq!(both.outcome, "delivered");
        assert_eq!(
            (both.batches, both.resumed_batches, both.skipped_batches),
            (5, 3, 4)
        );
        assert_eq!((both.dead_letters, both.requests, both.retries), (6, 9, 2));
        assert_eq!((both.members, both.adds, both.removes), (7, 2, 1));

        let only_resumed = SyncSummary::default().done(Done {
            resumed: Some(resumed),
            counts,
            ..Done::default()
        });
        assert_eq!(
            (only_resumed.outcome, only_resumed.batches),
            ("delivered", 3)
        );

        let idle = SyncSummary::default().done(Done {
            counts,
            ..Done::default()
        });
        assert_eq!(
            (idle.outcome, idle.batches, idle.dead_letters),
            ("unchanged", 0, 0)
        );
    }
}
