//! One lock per cohort and destination, in the object store, using only what every store has:
//! create-if-absent. Locks are numbered files `lock-<generation>.json`; the highest generation is
//! the lock. Taking over a dead run's lock (expired) means creating the next generation, which
//! only one contender can do. The holder refreshes its expiry while it runs.
//!
//! **Fencing.** A generation never goes back: the newest lock file is never deleted. A run that
//! ends rewrites its own file as released (a tombstone), and `state unlock` creates the next
//! generation as a tombstone; the next run then takes the generation after it. A run holds the
//! lock only while the newest file is its own generation *and* names its run id, so a run that
//! stalled past its expiry (a frozen VM, `kill -STOP`) and was taken over or unlocked finds
//! itself fenced off: [`KeptLock::guard`] is asked before every request (a clock check while
//! the lease is fresh, a round trip to the store once it is not) and [`KeptLock::hold`]
//! (a check of the store, and a refresh once the lease is not fresh) immediately before every commit step and clean-up.
//! A fenced run starts no further request, commits nothing and exits 5.
//!
//! The background refresh runs every `min(ttl / 3, CHECK_EVERY)`, so a *live* run whose lock
//! `state unlock --force` released learns it within [`CHECK_EVERY`] and stops. Such a release
//! leaves a draining tombstone (it expires `drain` later: the check interval and the
//! destination's `request_timeout`), and the next run waits for it before taking the lock, so
//! the fenced run's requests in flight are answered before its successor sends anything.
//!
//! What is left: a process frozen *between* a check and the write it guards (one request, or
//! one state write) can still make that one write late. The lease makes that window the
//! time between a check and its write, never the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::CohortState;
use crate::error::{Error, Result};
use crate::storage::json::{Read, try_read_json};
use crate::storage::objects::{create_if_absent, delete_if_exists};

/// The longest a held lock goes without being checked against the store (its refresh).
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How often a lock of `ttl` is refreshed and checked.
pub fn check_every(ttl: Duration) -> Duration {
    (ttl / 3).min(CHECK_EVERY).max(Duration::from_millis(100))
}

/// The longest a run waits for a draining tombstone before refusing (exit 5).
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub owner: String,
    pub run_id: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// A tombstone: who released this generation and when (the run itself, or `state
    /// unlock`). It holds nothing; it only keeps the generation from going back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
}

impl LockInfo {
    /// Whether a run holds this lock now (not released, not expired).
    pub fn live(&self) -> bool {
        self.released.is_none() && self.expires_at > Utc::now()
    }
}

