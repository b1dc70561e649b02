//! `files`: each run's adds and removes as Parquet or CSV under an object-store prefix (a local
//! folder, `s3://`, `gs://`, `az://`), for Braze Cloud Data Ingestion file sources or any tool
//! that reads files.
//!
//! One folder per run: `<url>/<cohort_id>/<run_id>/adds.<ext>`, `removes.<ext>` (and
//! `members.<ext>`, the whole membership after the run, with `include_members = true`; under
//! `--shard K/N` the shard's only, and the manifest says `"shard": "K/N"`), then
//! `_manifest.json`, written last: a folder without a manifest is incomplete (a run that died
//! while writing it) and readers skip it. A resumed run writes the same folder again (the run
//! id is the plan's), object by object, whole or not at all. Object-store keys come from the
//! environment, as the lake's do.
//!
//! A run whose members are all external ids writes one column (`column`, default
//! `external_id`); one with aliases, device ids or Braze ids writes a column per kind
//! (`columns.<kind>`, default the kind's name in cohort SQL), each row filling its kind's.

use std::path::Path as FsPath;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{Array, StringArray};
use futures::future::BoxFuture;
use object_store::{ObjectStoreExt, PutPayload};

mod config;

pub use config::{COLUMN_KINDS, Config, FileFormat, MAX_BATCH};

use super::{Delivery, Lists, ListsOf, own};
use crate::config::{Cohort, Credentials, DestinationConfig};
use crate::error::{Error, Result};
use crate::state::ids::{self, Layout};
use crate::storage::Location;

/// The registry's opener (`base` anchors a relative folder).
pub fn open(
    dest: &DestinationConfig,
    _credentials: &Credentials,
    cohort: &Cohort,
    base: &FsPath,
) -> Result<Delivery> {
    Ok(Delivery::Lists(Arc::new(Files::new(
        own(dest),
        cohort,
        base,
    )?)))
}

/// The registry's identity: files are where they are written.
pub fn identity(dest: &DestinationConfig, _key: &str) -> String {
    let c: &Config = own(dest);
    format!("files:{}", c.url.trim_end_matches('/'))
}

/// The manifest's name; written after every list.
pub const MANIFEST: &str = "_manifest.json";

pub struct Files {
    location: Location,
    csv: bool,
    ext: &'static str,
    /// The columns of each identifier kind: external id, alias name, alias label, device id,
    /// Braze id, email, phone.
    names: [String; crate::state::ids::IDENTITY_COLUMNS],
    members: bool,
    cohort_id: String,
    cohort: String,
}

impl Files {
    pub fn new(dest: &Config, cohort: &Cohort, base: &FsPath) -> Result<Self> {
        let location = Location::parse(&dest.url, base, &dest.options)?;
        let (csv, ext) = match dest.format {
            FileFormat::Parquet => (false, "parquet"),
            FileFormat::Csv => (true, "csv"),
        };
        Ok(Files {
            location,
            csv,
            ext,
            names: dest.file_columns(),
            members: dest.include_members,
            cohort_id: cohort.cohort_id.clone(),
            cohort: cohort.display_name.clone(),
        })
    }

    /// One column of external ids when every list holds only those; else a column per
    /// identifier kind.
    fn layout(&self, lists: &[&Arc<StringArray>]) -> Layout {
        let tagged = lists
            .iter()
            .any(|l| crate::cohort::identity::has_other_kinds(l));
        match (tagged, self.csv) {
            (false, false) => Layout::Parquet(self.names[0].clone()),
            (false, true) => Layout::Csv(self.names[0].clone()),
            (true, false) => Layout::ParquetIdentities(Box::new(self.names.clone())),
            (true, true) => Layout::CsvIdentities(Box::new(self.names.clone())),
        }
    }
}

impl Lists for Files {
    fn wants_members(&self) -> bool {
        self.members
    }

    fn write<'a>(
        &'a self,
        run_id: &'a str,
        at: DateTime<Utc>,
        lists: ListsOf,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let store = self.location.store.as_ref();
            let dir = self
                .location
                .root
                .clone()
                .join(self.cohort_id.as_str())
                .join(run_id);
            let mut named = vec![("add", lists.adds), ("remove", lists.removes)];
            if let Some(members) = lists.members {
                named.push(("member", members));
            }
            let layout = self.layout(&named.iter().map(|(_, l)| l).collect::<Vec<_>>());
            let columns: Vec<&str> = match &layout {
                Layout::Parquet(c) | Layout::Csv(c) => vec![c.as_str()],
                Layout::ParquetIdentities(n) | Layout::CsvIdentities(n) => {
                    n.iter().map(String::as_str).collect()
                }
            };
            let shard = lists.shard;
            let mut files = Vec::new();
            for (op, list) in named {
                let name = format!("{op}s.{}", self.ext);
                let rows = list.len();
                // One column of external ids holds each as it is (not as its key).
                let list = match &layout {
                    Layout::Parquet(_) | Layout::Csv(_) => {
                        match crate::cohort::identity::external_values(&list) {
                            Some(values) => Arc::new(values),
                            None => list,
                        }
                    }
                    _ => list,
                };
                let entry = match (op, &shard) {
                    ("member", Some(shard)) => serde_json::json!({
                        "path": name, "op": op, "rows": rows, "shard": shard,
                        "note": format!(
                            "the members of shard {shard} only, not the whole cohort: the cohort \
                             is the union of the latest members file of every shard"
                        ),
                    }),
                    ("member", None) => serde_json::json!({
                        "path": name, "op": op, "rows": rows,
                        "note": "the whole cohort after this run",
                    }),
                    _ => serde_json::json!({"path": name, "op": op, "rows": rows}),
                };
                ids::write_as(
                    store,
                    &dir.clone().join(name.as_str()),
                    list,
                    layout.clone(),
                )
                .await?;
                files.push(entry);
            }
            let mut manifest = serde_json::json!({
                "manifest_version": 1,
                "cohort_id": self.cohort_id,
                "cohort": self.cohort,
                "run_id": run_id,
                "run_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "written_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                "format": self.ext,
                "column": self.names[0],
                "columns": columns,
                "files": files,
            });
            // Under `--shard K/N` every list is that shard's: said at the top, so a reader
            // replacing an audience from `members` knows it holds a part.
            if let Some(shard) = shard {
                manifest["shard"] = serde_json::Value::String(shard);
            }
            let path = dir.join(MANIFEST);
            store
                .put(
                    &path,
                    PutPayload::from(serde_json::to_vec_pretty(&manifest).expect("JSON")),
                )
                .await
                .map_err(|e| Error::storage_at(&path, e))?;
            Ok(())
        })
    }
}
