//! The two JSON byte-level helpers cohort payloads need: writing a string literal escaped the way
//! Jackson (and serde_json) escape it, and minifying a raw JSON value without re-reading its
//! numbers, so user properties reach the receiver exactly as they were written.

use bytes::{BufMut, BytesMut};

/// For each byte, the escape it needs inside a JSON string: 0 = none, `u` = `\u00XX`, else the
/// letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends `s` as a JSON string literal, quotes included. Control characters, `"` and `\` are
/// escaped (`\n`, `\t`, ... or `\u00XX`); everything else, non-ASCII included, is copied as is.
pub fn write_str(out: &mut BytesMut, s: &str) {
    out.reserve(s.len() + 2);
    out.put_u8(b'"');
    write_str_body(out, s);
    out.put_u8(b'"');
}

/// Appends the inside of `s`'s JSON string literal: escaped as [`write_str`] does, no quotes.
pub fn write_str_body(out: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if esc == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', esc]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `n` in decimal.
pub fn write_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Returns `raw`, a valid JSON text, without the white space between its tokens. Strings and
/// numbers are copied byte for byte (a number is never re-formatted, so `1.50` and
/// `12345678901234567890123` survive).
pub fn minify(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> String {
        let mut out = BytesMut::new();
        write_str(&mut out, s);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn escapes_match_serde_json() {
        let cases = [
            "",
            "plain",
            "quote \" and backslash \\",
            "tab\tnewline\nreturn\rbackspace\u{8}formfeed\u{c}",
            "nul \u{0} unit sep \u{1f} del \u{7f}",
            "non-ascii é 東京 😀 / slash",
        ];
        for s in cases {
            assert_eq!(lit(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn writes_integers() {
        for n in [0, 7, 10, 999, 1000, u64::MAX] {
            let mut out = BytesMut::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn minify_keeps_strings_and_numbers_verbatim() {
        let raw = "{ \"a b\" : 1.50 ,\n\t\"c\": [ 12345678901234567890123 , \"x \\\" y \" ],\r\n \"d\":{ } }";
        assert_eq!(
            minify(raw),
            "{\"a b\":1.50,\"c\":[12345678901234567890123,\"x \\\" y \"],\"d\":{}}"
        );
    }

    #[test]
    fn minify_handles_escaped_backslash_before_quote() {
        assert_eq!(minify("[ \"a\\\\\" , 1 ]"), "[\"a\\\\\",1]");
    }
}