/// This process, as lock files name their owner: `HOST:PID`.
fn this_owner() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// Whether the owner of a lock is provably gone: a process of this host whose pid no longer
/// runs (Linux: no `/proc/<pid>`). Another host's process can never be proven gone from here.
pub fn owner_gone(owner: &str) -> bool {
    let Some((host, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == host_name()
        && std::path::Path::new("/proc/self").exists()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A held lock. Release it with [`Lock::release`]; if the process dies it expires.
pub struct Lock {
    state: CohortState,
    generation: u64,
    info: LockInfo,
    ttl: Duration,
}

pub fn lock_name(generation: u64) -> String {
    format!("lock-{generation:010}.json")
}

pub async fn generations(state: &CohortState) -> Result<Vec<u64>> {
    let listed = state.store.list_with_delimiter(Some(&state.dir)).await?;
    let mut gens: Vec<u64> = listed
        .objects
        .iter()
        .filter_map(|m| m.location.filename())
        .filter_map(|f| f.strip_prefix("lock-")?.strip_suffix(".json")?.parse().ok())
        .collect();
    gens.sort_unstable();
    Ok(gens)
}

/// Reads a lock file; an unreadable one stops everything (exit 2) naming
/// `state unlock --force` (its expiry cannot be known).
async fn read_lock(state: &CohortState, path: &Path) -> Result<Option<LockInfo>> {
    match try_read_json::<LockInfo>(state.store.as_ref(), path).await? {
        Read::Ok(info) => Ok(Some(info)),
        Read::Missing => Ok(None),
        Read::Corrupt(why) => Err(Error::config(
            None,
            format!(
                "lock file {path} is unreadable ({why}), so whether a run holds the cohort is \
                 unknown; nothing was sent. If no run of it is going on, run {}",
                state.fix("unlock --force")
            ),
        )),
    }
}

/// The live lock of `state`, if a run holds one now.
pub async fn holder(state: &CohortState) -> Result<Option<LockInfo>> {
    let Some(&g) = generations(state).await?.last() else {
        return Ok(None);
    };
    let held = read_lock(state, &state.path(&lock_name(g))).await?;
    Ok(held.filter(LockInfo::live))
}

/// The newest lock file and what it says (`Err`: unreadable, with why), expired, released or
/// live.
pub async fn newest(
    state: &CohortState,
) -> Result<Option<(Path, std::result::Result<LockInfo, String>)>> {
    let Some(&g) = generations(state).await?.last() else {
        return Ok(None);
    };
    let path = state.path(&lock_name(g));
    Ok(
        match try_read_json::<LockInfo>(state.store.as_ref(), &path).await? {
            Read::Ok(info) => Some((path, Ok(info))),
            Read::Corrupt(why) => Some((path, Err(why))),
            Read::Missing => None,
        },
    )
}

fn body(info: &LockInfo) -> Result<bytes::Bytes> {
    serde_json::to_vec_pretty(info)
        .map(Into::into)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Creates generation `generation` holding `info` if no one has: `false` when another
/// contender created it first (look again).
async fn create(state: &CohortState, generation: u64, info: &LockInfo, what: &str) -> Result<bool> {
    let path = state.path(&lock_name(generation));
    create_if_absent(state.store.as_ref(), &path, body(info)?.into())
        .await
        .map_err(|e| Error::storage_at(format!("{}: cannot {what}", state.dir), e))
}

/// Five contenders in a row took the generation this one meant to create.
fn contended(state: &CohortState) -> Error {
    Error::Locked(format!(
        "{}: the lock is contended; try again (see {})",
        state.dir,
        state.fix("show")
    ))
}

/// `state unlock`: creates the next generation as a tombstone released by `by` (so whoever held
/// the lock is fenced off, and the next run takes the generation after it), then deletes the
/// older lock files. With a `drain`, the next run waits that long before taking the lock (a
/// live holder's requests in flight are answered first). Returns the tombstone's generation.
pub async fn unlock(state: &CohortState, by: &str, drain: Duration) -> Result<u64> {
    for _ in 0..5 {
        let gens = generations(state).await?;
        let next = gens.last().map_or(1, |g| g + 1);
        let now = Utc::now();
        let info = LockInfo {
            owner: this_owner(),
            run_id: format!("unlock-{}", super::new_run_id()),
            acquired_at: now,
            expires_at: now + chrono::Duration::from_std(drain).unwrap_or_default(),
            released: Some(format!("{by} at {}", now.to_rfc3339())),
        };
        if create(state, next, &info, "write the unlock tombstone").await? {
            for g in gens {
                delete_if_exists(state.store.as_ref(), &state.path(&lock_name(g))).await?;
            }
            return Ok(next);
        }
    }
    Err(contended(state))
}

impl Lock {
    /// Takes the lock or fails with [`Error::Locked`] naming the holder and its expiry.
    pub async fn acquire(state: &CohortState, run_id: &str, ttl: Duration) -> Result<Lock> {
        let owner = this_owner();
        for _ in 0..5 {
            let gens = generations(state).await?;
            let next = match gens.last() {
                None => 1,
                Some(&g) => {
                    let path = state.path(&lock_name(g));
                    match read_lock(state, &path).await? {
                        Some(held) if held.live() => {
                            return Err(Error::Locked(format!(
                                "{} is being synced by {} (run {}, lock expires {}); \
                                 wait for it, or if you are sure that run is dead, run {}",
                                state.dir,
                                held.owner,
                                held.run_id,
                                held.expires_at,
                                state.fix("unlock --force")
                            )));
                        }
                        Some(held) if held.released.is_some() && held.expires_at > Utc::now() => {
                            // Released by `state unlock --force` from a live run: its requests
                            // in flight are still being answered.
                            let wait = (held.expires_at - Utc::now()).to_std().unwrap_or_default();
                            if wait > MAX_DRAIN_WAIT {
                                return Err(Error::Locked(format!(
                                    "{}: the lock was released from a live run ({}) and drains \
                                     until {}; run again then",
                                    state.dir,
                                    held.released.as_deref().unwrap_or_default(),
                                    held.expires_at
                                )));
                            }
                            tracing::info!(
                                wait_ms = wait.as_millis() as u64,
                                "the lock was released from a live run: waiting for its requests in flight"
                            );
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        Some(held) => {
                            if held.released.is_none() {
                                warn!(owner = %held.owner, run = %held.run_id, expired = %held.expires_at,
                                    "taking over an expired lock");
                            }
                            g + 1
                        }
                        // Deleted between listing and reading.
                        None => g + 1,
                    }
                }
            };
            let now = Utc::now();
            let info = LockInfo {
                owner: owner.clone(),
                run_id: run_id.to_string(),
                acquired_at: now,
                expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
                released: None,
            };
            // Someone else may have created that generation first: then look again.
            if create(state, next, &info, "take the lock").await? {
                return Ok(Lock {
                    state: state.clone(),
                    generation: next,
                    info,
                    ttl,
                });
            }
        }
        Err(contended(state))
    }

    fn path(&self) -> Path {
        self.state.path(&lock_name(self.generation))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Extends the expiry, checking before and after the write that this run still holds the
    /// lock (a run frozen between the check and the write must not take its write for a hold).
    pub async fn refresh(&mut self) -> Result<()> {
        self.verify().await?;
        self.info.expires_at =
            Utc::now() + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        self.state
            .store
            .put(&self.path(), body(&self.info)?.into())
            .await?;
        self.verify().await
    }

    /// Fails with [`Error::Locked`] unless the newest lock file is this run's generation and
    /// names this run (another run took it over, or `state unlock` fenced it off).
    pub async fn verify(&self) -> Result<()> {
        let newest = generations(&self.state).await?.last().copied();
        let ours = match newest {
            Some(g) if g == self.generation => read_lock(&self.state, &self.path())
                .await?
                .is_some_and(|held| held.run_id == self.info.run_id && held.released.is_none()),
            _ => false,
        };
        if ours {
            return Ok(());
        }
        Err(fenced(&self.state))
    }

    /// Ends this run's hold: its file becomes a tombstone (the generation never goes back) and
    /// older generations are deleted. A run that was fenced off leaves everything as it is: the
    /// lock is another's now.
    pub async fn release(&self) -> Result<()> {
        if self.verify().await.is_err() {
            return Ok(());
        }
        let mut info = self.info.clone();
        let now = Utc::now();
        info.expires_at = now;
        info.released = Some(format!("released by its run at {}", now.to_rfc3339()));
        self.state
            .store
            .put(&self.path(), body(&info)?.into())
            .await?;
        for g in generations(&self.state).await? {
            if g < self.generation {
                delete_if_exists(self.state.store.as_ref(), &self.state.path(&lock_name(g)))
                    .await?;
            }
        }
        Ok(())
    }
}

/// The error of a run that no longer holds its lock (exit 5).
fn fenced(state: &CohortState) -> Error {
    Error::Locked(format!(
        "{}: this run no longer holds its lock (it expired and another run took it over, or \
         `state unlock` released it): it is fenced off, started no further request and \
         committed nothing. The run holding the lock, or the next sync, finishes the pending \
         plan (see {})",
        state.dir,
        state.fix("show")
    ))
}

/// A lock's lease as seen by this process: refreshed in the background, checked before every
/// request and every commit step.
pub struct Lease {
    lock: tokio::sync::Mutex<Lock>,
    lost: AtomicBool,
    /// Until when (monotonic clock, wall clock) no other run can have taken the lock over: the
    /// start of the last successful refresh plus the ttl, less a tenth for clock skew.
    until: std::sync::Mutex<(std::time::Instant, DateTime<Utc>)>,
    ttl: Duration,
}

impl Lease {
    fn fresh(&self) -> bool {
        let (mono, wall) = *self.until.lock().unwrap_or_else(|e| e.into_inner());
        std::time::Instant::now() < mono && Utc::now() < wall
    }

    /// Refreshes now; a lock found taken over marks the lease lost for good.
    async fn refresh(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(fenced(&self.lock.lock().await.state));
        }
        let mut lock = self.lock.lock().await;
        let (mono, wall) = (std::time::Instant::now(), Utc::now());
        match lock.refresh().await {
            Ok(()) => {
                *self.until.lock().unwrap_or_else(|e| e.into_inner()) =
                    lease_until(mono, wall, self.ttl);
                Ok(())
            }
            Err(e) => Err(self.noticed(e)),
        }
    }

    /// A `Locked` error marks the lease lost for good (said once).
    fn noticed(&self, e: Error) -> Error {
        if matches!(e, Error::Locked(_)) && !self.lost.swap(true, Ordering::SeqCst) {
            warn!(error = %e, "this run's lock was taken over: stopping");
        }
        e
    }

    /// Immediately before a state write: the newest lock file is still this run's (a check of
    /// the store while the lease is fresh: no one can take it over before the lease ends; a
    /// refresh once it is not).
    async fn hold(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(fenced(&self.lock.lock().await.state));
        }
        if !self.fresh() {
            return self.refresh().await;
        }
        let verified = self.lock.lock().await.verify().await;
        verified.map_err(|e| self.noticed(e))
    }

    /// May this run still start a request? Free while the lease is fresh; a refresh once it
    /// is not (after a stall, say).
    pub async fn guard(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(fenced(&self.lock.lock().await.state));
        }
        if self.fresh() {
            return Ok(());
        }
        self.refresh().await
    }
}

/// The end of a lease whose expiry was written after `mono` / `wall`: `ttl` later, less a
/// tenth for clock skew between hosts.
fn lease_until(
    mono: std::time::Instant,
    wall: DateTime<Utc>,
    ttl: Duration,
) -> (std::time::Instant, DateTime<Utc>) {
    let keep = ttl - ttl / 10;
    let far = Duration::from_secs(100 * 365 * 86_400);
    (
        mono.checked_add(keep.min(far)).unwrap_or(mono),
        chrono::Duration::from_std(keep.min(far))
            .ok()
            .and_then(|d| wall.checked_add_signed(d))
            .unwrap_or(wall),
    )
}

/// A lock refreshed in the background every `ttl / 3`, and the fence of its run.
pub struct KeptLock {
    lease: Arc<Lease>,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

pub fn keep_alive(lock: Lock) -> KeptLock {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let ttl = lock.ttl;
    let now = (std::time::Instant::now(), Utc::now());
    let lease = Arc::new(Lease {
        lock: tokio::sync::Mutex::new(lock),
        lost: AtomicBool::new(false),
        // `acquire` wrote the expiry just now.
        until: std::sync::Mutex::new(lease_until(now.0, now.1, ttl)),
        ttl,
    });
    let kept = lease.clone();
    let every = check_every(ttl);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(every) => {
                    match kept.refresh().await {
                        Ok(()) => {}
                        Err(Error::Locked(_)) => return,
                        Err(e) => warn!(error = %e, "cannot refresh the run lock"),
                    }
                }
            }
        }
    });
    KeptLock { lease, task, stop }
}

