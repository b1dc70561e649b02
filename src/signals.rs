//! SIGTERM and SIGINT stop a sync cleanly: the first one sets a flag the delivery loop checks
//! (no new batch starts; the requests in flight finish and are journaled), the run reports
//! `interrupted`, releases its lock and exits 128 + the signal's number. A second signal exits
//! at once (as a kill would: the journal and the lock's expiry make that safe too).

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

static RECEIVED: AtomicI32 = AtomicI32::new(0);

fn channel() -> &'static watch::Sender<i32> {
    static CHANNEL: OnceLock<watch::Sender<i32>> = OnceLock::new();
    CHANNEL.get_or_init(|| watch::channel(0).0)
}

/// Starts listening for SIGTERM and SIGINT (once per process; needs a tokio runtime).
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::warn!("cannot listen for SIGTERM/SIGINT; they will end runs abruptly");
                return;
            };
            tokio::spawn(async move {
                loop {
                    let n = tokio::select! {
                        _ = term.recv() => SIGTERM,
                        _ = int.recv() => SIGINT,
                    };
                    raise(n);
                }
            });
        }
    });
}

/// Acts on signal `n` as if it had arrived (the listener and tests).
pub fn raise(n: i32) {
    if RECEIVED
        .compare_exchange(0, n, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        tracing::warn!(
            signal = crate::error::signal_name(n),
            "stopping: no new batches; the requests in flight finish and are journaled \
             (send it again to exit at once)"
        );
        channel().send_replace(n);
    } else {
        eprintln!(
            "error: {} again: exiting at once; the lock expires after state.lock_ttl (or run \
             `cohort-bridge state unlock COHORT --force`), and the next sync resumes",
            crate::error::signal_name(n)
        );
        std::process::exit(crate::error::exit::SIGNALLED + n);
    }
}

/// The signal received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

/// Fails with [`Error::Interrupted`] if a signal was received.
pub fn check() -> Result<()> {
    match received() {
        Some(signal) => Err(Error::Interrupted { signal }),
        None => Ok(()),
    }
}

/// Resolves when a signal is received (never, if none is).
pub async fn wait() -> i32 {
    let mut rx = channel().subscribe();
    let got = rx.wait_for(|n| *n != 0).await.map(|n| *n).ok();
    match got {
        Some(n) => n,
        None => std::future::pending().await,
    }
}

/// Runs `f` unless a signal comes first (then it is dropped: only for work that can be
/// abandoned safely, like a query).
pub async fn interruptible<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    check()?;
    tokio::select! {
        r = f => r,
        signal = wait() => Err(Error::Interrupted { signal }),
    }
}

/// Passes items on until a signal is received (then the source is dropped: the encoder stops).
pub fn until_signalled<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> mpsc::Receiver<T> {
    let (tx, out) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                biased;
                _ = wait() => return,
                item = rx.recv() => item,
            };
            let Some(item) = item else { return };
            if received().is_some() || tx.send(item).await.is_err() {
                return;
            }
        }
    });
    out
}
