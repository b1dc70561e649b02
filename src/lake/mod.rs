//! The lake: an object store holding Parquet tables, registered with DataFusion as listing
//! tables, and read-only SQL over them. Query execution runs on its own runtime (`CpuRuntime`)
//! so DataFusion's CPU work never stalls the runtime that drives HTTP.

#[cfg(feature = "ballista")]
pub mod ballista;
mod runtime;
pub mod sql;
mod substr;

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use std::num::NonZeroUsize;

pub use crate::storage::Location;
pub use runtime::CpuRuntime;

use crate::config::{Config, Engine, PartitionType, TableConfig};
use crate::error::{Error, Result};

/// An opened lake: its location, a DataFusion session with every configured table, and the
/// runtime queries execute on.
pub struct Lake {
    pub location: Location,
    /// The state area (snapshots, plans, journals, locks, run history).
    pub state: Location,
    ctx: SessionContext,
    cpu: Arc<CpuRuntime>,
    /// What to tell the user when a query runs out of its memory pool.
    memory_hint: String,
    /// Tables that could not be opened (no Parquet files, unreadable ones), with why: only
    /// the queries that read them fail.
    unreadable: std::collections::BTreeMap<String, String>,
}

/// DataFusion's runtime for a project: a fair spill pool of `engine.memory_limit` (operators
/// that can spill share it evenly; the error names the largest consumers), spill files in
/// `engine.spill_dir` or the system's temporary folder.
fn runtime_env(config: &Config) -> Result<Arc<RuntimeEnv>> {
    let engine = &config.engine;
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(engine.memory_limit as usize),
        NonZeroUsize::new(3).expect("3 > 0"),
    );
    let mut builder = RuntimeEnvBuilder::new().with_memory_pool(Arc::new(pool));
    if let Some(dir) = &engine.spill_dir {
        let dir = config.resolve(dir);
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::config(
                config.file.clone(),
                format!("engine.spill_dir: cannot create {}: {e}", dir.display()),
            )
        })?;
        builder = builder.with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![dir])),
        );
    }
    builder
        .build_arc()
        .map_err(|e| Error::Internal(format!("cannot set up the query engine: {e}")))
}

