//! Who a member is: an external id (`user_id`), a user alias (`alias_name` + `alias_label`), a
//! device id (`device_id`) or a Braze id (`braze_id`). A cohort's SQL may return any of these
//! columns; per row the first present one, in the cohort's priority (`cohorts.<name>.identifiers`,
//! default `user_id`, alias, `device_id`, `braze_id`), is the member.
//!
//! A member is one string, so snapshots, diffs and plans stay lists of sorted strings keyed by
//! (kind, value): an external id is itself — snapshots written before identifiers existed are
//! read as they are, and nothing is re-sent after upgrading — and the other kinds carry a tag
//! that starts with the byte 0x01, which no external id in practice begins with (one that does
//! and is not a well-formed tag stays an external id): `\x01a\x01NAME\x01LABEL` for an alias,
//! `\x01d\x01ID` for a device, `\x01b\x01ID` for a Braze id. Tagged members sort before every
//! external id.

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::logical_expr::{Expr, cast, ident, lit, when};
use datafusion::scalar::ScalarValue;

/// The identifier columns a cohort's result may hold.
pub const USER_ID: &str = "user_id";
pub const ALIAS_NAME: &str = "alias_name";
pub const ALIAS_LABEL: &str = "alias_label";
pub const DEVICE_ID: &str = "device_id";
pub const BRAZE_ID: &str = "braze_id";

/// A kind of identifier, as `cohorts.<name>.identifiers` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    UserId,
    Alias,
    DeviceId,
    BrazeId,
}

/// The default priority.
pub const DEFAULT_PRIORITY: [Kind; 4] = [Kind::UserId, Kind::Alias, Kind::DeviceId, Kind::BrazeId];

const TAG: char = '\u{1}';

