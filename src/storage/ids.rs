//! Sorted id lists as objects, written and read whole through `object_store`: Parquet (or CSV)
//! encoded on a thread of its own and streamed to the store row group by row group, and read
//! back row group by row group into one array, checked sorted and distinct. What the ids mean
//! (member keys, their formats) is the caller's.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::ObjectFile;
use crate::error::{Error, Result};

/// Rows per row group, and so per chunk streamed to the store: ~4.5 MiB of UUIDs, a buffer the
/// allocator reuses from one row group to the next (36 MiB ones were fresh pages every time).
pub const ROW_GROUP: usize = 1 << 17;
/// Bytes an object buffers before it becomes a multipart upload (S3 parts must be ≥ 5 MiB).
pub const PART: usize = 16 << 20;
/// Parts of one object uploading at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Writes the bytes `encode` hands to its `emit` to every path, as they come: `encode` runs on
/// a thread of its own, and each object buffers up to `part` bytes before it becomes a
/// multipart upload. Each object appears whole or not at all: one `put`, or a multipart upload
/// completed last (aborted on failure). `emit` returns false once the writer gave up.
pub async fn write_streamed(
    store: &dyn ObjectStore,
    paths: &[Path],
    part: usize,
    encode: impl FnOnce(&mut dyn FnMut(Bytes) -> bool) -> Result<()> + Send + 'static,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(2);
    std::thread::Builder::new()
        .name("ids-encode".into())
        .spawn(move || {
            // A closed channel means the writer gave up (its error is reported there).
            let mut emit = |chunk| tx.blocking_send(Ok(chunk)).is_ok();
            if let Err(e) = encode(&mut emit) {
                let _ = tx.blocking_send(Err(e));
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start an encoding thread: {e}")))?;
    let mut sinks: Vec<Sink> = paths.iter().map(|p| Sink::new(p.clone(), part)).collect();
    let written = async {
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk?;
            futures::future::try_join_all(sinks.iter_mut().map(|s| s.push(store, chunk.clone())))
                .await?;
        }
        futures::future::try_join_all(sinks.iter_mut().map(|s| s.finish(store))).await
    }
    .await;
    if written.is_err() {
        for sink in sinks {
            sink.abort().await;
        }
    }
    written.map(|_| ())
}

/// One object being written: buffered until it is big enough for a multipart upload.
pub(super) enum Sink {
    /// The path, the chunks so far, their size, the part size.
    Buffer(Path, Vec<Bytes>, usize, usize),
    Upload(Path, WriteMultipart),
    Done,
}

impl Sink {
    pub(super) fn new(path: Path, part: usize) -> Self {
        Sink::Buffer(path, Vec::new(), 0, part)
    }

    pub(super) async fn push(&mut self, store: &dyn ObjectStore, chunk: Bytes) -> Result<()> {
        match self {
            Sink::Buffer(path, chunks, len, part) => {
                *len += chunk.len();
                chunks.push(chunk);
                if *len >= *part {
                    let upload = store
                        .put_multipart(path)
                        .await
                        .map_err(|e| Error::storage_at(&path, e))?;
                    let mut upload = WriteMultipart::new_with_chunk_size(upload, *part);
                    for c in chunks.drain(..) {
                        upload.put(c);
                    }
                    *self = Sink::Upload(path.clone(), upload);
                }
            }
            Sink::Upload(path, upload) => {
                upload
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| Error::storage_at(&path, e))?;
                upload.put(chunk);
            }
            Sink::Done => return Err(Error::Internal("id list written after its end".into())),
        }
        Ok(())
    }

    pub(super) async fn finish(&mut self, store: &dyn ObjectStore) -> Result<()> {
        match std::mem::replace(self, Sink::Done) {
            Sink::Buffer(path, chunks, _, _) => store
                .put(&path, chunks.into_iter().collect::<PutPayload>())
                .await
                .map(|_| ())
                .map_err(|e| Error::storage_at(&path, e)),
            Sink::Upload(path, upload) => upload
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| Error::storage_at(&path, e)),
            Sink::Done => Ok(()),
        }
    }

    pub(super) async fn abort(self) {
        if let Sink::Upload(_, upload) = self {
            let _ = upload.abort().await;
        }
    }
}

