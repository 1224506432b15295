//! Lowercase hexadecimal, for the parts of result keys: without `core::fmt`, whose
//! machinery cost a QUERY hit a few thousand instructions.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as `2 * N` lowercase hex digits.
pub fn encode<const N: usize, const M: usize>(bytes: &[u8; N]) -> [u8; M] {
    debug_assert_eq!(M, 2 * N);
    let mut out = [0u8; M];
    for (i, byte) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
}

/// Appends `bytes` to `out` as lowercase hex digits.
pub fn push(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_become_lowercase_digits() {
        assert_eq!(&super::encode::<2, 4>(&[0x0f, 0xa0]), b"0fa0");
        let mut out = String::from("x");
        super::push(&mut out, &[0xde, 0xad]);
        assert_eq!(out, "xdead");
    }
}
