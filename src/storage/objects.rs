//! Plain objects: deleted if there, copied byte for byte.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// Deletes `path`; a missing object is not an error.
pub async fn delete_if_exists(store: &dyn ObjectStore, path: &Path) -> Result<()> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::storage_at(path, e)),
    }
}

/// Copies an object (read, then write; every store can). Not `ObjectStore::copy`: on a local
/// filesystem that is a hard link, and a replica sharing the snapshot's inode protects nothing.
pub async fn copy(store: &dyn ObjectStore, from: &Path, to: &Path) -> Result<()> {
    let bytes = store
        .get(from)
        .await
        .map_err(|e| Error::storage_at(from, e))?
        .bytes()
        .await
        .map_err(|e| Error::storage_at(from, e))?;
    store
        .put(to, bytes.into())
        .await
        .map_err(|e| Error::storage_at(to, e))?;
    Ok(())
}
