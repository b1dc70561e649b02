//! Bridges from async code to rayon's pool, so CPU work (sorting, encoding) never runs on a
//! tokio worker.

/// Runs `f` on rayon's pool and awaits its result.
pub async fn on_rayon<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        // The receiver only disappears if the caller was cancelled; nothing to do then.
        let _ = tx.send(f());
    });
    rx.await.expect("rayon task panicked")
}
