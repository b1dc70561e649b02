//! Avro object container files written byte by byte, so that every count, size and codec can
//! say anything, true or not: the crafted inputs of the Avro reader's tests, the integration
//! suite and the fuzz harnesses. Not used by the product itself.

/// A zig-zag varint, as Avro writes ints and longs.
pub fn varint(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A container file of `schema` and `codec` whose blocks are `(record count, bytes)` exactly as
/// given (the bytes are not compressed or checked).
pub fn container(schema: &str, codec: &str, blocks: &[(i64, Vec<u8>)]) -> Vec<u8> {
    let sync = *b"0123456789abcdef";
    let mut out = b"Obj\x01".to_vec();
    out.extend(varint(2));
    for (k, v) in [
        ("avro.schema", schema.as_bytes()),
        ("avro.codec", codec.as_bytes()),
    ] {
        out.extend(varint(k.len() as i64));
        out.extend(k.as_bytes());
        out.extend(varint(v.len() as i64));
        out.extend(v);
    }
    out.extend(varint(0));
    out.extend(sync);
    for (count, data) in blocks {
        out.extend(varint(*count));
        out.extend(varint(data.len() as i64));
        out.extend(data);
        out.extend(sync);
    }
    out
}