impl KeptLock {
    /// Fails if a refresh found the lock taken over by another run (no round trip).
    pub fn check(&self) -> Result<()> {
        if self.lease.lost.load(Ordering::SeqCst) {
            return Err(Error::Locked(
                "this run's lock expired and was taken over by another run; stopping without committing".into(),
            ));
        }
        Ok(())
    }

    /// Before a request: free while the lease is fresh, a refresh once it is not.
    pub async fn guard(&self) -> Result<()> {
        self.lease.guard().await
    }

    /// Immediately before a commit step or a clean-up: checks the store (a round trip) and
    /// fails with exit 5 if this run no longer holds the lock.
    pub async fn hold(&self) -> Result<()> {
        self.lease.hold().await
    }

    /// The lease a sender checks before each request.
    pub fn lease(&self) -> Arc<Lease> {
        self.lease.clone()
    }

    /// Stops refreshing and releases the lock (a fenced run leaves it to its new holder).
    pub async fn release(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| Error::Internal(format!("lock keeper: {e}")))?;
        let lock = self.lease.lock.lock().await;
        lock.release().await
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn state() -> CohortState {
        CohortState::new(
            Arc::new(InMemory::new()),
            &Path::from("_cohort_bridge"),
            "braze",
            "c1",
        )
    }

