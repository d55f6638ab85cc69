//! String built-ins whose Java semantics differ from the obvious Rust ones: `?json_string`,
//! `?js_string`, `?html`, `?xhtml`, `?xml`, `?url`/`?url_path` with a charset, Java's case
//! mapping (`?upper_case`, `?lower_case`, `?cap_first`, `?uncap_first`, `?capitalize`), Java's
//! `String.trim`, lengths in UTF-16 units, and Jackson's JSON string serialisation.
//!
//! Every writer appends to a [`BytesMut`] and allocates nothing but the buffer's growth. Text
//! that needs no escaping is copied in one slice.
//!
//! Case mapping follows Java through Rust's Unicode tables (Rust's Unicode version is newer than
//! JDK 17's 13.0, so characters added since may map where Java leaves them).

use bytes::BytesMut;

use super::FormatError;

/// A charset `?url` can encode to. FreeMarker percent-encodes the bytes of the text in this
/// charset; characters the charset cannot encode become `?` (`%3F`), as Java's encoder does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UrlCharset {
    /// UTF-8.
    Utf8,
    /// ISO-8859-1 (Latin-1).
    Latin1,
    /// US-ASCII.
    Ascii,
}

impl UrlCharset {
    /// Looks up a Java charset name or alias, case-insensitively (`UTF-8`, `utf8`,
    /// `ISO-8859-1`, `latin1`, `ISO8859_1`, `US-ASCII`, `ASCII`...); an unknown or empty name is
    /// [`FormatError::BadCharset`].
    pub fn from_name(name: &str) -> Result<UrlCharset, FormatError> {
        let normal: String = name
            .chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .collect::<String>()
            .to_ascii_lowercase();
        match normal.as_str() {
            "utf8" | "unicode11utf8" => Ok(UrlCharset::Utf8),
            "iso88591" | "latin1" | "l1" | "819" | "cp819" | "ibm819" | "iso8859_1"
            | "csisolatin1" | "isoir100" => Ok(UrlCharset::Latin1),
            "usascii" | "ascii" | "646" | "iso646us" | "cp367" | "ibm367" | "us" | "csascii"
            | "default" => Ok(UrlCharset::Ascii),
            _ => Err(FormatError::BadCharset {
                charset: name.to_owned(),
            }),
        }
    }
}

/// Appends `\uXXXX` (uppercase hex) for a UTF-16 unit.
fn push_u_escape(unit: u32, out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[(unit >> 12 & 0xF) as usize],
        HEX[(unit >> 8 & 0xF) as usize],
        HEX[(unit >> 4 & 0xF) as usize],
        HEX[(unit & 0xF) as usize],
    ]);
}

/// FreeMarker's `StringUtil.jsStringEnc`, shared by `?json_string` and `?js_string`.
fn js_string_enc(s: &str, json: bool, out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = s.as_bytes();
    let mut copied = 0;
    let mut prev: [Option<char>; 2] = [None, None];
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let u = c as u32;
        let common =
            (u > '>' as u32 && u < 0x7F && c != '\\') || c == ' ' || (0xA0..0x2028).contains(&u);
        enum Esc {
            No,
            Short(u8),
            Backslash,
            Hex,
        }
        let esc = if common || u > 0xFFFF {
            Esc::No
        } else if u <= 0x1F {
            match c {
                '\n' => Esc::Short(b'n'),
                '\r' => Esc::Short(b'r'),
                '\u{c}' => Esc::Short(b'f'),
                '\u{8}' => Esc::Short(b'b'),
                '\t' => Esc::Short(b't'),
                _ => Esc::Hex,
            }
        } else if c == '"' || c == '\\' {
            Esc::Backslash
        } else if c == '\'' {
            if json {
                Esc::No
            } else {
                Esc::Backslash
            }
        } else if c == '/' {
            if prev[0].is_none() || prev[0] == Some('<') {
                Esc::Backslash
            } else {
                Esc::No
            }
        } else if c == '>' {
            let dangerous = match prev {
                [None, _] => true,
                [Some(p), before] if p == ']' || p == '-' => before.is_none() || before == Some(p),
                _ => false,
            };
            match (dangerous, json) {
                (false, _) => Esc::No,
                (true, true) => Esc::Hex,
                (true, false) => Esc::Backslash,
            }
        } else if c == '<' {
            if next.is_none() || next == Some('!') || next == Some('?') {
                Esc::Hex
            } else {
                Esc::No
            }
        } else if (0x7F..=0x9F).contains(&u) || u == 0x2028 || u == 0x2029 {
            Esc::Hex
        } else {
            Esc::No
        };
        prev = [Some(c), prev[0]];
        let escaped: bool = !matches!(esc, Esc::No);
        if !escaped {
            continue;
        }
        out.extend_from_slice(&bytes[copied..i]);
        copied = i + c.len_utf8();
        match esc {
            Esc::Short(b) => out.extend_from_slice(&[b'\\', b]),
            Esc::Backslash => out.extend_from_slice(&[b'\\', u as u8]),
            Esc::Hex if !json && u < 0x100 => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[(u >> 4) as usize],
                HEX[(u & 0xF) as usize],
            ]),
            Esc::Hex => push_u_escape(u, out),
            Esc::No => {}
        }
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// `?json_string`: escapes for inside a JSON string literal, FreeMarker's rules (`"` `\`
/// escaped, `/` after `<` or at the start, `>` after `]]`/`--` or at the start, `<` before `!`
/// `?` or at the end, control characters, U+2028/U+2029; `'` is left alone).
pub fn json_string(s: &str, out: &mut BytesMut) {
    js_string_enc(s, true, out)
}

