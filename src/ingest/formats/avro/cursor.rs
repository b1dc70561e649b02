//! Avro binary primitives over a byte slice.

use crate::ingest::limits::MAX_ZERO_SIZE_ITEMS;

/// Avro binary primitives over a byte slice.
pub(super) struct Cursor<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("needs {n} bytes, {} left", self.left()))?;
        let s = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?
            .try_into()
            .map_err(|_| format!("needs {N} bytes"))
    }

    /// A zig-zag varint (int and long share the encoding).
    pub(super) fn long(&mut self) -> Result<i64, String> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or("a number is cut short by the end of the data")?;
            self.pos += 1;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("a number is longer than 10 bytes".into());
            }
        }
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    pub(super) fn bool(&mut self) -> Result<bool, String> {
        match self.array::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(format!("a boolean byte is {b}")),
        }
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("a negative length {n}"))?;
        self.take(n)
    }

    pub(super) fn string(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|e| format!("a string is not UTF-8: {e}"))
    }

    /// The item count of the next block of an array or map (0: the end). A negative count is
    /// followed by the block's size in bytes. A count the bytes left cannot hold (each item
    /// takes at least `min_item` bytes; items of no size are capped) is refused before any
    /// item is read.
    pub(super) fn block_count(&mut self, min_item: usize) -> Result<u64, String> {
        let count = self.long()?;
        if count < 0 {
            self.long()?;
        }
        let count = count.unsigned_abs();
        match min_item {
            0 if count > MAX_ZERO_SIZE_ITEMS => Err(format!(
                "a block claims {count} items of no size (at most {MAX_ZERO_SIZE_ITEMS} are read)"
            )),
            0 => Ok(count),
            n if count > (self.left() / n) as u64 => Err(format!(
                "a block claims {count} items but the {} bytes left can hold at most {}",
                self.left(),
                self.left() / n
            )),
            _ => Ok(count),
        }
    }
}
