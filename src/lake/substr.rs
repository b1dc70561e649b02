//! `substr` (and `substring`) as DataFusion 55 defines it, with an ASCII fast path it lacks for
//! short prefixes of string views.
//!
//! DataFusion skips its ASCII check when `start + length` is at most 32 (a whole-array check
//! cost more than the walk it saves for short prefixes: apache/datafusion#12444) and then finds
//! every row's substring by walking its characters: in the benchmark cohort of short ids
//! (`substr(user_id, 8, 4)` over 20M rows) that walk was 12% of a dry run's CPU and the call
//! around it another 10% (docs/benchmarks.md). Here each row checks only the bytes up to its
//! substring's end: when they are ASCII, characters are bytes and the bounds are DataFusion's
//! arithmetic on them; otherwise, and for a negative length or an overflowing start (its
//! errors), DataFusion's `get_true_start_end` walks the characters. The results are DataFusion's
//! (a property test compares them). Everything but a string-view column with integer positions
//! is left to DataFusion's function itself.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringViewArray, StringViewBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::functions::unicode::substr::{SubstrFunc, get_true_start_end};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The function to register in place of DataFusion's `substr`.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Substr(SubstrFunc::new()))
}

/// `ctx` with [`udf`] as its `substr` and `substring`: registered by name, and planned first
/// for the SQL syntax (the parser reads `substr(…)` and `substring(… FROM … FOR …)` alike, and
/// DataFusion's own planner for it names its own function, not the registry's).
pub fn install(ctx: SessionContext) -> SessionContext {
    ctx.register_udf(udf());
    let state = ctx.state();
    let mut planners: Vec<Arc<dyn ExprPlanner>> = vec![Arc::new(Planner)];
    planners.extend(state.expr_planners().iter().cloned());
    let state = SessionStateBuilder::new_from_existing(state)
        .with_expr_planners(planners)
        .build();
    SessionContext::new_with_state(state)
}

#[derive(Debug)]
struct Planner;

impl ExprPlanner for Planner {
    fn plan_substring(&self, args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(udf()), args),
        )))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Substr(SubstrFunc);

/// A position argument: one value for every row, or a column of them.
enum Position<'a> {
    Scalar(Option<i64>),
    Array(&'a datafusion::arrow::array::Int64Array),
}

