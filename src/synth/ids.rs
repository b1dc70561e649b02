//! Generated user ids: their shape ([`IdShape`]) and the id of each user index ([`user_id`]).

use arrow::array::StringBuilder;
use serde::{Deserialize, Serialize};

use crate::hash::mix64 as splitmix_finalize;

/// The shape (and so the order) of generated user ids; see [`user_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdShape {
    /// UUID v4 strings (`8c4f0e1a-…`), 36 bytes, in no order.
    #[default]
    Uuid,
    /// Scrambled decimal strings of mixed length (mostly 12 digits, some 13, 11, fewer), in no
    /// order.
    Numeric,
    /// `u` and the index zero-padded to 9 digits (`u000000042`), in order: the best case.
    Sorted,
}

impl IdShape {
    pub const ALL: [IdShape; 3] = [IdShape::Uuid, IdShape::Numeric, IdShape::Sorted];

    pub fn as_str(self) -> &'static str {
        match self {
            IdShape::Uuid => "uuid",
            IdShape::Numeric => "numeric",
            IdShape::Sorted => "sorted",
        }
    }
}

impl std::fmt::Display for IdShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IdShape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdShape::ALL
            .into_iter()
            .find(|shape| shape.as_str() == s)
            .ok_or_else(|| format!("unknown id shape `{s}` (expected uuid, numeric or sorted)"))
    }
}

/// The id of user `idx` in `shape`: a function of the two alone (not of the seed), distinct for
/// distinct indices (each shape is a bijection of the index below 2^40).
pub fn user_id(shape: IdShape, idx: u64) -> String {
    let mut buf = [0u8; 40];
    let n = write_user_id(shape, idx, &mut buf);
    // Every shape writes ASCII only.
    std::str::from_utf8(&buf[..n]).expect("ascii").to_string()
}

/// Writes the id of user `idx` into `buf`, returning its length (at most 36 bytes, or 21 for
/// `sorted` indices of 10^9 and more).
fn write_user_id(shape: IdShape, idx: u64, buf: &mut [u8; 40]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match shape {
        IdShape::Sorted => {
            buf[0] = b'u';
            let digits = decimal(idx, &mut buf[1..]);
            if digits >= 9 {
                return 1 + digits;
            }
            // Zero-pad to 9 digits: shift right.
            let pad = 9 - digits;
            buf.copy_within(1..1 + digits, 1 + pad);
            buf[1..1 + pad].fill(b'0');
            10
        }
        IdShape::Numeric => {
            // A bijection of the 40-bit index space (xor-shift and odd multiplications modulo
            // 2^40), so ids are distinct and in no order; written without padding, so lengths
            // vary (13 digits above 10^12, mostly 12, some 11 and fewer).
            const MASK: u64 = (1 << 40) - 1;
            let mut x = (idx ^ 0x5A_C3E1_9B27) & MASK;
            x = (x ^ (x >> 21)) & MASK;
            x = x.wrapping_mul(0x9E37_79B9_7F4B) & MASK;
            x = (x ^ (x >> 19)) & MASK;
            x = x.wrapping_mul(0xBF58_476D_1CE5) & MASK;
            x = (x ^ (x >> 23)) & MASK;
            decimal(x, &mut buf[..])
        }
        IdShape::Uuid => {
            // 64 bits that are a bijection of the index (SplitMix64's finaliser is invertible)
            // spread over the UUID around its version and variant bits, so ids are distinct;
            // the other 58 bits from a second stream.
            let b = splitmix_finalize(idx ^ 0x2545_F491_4F6C_DD1D);
            let r =
                splitmix_finalize(idx.wrapping_add(0x9E37_79B9_7F4A_7C15) ^ 0x1234_5678_9ABC_DEF1);
            let hi: u64 = (b >> 16) << 16 | 0x4000 | ((b >> 4) & 0xFFF);
            let lo: u64 = (0b10 << 62) | ((b & 0xF) << 58) | (r & ((1 << 58) - 1));
            let mut pos = 0;
            for (i, byte) in hi
                .to_be_bytes()
                .into_iter()
                .chain(lo.to_be_bytes())
                .enumerate()
            {
                if matches!(i, 4 | 6 | 8 | 10) {
                    buf[pos] = b'-';
                    pos += 1;
                }
                buf[pos] = HEX[usize::from(byte >> 4)];
                buf[pos + 1] = HEX[usize::from(byte & 0xF)];
                pos += 2;
            }
            pos
        }
    }
}

/// Writes `n` in decimal at the start of `out`; returns the number of digits.
fn decimal(mut n: u64, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    out[..len].copy_from_slice(&tmp[i..]);
    len
}

/// Appends the id of user `idx` ([`user_id`]) without allocating.
pub(super) fn append_user_id(b: &mut StringBuilder, shape: IdShape, idx: u64) {
    let mut buf = [0u8; 40];
    let n = write_user_id(shape, idx, &mut buf);
    b.append_value(std::str::from_utf8(&buf[..n]).expect("ascii"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn id_shapes_are_distinct_unordered_and_well_formed() {
        let n = 200_000u64;
        for shape in IdShape::ALL {
            assert_eq!(shape.as_str().parse::<IdShape>(), Ok(shape));
            let ids: Vec<String> = (0..n).map(|i| user_id(shape, i)).collect();
            let distinct: HashSet<&str> = ids.iter().map(String::as_str).collect();
            assert_eq!(distinct.len(), ids.len(), "{shape}: ids repeat");
            let ascending = ids.windows(2).filter(|w| w[0] < w[1]).count();
            if shape == IdShape::Sorted {
                assert_eq!(ascending, ids.len() - 1);
            } else {
                // In no order: about half of neighbours ascend.
                let share = ascending as f64 / n as f64;
                assert!((share - 0.5).abs() < 0.01, "{shape}: {share}");
            }
        }
        for i in [0, 1, 7, 1 << 33, u64::from(u32::MAX)] {
            let u = user_id(IdShape::Uuid, i);
            let b = u.as_bytes();
            assert_eq!(b.len(), 36, "{u}");
            assert!([8, 13, 18, 23].iter().all(|&p| b[p] == b'-'), "{u}: dashes");
            assert_eq!(b[14], b'4', "{u}: version 4");
            assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "{u}: variant");
            assert!(
                u.bytes()
                    .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            );
        }
        let lengths: HashSet<usize> = (0..10_000)
            .map(|i| user_id(IdShape::Numeric, i).len())
            .collect();
        assert!(lengths.len() >= 3, "mixed lengths: {lengths:?}");
        assert!((0..10_000).all(|i| {
            user_id(IdShape::Numeric, i)
                .bytes()
                .all(|c| c.is_ascii_digit())
        }));
        assert_eq!(
            "uuids".parse::<IdShape>().unwrap_err(),
            "unknown id shape `uuids` (expected uuid, numeric or sorted)"
        );
    }
}
