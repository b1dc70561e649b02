//! Who a member is: an external id (`user_id`), a user alias (`alias_name` + `alias_label`), a
//! device id (`device_id`), a Braze id (`braze_id`), an email address (`email`) or a phone
//! number (`phone`). A cohort's SQL may return any of these columns; per row the first present
//! one, in the cohort's priority (`cohorts.<name>.identifiers`, default `user_id`, alias,
//! `device_id`, `braze_id`; `email` and `phone` only when named), is the member. Emails and
//! phones are normalised once the members are known ([`contact`](super::contact)).
//!
//! A member is one string (its *key*), so snapshots, diffs and plans stay lists of sorted
//! strings keyed by (kind, value). The encoding is injective — every (kind, value) pair has
//! exactly one key and [`parse`] gives it back, whatever bytes the value holds — and a key that
//! does not start with the byte 0x01 is an external id, itself:
//!
//! | member | key |
//! | --- | --- |
//! | external id `V`, not starting with 0x01 | `V` |
//! | external id `V` starting with 0x01 | `\x01e\x01V` |
//! | alias `NAME`, `LABEL`, `NAME` without 0x01 | `\x01a\x01NAME\x01LABEL` |
//! | alias `NAME`, `LABEL`, `NAME` with a 0x01 | `\x01A\x01<bytes of NAME, decimal>\x01NAME LABEL` |
//! | device id `ID` | `\x01d\x01ID` |
//! | Braze id `ID` | `\x01b\x01ID` |
//! | email `E` | `\x01M\x01E` |
//! | phone `P` | `\x01P\x01P` |
//!
//! Values are never empty (an empty identifier is no identifier). A label, a device id and a
//! Braze id are everything after their prefix, so they may hold 0x01 too. Any other key starting
//! with 0x01 is *malformed*: this module never builds one, and a state list holding one is
//! refused as damaged when read (`state::ids`) — it never becomes some other identity.
//!
//! Keys of releases before this encoding ("key format 1") are read unchanged where they were
//! unambiguous: external ids not starting with 0x01, `\x01a\x01NAME\x01LABEL`, and device and
//! Braze ids without 0x01. Those releases also stored an external id starting with 0x01 that was
//! not such a tag as itself (and one that *was* such a tag was delivered as the tag's identity:
//! the bug this encoding fixes; the first sync after upgrading removes that identity, unless it
//! is a member in its own right, and adds the user id). An id list without the key-format mark (`state::ids`) is read
//! through [`from_format_1`], which gives each such key its current form; a list holding keys a
//! format-1 reader would misread ([`needs_format_2`]) carries the mark, and the state pointing
//! at it a state format that release refuses.
//!
//! Keys starting with 0x01 are one run of a sorted list (found by binary search); in it the
//! kinds other than external ids sort before `\x01e` (`A` < `M` < `P` < `a` < `b` < `d` < `e`).

use std::borrow::Cow;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::functions::string::expr_fn::{concat, octet_length, starts_with};
use datafusion::functions::unicode::expr_fn::strpos;
use datafusion::logical_expr::{Expr, cast, ident, lit, when};
use datafusion::scalar::ScalarValue;

/// The identifier columns a cohort's result may hold.
pub const USER_ID: &str = "user_id";
pub const ALIAS_NAME: &str = "alias_name";
pub const ALIAS_LABEL: &str = "alias_label";
pub const DEVICE_ID: &str = "device_id";
pub const BRAZE_ID: &str = "braze_id";
pub const EMAIL: &str = "email";
pub const PHONE: &str = "phone";

/// A kind of identifier, as `cohorts.<name>.identifiers` names it (parsed by the config).
pub use crate::config::IdentifierKind as Kind;

/// The default priority.
pub use crate::config::DEFAULT_IDENTIFIERS as DEFAULT_PRIORITY;

