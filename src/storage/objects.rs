//! Plain objects: created only if absent, deleted if there, copied byte for byte.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::ids::Sink;

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
/// The bytes stream through in parts (a multipart upload past `ids::PART`), so copying a
/// 10M-id snapshot holds a part or two, not the object.
pub async fn copy(store: &dyn ObjectStore, from: &Path, to: &Path) -> Result<()> {
    // Ranges of a part each: a local file's `get` streams 8 KiB chunks, each a blocking task
    // (a 370 MB snapshot took ~45,000 of them).
    let size = store
        .head(from)
        .await
        .map_err(|e| Error::storage_at(from, e))?
        .size;
    let part = super::ids::PART as u64;
    let mut sink = Sink::new(to.clone(), super::ids::PART);
    let copied = async {
        let mut at = 0;
        while at < size {
            let end = (at + part).min(size);
            let chunk = store
                .get_range(from, at..end)
                .await
                .map_err(|e| Error::storage_at(from, e))?;
            sink.push(store, chunk).await?;
            at = end;
        }
        sink.finish(store).await
    }
    .await;
    if copied.is_err() {
        sink.abort().await;
    }
    copied
}