    #[tokio::test]
    async fn second_holder_is_refused_until_release() {
        let s = state();
        let a = Lock::acquire(&s, "run-a", Duration::from_secs(60))
            .await
            .unwrap();
        let err = Lock::acquire(&s, "run-b", Duration::from_secs(60))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, Error::Locked(ref m) if m.contains("run-a")),
            "{err}"
        );
        a.release().await.unwrap();
        let b = Lock::acquire(&s, "run-b", Duration::from_secs(60))
            .await
            .unwrap();
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lock_is_taken_over_once() {
        let s = state();
        let dead = Lock::acquire(&s, "dead", Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = Lock::acquire(&s, "b", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            Lock::acquire(&s, "c", Duration::from_secs(60))
                .await
                .is_err()
        );
        assert!(
            dead.verify().await.is_err(),
            "the dead run learns it lost the lock"
        );
        b.verify().await.unwrap();
        b.release().await.unwrap();
        assert_eq!(
            generations(&s).await.unwrap(),
            vec![2],
            "the released generation stays, as a tombstone"
        );
        assert!(holder(&s).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_generation_never_goes_back_and_a_stalled_run_stays_fenced() {
        let s = state();
        let stalled = Lock::acquire(&s, "stalled", Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The operator unlocks the expired lock; a new run takes the next generation.
        assert_eq!(unlock(&s, "state unlock", Duration::ZERO).await.unwrap(), 2);
        assert!(stalled.verify().await.is_err(), "unlock fences the holder");
        let next = Lock::acquire(&s, "next", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(next.generation(), 3);
        next.release().await.unwrap();
        assert!(stalled.verify().await.is_err());
        // Even with every lock file deleted by hand and a new run at generation 1 again, the
        // stalled run is not taken for the holder: the file must name its run.
        for g in generations(&s).await.unwrap() {
            delete_if_exists(s.store.as_ref(), &s.path(&lock_name(g)))
                .await
                .unwrap();
        }
        assert!(stalled.verify().await.is_err());
        let again = Lock::acquire(&s, "again", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(again.generation(), stalled.generation());
        assert!(stalled.verify().await.is_err());
        // The stalled run's release leaves the new holder's lock alone.
        stalled.release().await.unwrap();
        again.verify().await.unwrap();
        assert_eq!(holder(&s).await.unwrap().unwrap().run_id, "again");
    }

    #[tokio::test]
    async fn a_kept_lock_refuses_requests_once_fenced() {
        let s = state();
        let lock = Lock::acquire(&s, "kept", Duration::from_millis(300))
            .await
            .unwrap();
        let kept = keep_alive(lock);
        kept.guard().await.unwrap();
        kept.hold().await.unwrap();
        unlock(&s, "state unlock --force", Duration::from_millis(200))
            .await
            .unwrap();
        // The background check (every 100 ms here) notices without being asked.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(kept.check().is_err(), "noticed by the background check");
        assert!(matches!(kept.hold().await, Err(Error::Locked(_))));
        // From now on, no request starts, without asking the store again.
        assert!(matches!(kept.lease().guard().await, Err(Error::Locked(_))));
        kept.release().await.unwrap();
        let newest = newest(&s).await.unwrap().unwrap().1.unwrap();
        assert!(newest.released.unwrap().starts_with("state unlock --force"));
        // The next run waits for the drain, then takes the generation after the tombstone.
        let next = Lock::acquire(&s, "next", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(next.generation(), 3);
        assert!(Utc::now() >= newest.expires_at, "it waited for the drain");
    }

    #[test]
    fn only_a_dead_process_of_this_host_is_provably_gone() {
        assert!(!owner_gone(&this_owner()), "this process runs");
        assert!(!owner_gone("another-host:1"));
        assert!(!owner_gone("garbage"));
        if std::path::Path::new("/proc/self").exists() {
            // Pids are below 2^22 on Linux.
            assert!(owner_gone(&format!("{}:{}", host_name(), u32::MAX - 1)));
        }
    }
}
