//! The demo's analyses: push-to-feature, and the lift against holdouts, which must recover the
//! effect the demo planted.

use super::demo_at;
use crate::config::Config;
use crate::emulator::currents::Lift;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::sql::{Params, SqlSource};

/// `lift.sql`'s result, and whether it recovers a planted lift.
pub struct LiftTable {
    pub table: String,
    /// (campaign, held-out share that used the feature, lift, 95% interval), in points.
    pub rows: Vec<(String, f64, f64, f64, f64)>,
}

pub struct Recovered {
    pub all: bool,
    pub lines: Vec<String>,
}

impl LiftTable {
    fn from_batches(batches: &[datafusion::arrow::array::RecordBatch]) -> Result<LiftTable> {
        use datafusion::arrow::array::{AsArray, Float64Array};
        use datafusion::arrow::compute::cast;
        use datafusion::arrow::datatypes::DataType;
        let table = crate::query::render(batches, crate::query::Format::Table)?;
        let mut rows = Vec::new();
        for b in batches {
            let col = |name: &str| -> Result<Float64Array> {
                let c = b.column_by_name(name).ok_or_else(|| {
                    Error::Internal(format!("lift.sql returns no `{name}` column"))
                })?;
                let c = cast(c, &DataType::Float64).map_err(|e| Error::Internal(e.to_string()))?;
                Ok(c.as_primitive().clone())
            };
            let campaign = cast(
                b.column_by_name("campaign_id")
                    .ok_or_else(|| Error::Internal("lift.sql returns no `campaign_id`".into()))?,
                &DataType::Utf8,
            )
            .map_err(|e| Error::Internal(e.to_string()))?;
            let campaign = campaign.as_string::<i32>();
            let (base, lift, lo, hi) = (
                col("held_out_pct")?,
                col("lift_points")?,
                col("ci95_low")?,
                col("ci95_high")?,
            );
            for i in 0..b.num_rows() {
                rows.push((
                    campaign.value(i).to_string(),
                    base.value(i),
                    lift.value(i),
                    lo.value(i),
                    hi.value(i),
                ));
            }
        }
        Ok(LiftTable {
            table: String::from_utf8_lossy(&table).into_owned(),
            rows,
        })
    }

    /// Does every campaign's 95% interval hold the planted lift (net of the held-out base
    /// rate: a member who would have used the feature anyway counts once)?
    pub fn recovered(&self, lift: &Lift) -> Recovered {
        let mut lines = Vec::new();
        let mut all = !self.rows.is_empty();
        for (campaign, base, measured, lo, hi) in &self.rows {
            let planted = 100.0 * lift.expected() * (1.0 - base / 100.0);
            let ok = *lo <= planted && planted <= *hi;
            all &= ok;
            lines.push(format!(
                "{campaign}: planted +{planted:.2} points ({:.0}% open × {:.0}% + {:.0}% × {:.0}%, \
                 net of the {base:.2}% base rate), measured {measured:+.2} [{lo:+.2}, {hi:+.2}]: {}",
                100.0 * crate::emulator::currents::OPEN_RATE,
                100.0 * lift.after_open,
                100.0 * (1.0 - crate::emulator::currents::OPEN_RATE),
                100.0 * lift.after_send,
                if ok { "recovered" } else { "NOT recovered" }
            ));
        }
        Recovered { all, lines }
    }
}

/// Runs a query file of `queries/analysis/` as of the demo's time.
async fn analysis(
    config: &Config,
    lake: &Lake,
    name: &str,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    let file = config.base_dir().join("queries/analysis").join(name);
    let text = crate::query::read_sql_file(&file)?;
    let origin = file.display().to_string();
    let df = lake
        .plan_query(
            &SqlSource {
                origin: &origin,
                text: &text,
            },
            &Params::at(demo_at()),
        )
        .await?;
    lake.collect(df, &origin).await
}

/// The push-to-feature table and the lift.
pub(super) async fn analyses(config: &Config, lake: &Lake) -> Result<(String, LiftTable)> {
    let push = analysis(config, lake, "push_open_to_feature.sql").await?;
    let push = crate::query::render(&push, crate::query::Format::Table)?;
    let lift = LiftTable::from_batches(&analysis(config, lake, "lift.sql").await?)?;
    Ok((String::from_utf8_lossy(&push).into_owned(), lift))
}
