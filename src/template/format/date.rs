//! Dates as FreeMarker holds them (a `java.util.Date`: milliseconds since the epoch, plus which
//! parts are in use), formatted and parsed the way Java's `SimpleDateFormat` does it with
//! `lenient=true`, in time zone UTC and locale en_US (JDK 17 CLDR data), together with
//! FreeMarker's named styles (`short`, `medium`, `long`, `full`, `short_medium`...) and its ISO
//! 8601 formats (`iso`, `xs`, `iso_m_nz`..., `?iso_utc`).

use bytes::BytesMut;

use super::FormatError;

/// Which parts of a date value are meaningful: FreeMarker's `TemplateDateModel` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateKind {
    /// Date only (`?date`): formatted with `date_format`.
    Date,
    /// Time of day only (`?time`): formatted with `time_format`.
    Time,
    /// Date and time (`?datetime`): formatted with `datetime_format`.
    DateTime,
    /// Not known (e.g. `?number_to_datetime` is DateTime, but a Java `Date` from elsewhere is
    /// Unknown): cannot be printed without `?date`/`?time`/`?datetime`.
    Unknown,
}

/// A date value: milliseconds since 1970-01-01T00:00:00Z and its [`DateKind`]. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateValue {
    /// Milliseconds since the epoch (UTC), as `java.util.Date.getTime()`.
    pub millis: i64,
    /// Which parts are in use.
    pub kind: DateKind,
}

impl DateValue {
    /// A value of the given kind.
    pub fn new(millis: i64, kind: DateKind) -> DateValue {
        DateValue { millis, kind }
    }

    /// The same instant with another kind (`?date`, `?time`, `?datetime` on a date value).
    pub fn with_kind(self, kind: DateKind) -> DateValue {
        DateValue { kind, ..self }
    }
}

/// A compiled date format: one `date_format` / `time_format` / `datetime_format` setting value
/// or `?string("...")` argument, parsed once. It is a FreeMarker named style (`short`,
/// `medium`, `long`, `full`, or `X_Y` for date and time styles), an ISO 8601 format (`iso`,
/// `xs`, with options like `iso_m_nz`), or a `SimpleDateFormat` pattern. The empty string is
/// FreeMarker's default (`medium`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    spec: String,
}

impl DateFormat {
    /// Compiles `spec` for values of `kind` (named styles depend on the kind).
    pub fn new(spec: &str, kind: DateKind) -> Result<DateFormat, FormatError> {
        let _ = (spec, kind);
        todo!()
    }

    /// Appends `value` formatted with this format (UTC, en_US).
    pub fn format(&self, value: &DateValue, out: &mut BytesMut) -> Result<(), FormatError> {
        let _ = (value, out);
        todo!()
    }

    /// Parses `text` as FreeMarker's `?date`/`?time`/`?datetime` (with or without a pattern
    /// argument) do: `SimpleDateFormat.parse` with `lenient=true` (fields overflow into the next
    /// unit, a fraction's digits are a count of milliseconds), or ISO 8601 for ISO formats. The
    /// result has the given `kind`.
    pub fn parse(&self, text: &str, kind: DateKind) -> Result<DateValue, FormatError> {
        let _ = (text, kind);
        todo!()
    }
}

/// `?iso_utc`: ISO 8601 in UTC with millisecond precision when non-zero, the form depending on
/// the value's kind (`2022-02-28T20:07:01.795Z`, `2022-02-28`, `20:07:01.795Z`).
pub fn write_iso_utc(value: &DateValue, out: &mut BytesMut) -> Result<(), FormatError> {
    let _ = (value, out);
    todo!()
}

/// `?number_to_datetime` (and `?number_to_date` / `?number_to_time` with another kind): the
/// number as epoch milliseconds (Java `longValue()` of it).
pub fn from_epoch_millis(millis: i64, kind: DateKind) -> DateValue {
    DateValue::new(millis, kind)
}
