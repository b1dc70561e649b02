//! `files`: each run's adds and removes as Parquet or CSV under an object-store prefix (a local
//! folder, `s3://`, `gs://`, `az://`), for Braze Cloud Data Ingestion file sources or any tool
//! that reads files.
//!
//! One folder per run: `<url>/<cohort_id>/<run_id>/adds.<ext>`, `removes.<ext>`, then
//! `_manifest.json`, written last: a folder without a manifest is incomplete (a run that died
//! while writing it) and readers skip it. A resumed run writes the same folder again (the run
//! id is the plan's), object by object, whole or not at all. Object-store keys come from the
//! environment, as the lake's do.

use std::path::Path as FsPath;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{Array, StringArray};
use futures::future::BoxFuture;
use object_store::{ObjectStoreExt, PutPayload};

use super::Lists;
use crate::config::{Cohort, DestinationConfig, FileFormat};
use crate::error::{Error, Result};
use crate::lake::Location;
use crate::state::ids::{self, Layout};

/// The manifest's name; written after every list.
pub const MANIFEST: &str = "_manifest.json";

pub struct Files {
    location: Location,
    layout: Layout,
    ext: &'static str,
    format: &'static str,
    cohort_id: String,
    cohort: String,
}

impl Files {
    pub fn new(dest: &DestinationConfig, cohort: &Cohort, base: &FsPath) -> Result<Self> {
        let location = Location::parse(&dest.url, base, &dest.options)?;
        let column = dest.column.clone().unwrap_or_else(|| "external_id".into());
        let (layout, ext, format) = match dest.format {
            FileFormat::Parquet => (Layout::Parquet(column), "parquet", "parquet"),
            FileFormat::Csv => (Layout::Csv(column), "csv", "csv"),
        };
        Ok(Files {
            location,
            layout,
            ext,
            format,
            cohort_id: cohort.cohort_id.clone(),
            cohort: cohort.display_name.clone(),
        })
    }
}

impl Lists for Files {
    /// One column of external ids: other identifiers are not written to files yet.
    fn accepts(&self, ids: &StringArray) -> Result<()> {
        if crate::cohort::identity::any_tagged(ids, 0..ids.len().min(1)) {
            return Err(Error::config(
                None,
                "the files destination writes external ids only, and the cohort has members \
                 known by an alias or a device id: select their user_id, or use Cohort Import \
                 or a webhook",
            ));
        }
        Ok(())
    }

    fn write<'a>(
        &'a self,
        run_id: &'a str,
        at: DateTime<Utc>,
        adds: Arc<StringArray>,
        removes: Arc<StringArray>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let store = self.location.store.as_ref();
            let dir = self
                .location
                .root
                .clone()
                .join(self.cohort_id.as_str())
                .join(run_id);
            let mut files = Vec::new();
            for (op, list) in [("add", adds), ("remove", removes)] {
                let name = format!("{op}s.{}", self.ext);
                let rows = list.len();
                ids::write_as(
                    store,
                    &dir.clone().join(name.as_str()),
                    list,
                    self.layout.clone(),
                )
                .await?;
                files.push(serde_json::json!({"path": name, "op": op, "rows": rows}));
            }
            let column = match &self.layout {
                Layout::Parquet(c) | Layout::Csv(c) => c.clone(),
            };
            let manifest = serde_json::json!({
                "manifest_version": 1,
                "cohort_id": self.cohort_id,
                "cohort": self.cohort,
                "run_id": run_id,
                "run_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "written_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                "format": self.format,
                "column": column,
                "files": files,
            });
            let path = dir.join(MANIFEST);
            store
                .put(
                    &path,
                    PutPayload::from(serde_json::to_vec_pretty(&manifest).expect("JSON")),
                )
                .await
                .map_err(|e| Error::Storage(format!("{path}: {e}")))?;
            Ok(())
        })
    }
}