/// Row groups encoded at once ([`encode`]): enough to keep every core busy, few enough that
/// their encoded bytes are a few MiB.
const ROW_GROUPS_AT_ONCE: usize = 4;

/// Encodes `ids` as Parquet with `fields` (the columns `columns` makes of each slice of ids),
/// handing each row group's bytes (then the footer's) to `emit` as soon as they are complete;
/// stops early when `emit` returns false. `marks`: key-value pairs the footer carries.
///
/// Row groups are encoded a few at a time in parallel (rayon) and written in order: encoding a
/// 10M-id plan is on the critical path of a first sync (nothing is sent before it is durable),
/// and on one thread it took ~0.3 s of 10M short ids.
pub fn encode(
    ids: &[StringArray],
    fields: Vec<Field>,
    columns: impl Fn(StringArray) -> Vec<ArrayRef> + Sync,
    marks: Option<Vec<KeyValue>>,
    row_group: usize,
    emit: &mut dyn FnMut(Bytes) -> bool,
) -> Result<()> {
    use parquet::arrow::arrow_writer::{
        ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves,
    };
    use parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
    use parquet::file::writer::SerializedFileWriter;
    use rayon::prelude::*;

    let schema = Arc::new(Schema::new(fields));
    let mut props = WriterProperties::builder()
        .set_key_value_metadata(marks)
        .set_compression(compression_for(
            ids.iter().find(|p| !p.is_empty()).unwrap_or(&ids[0]),
        ))
        // Ids are distinct: a dictionary only costs time before it falls back.
        .set_dictionary_enabled(false)
        // Nothing prunes an id list: min/max statistics only cost byte comparisons.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(Some(row_group))
        .build();
    // As `ArrowWriter` does: readers get the Arrow types back.
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let props = Arc::new(props);
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(&schema)?;
    let mut writer =
        SerializedFileWriter::new(Vec::new(), parquet_schema.root_schema_ptr(), props.clone())?;
    let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
    let mut take = |writer: &mut SerializedFileWriter<Vec<u8>>| -> Result<bool> {
        writer
            .flush()
            .map_err(|e| Error::Internal(format!("id list: {e}")))?;
        let bytes = std::mem::take(writer.inner_mut());
        Ok(bytes.is_empty() || emit(Bytes::from(bytes)))
    };
    // Row groups: each part's ids cut every `row_group` (a part's last one may be short).
    let starts: Vec<(&StringArray, usize)> = ids
        .iter()
        .flat_map(|part| {
            (0..part.len())
                .step_by(row_group.max(1))
                .map(move |s| (part, s))
        })
        .collect();
    for (round, chunk) in starts.chunks(ROW_GROUPS_AT_ONCE).enumerate() {
        let encoded: Vec<Result<Vec<ArrowColumnChunk>>> = chunk
            .par_iter()
            .enumerate()
            .map(|(k, &(part, start))| {
                let len = row_group.min(part.len() - start);
                let index = round * ROW_GROUPS_AT_ONCE + k;
                let mut writers = factory.create_column_writers(index)?;
                let arrays = columns(part.slice(start, len));
                for ((writer, array), field) in writers.iter_mut().zip(&arrays).zip(schema.fields())
                {
                    for leaf in compute_leaves(field, array)? {
                        writer.write(&leaf)?;
                    }
                }
                writers
                    .into_iter()
                    .map(|w| w.close().map_err(Error::from))
                    .collect()
            })
            .collect();
        for chunks in encoded {
            let mut group = writer.next_row_group()?;
            for chunk in chunks? {
                chunk.append_to_row_group(&mut group)?;
            }
            group.close()?;
            if !take(&mut writer)? {
                return Err(Error::Internal("id list writer gone".into()));
            }
        }
    }
    writer.finish()?;
    take(&mut writer)?;
    Ok(())
}

