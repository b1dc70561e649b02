//! JSON objects: read (telling a missing object from one that does not parse), and written in
//! one put, so an object used as a pointer switches atomically.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

/// A JSON object, as read.
pub enum Read<T> {
    Missing,
    /// There, but not what it should be (the reason).
    Corrupt(String),
    Ok(T),
}

/// Reads a JSON object; store failures (transient) are errors, a missing object or one
/// that does not parse is reported as such.
pub async fn try_read_json<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Read<T>> {
    match store.get(path).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(|e| Error::storage_at(path, e))?;
            Ok(match serde_json::from_slice(&bytes) {
                Ok(v) => Read::Ok(v),
                Err(e) => Read::Corrupt(format!("not valid JSON of its kind: {e}")),
            })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(Read::Missing),
        Err(e) => Err(Error::storage_at(path, e)),
    }
}

/// Reads a JSON object: `None` when it is missing; one that does not parse is an error.
pub async fn read_json<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Option<T>> {
    match try_read_json(store, path).await? {
        Read::Ok(v) => Ok(Some(v)),
        Read::Missing => Ok(None),
        Read::Corrupt(why) => Err(Error::storage(format!("{path}: corrupt state file: {why}"))),
    }
}

/// Writes `value` as pretty JSON in one put, replacing the object whole: a reader sees the
/// old object or the new one, never a mix (what makes a pointer such as state's
/// `current.json` an atomic switch).
pub async fn write_json<T: Serialize>(
    store: &dyn ObjectStore,
    path: &Path,
    value: &T,
) -> Result<()> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    store
        .put(path, body.into())
        .await
        .map_err(|e| Error::storage_at(path, e))?;
    Ok(())
}
