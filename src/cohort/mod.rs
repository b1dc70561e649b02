//! Cohorts: plan a cohort's SQL against the lake, check its result has a string `user_id`, and
//! compute its members — sorted, de-duplicated, NULL and empty ids skipped and counted.

pub mod contact;
pub mod diff;
pub mod holdout;
pub mod identity;
pub mod shard;
pub mod sort;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::dataframe::DataFrame;
use futures::StreamExt;

use crate::config::Cohort;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::sql::{Params, SqlSource};
use crate::parallel::on_rayon;
use sort::Collector;

/// The member column every cohort query must return.
pub const USER_ID: &str = "user_id";

/// A cohort's members, ready to be cut into batches.
#[derive(Debug, Clone)]
pub struct Members {
    /// Distinct non-empty ids in byte order (so a re-plan yields the same batches).
    pub ids: Arc<StringArray>,
    /// Rows the query returned.
    pub rows: u64,
    /// Rows whose `user_id` was NULL (skipped).
    pub nulls_skipped: u64,
    /// Rows whose `user_id` was the empty string (skipped: the partner cannot match them).
    pub empty_skipped: u64,
    /// Rows that repeated an id already seen (emails and phones once normalised included).
    pub duplicates_removed: u64,
    /// Members left out because their email or phone cannot be one (`contact`): dead letters.
    pub malformed: Vec<contact::Malformed>,
}

/// Reads a cohort's SQL file and plans it read-only against the lake; nothing is executed.
pub async fn plan(lake: &Lake, cohort: &Cohort, params: &Params) -> Result<DataFrame> {
    let origin = cohort.sql_file.display().to_string();
    let text = std::fs::read_to_string(&cohort.sql_file).map_err(|e| Error::Sql {
        location: origin.clone(),
        message: format!("cannot read the SQL file of cohort `{}`: {e}", cohort.name),
    })?;
    let df = lake
        .plan_query(
            &SqlSource {
                origin: &origin,
                text: &text,
            },
            params,
        )
        .await?;
    check_result_schema(&origin, df.schema().as_arrow())?;
    Ok(df)
}

/// A cohort result needs an identifier column (`user_id`, or an alias, or a device id; see
/// [`identity`]) of a string type; other columns are allowed (and ignored).
pub fn check_result_schema(origin: &str, schema: &Schema) -> Result<()> {
    identity::check(schema).map_err(|problem| Error::Sql {
        location: origin.to_string(),
        message: problem,
    })
}

/// Runs the cohort query and returns its members.
pub async fn members(lake: &Lake, cohort: &Cohort, params: &Params) -> Result<Members> {
    let df = plan(lake, cohort, params).await?;
    members_of(
        lake,
        Query::Planned(df),
        &cohort.sql_file.display().to_string(),
        &cohort.identifiers,
    )
    .await
}

/// A cohort query to execute, or one executed whose ids wait in collectors, not sorted yet
/// ([`Query::collect`]).
pub enum Query {
    Planned(DataFrame),
    Collected(Vec<Collector>),
}

impl Query {
    /// Executes a query that [`comes_in_parts`] (its ids are then collected, not sorted).
    pub async fn collect(self, lake: &Lake, origin: &str) -> Result<Query> {
        Ok(Query::Collected(
            self.collectors(lake, origin, &[identity::Kind::UserId])
                .await?,
        ))
    }

    /// The bytes of the ids collected, duplicates included (`None`: not executed yet).
    pub fn bytes(&self) -> Option<usize> {
        match self {
            Query::Planned(_) => None,
            Query::Collected(parts) => Some(parts.iter().map(Collector::bytes).sum()),
        }
    }

    async fn collectors(
        self,
        lake: &Lake,
        origin: &str,
        identifiers: &[identity::Kind],
    ) -> Result<Vec<Collector>> {
        match self {
            Query::Planned(df) => collect(lake, df, origin, identifiers).await,
            Query::Collected(parts) => Ok(parts),
        }
    }
}

