//! `sync`: one cohort from SQL to the partner — resume an interrupted run, diff the cohort
//! against the committed snapshot, send the adds and removes under a lock with every
//! acknowledged batch journaled, commit the new snapshot — and the one-line summary a
//! scheduler reads.
//!
//! This file is the life of a run (`Run::sync`); each stage is a file returning a value:
//! `resume` (an interrupted run's plan finished first: `Sent`), `change` (query, members, diff:
//! `Change`, with `base` and `layout` finding the committed membership it is diffed against),
//! `plan` (`PlanMeta`, durable before anything is sent), `deliver` (batches or lists: `Sent`,
//! with `breaker` stopping isolation when the partner refuses nearly everything), `finish`
//! (the commit, dead letters and run history), `holdout` (the control group). `identity` and
//! `refusals` are the checks that stop a run before it sends anything.

mod base;
mod breaker;
mod change;
mod deliver;
mod finish;
mod holdout;
mod identity;
mod layout;
mod pipeline;
mod plan;
mod refusals;
mod resume;

pub use identity::partner_identity;

use std::time::Instant;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::StringArray;
use object_store::path::Path;
use serde::Serialize;
use tracing::info;

use crate::cohort::Query;
use crate::cohort::shard::Shard;
use crate::config::{Cohort, Config, Credentials, DestinationConfig};
use crate::deliver::sender::{SendStats, Sender};
use crate::destinations::{self as destination, Delivery};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::state::lock::{self, Lock};
use crate::state::{self, CohortState, new_run_id};
use change::Counts;
use deliver::Sent;

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
    /// Members left out because their email or phone cannot be one (dead-lettered with the
    /// reason when the run commits; never sent).
    pub malformed: u64,
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
    let dest = destination_of(config, &cohort, &options)?;
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
        return run.dry_run(lake, &started, head).await;
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

/// The cohort's destination as this run uses it: at `--requests-per-second`, or at the
/// destination's rate shared among the shards.
fn destination_of(
    config: &Config,
    cohort: &Cohort,
    options: &SyncOptions,
) -> Result<DestinationConfig> {
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
    Ok(dest)
}

/// Up to 5 ids of a list (`--dry-run`'s samples).
fn sample(ids: &StringArray) -> Vec<String> {
    ids.iter().flatten().take(5).map(str::to_string).collect()
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
            malformed: c.malformed,
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

/// One run of one cohort (or one shard of it): what every stage reads.
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

impl Run<'_> {
    /// The life of a run, stage by stage: finish an interrupted run's plan, refuse a rewind,
    /// compute the change, plan it, deliver it, commit it, then record the control group.
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
        let sender = self.sender(delivery, deadline)?;
        let sender = sender.as_ref();

        // 1. An interrupted run first: finish exactly its plan.
        let resumed = self.resume(delivery, sender).await?;

        // 2. Time going backwards would roll the partner back to an older cohort.
        self.refuse_rewind().await?;

        // 3–6 in parts when the destination takes requests and `route` says so: each part is
        // planned and sent while the next is sorted (`pipeline`).
        let requests = matches!((delivery, sender), (Delivery::Requests(_), Some(_)));
        let (in_parts, query) = self.route(lake, requests).await?;
        if in_parts && let (Delivery::Requests(to), Some(sender)) = (delivery, sender) {
            let piped = self
                .pipeline(lake, query, run_id, started, to, sender)
                .await?;
            // 7. The control group, which never reaches the partner.
            self.record_holdout(piped.held).await?;
            return Ok(Done {
                resumed,
                counts: piped.counts,
                delivered: piped.delivered,
                stats: sender.stats(),
            });
        }

        // 3. This run's change (a signal during the query stops here: nothing was planned).
        let change = crate::signals::interruptible(self.change(lake, started, Some(query))).await?;
        // Members the destination cannot identify are refused before anything is planned.
        match delivery {
            Delivery::Requests(d) => d.accepts(&change.adds)?,
            Delivery::Lists(l) => l.accepts(&change.adds)?,
        }
        let delivered = if change.is_unchanged() {
            None
        } else {
            // 4. The plan, durable before anything is sent.
            let plan = self.plan(&change, run_id).await?;
            // 5. Its batches (the target snapshot is written meanwhile).
            let sent = self.send_change(&change, &plan, delivery, sender).await?;
            // 6. The commit.
            Some(self.commit(&plan, sent).await?)
        };

        // 7. The control group, which never reaches the partner.
        self.record_holdout(change.held).await?;
        Ok(Done {
            resumed,
            counts: change.counts,
            delivered,
            stats: sender.map(Sender::stats).unwrap_or_default(),
        })
    }

    /// Plans the cohort's query and tells whether its change goes in parts: when its members
    /// are its user ids, `state.part_ids` is not 0, the destination takes requests
    /// (`requests`), and the run is incremental, or `state.pipeline_full_syncs`, or its ids are
    /// past what one array holds (2 GiB: a full sync executes its query first to tell).
    async fn route(&self, lake: &Lake, requests: bool) -> Result<(bool, Query)> {
        let params = crate::lake::sql::Params::at(self.options.at);
        let df =
            crate::signals::interruptible(crate::cohort::plan(lake, self.cohort, &params)).await?;
        let mut in_parts = requests
            && self.config.state.part_ids > 0
            && crate::cohort::comes_in_parts(&df, &self.cohort.identifiers);
        let mut query = Query::Planned(df);
        if in_parts && !(self.config.state.pipeline_full_syncs || self.incremental().await?) {
            let origin = self.cohort.sql_file.display().to_string();
            query = crate::signals::interruptible(query.collect(lake, &origin)).await?;
            in_parts = query.bytes() > Some(crate::storage::ids::ARRAY_BYTES);
        }
        Ok((in_parts, query))
    }

    /// `--dry-run`: the change and the batches it would take; nothing is sent or written. In
    /// parts as the sync would be (`route`; a dry run opens no destination: as one taking
    /// requests), with the same figures either way.
    async fn dry_run(
        &self,
        lake: &Lake,
        started: &Instant,
        head: SyncSummary,
    ) -> Result<SyncSummary> {
        let size = self.dest.delivery.batch_size;
        let (in_parts, query) = self.route(lake, true).await?;
        let (counts, sample_adds, sample_removes) = if in_parts {
            self.dry_run_in_parts(lake, query, started).await?
        } else {
            let change = self.change(lake, started, Some(query)).await?;
            (change.counts, sample(&change.adds), sample(&change.removes))
        };
        let batches = counts.adds.div_ceil(size as u64) + counts.removes.div_ceil(size as u64);
        Ok(SyncSummary {
            outcome: "dry_run",
            batches,
            requests: batches + 1,
            sample_adds: Some(sample_adds),
            sample_removes: Some(sample_removes),
            seconds: started.elapsed().as_secs_f64(),
            ..head.counted(&counts)
        })
    }

    /// Immediately before a write to the state: fails (exit 5, nothing written) unless this
    /// run still holds its lock. A dry run holds none and writes nothing.
    async fn hold(&self) -> Result<()> {
        match self.lock {
            Some(lock) => lock.hold().await,
            None => Ok(()),
        }
    }
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
    use crate::destinations::{Lists, ListsOf};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

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
            let config = crate::destinations::parse_config(
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
