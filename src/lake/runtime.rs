//! A dedicated tokio runtime for DataFusion's CPU-bound work, kept apart from the runtime that
//! drives HTTP (the pattern of DataFusion's `thread_pools.rs` example).

use std::future::Future;

use crate::error::{Error, Result};

pub struct CpuRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    /// The longest a query may run (`engine.query_timeout`, on a Ballista cluster), with what
    /// to say when it is reached.
    bound: Option<(std::time::Duration, String)>,
}

impl CpuRuntime {
    /// One worker per core, named `datafusion-cpu`.
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("datafusion-cpu")
            .enable_all()
            .build()
            .expect("cannot start the query runtime (out of threads?)");
        CpuRuntime {
            runtime: Some(runtime),
            bound: None,
        }
    }

    /// Every `run` fails with `why` after `limit` (the task is abandoned).
    pub fn bounded(mut self, limit: std::time::Duration, why: String) -> Self {
        self.bound = Some((limit, why));
        self
    }

    /// Runs `fut` on the query runtime and waits for it from any runtime.
    pub async fn run<F, T>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::Internal("query runtime already shut down".into()))?
            .spawn(fut);
        let Some((limit, why)) = &self.bound else {
            return handle
                .await
                .map_err(|e| Error::Internal(format!("query task failed: {e}")));
        };
        let abort = handle.abort_handle();
        match tokio::time::timeout(*limit, handle).await {
            Ok(done) => done.map_err(|e| Error::Internal(format!("query task failed: {e}"))),
            Err(_) => {
                abort.abort();
                Err(Error::query(why.clone()))
            }
        }
    }
}

impl Default for CpuRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for CpuRuntime {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one panics; shut it down without waiting.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