/// Encodes `ids` as CSV under `header`, each id's line the `fields` it makes (none is empty),
/// `rows` ids per chunk handed to `emit`; stops early when `emit` returns false.
pub fn encode_csv<'a, const N: usize>(
    ids: &'a StringArray,
    header: [&str; N],
    fields: impl Fn(&'a str) -> [Option<&'a str>; N],
    rows: usize,
    emit: &mut dyn FnMut(Bytes) -> bool,
) -> Result<()> {
    let mut chunk = Vec::new();
    push_csv(&mut chunk, header.iter().map(|h| Some(*h)));
    for (i, id) in ids.iter().enumerate() {
        push_csv(&mut chunk, fields(id.unwrap_or_default()));
        if (i + 1) % rows.max(1) == 0 && !emit(Bytes::from(std::mem::take(&mut chunk))) {
            return Err(Error::Internal("id list writer gone".into()));
        }
    }
    if !chunk.is_empty() && !emit(Bytes::from(chunk)) {
        return Err(Error::Internal("id list writer gone".into()));
    }
    Ok(())
}

/// One CSV line of `fields` (none is empty), each quoted (quotes doubled) when it needs to be.
fn push_csv<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = Option<&'a str>>) {
    for (n, field) in fields.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let field = field.unwrap_or_default();
        if field
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
        {
            out.push(b'"');
            out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(field.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Snappy when it pays on a sample of the ids (sequential ids like `u000000123` shrink several
/// times), none when it does not: random ids such as UUIDs barely shrink, and compressing a 10M
/// UUID snapshot cost more CPU than the rest of writing it. Readers take either (the codec is
/// recorded per column chunk), so snapshots of both kinds, old and new, read alike.
pub fn compression_for(ids: &StringArray) -> Compression {
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

/// The most bytes of ids one `StringArray` holds (its offsets are `i32`): a list past it is
/// read in more arrays than one ([`try_read_chunks`]).
pub const ARRAY_BYTES: usize = i32::MAX as usize;

/// Reads a sorted id list (its column `name`) in arrays of at most `chunk_bytes` of ids each (in
/// order: each array's ids after the previous one's; always at least one array), and whether
/// its footer carries the key `mark`: a store failure is an error; a missing object, or one
/// that is not a sorted, distinct list, is the inner `Err` with the reason.
///
/// Row groups are fetched and decoded one at a time into arrays sized from the footer, so
/// reading a 10M-id snapshot holds the ids once, not the file, its batches and their
/// concatenation together.
pub async fn try_read_chunks(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    name: &str,
    mark: &str,
    chunk_bytes: usize,
) -> Result<std::result::Result<(Vec<StringArray>, bool), String>> {
    let chunk_bytes = chunk_bytes.clamp(1, ARRAY_BYTES);
    let meta = match store.head(path).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => return Ok(Err("missing".into())),
        Err(e) => return Err(Error::storage_at(path, e)),
    };
    let reader = ObjectFile {
        store: store.clone(),
        path: path.clone(),
        size: meta.size,
    };
    // A failure of the store (also inside the Parquet reader) is an error of the run, not damage.
    let classify = |e: ParquetError| -> Result<String> {
        match e {
            ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
                Ok(store_error)
                    if !matches!(*store_error, object_store::Error::NotFound { .. }) =>
                {
                    Err(Error::storage_at(path, store_error))
                }
                Ok(gone) => Ok(format!("missing ({gone})")),
                Err(other) => Ok(format!("not a readable id list: {other}")),
            },
            other => Ok(format!("not a readable id list: {other}")),
        }
    };
    let builder = match ParquetRecordBatchStreamBuilder::new(reader).await {
        Ok(b) => b,
        Err(e) => return classify(e).map(Err),
    };
    let marked = marked_in(builder.metadata(), mark);
    let Some(column) = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.name() == name)
    else {
        return Ok(Err(format!("id list without a {name} column")));
    };
    let (rows, bytes) = builder
        .metadata()
        .row_groups()
        .iter()
        .fold((0u64, 0u64), |(r, b), rg| {
            let chunk = rg.column(column);
            let values = chunk.uncompressed_size().max(0) as u64;
            (r + rg.num_rows().max(0) as u64, b + values)
        });
    // The footer is untrusted: its counts size buffers only up to what the object could hold.
    let cap = meta.size.saturating_mul(4);
    let (mut rows_left, mut bytes_left) = (
        rows.min(cap) as usize,
        bytes.saturating_sub(4 * rows).min(cap) as usize,
    );
    // Each array sized for its share of what is left (the last one, for all of it).
    let sized = |rows_left: usize, bytes_left: usize| {
        let bytes = bytes_left.min(chunk_bytes);
        let rows = (rows_left as u128 * bytes as u128 / bytes_left.max(1) as u128) as usize;
        StringBuilder::with_capacity(rows.max(1), bytes)
    };
    let mut out = sized(rows_left, bytes_left);
    let mut chunks = Vec::new();
    let mut stream = match builder.with_batch_size(ROW_GROUP).build() {
        Ok(s) => s,
        Err(e) => return classify(e).map(Err),
    };
    let mut last: Option<Vec<u8>> = None;
    let mut row = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return classify(e).map(|why| Err(why.replace("not a readable", "corrupt"))),
        };
        let Some(values) = batch.column_by_name(name) else {
            return Ok(Err(format!("id list without a {name} column")));
        };
        let values = match cast(values, &DataType::Utf8) {
            Ok(v) => v,
            Err(e) => return Ok(Err(format!("corrupt id list: {e}"))),
        };
        let values = values.as_string::<i32>();
        // Every list is written sorted and distinct; anything else is damage.
        if values.null_count() > 0 {
            return Ok(Err("corrupt id list: null ids".into()));
        }
        let mut prev: Option<&[u8]> = last.as_deref();
        for id in values.iter().flatten() {
            if let Some(prev) = prev
                && prev >= id.as_bytes()
            {
                return Ok(Err(format!(
                    "corrupt id list: not sorted and distinct at row {row} (`{}` then `{id}`)",
                    String::from_utf8_lossy(prev)
                )));
            }
            if out.values_slice().len() + id.len() > chunk_bytes && !out.is_empty() {
                let chunk = out.finish();
                rows_left = rows_left.saturating_sub(chunk.len());
                bytes_left = bytes_left.saturating_sub(chunk.value_data().len());
                chunks.push(chunk);
                out = sized(rows_left, bytes_left);
            }
            out.append_value(id);
            prev = Some(id.as_bytes());
            row += 1;
        }
        last = prev.map(<[u8]>::to_vec);
    }
    chunks.push(out.finish());
    Ok(Ok((chunks, marked)))
}

fn marked_in(meta: &parquet::file::metadata::ParquetMetaData, mark: &str) -> bool {
    meta.file_metadata()
        .key_value_metadata()
        .is_some_and(|kv| kv.iter().any(|k| k.key == mark))
}

/// Whether the footer of the Parquet object at `path` carries the key `mark` (`None`: the
/// object is missing or not readable Parquet).
pub async fn footer_has(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    mark: &str,
) -> Result<Option<bool>> {
    let meta = match store.head(path).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::storage_at(path, e)),
    };
    let reader = ObjectFile {
        store: store.clone(),
        path: path.clone(),
        size: meta.size,
    };
    Ok(match ParquetRecordBatchStreamBuilder::new(reader).await {
        Ok(b) => Some(marked_in(b.metadata(), mark)),
        Err(_) => None,
    })
}
