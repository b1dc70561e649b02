//! Emails and phone numbers as members: normalised once the members are known, so that two
//! spellings of one address are one member (and one snapshot key), and refused — as dead
//! letters, with the reason, before anything is planned — when they cannot be an address.
//!
//! The rules (the strictest of the partners' public contracts, `docs/partners/`):
//! - **email**: surrounding whitespace trimmed, lowercased (Iterable stores addresses
//!   lowercased; Klaviyo and Customer.io match them case-insensitively); then one `@`, a local
//!   part of 1–64 bytes, a domain of dot-separated labels (letters, digits, `-`, not at a
//!   label's ends; at least two labels), at most 254 bytes in all, no whitespace, control
//!   characters or any of `<>()[],;:"\`.
//! - **phone**: E.164 — `+`, then 7 to 15 digits, the first not `0`. Spaces, `-`, `.`, `(`
//!   and `)` are dropped and a leading `00` is read as `+`; a number without its country code
//!   (no `+` or `00`) is refused rather than guessed.

use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};

use super::identity::{self, CONTACT_TAGS, Id};

/// A member refused for its identifier: its key as the query made it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub key: String,
    pub reason: String,
}

/// An email address as members hold it, or why it cannot be one.
pub fn email(raw: &str) -> Result<String, String> {
    let e = raw.trim().to_lowercase();
    let why = |m: &str| Err(format!("malformed email: {m}"));
    if e.is_empty() {
        return why("empty once trimmed");
    }
    if e.len() > 254 {
        return why("longer than 254 bytes");
    }
    if let Some(c) = e
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(*c))
    {
        return why(&format!("holds {c:?}"));
    }
    let Some((local, domain)) = e.split_once('@') else {
        return why("no `@`");
    };
    if domain.contains('@') {
        return why("more than one `@`");
    }
    if local.is_empty() || local.len() > 64 {
        return why("the part before `@` must be 1 to 64 bytes");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return why("the domain has no `.`");
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if !labels.iter().all(label_ok) {
        return why("the domain is not dot-separated labels of letters, digits and `-`");
    }
    Ok(e)
}

/// A phone number in E.164, or why it cannot be one.
pub fn phone(raw: &str) -> Result<String, String> {
    let compact: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
        .collect();
    let digits = match (compact.strip_prefix('+'), compact.strip_prefix("00")) {
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => {
            return Err(
                "malformed phone: no country code (E.164 starts with `+` or `00`)".to_string(),
            );
        }
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("malformed phone: holds characters other than digits".to_string());
    }
    if digits.starts_with('0') || !(7..=15).contains(&digits.len()) {
        return Err(
            "malformed phone: E.164 is `+` then 7 to 15 digits, the first not 0".to_string(),
        );
    }
    Ok(format!("+{digits}"))
}

/// What normalising a cohort's members did.
pub struct Normalised {
    pub ids: Arc<StringArray>,
    pub malformed: Vec<Malformed>,
    /// Members that were another spelling of one already there.
    pub duplicates: u64,
}

/// Normalises the emails and phones among `ids` (sorted, distinct: a cohort's members) and
/// takes out those that cannot be one. The list stays sorted and distinct; nothing changes
/// (no copy) when it holds no email or phone.
pub fn normalise(ids: Arc<StringArray>) -> Normalised {
    let lower = |bound: &str| ids_partition(&ids, bound);
    let (from, to) = (lower(CONTACT_TAGS.0), lower(CONTACT_TAGS.1));
    let mut keys: Vec<String> = Vec::with_capacity(to - from);
    let mut malformed = Vec::new();
    let mut changed = false;
    for i in from..to {
        let key = ids.value(i);
        let made = match identity::parse(key) {
            Id::Email(v) => email(v).map(|e| identity::email(&e)),
            Id::Phone(v) => phone(v).map(|p| identity::phone(&p)),
            // Not made by the query (keys between the tags are emails and phones only).
            _ => {
                keys.push(key.to_string());
                continue;
            }
        };
        match made {
            Ok(k) => {
                changed |= k != key;
                keys.push(k);
            }
            Err(reason) => {
                changed = true;
                malformed.push(Malformed {
                    key: key.to_string(),
                    reason,
                });
            }
        }
    }
    if !changed {
        return Normalised {
            ids,
            malformed,
            duplicates: 0,
        };
    }
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    let duplicates = (before - keys.len()) as u64;
    let all: StringArray = (0..from)
        .map(|i| ids.value(i))
        .chain(keys.iter().map(String::as_str))
        .chain((to..ids.len()).map(|i| ids.value(i)))
        .map(Some)
        .collect();
    Normalised {
        ids: Arc::new(all),
        malformed,
        duplicates,
    }
}

/// The first index of sorted `ids` whose value is not below `bound`.
fn ids_partition(ids: &StringArray, bound: &str) -> usize {
    let (mut lo, mut hi) = (0, ids.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ids.value(mid) < bound {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        assert_eq!(email("a.b+tag@mail.co.uk").unwrap(), "a.b+tag@mail.co.uk");
        for (raw, why) in [
            ("", "empty"),
            ("ada.example.com", "no `@`"),
            ("a@b@c.com", "more than one"),
            ("@example.com", "before `@`"),
            ("ada@localhost", "no `.`"),
            ("ada@exa mple.com", "holds ' '"),
            ("ada@-x.com", "labels"),
            ("ada@x..com", "labels"),
            ("<ada@x.com>", "holds '<'"),
        ] {
            let e = email(raw).unwrap_err();
            assert!(e.contains(why), "{raw:?}: {e}");
        }
    }

    #[test]
    fn phones_become_e164_or_are_refused() {
        assert_eq!(phone("+1 (415) 555-0100").unwrap(), "+14155550100");
        assert_eq!(phone("0049 30 1234567").unwrap(), "+49301234567");
        assert_eq!(phone(" +33.6.12.34.56.78 ").unwrap(), "+33612345678");
        for raw in [
            "4155550100",
            "+0 415 555",
            "+1415555010012345",
            "+1-415-CALL-NOW",
            "+12",
        ] {
            assert!(phone(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn normalising_keeps_the_list_sorted_distinct_and_takes_out_the_malformed() {
        let mut keys = [
            "u1".to_string(),
            identity::email("B@x.com"),
            identity::email("b@x.com"),
            identity::email("not-an-email"),
            identity::phone("+44 20 7946 0958"),
            identity::phone("0207946"),
            identity::device("d1"),
            identity::alias("n", "l"),
        ];
        keys.sort();
        let ids = Arc::new(StringArray::from_iter_values(keys.iter()));
        let n = normalise(ids);
        let got: Vec<&str> = n.ids.iter().flatten().collect();
        let mut want = vec![
            "u1".to_string(),
            identity::email("b@x.com"),
            identity::phone("+442079460958"),
            identity::device("d1"),
            identity::alias("n", "l"),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(n.duplicates, 1);
        let refused: Vec<&str> = n.malformed.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(
            refused,
            [identity::email("not-an-email"), identity::phone("0207946")]
        );
        assert!(n.malformed[0].reason.contains("no `@`"));
    }

    #[test]
    fn a_list_without_emails_or_phones_is_not_copied() {
        let ids = Arc::new(StringArray::from_iter_values(["a", "b"]));
        let n = normalise(ids.clone());
        assert!(Arc::ptr_eq(&ids, &n.ids));
        assert!(n.malformed.is_empty());
    }
}