const TAG: char = '\u{1}';
const TAG_BYTE: u8 = 1;
/// The prefix of an external id that starts with 0x01.
pub const EXTERNAL_PREFIX: &str = "\u{1}e\u{1}";

/// One member, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id<'a> {
    External(&'a str),
    Alias {
        name: &'a str,
        label: &'a str,
    },
    Device(&'a str),
    Braze(&'a str),
    /// An email address (normalised once the members are known: `contact`).
    Email(&'a str),
    /// A phone number (E.164 once the members are known: `contact`).
    Phone(&'a str),
    /// A key starting with 0x01 that is no key of this encoding (never built here; a state list
    /// holding one is refused when read). Were one sent, it would name no user, never another.
    Malformed(&'a str),
}

/// The member a key names.
pub fn parse(key: &str) -> Id<'_> {
    let Some(rest) = key.strip_prefix(TAG) else {
        return Id::External(key);
    };
    let Some((tag, value)) = rest.split_once(TAG) else {
        return Id::Malformed(key);
    };
    let parsed = match tag {
        // Only ids that need it are escaped: `\x01e\x01V` for a `V` without 0x01 first would
        // be a second key of `V`.
        "e" if value.starts_with(TAG) => Some(Id::External(value)),
        "a" => match value.split_once(TAG) {
            Some((name, label)) if !name.is_empty() && !label.is_empty() => {
                Some(Id::Alias { name, label })
            }
            _ => None,
        },
        "A" => escaped_alias(value),
        "d" if !value.is_empty() => Some(Id::Device(value)),
        "b" if !value.is_empty() => Some(Id::Braze(value)),
        "M" if !value.is_empty() => Some(Id::Email(value)),
        "P" if !value.is_empty() => Some(Id::Phone(value)),
        _ => None,
    };
    parsed.unwrap_or(Id::Malformed(key))
}

/// `<len>\x01NAME LABEL` of an alias whose name holds 0x01: `len` in canonical decimal, the
/// name `len` bytes holding 0x01 (else its key is the `a` form), the label not empty.
fn escaped_alias(value: &str) -> Option<Id<'_>> {
    let (len, rest) = value.split_once(TAG)?;
    if len.is_empty() || len.starts_with('0') || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: usize = len.parse().ok()?;
    if len >= rest.len() || !rest.is_char_boundary(len) {
        return None;
    }
    let (name, label) = rest.split_at(len);
    name.contains(TAG).then_some(Id::Alias { name, label })
}

/// The key of an external id.
pub fn external(id: &str) -> Cow<'_, str> {
    if id.starts_with(TAG) {
        Cow::Owned(format!("{EXTERNAL_PREFIX}{id}"))
    } else {
        Cow::Borrowed(id)
    }
}

/// The key of an alias.
pub fn alias(name: &str, label: &str) -> String {
    if name.contains(TAG) {
        format!("{TAG}A{TAG}{}{TAG}{name}{label}", name.len())
    } else {
        format!("{TAG}a{TAG}{name}{TAG}{label}")
    }
}

/// The key of a device id.
pub fn device(id: &str) -> String {
    format!("{TAG}d{TAG}{id}")
}

/// The key of a Braze id.
pub fn braze(id: &str) -> String {
    format!("{TAG}b{TAG}{id}")
}

/// The key of an email address.
pub fn email(value: &str) -> String {
    format!("{TAG}M{TAG}{value}")
}

/// The key of a phone number.
pub fn phone(value: &str) -> String {
    format!("{TAG}P{TAG}{value}")
}

/// The keys of emails and phones (of one run of a sorted list: `\x01M` and `\x01P` sort
/// together).
pub const CONTACT_TAGS: (&str, &str) = ("\u{1}M", "\u{1}Q");

/// The key of a member (a malformed one is its own key).
pub fn key(id: Id<'_>) -> String {
    match id {
        Id::External(v) => external(v).into_owned(),
        Id::Alias { name, label } => alias(name, label),
        Id::Device(v) => device(v),
        Id::Braze(v) => braze(v),
        Id::Email(v) => email(v),
        Id::Phone(v) => phone(v),
        Id::Malformed(k) => k.to_string(),
    }
}

/// Whether a key is not simply an external id that is itself (it starts with 0x01).
fn tagged(key: &str) -> bool {
    key.as_bytes().first() == Some(&TAG_BYTE)
}

/// The keys of `ids` (sorted, as every list of members is) that start with 0x01: one run of
/// them, found by binary search.
fn tagged_keys(ids: &StringArray) -> impl Iterator<Item = &str> {
    let first_at_least = |b: u8| {
        let (mut lo, mut hi) = (0, ids.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if ids.value(mid).as_bytes() < [b].as_slice() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    (first_at_least(TAG_BYTE)..first_at_least(TAG_BYTE + 1)).map(|i| ids.value(i))
}

/// Whether any of `ids[range]` needs decoding (a key starting with 0x01): a batch without one
/// is a list of external ids as they are.
pub fn any_tagged(ids: &StringArray, range: std::ops::Range<usize>) -> bool {
    range.into_iter().any(|i| tagged(ids.value(i)))
}

/// The first member among `ids` that `unfit` picks, among the kinds other than plain external
/// ids, for destinations that cannot identify a user by some kinds.
pub fn first_tagged(ids: &StringArray, unfit: impl Fn(Id<'_>) -> bool) -> Option<&str> {
    tagged_keys(ids).find(|k| unfit(parse(k)))
}

/// Whether `ids` holds any member other than an external id.
pub fn has_other_kinds(ids: &StringArray) -> bool {
    first_tagged(ids, |id| !matches!(id, Id::External(_))).is_some()
}

/// The first malformed key of `ids`.
pub fn first_malformed(ids: &StringArray) -> Option<&str> {
    first_tagged(ids, |id| matches!(id, Id::Malformed(_)))
}

/// `ids`, all external ids, as their values (the escaped ones unescaped); `None` when every
/// key already is its value.
pub fn external_values(ids: &StringArray) -> Option<StringArray> {
    tagged_keys(ids).next()?;
    Some(
        ids.iter()
            .map(|k| {
                k.map(|k| match parse(k) {
                    Id::External(v) => v,
                    _ => k,
                })
            })
            .collect(),
    )
}

/// How releases before this encoding read a key (`None`: as an external id, itself).
fn format_1_tag(key: &str) -> Option<()> {
    let rest = key.strip_prefix(TAG)?;
    let mut parts = rest.splitn(3, TAG);
    match (parts.next(), parts.next(), parts.next()) {
        (Some("a"), Some(name), Some(label)) if !name.is_empty() && !label.is_empty() => Some(()),
        (Some("d" | "b"), Some(id), None) if !id.is_empty() => Some(()),
        _ => None,
    }
}

/// Whether a release before this encoding would read a key of `ids` as another member than
/// it is (it starts with 0x01 and is not a tag of that release's): such a list is marked, and
/// the state naming it gets a format that release refuses.
pub fn needs_format_2(ids: &StringArray) -> bool {
    tagged_keys(ids).any(|k| format_1_tag(k).is_none())
}

/// A list of keys written before this encoding, in it: each key that release read as an
/// external id, itself, although it starts with 0x01, becomes [`external`]'s key of it, and the
/// list is sorted again. `None` when nothing changes (no such key).
pub fn from_format_1(ids: &StringArray) -> Option<StringArray> {
    if !needs_format_2(ids) {
        return None;
    }
    let mut keys: Vec<Cow<'_, str>> = ids
        .iter()
        .flatten()
        .map(|k| {
            if tagged(k) && format_1_tag(k).is_none() {
                external(k)
            } else {
                Cow::Borrowed(k)
            }
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Some(keys.iter().map(|k| Some(k.as_ref())).collect())
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
    for c in [
        USER_ID,
        ALIAS_NAME,
        ALIAS_LABEL,
        DEVICE_ID,
        BRAZE_ID,
        EMAIL,
        PHONE,
    ] {
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
        && has(EMAIL).is_none()
        && has(PHONE).is_none()
    {
        return Err(format!(
            "the result has no `{USER_ID}` column (it has: {}); select the member id AS {USER_ID} \
             (or an alias as {ALIAS_NAME} and {ALIAS_LABEL}, a device id as {DEVICE_ID}, a Braze \
             id as {BRAZE_ID}, an email as {EMAIL}, a phone number as {PHONE})",
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
/// result has no column for are skipped), or `None` when `user_id` is the only identifier used:
/// then the column itself is the member (no expression, no copy) and the collector escapes the
/// ids starting with 0x01 as [`external`] does (`sort::Collector::of_external_ids`).
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
            Kind::Email => has(EMAIL),
            Kind::Phone => has(PHONE),
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
    let tag = |t: &str| lit(format!("{TAG}{t}{TAG}"));
    let starts_tagged = |e: Expr| starts_with(e, lit(TAG.to_string()));
    let arms: Vec<(Expr, Expr)> = used
        .into_iter()
        .map(|k| -> datafusion::error::Result<(Expr, Expr)> {
            Ok(match k {
                // [`external`]: `\x01e\x01` before an id starting with 0x01.
                Kind::UserId => (
                    present(USER_ID),
                    concat(vec![
                        when(starts_tagged(text(USER_ID)), lit(EXTERNAL_PREFIX))
                            .otherwise(lit(""))?,
                        text(USER_ID),
                    ]),
                ),
                // [`alias`]: the `A` form, with the name's length, when the name holds 0x01.
                Kind::Alias => (
                    present(ALIAS_NAME).and(present(ALIAS_LABEL)),
                    when(
                        strpos(text(ALIAS_NAME), lit(TAG.to_string())).gt(lit(0)),
                        concat(vec![
                            tag("A"),
                            cast(octet_length(text(ALIAS_NAME)), DataType::Utf8),
                            lit(TAG.to_string()),
                            text(ALIAS_NAME),
                            text(ALIAS_LABEL),
                        ]),
                    )
                    .otherwise(concat(vec![
                        tag("a"),
                        text(ALIAS_NAME),
                        lit(TAG.to_string()),
                        text(ALIAS_LABEL),
                    ]))?,
                ),
                Kind::DeviceId => (present(DEVICE_ID), concat(vec![tag("d"), text(DEVICE_ID)])),
                Kind::BrazeId => (present(BRAZE_ID), concat(vec![tag("b"), text(BRAZE_ID)])),
                // As found: `contact` normalises (and refuses) them once the members are known.
                Kind::Email => (present(EMAIL), concat(vec![tag("M"), text(EMAIL)])),
                Kind::Phone => (present(PHONE), concat(vec![tag("P"), text(PHONE)])),
            })
        })
        .collect::<datafusion::error::Result<_>>()?;
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
    use proptest::prelude::*;

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
        // Keys of earlier releases are unchanged where they were unambiguous.
        assert_eq!(alias("n", "crm"), "\u{1}a\u{1}n\u{1}crm");
        assert_eq!(device("d-1"), "\u{1}d\u{1}d-1");
        assert_eq!(braze("b-1"), "\u{1}b\u{1}b-1");
        assert_eq!(external("u1"), "u1");
        // A malformed key is no member, not a guess.
        for odd in [
            "\u{1}",
            "\u{1}x\u{1}y",
            "\u{1}a\u{1}only-name",
            "\u{1}d\u{1}",
            "\u{1}e\u{1}no-tag-first",
            "\u{1}A\u{1}1\u{1}ab",
            "\u{1}A\u{1}01\u{1}\u{1}ab",
            "\u{1}A\u{1}9\u{1}\u{1}ab",
        ] {
            assert_eq!(parse(odd), Id::Malformed(odd));
        }
    }

    #[test]
    fn ids_that_look_like_tags_are_their_own_kind() {
        let victim = "\u{1}d\u{1}victim-device";
        assert_eq!(parse(&external(victim)), Id::External(victim));
        assert_ne!(external(victim), device("victim-device"));
        let nm = "\u{1}a\u{1}nm\u{1}lbl";
        assert_eq!(parse(&external(nm)), Id::External(nm));
        assert_eq!(parse(&device("a\u{1}b")), Id::Device("a\u{1}b"));
        assert_eq!(
            parse(&alias("n\u{1}m", "l\u{1}b")),
            Id::Alias {
                name: "n\u{1}m",
                label: "l\u{1}b"
            }
        );
    }

    #[test]
    fn other_kinds_sort_before_escaped_and_plain_external_ids() {
        let mut keys = [
            "0".to_string(),
            external("\u{1}x").into_owned(),
            device("z"),
            alias("a", "b"),
            alias("a\u{1}", "b"),
            braze("q"),
        ];
        keys.sort();
        let kinds: Vec<_> = keys.iter().map(|k| parse(k)).collect();
        assert!(matches!(kinds[4], Id::External(_)) && matches!(kinds[5], Id::External(_)));
        let ids = StringArray::from(keys.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(has_other_kinds(&ids));
        assert_eq!(
            first_tagged(&ids, |id| matches!(id, Id::Braze(_))),
            Some("\u{1}b\u{1}q")
        );
        assert!(first_malformed(&ids).is_none());
        // An id starting with a NUL sorts before every tagged key and hides none of them.
        let ids = StringArray::from(vec!["\u{0}x", "\u{1}d\u{1}z", "u"]);
        assert_eq!(
            first_tagged(&ids, |id| matches!(id, Id::Device(_))),
            Some("\u{1}d\u{1}z")
        );
    }

    #[test]
    fn lists_of_earlier_releases_read_as_they_meant() {
        // That release read these as external ids, themselves.
        let old = [
            "\u{1}d\u{1}a\u{1}b",
            "\u{1}e\u{1}x",
            "\u{1}x",
            "\u{1}a\u{1}n\u{1}l",
            "u",
        ];
        let mut sorted = old.to_vec();
        sorted.sort();
        let ids = StringArray::from(sorted);
        let now = from_format_1(&ids).expect("changed");
        let read: Vec<Id<'_>> = now.iter().flatten().map(parse).collect();
        for k in ["\u{1}d\u{1}a\u{1}b", "\u{1}e\u{1}x", "\u{1}x", "u"] {
            assert!(read.contains(&Id::External(k)), "{k:?}: {read:?}");
        }
        assert!(read.contains(&Id::Alias {
            name: "n",
            label: "l"
        }));
        let keys: Vec<&str> = now.iter().flatten().collect();
        assert!(keys.is_sorted());
        assert!(needs_format_2(&now));
        assert!(from_format_1(&StringArray::from(vec!["\u{1}d\u{1}x", "u"])).is_none());
        assert!(!needs_format_2(&StringArray::from(vec![
            "\u{1}a\u{1}n\u{1}l\u{1}x",
            "\u{1}d\u{1}x",
            "u"
        ])));
    }

    /// Any member: values of arbitrary characters, 0x01 and other control characters often.
    fn member() -> impl Strategy<Value = (u8, String, String)> {
        let value = || {
            prop_oneof![
                3 => "[\u{1}ade\u{0}\n:]{1,8}",
                1 => any::<String>().prop_filter("not empty", |s| !s.is_empty()),
                1 => "\u{1}[aAbde]\u{1}[\u{1}a0-9]{1,6}",
            ]
        };
        (0u8..4, value(), value())
    }

    fn encode(m: &(u8, String, String)) -> (String, Id<'_>) {
        let (kind, a, b) = m;
        let id = match *kind {
            0 => Id::External(a),
            1 => Id::Alias { name: a, label: b },
            2 => Id::Device(a),
            _ => Id::Braze(a),
        };
        (key(id), id)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn every_member_round_trips_and_keys_are_distinct(
            members in proptest::collection::vec(member(), 1..20),
        ) {
            let mut seen = std::collections::HashMap::new();
            for m in &members {
                let (key, id) = encode(m);
                prop_assert_eq!(parse(&key), id);
                prop_assert!(format_1_tag(&key).is_none() || parse(&key) == id);
                if let Some(other) = seen.insert(key.clone(), id) {
                    prop_assert_eq!(other, id, "two members, one key {:?}", key);
                }
            }
        }

        #[test]
        fn any_key_parses_to_the_member_whose_key_it_is(key in any::<String>(), tail in "[\u{1}a-e0-9A]{0,8}") {
            for k in [key.clone(), format!("\u{1}{tail}"), format!("\u{1}{key}")] {
                match parse(&k) {
                    Id::Malformed(m) => prop_assert_eq!(m, k.as_str()),
                    id => prop_assert_eq!(super::key(id), k.clone()),
                }
            }
        }
    }

    /// One row: `user_id`, `alias_name`, `alias_label`, `device_id`, `braze_id`.
    type Row<'a> = [Option<&'a str>; 5];

    /// The keys `key_expr` makes of `rows` on DataFusion.
    fn through_sql(rows: &[Row<'_>], priority: &[Kind]) -> Vec<Option<String>> {
        use datafusion::arrow::array::{ArrayRef, AsArray};
        use datafusion::arrow::record_batch::RecordBatch;
        use datafusion::prelude::SessionContext;
        let columns = [USER_ID, ALIAS_NAME, ALIAS_LABEL, DEVICE_ID, BRAZE_ID]
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let values: StringArray = rows.iter().map(|r| r[i]).collect();
                (name, std::sync::Arc::new(values) as ArrayRef)
            });
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let ctx = SessionContext::new();
            let df = ctx.read_batch(batch).unwrap();
            let expr = key_expr(df.schema().as_arrow(), priority)
                .unwrap()
                .expect("an expression");
            let out = df
                .select(vec![expr.alias("k")])
                .unwrap()
                .collect()
                .await
                .unwrap();
            out.iter()
                .flat_map(|b| {
                    let c = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
                    c.as_string::<i32>()
                        .iter()
                        .map(|v| v.map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_sql_expression_builds_the_same_keys(
            members in proptest::collection::vec(member(), 1..30),
            shuffle in any::<bool>(),
        ) {
            // One row per member, its kind's columns filled (and, half the time, the kinds
            // after it in priority too: the first present one wins).
            let rows: Vec<Row<'_>> = members.iter().map(|(kind, a, b)| {
                let (a, b) = (Some(a.as_str()), Some(b.as_str()));
                let other = if shuffle { Some("later") } else { None };
                match kind {
                    0 => [a, other, other, other, other],
                    1 => [None, a, b, other, other],
                    2 => [None, None, None, a, other],
                    _ => [None, None, None, None, a],
                }
            }).collect();
            let got = through_sql(&rows, &DEFAULT_PRIORITY);
            let want: Vec<Option<String>> = members.iter().map(|m| Some(encode(m).0)).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn the_sql_expression_skips_rows_without_an_identifier() {
        let got = through_sql(
            &[
                [None, None, None, None, None],
                [Some(""), Some("n"), None, Some(""), Some("b")],
                [Some("\u{1}x"), None, None, None, None],
            ],
            &DEFAULT_PRIORITY,
        );
        assert_eq!(
            got,
            [
                None,
                Some(braze("b")),
                Some(external("\u{1}x").into_owned())
            ]
        );
    }
}
