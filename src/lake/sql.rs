//! Read-only SQL: exactly one query per file (DDL, DML, COPY and other statements refused),
//! `$run_date` / `$run_ts` bound from the run's logical time, and errors that point at
//! `file:line:column`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use datafusion::common::{DataFusionError, ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Error, Result};

use super::Lake;

/// The parameters every cohort and analysis query may use.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// The run's logical time (`--at`, default now), UTC.
    pub run_ts: DateTime<Utc>,
    /// The start of the window a report looks at (`report --since`); the epoch when unset.
    pub since: Option<DateTime<Utc>>,
}

impl Params {
    pub const NAMES: [&'static str; 3] = ["run_date", "run_ts", "since"];

    /// The parameters of a run at `run_ts`.
    pub fn at(run_ts: DateTime<Utc>) -> Params {
        Params {
            run_ts,
            since: None,
        }
    }

    /// `$run_date` (DATE, the UTC day of `run_ts`), `$run_ts` and `$since` (TIMESTAMP, UTC).
    fn values(&self) -> HashMap<String, ScalarValue> {
        let epoch_days = (self.run_ts.date_naive() - DateTime::UNIX_EPOCH.date_naive()).num_days();
        HashMap::from([
            (
                "run_date".to_string(),
                ScalarValue::Date32(Some(epoch_days as i32)),
            ),
            (
                "run_ts".to_string(),
                ScalarValue::TimestampMicrosecond(
                    Some(self.run_ts.timestamp_micros()),
                    Some("UTC".into()),
                ),
            ),
            (
                "since".to_string(),
                ScalarValue::TimestampMicrosecond(
                    Some(self.since.map_or(0, |t| t.timestamp_micros())),
                    Some("UTC".into()),
                ),
            ),
        ])
    }
}

/// A SQL text and where it came from (a file path, or `<command line>`), for messages.
pub struct SqlSource<'a> {
    pub origin: &'a str,
    pub text: &'a str,
}

impl Lake {
    /// Plans one read-only query with its parameters bound. Nothing is executed.
    pub async fn plan_query(&self, src: &SqlSource<'_>, params: &Params) -> Result<DataFrame> {
        let statement = parse_single_query(src)?;
        let state = self.context().state();
        let plan = state.statement_to_plan(statement).await.map_err(|e| {
            match self.unreadable_in(&e.to_string()) {
                Some((table, why)) => Error::storage(format!(
                    "{}: reads table `{table}`, which cannot be opened: {why}",
                    src.origin
                )),
                None => sql_error(src, &e),
            }
        })?;
        read_only()
            .verify_plan(&plan)
            .map_err(|e| sql_error(src, &e))?;
        let used = plan.get_parameter_names().map_err(|e| sql_error(src, &e))?;
        if let Some(unknown) = used
            .iter()
            .map(|p| p.trim_start_matches('$'))
            .find(|p| !Params::NAMES.contains(p))
        {
            return Err(Error::Sql {
                location: src.origin.to_string(),
                message: format!(
                    "unknown parameter ${unknown}; available: $run_date (DATE), $run_ts (TIMESTAMP), \
                     $since (TIMESTAMP: `report --since`, else the epoch)"
                ),
            });
        }
        let plan = if used.is_empty() {
            plan
        } else {
            plan.with_param_values(ParamValues::from(params.values()))
                .map_err(|e| sql_error(src, &e))?
        };
        Ok(DataFrame::new(state, plan))
    }
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Parses `src` and accepts only a single query (SELECT, WITH, VALUES, set operations).
fn parse_single_query(src: &SqlSource<'_>) -> Result<Statement> {
    let mut statements = DFParserBuilder::new(src.text)
        .with_dialect(&GenericDialect {})
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| sql_error(src, &e))?;
    let starts = statement_lines(src.text);
    let refuse = |index: usize, stmt: &Statement, why: &str| {
        let line = starts.get(index).copied().unwrap_or(0);
        let mut what: String = stmt
            .to_string()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        if what.len() > 40 {
            what.truncate(40);
        }
        Error::Sql {
            location: if line > 0 {
                format!("{}:{line}", src.origin)
            } else {
                src.origin.to_string()
            },
            message: format!(
                "refused `{what} …`: {why}; cohort and analysis SQL is read-only (one SELECT or WITH query)"
            ),
        }
    };
    match statements.len() {
        0 => {
            return Err(Error::Sql {
                location: src.origin.to_string(),
                message: "no SQL statement found".to_string(),
            });
        }
        1 => {}
        n => {
            let second = &statements[1];
            return Err(refuse(
                1,
                second,
                &format!("found {n} statements, expected exactly one query"),
            ));
        }
    }
    let statement = statements.pop_front().expect("one statement");
    match &statement {
        Statement::Statement(s) if matches!(s.as_ref(), SqlStatement::Query(_)) => Ok(statement),
        Statement::CopyTo(_) => Err(refuse(0, &statement, "COPY writes files")),
        Statement::CreateExternalTable(_) => Err(refuse(0, &statement, "DDL is not allowed")),
        Statement::Statement(s) => {
            let why = match s.as_ref() {
                SqlStatement::Insert(_)
                | SqlStatement::Update { .. }
                | SqlStatement::Delete(_)
                | SqlStatement::Merge { .. }
                | SqlStatement::Truncate { .. } => "DML is not allowed",
                SqlStatement::CreateTable(_)
                | SqlStatement::CreateView { .. }
                | SqlStatement::Drop { .. }
                | SqlStatement::AlterTable { .. } => "DDL is not allowed",
                _ => "only queries are allowed",
            };
            Err(refuse(0, &statement, why))
        }
        _ => Err(refuse(0, &statement, "only queries are allowed")),
    }
}

