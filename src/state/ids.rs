//! Sorted id lists as Parquet objects (snapshots, plans): one `user_id` column, written and read
//! whole through `object_store`, encoded and decoded on rayon.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::parallel::on_rayon;

/// Writes `ids` (already sorted and distinct) to `path`, replacing it atomically.
pub async fn write(store: &dyn ObjectStore, path: &Path, ids: Arc<StringArray>) -> Result<()> {
    write_to(store, std::slice::from_ref(path), ids).await
}

/// Encodes `ids` once and writes the same bytes to every path (a snapshot and its replica).
pub async fn write_to(
    store: &dyn ObjectStore,
    paths: &[Path],
    ids: Arc<StringArray>,
) -> Result<()> {
    let bytes = on_rayon(move || encode(&ids)).await?;
    futures::future::try_join_all(paths.iter().map(|path| {
        let bytes = bytes.clone();
        async move {
            store
                .put(path, bytes.into())
                .await
                .map_err(|e| Error::Storage(format!("{path}: {e}")))
        }
    }))
    .await?;
    Ok(())
}

/// Copies an object (read, then write; every store can).
pub async fn copy(store: &dyn ObjectStore, from: &Path, to: &Path) -> Result<()> {
    let bytes = store
        .get(from)
        .await
        .map_err(|e| Error::Storage(format!("{from}: {e}")))?
        .bytes()
        .await
        .map_err(|e| Error::Storage(format!("{from}: {e}")))?;
    store
        .put(to, bytes.into())
        .await
        .map_err(|e| Error::Storage(format!("{to}: {e}")))?;
    Ok(())
}

fn encode(ids: &StringArray) -> Result<Bytes> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "user_id",
        DataType::Utf8,
        false,
    )]));
    let props = WriterProperties::builder()
        .set_compression(compression_for(ids))
        // Ids are distinct: a dictionary only costs time before it falls back.
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut out = Vec::with_capacity(ids.value_data().len() / 2 + 1024);
    let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(props))?;
    let step = 1 << 20;
    let mut start = 0;
    while start < ids.len() {
        let len = step.min(ids.len() - start);
        let column: ArrayRef = Arc::new(ids.slice(start, len));
        let batch = RecordBatch::try_new(schema.clone(), vec![column])
            .map_err(|e| Error::Internal(format!("id batch: {e}")))?;
        writer.write(&batch)?;
        start += len;
    }
    writer.close()?;
    Ok(Bytes::from(out))
}

/// Snappy when it pays on a sample of the ids (sequential ids like `u000000123` shrink several
/// times), none when it does not: random ids such as UUIDs barely shrink, and compressing a 10M
/// UUID snapshot cost more CPU than the rest of writing it. Readers take either (the codec is
/// recorded per column chunk), so snapshots of both kinds, old and new, read alike.
fn compression_for(ids: &StringArray) -> Compression {
    const SAMPLE: usize = 1 << 16;
    let offsets = ids.value_offsets();
    let n = ids.len().min(SAMPLE / 8);
    let sample = &ids.value_data()[offsets[0] as usize..offsets[n] as usize];
    if sample.is_empty() {
        return Compression::SNAPPY;
    }
    match snap::raw::Encoder::new().compress_vec(sample) {
        // Worth it below 80% of the size.
        Ok(small) if small.len() * 10 < sample.len() * 8 => Compression::SNAPPY,
        Ok(_) => Compression::UNCOMPRESSED,
        Err(_) => Compression::SNAPPY,
    }
}

/// Reads an id list written by [`write`].
pub async fn read(store: &dyn ObjectStore, path: &Path) -> Result<Arc<StringArray>> {
    try_read(store, path)
        .await?
        .map_err(|why| Error::Storage(format!("{path}: {why}")))
}

/// Reads an id list: a store failure is an error; a missing object, or one that is not a sorted,
/// distinct id list, is the inner `Err` with the reason.
pub async fn try_read(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<std::result::Result<Arc<StringArray>, String>> {
    let got = match store.get(path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(Err("missing".into())),
        Err(e) => return Err(Error::Storage(format!("{path}: {e}"))),
    };
    let bytes = got
        .bytes()
        .await
        .map_err(|e| Error::Storage(format!("{path}: {e}")))?;
    Ok(on_rayon(move || decode(bytes)).await)
}

fn decode(bytes: Bytes) -> std::result::Result<Arc<StringArray>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(1 << 20).build())
        .map_err(|e| format!("not a readable id list: {e}"))?;
    let mut parts: Vec<ArrayRef> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format!("corrupt id list: {e}"))?;
        let column = batch
            .column_by_name("user_id")
            .ok_or("id list without a user_id column")?;
        parts.push(cast(column, &DataType::Utf8).map_err(|e| e.to_string())?);
    }
    if parts.is_empty() {
        return Ok(Arc::new(StringArray::from(Vec::<&str>::new())));
    }
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
    let all = concat(&refs).map_err(|e| e.to_string())?;
    let ids = all.as_string::<i32>().clone();
    // Every list is written sorted and distinct; anything else is damage.
    if ids.null_count() > 0 {
        return Err("corrupt id list: null ids".into());
    }
    if let Some(i) =
        (1..ids.len()).find(|&i| ids.value(i - 1).as_bytes() >= ids.value(i).as_bytes())
    {
        return Err(format!(
            "corrupt id list: not sorted and distinct at row {i} (`{}` then `{}`)",
            ids.value(i - 1),
            ids.value(i)
        ));
    }
    Ok(Arc::new(ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn round_trip() {
        let store = InMemory::new();
        let path = Path::from("s/ids.parquet");
        let ids = Arc::new(StringArray::from_iter_values(
            (0..2500).map(|i| format!("u{i:05}")),
        ));
        write(&store, &path, ids.clone()).await.unwrap();
        assert_eq!(read(&store, &path).await.unwrap().as_ref(), ids.as_ref());
        let empty = Arc::new(StringArray::from(Vec::<&str>::new()));
        write(&store, &path, empty).await.unwrap();
        assert_eq!(read(&store, &path).await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn compression_only_where_it_pays_and_both_read() {
        let sequential = StringArray::from_iter_values((0..20_000).map(|i| format!("u{i:09}")));
        assert_eq!(compression_for(&sequential), Compression::SNAPPY);
        let mut uuids: Vec<String> = (0..20_000)
            .map(|i| crate::synth::user_id(crate::synth::IdShape::Uuid, i))
            .collect();
        uuids.sort();
        let uuids = Arc::new(StringArray::from_iter_values(uuids));
        assert_eq!(compression_for(&uuids), Compression::UNCOMPRESSED);
        let store = InMemory::new();
        let path = Path::from("s/uuids.parquet");
        write(&store, &path, uuids.clone()).await.unwrap();
        assert_eq!(read(&store, &path).await.unwrap().as_ref(), uuids.as_ref());
    }
}