/// `?js_string`: escapes for inside a JavaScript string literal, FreeMarker's rules (as
/// [`json_string`], plus `'`, and `\xXX` for characters below U+0100).
pub fn js_string(s: &str, out: &mut BytesMut) {
    js_string_enc(s, false, out)
}

/// Replaces `<`, `>`, `&`, `"` and (when `apos` is given) `'`.
fn markup_enc(s: &str, apos: Option<&[u8]>, out: &mut BytesMut) {
    let bytes = s.as_bytes();
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let replacement: &[u8] = match b {
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'&' => b"&amp;",
            b'"' => b"&quot;",
            b'\'' => match apos {
                Some(a) => a,
                None => continue,
            },
            _ => continue,
        };
        out.extend_from_slice(&bytes[copied..i]);
        out.extend_from_slice(replacement);
        copied = i + 1;
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// `?html`: `<`, `>`, `&`, `"` and `'` (as `&#39;`) escaped, as FreeMarker 2.3.31 does.
pub fn html(s: &str, out: &mut BytesMut) {
    markup_enc(s, Some(b"&#39;"), out)
}

/// `?xhtml`: like `?html` (`'` as `&#39;`).
pub fn xhtml(s: &str, out: &mut BytesMut) {
    markup_enc(s, Some(b"&#39;"), out)
}

/// `?xml`: like `?xhtml` but `'` as `&apos;`.
pub fn xml(s: &str, out: &mut BytesMut) {
    markup_enc(s, Some(b"&apos;"), out)
}

/// Whether FreeMarker's `URLEnc` leaves a character as is: ASCII letters and digits and
/// `_ - . ! ~ ' ( ) *`, plus `/` for `?url_path`.
fn safe_in_url(c: char, keep_slash: bool) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '_' | '-' | '.' | '!' | '~' | '\'' | '(' | ')' | '*')
        || (keep_slash && c == '/')
}

