//! String built-ins whose Java semantics differ from the obvious Rust ones: `?json_string`,
//! `?js_string`, `?html`, `?xhtml`, `?xml`, `?url`/`?url_path` with a charset, Java's case
//! mapping (`?upper_case`, `?lower_case`, `?cap_first`, `?uncap_first`, `?capitalize`), Java's
//! `String.trim`, lengths in UTF-16 units, and Jackson's JSON string serialisation.
//!
//! Every writer appends to a [`BytesMut`] and allocates nothing but the buffer's growth.

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
}

impl UrlCharset {
    /// Looks up a Java charset name (`UTF-8`, `utf8`, `ISO-8859-1`, `latin1`, ...); an unknown
    /// or empty name is [`FormatError::BadCharset`].
    pub fn from_name(name: &str) -> Result<UrlCharset, FormatError> {
        let _ = name;
        todo!()
    }
}

/// `?json_string`: escapes for inside a JSON string literal, FreeMarker's rules.
pub fn json_string(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?js_string`: escapes for inside a JavaScript string literal, FreeMarker's rules.
pub fn js_string(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?html`: `<`, `>`, `&`, `"` escaped (FreeMarker's legacy HTML escaping).
pub fn html(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?xhtml`: like `?html` plus `'` as `&#39;`.
pub fn xhtml(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?xml`: like `?xhtml` but `'` as `&apos;`.
pub fn xml(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?url(charset)`: percent-encodes everything but unreserved characters; `/` is encoded too.
pub fn url(s: &str, charset: UrlCharset, out: &mut BytesMut) {
    let _ = (s, charset, out);
    todo!()
}

/// `?url_path(charset)`: like [`url`] but keeps `/`.
pub fn url_path(s: &str, charset: UrlCharset, out: &mut BytesMut) {
    let _ = (s, charset, out);
    todo!()
}

/// `?upper_case`: Java `String.toUpperCase(Locale.US)` (`ß` becomes `SS`).
pub fn upper_case(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?lower_case`: Java `String.toLowerCase(Locale.US)`.
pub fn lower_case(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?cap_first`: the first word character upper-cased (Java `Character.toUpperCase`), the rest
/// untouched.
pub fn cap_first(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?uncap_first`: the first word character lower-cased, the rest untouched.
pub fn uncap_first(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?capitalize`: each word's first character title-cased and the rest lower-cased, words
/// split on white-space as FreeMarker splits them.
pub fn capitalize(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}

/// `?trim`: Java `String.trim()`, which strips every char `<= U+0020` (not Unicode white-space).
pub fn java_trim(s: &str) -> &str {
    let _ = s;
    todo!()
}

/// `?length`: Java's `String.length()`, in UTF-16 code units.
pub fn utf16_len(s: &str) -> usize {
    let _ = s;
    todo!()
}

/// Jackson's default `ObjectMapper` serialisation of a string, quotes included (for
/// `UtilClass.toJsonString`).
pub fn jackson_string(s: &str, out: &mut BytesMut) {
    let _ = (s, out);
    todo!()
}
