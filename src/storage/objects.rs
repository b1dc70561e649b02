//! Plain objects: created only if absent, deleted if there, copied byte for byte.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// Creates `path` holding `body` only if no object is there: `false` when one is (another
/// writer created it first). Every store does this atomically, so exactly one of several
/// contenders creates an object (state's lock generations rely on it).
pub async fn create_if_absent(
    store: &dyn ObjectStore,
    path: &Path,
    body: PutPayload,
) -> object_store::Result<bool> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store.put_opts(path, body, opts).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

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