/// Executes a planned cohort query on the query runtime and collects its distinct ids.
pub async fn members_of(
    lake: &Lake,
    query: Query,
    origin: &str,
    identifiers: &[identity::Kind],
) -> Result<Members> {
    let parts = query.collectors(lake, origin, identifiers).await?;
    tracing::debug!(origin = %origin, "query read; sorting its ids");
    let contacts = identifiers
        .iter()
        .any(|k| matches!(k, identity::Kind::Email | identity::Kind::Phone));
    let members = on_rayon(move || {
        sort::Collector::finish(parts).map(|sorted| {
            let members = from_sorted(sorted);
            if contacts {
                normalised(members)
            } else {
                members
            }
        })
    })
    .await
    .map_err(|e| Error::query(format!("{origin}: {e}")))?;
    Ok(members)
}

/// Whether the members of a planned cohort query can come in parts ([`members_in_parts`]):
/// when they are its `user_id`s as they are (the query returns no other identifier the cohort
/// uses). Other identifiers make keys that contact normalisation orders again after the sort,
/// or that the destination checks whole before planning (`Destination::accepts`).
pub fn comes_in_parts(df: &DataFrame, identifiers: &[identity::Kind]) -> bool {
    matches!(
        identity::key_expr(df.schema().as_arrow(), identifiers),
        Ok(None)
    )
}

/// Executes a planned cohort query that [`comes_in_parts`] and hands its members to `out` in
/// parts, in byte order, each of at most `part_ids` ids, as the sort finishes them
/// (`sort::Collector::finish_in_parts`); returns the counts (`ids` empty). An error of `out`
/// (the receiver gone) stops the sort.
pub async fn members_in_parts(
    lake: &Lake,
    query: Query,
    origin: &str,
    part_ids: usize,
    out: tokio::sync::mpsc::Sender<StringArray>,
) -> Result<Members> {
    let origin = origin.to_string();
    let parts = query
        .collectors(lake, &origin, &[identity::Kind::UserId])
        .await?;
    tracing::debug!(origin = %origin, "query read; sorting its ids in parts");
    let sorted = tokio::task::spawn_blocking(move || {
        sort::Collector::finish_in_parts(parts, part_ids, |part| {
            out.blocking_send(part)
                .map_err(|_| "the parts' receiver stopped".to_string())
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("sorting the cohort's ids: {e}")))?
    .map_err(|e| Error::query(format!("{origin}: {e}")))?;
    Ok(from_sorted(sorted))
}

/// Executes a planned cohort query and copies its ids into collectors, one per partition.
async fn collect(
    lake: &Lake,
    df: DataFrame,
    origin: &str,
    identifiers: &[identity::Kind],
) -> Result<Vec<Collector>> {
    let origin = origin.to_string();
    // The member of each row: `user_id` itself, or the first identifier present (aliases,
    // device ids) as one tagged string.
    let key = identity::key_expr(df.schema().as_arrow(), identifiers)
        .map_err(|e| Error::query_at(&origin, e))?;
    // `user_id` alone is selected as it is; the collector keys its ids (`identity::external`).
    let external_ids = key.is_none();
    let df = match key {
        None => df.select_columns(&[USER_ID]),
        Some(key) => df.select(vec![key.alias(USER_ID)]),
    }
    .map_err(|e| Error::query_at(&origin, e))?;
    // One collector per partition copies its ids out of each batch as it arrives (the batch is
    // freed at once); a lake sorted by user_id read by one partition arrives sorted, and the
    // sort then only checks it.
    let parts: Vec<Collector> = lake
        .cpu()
        .run(async move {
            let streams = df.execute_stream_partitioned().await?;
            let tasks = streams.into_iter().map(|mut stream| {
                tokio::spawn(async move {
                    let mut ids = if external_ids {
                        Collector::of_external_ids()
                    } else {
                        Collector::new()
                    };
                    while let Some(batch) = stream.next().await {
                        let column: ArrayRef = batch?.column(0).clone();
                        let column = match column.data_type() {
                            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => column,
                            _ => cast(&column, &DataType::Utf8)?,
                        };
                        ids.push(column.as_ref()).map_err(|e| {
                            datafusion::error::DataFusionError::External(Box::new(e))
                        })?;
                    }
                    Ok::<_, datafusion::error::DataFusionError>(ids)
                })
            });
            let mut parts = Vec::new();
            for part in futures::future::join_all(tasks).await {
                parts.push(part.map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!("query task: {e}"))
                })??);
            }
            Ok::<_, datafusion::error::DataFusionError>(parts)
        })
        .await?
        .map_err(|e| match e {
            // The same on every run: bad input (exit 2), not a failure to retry.
            datafusion::error::DataFusionError::External(inner)
                if matches!(
                    inner.downcast_ref::<sort::PushError>(),
                    Some(sort::PushError::TooLong(_))
                ) =>
            {
                Error::Sql {
                    location: origin.clone(),
                    message: format!("{inner}: shorten or leave out such ids in the cohort's SQL"),
                }
            }
            e => lake.query_error(&origin, e),
        })?;
    Ok(parts)
}