/// One member, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id<'a> {
    External(&'a str),
    Alias { name: &'a str, label: &'a str },
    Device(&'a str),
    Braze(&'a str),
}

/// The member a key names.
pub fn parse(key: &str) -> Id<'_> {
    let Some(rest) = key.strip_prefix(TAG) else {
        return Id::External(key);
    };
    let mut parts = rest.splitn(3, TAG);
    match (parts.next(), parts.next(), parts.next()) {
        (Some("a"), Some(name), Some(label)) if !name.is_empty() && !label.is_empty() => {
            Id::Alias { name, label }
        }
        (Some("d"), Some(id), None) if !id.is_empty() => Id::Device(id),
        (Some("b"), Some(id), None) if !id.is_empty() => Id::Braze(id),
        _ => Id::External(key),
    }
}

/// The key of an alias.
pub fn alias(name: &str, label: &str) -> String {
    format!("{TAG}a{TAG}{name}{TAG}{label}")
}

/// The key of a device id.
pub fn device(id: &str) -> String {
    format!("{TAG}d{TAG}{id}")
}

/// The key of a Braze id.
pub fn braze(id: &str) -> String {
    format!("{TAG}b{TAG}{id}")
}

/// Whether any of `ids[range]` is not an external id (one byte compared per id).
pub fn any_tagged(
    ids: &datafusion::arrow::array::StringArray,
    range: std::ops::Range<usize>,
) -> bool {
    range
        .into_iter()
        .any(|i| ids.value(i).as_bytes().first() == Some(&(TAG as u8)) && tagged(ids.value(i)))
}

fn tagged(key: &str) -> bool {
    !matches!(parse(key), Id::External(_))
}

/// The first member among `ids` (sorted: tagged keys sort first) that `unfit` picks, for
/// destinations that cannot identify a user by some kinds.
pub fn first_tagged(
    ids: &datafusion::arrow::array::StringArray,
    unfit: impl Fn(Id<'_>) -> bool,
) -> Option<&str> {
    use datafusion::arrow::array::Array;
    (0..ids.len())
        .map(|i| ids.value(i))
        .take_while(|k| k.as_bytes().first() == Some(&(TAG as u8)))
        .find(|k| unfit(parse(k)))
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

/// The identifier columns of `schema`: a problem when there is none, or one is not a string.
pub fn check(schema: &Schema) -> Result<(), String> {
    let has = |c: &str| schema.field_with_name(c).ok();
    for c in [USER_ID, ALIAS_NAME, ALIAS_LABEL, DEVICE_ID, BRAZE_ID] {
        if let Some(f) = has(c)
            && !is_string(f.data_type())
        {
            return Err(format!(
                "`{c}` is {} but must be a string; use CAST({c} AS VARCHAR)",
                f.data_type()
            ));
        }
    }
    if has(ALIAS_NAME).is_some() != has(ALIAS_LABEL).is_some() {
        return Err(format!(
            "an alias needs both `{ALIAS_NAME}` and `{ALIAS_LABEL}`"
        ));
    }
    if has(USER_ID).is_none()
        && has(ALIAS_NAME).is_none()
        && has(DEVICE_ID).is_none()
        && has(BRAZE_ID).is_none()
    {
        return Err(format!(
            "the result has no `{USER_ID}` column (it has: {}); select the member id AS {USER_ID} \
             (or an alias as {ALIAS_NAME} and {ALIAS_LABEL}, a device id as {DEVICE_ID}, a Braze \
             id as {BRAZE_ID})",
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// The member of each row as one expression, the kinds tried in `priority` order (kinds the
/// result has no column for are skipped), or `None` when `user_id` is the only identifier used
/// (then the column itself is the member: no expression, no copy).
pub fn key_expr(schema: &Schema, priority: &[Kind]) -> datafusion::error::Result<Option<Expr>> {
    let has = |c: &str| schema.field_with_name(c).is_ok();
    let used: Vec<Kind> = priority
        .iter()
        .copied()
        .filter(|k| match k {
            Kind::UserId => has(USER_ID),
            Kind::Alias => has(ALIAS_NAME),
            Kind::DeviceId => has(DEVICE_ID),
            Kind::BrazeId => has(BRAZE_ID),
        })
        .collect();
    if used.is_empty() {
        return Err(datafusion::error::DataFusionError::Plan(format!(
            "the result has none of the identifiers the cohort uses ({priority:?})"
        )));
    }
    if used == [Kind::UserId] {
        return Ok(None);
    }
    let text = |c: &str| cast(ident(c), DataType::Utf8);
    let present = |c: &str| text(c).is_not_null().and(text(c).not_eq(lit("")));
    let tagged = |tag: &str, parts: Vec<Expr>| {
        let mut args = vec![lit(format!("{TAG}{tag}{TAG}"))];
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                args.push(lit(TAG.to_string()));
            }
            args.push(p);
        }
        datafusion::functions::string::expr_fn::concat(args)
    };
    let arms: Vec<(Expr, Expr)> = used
        .into_iter()
        .map(|k| match k {
            Kind::UserId => (present(USER_ID), text(USER_ID)),
            Kind::Alias => (
                present(ALIAS_NAME).and(present(ALIAS_LABEL)),
                tagged("a", vec![text(ALIAS_NAME), text(ALIAS_LABEL)]),
            ),
            Kind::DeviceId => (present(DEVICE_ID), tagged("d", vec![text(DEVICE_ID)])),
            Kind::BrazeId => (present(BRAZE_ID), tagged("b", vec![text(BRAZE_ID)])),
        })
        .collect();
    let mut arms = arms.into_iter();
    let (cond, value) = arms.next().expect("at least one identifier");
    let mut case = when(cond, value);
    for (cond, value) in arms {
        case = case.when(cond, value);
    }
    case.otherwise(lit(ScalarValue::Utf8(None))).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_plain_ids_stay_themselves() {
        assert_eq!(parse("u1"), Id::External("u1"));
        assert_eq!(
            parse(&alias("n", "crm")),
            Id::Alias {
                name: "n",
                label: "crm"
            }
        );
        assert_eq!(parse(&device("d-1")), Id::Device("d-1"));
        assert_eq!(parse(&braze("b-1")), Id::Braze("b-1"));
        // A malformed tag is an external id, not a guess.
        for odd in [
            "\u{1}",
            "\u{1}x\u{1}y",
            "\u{1}a\u{1}only-name",
            "\u{1}d\u{1}",
        ] {
            assert_eq!(parse(odd), Id::External(odd));
        }
        // Tagged keys sort before external ids.
        let mut keys = ["0".to_string(), device("z"), alias("a", "b"), "A".into()];
        keys.sort();
        assert!(matches!(parse(&keys[0]), Id::Alias { .. }));
        assert!(matches!(parse(&keys[1]), Id::Device(_)));
    }
}
