//! Who a member is: an external id (`user_id`), a user alias (`alias_name` + `alias_label`) or a
//! device id (`device_id`). A cohort's SQL may return any of these columns; per row the first
//! present one, in the order `user_id`, alias, `device_id`, is the member.
//!
//! A member is one string, so snapshots, diffs and plans stay lists of sorted strings keyed by
//! (kind, value): an external id is itself — snapshots written before identifiers existed are
//! read as they are, and nothing is re-sent after upgrading — and the other kinds carry a tag
//! that starts with the byte 0x01, which no external id in practice begins with (one that does
//! and is not a well-formed tag stays an external id): `\x01a\x01NAME\x01LABEL` for an alias,
//! `\x01d\x01ID` for a device. Tagged members sort before every external id.

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::logical_expr::{Expr, cast, ident, lit, when};
use datafusion::scalar::ScalarValue;

/// The identifier columns a cohort's result may hold.
pub const USER_ID: &str = "user_id";
pub const ALIAS_NAME: &str = "alias_name";
pub const ALIAS_LABEL: &str = "alias_label";
pub const DEVICE_ID: &str = "device_id";

const TAG: char = '\u{1}';

/// One member, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id<'a> {
    External(&'a str),
    Alias { name: &'a str, label: &'a str },
    Device(&'a str),
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

/// The first device id among `ids` (sorted: tagged keys sort first), for destinations that
/// cannot identify a user by one.
pub fn first_device(ids: &datafusion::arrow::array::StringArray) -> Option<&str> {
    use datafusion::arrow::array::Array;
    (0..ids.len())
        .map(|i| ids.value(i))
        .take_while(|k| k.as_bytes().first() == Some(&(TAG as u8)))
        .find_map(|k| match parse(k) {
            Id::Device(d) => Some(d),
            _ => None,
        })
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
    for c in [USER_ID, ALIAS_NAME, ALIAS_LABEL, DEVICE_ID] {
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
    if has(USER_ID).is_none() && has(ALIAS_NAME).is_none() && has(DEVICE_ID).is_none() {
        return Err(format!(
            "the result has no `{USER_ID}` column (it has: {}); select the member id AS {USER_ID} \
             (or an alias as {ALIAS_NAME} and {ALIAS_LABEL}, or a device id as {DEVICE_ID})",
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

/// The member of each row as one expression, or `None` when the result has `user_id` alone
/// (then the column itself is the member: no expression, no copy).
pub fn key_expr(schema: &Schema) -> datafusion::error::Result<Option<Expr>> {
    let has = |c: &str| schema.field_with_name(c).is_ok();
    if !has(ALIAS_NAME) && !has(DEVICE_ID) {
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
    let mut arms: Vec<(Expr, Expr)> = Vec::new();
    if has(USER_ID) {
        arms.push((present(USER_ID), text(USER_ID)));
    }
    if has(ALIAS_NAME) {
        arms.push((
            present(ALIAS_NAME).and(present(ALIAS_LABEL)),
            tagged("a", vec![text(ALIAS_NAME), text(ALIAS_LABEL)]),
        ));
    }
    if has(DEVICE_ID) {
        arms.push((present(DEVICE_ID), tagged("d", vec![text(DEVICE_ID)])));
    }
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