fn url_enc(s: &str, charset: UrlCharset, keep_slash: bool, out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let percent = |b: u8, out: &mut BytesMut| {
        out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 0xF) as usize]]);
    };
    let bytes = s.as_bytes();
    let mut copied = 0;
    for (i, c) in s.char_indices() {
        if safe_in_url(c, keep_slash) {
            continue;
        }
        out.extend_from_slice(&bytes[copied..i]);
        copied = i + c.len_utf8();
        match charset {
            UrlCharset::Utf8 => {
                for &b in &bytes[i..copied] {
                    percent(b, out);
                }
            }
            UrlCharset::Latin1 if (c as u32) < 0x100 => percent(c as u32 as u8, out),
            UrlCharset::Ascii if (c as u32) < 0x80 => percent(c as u32 as u8, out),
            // Java's encoder replaces an unmappable character with '?'.
            _ => percent(b'?', out),
        }
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// `?url(charset)`: percent-encodes everything but unreserved characters (upper-case hex); `/`
/// is encoded too, space becomes `%20`.
pub fn url(s: &str, charset: UrlCharset, out: &mut BytesMut) {
    url_enc(s, charset, false, out)
}

/// `?url_path(charset)`: like [`url`] but keeps `/`.
pub fn url_path(s: &str, charset: UrlCharset, out: &mut BytesMut) {
    url_enc(s, charset, true, out)
}

/// `?url(name)` / `?url_path(name)` (`keep_slash`) with the charset given by name, failing as
/// FreeMarker does: an empty name (no argument and no `url_escaping_charset` setting) always
/// fails, an unknown name only when some character actually needs encoding.
pub fn url_with_charset_name(
    s: &str,
    charset: &str,
    keep_slash: bool,
    out: &mut BytesMut,
) -> Result<(), FormatError> {
    if charset.is_empty() {
        return Err(FormatError::BadCharset {
            charset: String::new(),
        });
    }
    if s.chars().all(|c| safe_in_url(c, keep_slash)) {
        out.extend_from_slice(s.as_bytes());
        return Ok(());
    }
    url_enc(s, UrlCharset::from_name(charset)?, keep_slash, out);
    Ok(())
}

/// `?upper_case`: Java `String.toUpperCase(Locale.US)` (`ß` becomes `SS`).
pub fn upper_case(s: &str, out: &mut BytesMut) {
    if s.is_ascii() {
        let start = out.len();
        out.extend_from_slice(s.as_bytes());
        out[start..].make_ascii_uppercase();
        return;
    }
    let mut buf = [0u8; 4];
    for c in s.chars().flat_map(char::to_uppercase) {
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// `?lower_case`: Java `String.toLowerCase(Locale.US)` (with Java's Greek final-sigma rule, and
/// `İ` as `i̇`).
pub fn lower_case(s: &str, out: &mut BytesMut) {
    write_lower(s, out)
}

/// Java's `String.toLowerCase` of `s`, appended. Only text with a capital sigma (whose lower
/// case depends on its neighbours) allocates, to look around each sigma.
fn write_lower(s: &str, out: &mut BytesMut) {
    if s.is_ascii() {
        let start = out.len();
        out.extend_from_slice(s.as_bytes());
        out[start..].make_ascii_lowercase();
    } else if s.contains('\u{3a3}') {
        let chars: Vec<char> = s.chars().collect();
        let mut buf = [0u8; 4];
        for (i, &c) in chars.iter().enumerate() {
            if c == '\u{3a3}' {
                let lower = if sigma_is_final(&chars, i) {
                    '\u{3c2}'
                } else {
                    '\u{3c3}'
                };
                out.extend_from_slice(lower.encode_utf8(&mut buf).as_bytes());
            } else {
                for l in c.to_lowercase() {
                    out.extend_from_slice(l.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    } else {
        let mut buf = [0u8; 4];
        for c in s.chars().flat_map(char::to_lowercase) {
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// Java's `Character.toUpperCase(char)` / `toLowerCase(char)`: a single UTF-16 unit mapped to a
/// single unit; characters whose mapping is longer, and characters beyond the BMP, stay.
fn simple_case(c: char, upper: bool) -> char {
    fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }
    let u = c as u32;
    // Where Unicode's simple mapping differs from the first char of the full one.
    if !upper && u == 0x130 {
        return 'i';
    }
    if upper {
        let simple = match u {
            0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => Some(u + 8),
            0x1FB3 | 0x1FC3 | 0x1FF3 => Some(u + 9),
            _ => None,
        };
        if let Some(m) = simple.and_then(char::from_u32) {
            return m;
        }
    }
    if u > 0xFFFF {
        return c;
    }
    let mapped = if upper {
        single(c.to_uppercase())
    } else {
        single(c.to_lowercase())
    };
    match mapped {
        Some(m) if (m as u32) <= 0xFFFF => m,
        _ => c,
    }
}

/// Java's `Character.isLowerCase || isUpperCase || isTitleCase`.
fn is_cased(c: char) -> bool {
    c.is_lowercase() || c.is_uppercase() || c.to_lowercase().next() != Some(c)
}

/// A letter, digit, connector (`_`) or combining mark: what JDK's (legacy) word-break rules
/// join into words.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(c, '_' | '\u{203f}' | '\u{2040}' | '\u{2054}' | '\u{fe33}' | '\u{fe34}' | '\u{fe4d}'..='\u{fe4f}' | '\u{ff3f}' | '\u{300}'..='\u{36f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
}

/// Characters JDK's word-break rules allow inside a word, between two word characters:
/// dashes, the soft hyphen, the hyphenation point, quotes and the full stop.
fn is_mid_word(c: char) -> bool {
    matches!(
        c,
        '-' | '\''
            | '"'
            | '.'
            | '\u{ad}'
            | '\u{2027}'
            | '\u{58a}'
            | '\u{5be}'
            | '\u{1806}'
            | '\u{2010}'
            ..='\u{2015}'
                | '\u{2e17}'
                | '\u{301c}'
                | '\u{3030}'
                | '\u{30a0}'
                | '\u{fe58}'
                | '\u{fe63}'
                | '\u{ff0d}'
    )
}

/// Whether there is a word boundary between `chars[k - 1]` and `chars[k]`.
fn is_word_boundary(chars: &[char], k: usize) -> bool {
    if k == 0 || k >= chars.len() {
        return true;
    }
    let (a, b) = (chars[k - 1], chars[k]);
    let word = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_some_and(|&c| is_word_char(c))
    };
    let joined = (is_word_char(a) && is_word_char(b))
        || (is_mid_word(b) && is_word_char(a) && word(Some(k + 1)))
        || (is_mid_word(a) && is_word_char(b) && word(k.checked_sub(2)));
    !joined
}

/// Java's `ConditionalSpecialCasing` final-sigma condition, with word boundaries: a cased
/// letter before the sigma in its word, and none after it (`ΑΣ-Ζ` keeps `σ`, `ΑΣ Ζ` takes `ς`).
fn sigma_is_final(chars: &[char], i: usize) -> bool {
    let mut k = i;
    let mut cased_before = false;
    while !is_word_boundary(chars, k) {
        if is_cased(chars[k - 1]) {
            cased_before = true;
            break;
        }
        k -= 1;
    }
    if !cased_before {
        return false;
    }
    let mut k = i + 1;
    while !is_word_boundary(chars, k) {
        if is_cased(chars[k]) {
            return false;
        }
        k += 1;
    }
    true
}

/// `?cap_first` / `?uncap_first`: the first character that is not Java white-space mapped
/// with Java's single-character case mapping, the rest untouched.
fn change_first(s: &str, upper: bool, out: &mut BytesMut) {
    match s.char_indices().find(|&(_, c)| !is_java_whitespace(c)) {
        Some((i, c)) => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(&s.as_bytes()[..i]);
            out.extend_from_slice(simple_case(c, upper).encode_utf8(&mut buf).as_bytes());
            out.extend_from_slice(&s.as_bytes()[i + c.len_utf8()..]);
        }
        None => out.extend_from_slice(s.as_bytes()),
    }
}

/// Java's `Character.isWhitespace`: Unicode space separators except no-break spaces, plus the
/// ASCII controls `\t \n \u000B \f \r` and `\u001C`-`\u001F`.
fn is_java_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | '\u{1c}'..='\u{1f}' | ' ' | '\u{1680}' | '\u{2000}'..='\u{2006}' | '\u{2008}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{205f}' | '\u{3000}'
    )
}

/// `?cap_first`: the first non-white-space character upper-cased with Java's
/// `Character.toUpperCase` (so `ǆ` becomes `Ǆ`, `ß` stays), the rest untouched.
pub fn cap_first(s: &str, out: &mut BytesMut) {
    change_first(s, true, out)
}

/// `?uncap_first`: the first non-white-space character lower-cased, the rest untouched.
pub fn uncap_first(s: &str, out: &mut BytesMut) {
    change_first(s, false, out)
}

/// `?capitalize`: FreeMarker's `StringUtil.capitalize`: the text split into tokens at space,
/// tab, CR and LF; each token's first UTF-16 unit upper-cased (full Java mapping: `ß` becomes
/// `SS`) and the rest lower-cased. A token starting outside the BMP is only lower-cased after
/// its first character, as Java's surrogate halves do not map.
pub fn capitalize(s: &str, out: &mut BytesMut) {
    let mut buf = [0u8; 4];
    let mut start_of_token = true;
    let mut token_start = 0;
    let bytes = s.as_bytes();
    for (i, c) in s.char_indices() {
        if matches!(c, ' ' | '\t' | '\r' | '\n') {
            if token_start < i {
                write_lower(&s[token_start..i], out);
            }
            out.extend_from_slice(&bytes[i..i + 1]);
            start_of_token = true;
            token_start = i + 1;
            continue;
        }
        if start_of_token {
            start_of_token = false;
            if c as u32 > 0xFFFF {
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            } else {
                for u in c.to_uppercase() {
                    out.extend_from_slice(u.encode_utf8(&mut buf).as_bytes());
                }
            }
            token_start = i + c.len_utf8();
        }
    }
    if token_start < s.len() {
        write_lower(&s[token_start..], out);
    }
}

/// `?trim`: Java `String.trim()`, which strips every char `<= U+0020` (not Unicode white-space).
pub fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// `?length`: Java's `String.length()`, in UTF-16 code units.
pub fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().map(char::len_utf16).sum()
    }
}

/// Jackson's default `ObjectMapper` serialisation of a string, quotes included (for
/// `UtilClass.toJsonString`): `"` and `\` escaped, control characters below U+0020 as `\n`,
/// `\t`, `\r`, `\b`, `\f` or `\u00XX`; everything else (including `/`, U+007F, U+2028) as is.
pub fn jackson_string(s: &str, out: &mut BytesMut) {
    out.extend_from_slice(b"\"");
    let bytes = s.as_bytes();
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\t' => b't',
            b'\r' => b'r',
            0x08 => b'b',
            0x0C => b'f',
            0..=0x1F => 0,
            _ => continue,
        };
        out.extend_from_slice(&bytes[copied..i]);
        copied = i + 1;
        if short == 0 {
            push_u_escape(u32::from(b), out);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    out.extend_from_slice(b"\"");
}

#[cfg(test)]
mod tests;
