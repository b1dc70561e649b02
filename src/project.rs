//! One opener above the layers: the lake knows only the tables a project declares; the run
//! history (`state`) and ingested partner events (`ingest`) register their own tables here, so
//! neither the lake nor the state area imports a layer above it.

use crate::config::Config;
use crate::error::Result;
use crate::lake::Lake;

/// Opens a project's lake with every table a query may read: the declared ones, `runs` and
/// `cohort_changes` from the state area, and each source's events table.
pub async fn open_lake(config: &Config) -> Result<Lake> {
    let location = Lake::locate(config)?;
    let state = crate::state::area(config, &location)?;
    let lake = Lake::open(config, location, state).await?;
    crate::state::tables::register_tables(&lake, config)?;
    crate::ingest::register_tables(&lake, config)?;
    Ok(lake)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;

    use super::*;

    /// A project's own `runs` table wins over the run history, and the state area's
    /// `cohort_changes` is registered beside it all the same.
    #[tokio::test]
    async fn declared_tables_win_and_every_layer_registers_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("lake/my_runs");
        std::fs::create_dir_all(&runs).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![7]))])
            .unwrap();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(runs.join("a.parquet")).unwrap(),
            schema,
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let config = crate::destinations::parse_config(
            "[lake]\nurl = \"lake\"\n\n[tables.runs]\npath = \"my_runs\"\n",
            &dir.path().join("cohort-bridge.toml"),
        )
        .unwrap();

        let lake = open_lake(&config).await.unwrap();
        let ctx = lake.context();
        let declared = ctx.table_provider("runs").await.unwrap().schema();
        assert_eq!(declared.fields().len(), 1, "{declared:?}");
        assert_eq!(declared.field(0).name(), "x");
        let changes = ctx.table_provider("cohort_changes").await.unwrap().schema();
        assert!(changes.fields().len() > 1, "{changes:?}");
    }
}