impl Lake {
    /// Where a project's lake is, checked: a local lake must be an existing folder.
    pub fn locate(config: &Config) -> Result<Location> {
        let location = Location::parse(&config.lake.url, &config.base_dir(), &config.lake.options)
            .map_err(|e| match e {
                Error::Config { message, .. } => Error::config(config.file.clone(), message),
                other => other,
            })?;
        if location.url.scheme() == "file"
            && let Ok(dir) = location.url.to_file_path()
            && !dir.is_dir()
        {
            return Err(Error::config(
                config.file.clone(),
                format!(
                    "lake.url: there is no lake at {} (the folder does not exist). Point \
                     lake.url at the folder or bucket holding your tables, or write a sample \
                     lake there with `cohort-bridge generate --out {}`",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        Ok(location)
    }

    /// Opens the lake at `location` and registers every table the project declares. A table
    /// whose files cannot be listed or read is recorded with why: only the queries that read
    /// it fail. Tables owned by other layers (run history, ingested events) are registered by
    /// `crate::project::open_lake`, which composes them.
    pub async fn open(config: &Config, location: Location, state: Location) -> Result<Lake> {
        let mut lake = Lake::new(location, state, config)?;
        for (name, table) in &config.tables {
            if let Err(e) = lake.register(name, table).await {
                tracing::warn!(table = %name, error = %e, "table cannot be opened; the queries that read it will fail");
                let why = match e {
                    Error::Storage { message, .. } => message,
                    other => other.to_string(),
                };
                lake.unreadable.insert(name.clone(), why);
            }
        }
        Ok(lake)
    }

    /// A lake with no tables registered yet, its queries under the project's memory pool.
    pub fn new(location: Location, state: Location, config: &Config) -> Result<Lake> {
        let session = SessionConfig::new()
            .with_information_schema(true)
            .set_bool("datafusion.sql_parser.collect_spans", true)
            // Strings as views: `substr` and filters pass 16-byte views instead of copying
            // bytes, and member ids are copied once, out of the views, by the collector.
            .set_bool("datafusion.execution.parquet.schema_force_view_types", true);
        let session = match config.engine.target_partitions {
            Some(n) => session.with_target_partitions(n),
            None => session,
        };
        // A sort keeps this much aside for merging its spill files; DataFusion's 10 MiB
        // default would not fit a small pool.
        let partitions = session.target_partitions().max(1) as u64;
        let merge_reserve = (10 << 20).min(config.engine.memory_limit / (4 * partitions));
        let session = session.set_usize(
            "datafusion.execution.sort_spill_reservation_bytes",
            merge_reserve as usize,
        );
        let runtime = runtime_env(config)?;
        let engine = config
            .engine
            .engine()
            .map_err(|e| Error::config(config.file.clone(), format!("engine.url: {e}")))?;
        let cpu = match &engine {
            Engine::Local => CpuRuntime::new(),
            Engine::Ballista { host, port } => CpuRuntime::new().bounded(
                config.engine.query_timeout,
                format!(
                    "the Ballista cluster at {host}:{port} did not finish the query within \
                     engine.query_timeout ({}); it was abandoned. An executor lost mid-query can \
                     leave the scheduler waiting forever (docs/upstream/): look at the \
                     scheduler's log, and rerun",
                    crate::config::human_duration(config.engine.query_timeout)
                ),
            ),
        };
        let ctx = match engine {
            Engine::Local => {
                // `substr`: DataFusion's own with an ASCII fast path (a cluster runs its
                // executors' own).
                substr::install(SessionContext::new_with_config_rt(session, runtime))
            }
            #[cfg(feature = "ballista")]
            Engine::Ballista { host, port } => {
                ballista::context(session, runtime, &host, port, &config.lake.options)?
            }
            #[cfg(not(feature = "ballista"))]
            Engine::Ballista { .. } => unreachable!("EngineConfig::engine refuses it"),
        };
        ctx.register_object_store(&state.store_url(), state.store.clone());
        ctx.register_object_store(&location.store_url(), location.store.clone());
        Ok(Lake {
            location,
            state,
            ctx,
            cpu: Arc::new(cpu),
            memory_hint: format!(
                "the query needs more memory than `engine.memory_limit` ({} MiB) in {} allows \
                 (operators that cannot spill, such as a hash join's build side, must fit in \
                 it whole): raise it, or narrow the query",
                config.engine.memory_limit >> 20,
                config.file.display()
            ),
            unreadable: Default::default(),
        })
    }

    /// The first Parquet file under `table_path` whose footer cannot be read, and why. Each
    /// footer is decoded in a task of its own, so even a decoder that panics on crafted bytes
    /// names the file.
    async fn first_unreadable(&self, table_path: &str) -> Option<(String, String)> {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        let store = self.location.store.clone();
        let files: Vec<_> = store
            .list(Some(&self.location.child(table_path)))
            .try_collect()
            .await
            .ok()?;
        for meta in files
            .into_iter()
            .filter(|m| m.location.as_ref().ends_with(".parquet"))
        {
            let size = meta.size;
            let why = if size < 12 {
                format!("{size} bytes, too short for Parquet")
            } else {
                match store.get_range(&meta.location, size - 8..size).await {
                    Err(e) => e.to_string(),
                    Ok(tail) if &tail[4..] != b"PAR1" => {
                        "no Parquet footer (PAR1) at its end".into()
                    }
                    Ok(tail) => {
                        let len =
                            u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
                        if len + 12 > size {
                            format!(
                                "its footer claims {len} bytes of metadata in a {size}-byte file"
                            )
                        } else {
                            match store
                                .get_range(&meta.location, size - 8 - len..size - 8)
                                .await
                            {
                                Err(e) => e.to_string(),
                                Ok(footer) => {
                                    let decoded = self
                                        .cpu
                                        .run(async move {
                                            parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer)
                                                .map(|_| ())
                                        })
                                        .await;
                                    match decoded {
                                        Ok(Ok(())) => continue,
                                        Ok(Err(e)) => e.to_string(),
                                        Err(e) => e.to_string(),
                                    }
                                }
                            }
                        }
                    }
                }
            };
            return Some((format!("{}", meta.location), why));
        }
        None
    }

    /// Why a table of the project could not be opened, if it could not.
    pub fn unreadable(&self, table: &str) -> Option<&str> {
        self.unreadable.get(table).map(String::as_str)
    }

    /// The unreadable tables a planning error complains about (DataFusion says
    /// `table 'datafusion.public.NAME' not found`).
    pub fn unreadable_in(&self, error: &str) -> Option<(&str, &str)> {
        self.unreadable
            .iter()
            .find(|(name, _)| {
                error.contains(&format!(".{name}' not found"))
                    || error.contains(&format!("'{name}' not found"))
            })
            .map(|(n, why)| (n.as_str(), why.as_str()))
    }

    /// Registers a Parquet table with a fixed schema (our own outputs: `runs`,
    /// `partner_events`), so it is queryable before its first file exists.
    pub fn register_fixed(
        &self,
        name: &str,
        url: &str,
        schema: datafusion::arrow::datatypes::SchemaRef,
        partitions: Vec<(String, DataType)>,
    ) -> Result<()> {
        let table = self.fixed_table(name, url, schema, partitions)?;
        self.register_view(name, table)
    }

    /// A Parquet table with a fixed schema, not registered (to build a view on).
    pub fn fixed_table(
        &self,
        name: &str,
        url: &str,
        schema: datafusion::arrow::datatypes::SchemaRef,
        partitions: Vec<(String, DataType)>,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        let fail =
            |e: &dyn std::fmt::Display| Error::storage(format!("table `{name}` at {url}: {e}"));
        let table_url = ListingTableUrl::parse(url).map_err(|e| fail(&e))?;
        let options = ListingOptions::new(Arc::new(self.parquet_format()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partitions);
        let config = ListingTableConfig::new(table_url)
            .with_listing_options(options)
            .with_schema(schema);
        let table = ListingTable::try_new(config).map_err(|e| fail(&e))?;
        Ok(Arc::new(table))
    }

    /// Registers `table` (a table or a view) under `name`.
    pub fn register_view(
        &self,
        name: &str,
        table: Arc<dyn datafusion::catalog::TableProvider>,
    ) -> Result<()> {
        self.ctx
            .register_table(name, table)
            .map_err(|e| Error::Internal(format!("registering table `{name}`: {e}")))?;
        Ok(())
    }

    /// Runs a planned query on the query runtime and collects its batches.
    pub async fn collect(
        &self,
        df: datafusion::dataframe::DataFrame,
        origin: &str,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        self.cpu
            .run(async move { df.collect().await })
            .await?
            .map_err(|e| self.query_error(origin, e))
    }

    /// A query failure in words; running out of the memory pool names the setting to change.
    pub fn query_error(&self, origin: &str, e: DataFusionError) -> Error {
        if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
            Error::query_at(format!("{origin}: {}", self.memory_hint), e)
        } else {
            Error::query_at(origin, e)
        }
    }

    /// Parquet as this session reads it: plain `Utf8` strings, not views (the format's own
    /// defaults would ignore the session's `schema_force_view_types`), so member ids leave
    /// DataFusion without a copy and a Ballista cluster gets the types it expects.
    fn parquet_format(&self) -> ParquetFormat {
        ParquetFormat::default().with_options(self.ctx.state().table_options().parquet.clone())
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn cpu(&self) -> &Arc<CpuRuntime> {
        &self.cpu
    }

    /// Registers one Parquet table (a folder under the lake, optionally hive-partitioned).
    pub async fn register(&self, name: &str, table: &TableConfig) -> Result<()> {
        let url = self.location.child_url(&table.path);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::storage(format!("table `{name}` at {url}: {what}: {e}"))
        };
        let table_url = ListingTableUrl::parse(&url).map_err(|e| fail("bad URL", &e))?;
        let partitions = table
            .partitions
            .iter()
            .map(|p| {
                let t = match p.kind {
                    PartitionType::String => DataType::Utf8,
                    PartitionType::Date => DataType::Date32,
                    PartitionType::Int => DataType::Int64,
                };
                (p.name.clone(), t)
            })
            .collect();
        let options = ListingOptions::new(Arc::new(self.parquet_format()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partitions);
        let state = self.ctx.state();
        let inferred = self
            .cpu
            .run(async move {
                ListingTableConfig::new(table_url)
                    .with_listing_options(options)
                    .infer_schema(&state)
                    .await
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let config = match inferred {
            Ok(config) => config,
            Err(e) => {
                // Name the file at fault when one is.
                return Err(match self.first_unreadable(&table.path).await {
                    Some((file, why)) => fail(&format!("{file} is not readable Parquet"), &why),
                    None => fail(
                        "cannot read its schema (no Parquet files, or unreadable ones?)",
                        &e,
                    ),
                });
            }
        };
        let provider = ListingTable::try_new(config).map_err(|e| fail("cannot register", &e))?;
        self.ctx
            .register_table(name, Arc::new(provider))
            .map_err(|e| fail("cannot register", &e))?;
        Ok(())
    }
}