/// The line on which each statement starts (its first token that is not whitespace or a
/// comment), so a refusal points at the statement, not at the top of the file.
fn statement_lines(text: &str) -> Vec<u64> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize_with_location() else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    let mut at_start = true;
    for t in tokens {
        match t.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => at_start = true,
            _ if at_start => {
                lines.push(t.span.start.line);
                at_start = false;
            }
            _ => {}
        }
    }
    lines
}

/// Turns a DataFusion error into `file:line:column: message` where a position is known.
pub fn sql_error(src: &SqlSource<'_>, e: &DataFusionError) -> Error {
    if let Some(diag) = e.diagnostic()
        && let Some(span) = diag.span
        && span.start.line > 0
    {
        return Error::Sql {
            location: format!("{}:{}:{}", src.origin, span.start.line, span.start.column),
            message: clean_message(&e.to_string()),
        };
    }
    let text = clean_message(&e.to_string());
    if let Some((message, line, column)) = split_parser_position(&text) {
        return Error::Sql {
            location: format!("{}:{line}:{column}", src.origin),
            message,
        };
    }
    Error::Sql {
        location: src.origin.to_string(),
        message: text,
    }
}

/// DataFusion wraps messages in layers (`Error during planning: …`); keep the useful part.
fn clean_message(text: &str) -> String {
    let mut t = text.trim();
    for prefix in [
        "SQL error: ",
        "Error during planning: ",
        "Schema error: ",
        "ParserError(\"",
        "Diagnostic(",
    ] {
        if let Some(rest) = t.strip_prefix(prefix) {
            t = rest;
        }
    }
    t.trim_end_matches("\")").to_string()
}

/// sqlparser ends its messages with `at Line: 3, Column: 7`.
fn split_parser_position(text: &str) -> Option<(String, u64, u64)> {
    let idx = text.rfind(" at Line: ")?;
    let tail = &text[idx + " at Line: ".len()..];
    let (line, rest) = tail.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((
        text[..idx].to_string(),
        line.trim().parse().ok()?,
        column.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_positions_are_extracted() {
        let (m, l, c) =
            split_parser_position("Expected: an SQL statement, found: SELEC at Line: 3, Column: 7")
                .unwrap();
        assert_eq!(
            (m.as_str(), l, c),
            ("Expected: an SQL statement, found: SELEC", 3, 7)
        );
    }

    #[test]
    fn run_date_is_days_since_epoch() {
        let p = Params::at("2026-11-28T10:00:00Z".parse().unwrap());
        let v = p.values();
        // 2026-11-28 is day 20_785 since 1970-01-01.
        assert_eq!(v["run_date"], ScalarValue::Date32(Some(20_785)));
    }
}