/// `members` with their emails and phones normalised and the malformed ones taken out.
fn normalised(members: Members) -> Members {
    let n = contact::normalise(members.ids);
    Members {
        ids: n.ids,
        duplicates_removed: members.duplicates_removed + n.duplicates,
        malformed: n.malformed,
        ..members
    }
}

/// Sorts and de-duplicates ids from many arrays into one compact array (rayon), in byte order,
/// at a cost that does not depend on the order the ids arrive in ([`sort`]).
pub fn distinct_sorted(columns: &[StringArray]) -> Members {
    from_sorted(sort::distinct_sorted_ids(columns))
}

fn from_sorted(s: sort::Sorted) -> Members {
    Members {
        rows: s.rows as u64,
        nulls_skipped: s.nulls as u64,
        empty_skipped: s.empty as u64,
        duplicates_removed: s.duplicates as u64,
        ids: Arc::new(s.ids),
        malformed: Vec::new(),
    }
}

/// One array from string slices, its buffers sized up front (no growing copies of 100+ MB).
pub fn string_array(ids: &[&str]) -> StringArray {
    let bytes = ids.iter().map(|s| s.len()).sum();
    let mut b = StringBuilder::with_capacity(ids.len(), bytes);
    for id in ids {
        b.append_value(id);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_sorted_distinct_and_counted() {
        let a = StringArray::from(vec![Some("u3"), None, Some("u1"), Some("")]);
        let b = StringArray::from(vec![Some("u1"), Some("u2"), None, Some("u3")]);
        let m = distinct_sorted(&[a, b]);
        assert_eq!(
            m.ids.iter().flatten().collect::<Vec<_>>(),
            ["u1", "u2", "u3"]
        );
        assert_eq!(
            (
                m.rows,
                m.nulls_skipped,
                m.empty_skipped,
                m.duplicates_removed
            ),
            (8, 2, 1, 2)
        );
    }

    #[test]
    fn result_schema_needs_a_string_user_id() {
        use datafusion::arrow::datatypes::Field;
        let ok = Schema::new(vec![Field::new("user_id", DataType::Utf8View, true)]);
        assert!(check_result_schema("c.sql", &ok).is_ok());
        let int = Schema::new(vec![Field::new("user_id", DataType::Int64, true)]);
        let e = check_result_schema("c.sql", &int).unwrap_err().to_string();
        assert!(e.contains("c.sql: `user_id` is Int64"), "{e}");
        let none = Schema::new(vec![Field::new("id", DataType::Utf8, true)]);
        let e = check_result_schema("c.sql", &none).unwrap_err().to_string();
        assert!(e.contains("no `user_id` column (it has: id)"), "{e}");
    }
}