impl Position<'_> {
    fn of(value: &ColumnarValue) -> Option<Position<'_>> {
        match value {
            ColumnarValue::Scalar(ScalarValue::Int64(v)) => Some(Position::Scalar(*v)),
            ColumnarValue::Array(a) if a.data_type() == &DataType::Int64 => {
                Some(Position::Array(a.as_primitive()))
            }
            _ => None,
        }
    }

    fn value(&self, i: usize) -> Option<i64> {
        match self {
            Position::Scalar(v) => *v,
            Position::Array(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

impl ScalarUDFImpl for Substr {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn signature(&self) -> &Signature {
        self.0.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.0.return_type(arg_types)
    }

    fn aliases(&self) -> &[String] {
        self.0.aliases()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.0.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let fast = match args.args.as_slice() {
            [ColumnarValue::Array(s), start, rest @ ..]
                if s.data_type() == &DataType::Utf8View && rest.len() <= 1 =>
            {
                match (Position::of(start), rest.first().map(Position::of)) {
                    (Some(start), None) => Some(views(s.as_string_view(), &start, None)),
                    (Some(start), Some(Some(count))) => {
                        Some(views(s.as_string_view(), &start, Some(&count)))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match fast {
            Some(result) => result.map(ColumnarValue::Array),
            None => self.0.invoke_with_args(args),
        }
    }
}

/// The substrings of a string-view column (those of at most 12 bytes, as in the benchmark's
/// `substr(user_id, 8, 4)`, held in their views, the others copied).
fn views(
    strings: &StringViewArray,
    start: &Position<'_>,
    count: Option<&Position<'_>>,
) -> Result<ArrayRef> {
    let mut out = StringViewBuilder::with_capacity(strings.len());
    for i in 0..strings.len() {
        // A NULL argument makes the row NULL (a position given once as NULL, every row).
        let row = match (
            strings.is_valid(i),
            start.value(i),
            count.map(|c| c.value(i)),
        ) {
            (true, Some(from), None) => Some((from, None)),
            (true, Some(from), Some(Some(c))) => Some((from, Some(c))),
            _ => None,
        };
        let Some((from, count)) = row else {
            out.append_null();
            continue;
        };
        let s = strings.value(i);
        let len = s.len() as i64;
        // 0-based, as DataFusion counts them (a negative length or a start of i64::MIN is
        // DataFusion's error: its function says so).
        let (begin, end) = match (from.checked_sub(1), count) {
            (Some(b), Some(c)) if c >= 0 => (b, b.saturating_add(c)),
            (Some(b), None) => (b, len),
            _ => {
                let (a, b) = get_true_start_end(s, from, count, false)?;
                out.append_value(&s[a..b]);
                continue;
            }
        };
        let (a, b) = (begin.clamp(0, len) as usize, end.clamp(0, len) as usize);
        // The bytes up to the substring's end: when they are ASCII, characters are bytes and
        // these are its bounds; otherwise DataFusion walks the characters.
        let (a, b) = if s.as_bytes()[..b].is_ascii() {
            (a, b)
        } else {
            get_true_start_end(s, from, count, false)?
        };
        out.append_value(&s[a..b]);
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use proptest::prelude::*;

    /// `sql` over a table `t(s, p, n)` of these rows, with DataFusion's `substr` and with ours.
    async fn both(
        rows: &[(Option<String>, Option<i64>, Option<i64>)],
        sql: &str,
    ) -> (Vec<String>, Vec<String>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("p", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringViewArray::from_iter(rows.iter().map(|r| r.0.clone()))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        for ours in [false, true] {
            let mut ctx = SessionContext::new();
            if ours {
                ctx = install(ctx);
            }
            ctx.register_batch("t", batch.clone()).unwrap();
            let result = match ctx.sql(sql).await {
                Ok(df) => df.collect().await,
                Err(e) => Err(e),
            };
            out.push(match result {
                Ok(batches) => datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
                    .lines()
                    .map(str::to_string)
                    .collect(),
                // Errors compare by their message.
                Err(e) => vec![format!("error: {e}")],
            });
        }
        let theirs = out.remove(0);
        (theirs, out.remove(0))
    }

    fn same(rows: &[(Option<String>, Option<i64>, Option<i64>)], sql: &str) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (theirs, ours) = rt.block_on(both(rows, sql));
        assert_eq!(ours, theirs, "{sql}");
    }

    const QUERIES: [&str; 6] = [
        "SELECT substr(s, 8, 4) AS x FROM t",
        "SELECT substr(s, p, n) AS x FROM t",
        "SELECT substr(s, p) AS x FROM t",
        "SELECT substring(s FROM 2 FOR 20) AS x FROM t",
        "SELECT substr(s, -3, 6) AS x FROM t",
        "SELECT substr(s, 1, NULL) AS x FROM t",
    ];

    #[test]
    fn matches_datafusion_on_ascii_unicode_nulls_and_odd_positions() {
        let rows = vec![
            (Some("u0123456789".to_string()), Some(8), Some(4)),
            (
                Some("Hi🌏 there, a longer string".to_string()),
                Some(2),
                Some(3),
            ),
            (
                Some("ab🌏cdefghijklmnopqrstuvw".to_string()),
                Some(-3),
                Some(30),
            ),
            (None, Some(1), Some(1)),
            (Some("abc".to_string()), None, Some(1)),
            (Some("abc".to_string()), Some(1), None),
            (Some(String::new()), Some(0), Some(0)),
            (Some("é".repeat(20)), Some(5), Some(14)),
        ];
        for sql in QUERIES {
            same(&rows, sql);
        }
        // A negative length is DataFusion's error, not a result.
        let (theirs, ours) = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(both(&rows, "SELECT substr(s, 1, -1) AS x FROM t"));
        assert!(ours[0].starts_with("error:"), "{ours:?}");
        assert_eq!(ours, theirs);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn equals_datafusion_on_any_rows(
            rows in proptest::collection::vec(
                (
                    proptest::option::weighted(0.9, "[a-z0-9é🌏]{0,40}"),
                    proptest::option::weighted(0.9, -5i64..45),
                    proptest::option::weighted(0.9, 0i64..45),
                ),
                0..40,
            )
        ) {
            for sql in QUERIES {
                same(&rows, sql);
            }
        }
    }
}
