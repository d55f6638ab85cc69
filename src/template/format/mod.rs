//! Java runtime semantics the FreeMarker engine needs, as pure functions and small value types:
//! numbers ([`number`]: Java `Integer`/`Long`/`BigInteger`/`BigDecimal`/`Double`, FreeMarker's
//! BigDecimal arithmetic, `DecimalFormat`), dates ([`date`]: `SimpleDateFormat` formatting and
//! lenient parsing in UTC / en_US, ISO 8601) and string escapes ([`escape`]: `?json_string`,
//! `?html`, `?url`, Java case mapping, Jackson's JSON serialisation).
//!
//! Nothing here knows the template engine's types. Every writer appends to a
//! [`bytes::BytesMut`] (the buffer the VM renders into) and allocates nothing beyond the growth of
//! that buffer in the common case. Every expectation in the tests was produced by the reference
//! engine, `ftl-oracle --amplitude` (Apache FreeMarker 2.3.31 on JDK 17): the tables in
//! `testdata/*.tsv` (about 25,000 rows) are filled in by `testdata/oracle.py`, which renders each
//! row's template in one `ftl-oracle --batch` JVM; rerun it after adding rows.

pub mod date;
pub mod escape;
pub mod number;

pub use date::{DateFormat, DateKind, DateValue};
pub use escape::UrlCharset;
pub use number::{Decimal, Number, NumberFormat};

/// Why a formatting, parsing or arithmetic operation failed. The message is what the engine
/// shows to the template author (it carries the offending text or pattern), in the spirit of
/// FreeMarker's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// `?number` (or a number literal) on text that is not a number.
    #[error("Can't convert this string to number: \"{text}\"")]
    NotANumber {
        /// The text that failed to parse.
        text: String,
    },
    /// Division or remainder by zero.
    #[error("Arithmetic error: division by zero")]
    DivisionByZero,
    /// A result outside what hookpipe represents exactly (BigInteger / BigDecimal beyond 128 bits).
    #[error("Arithmetic overflow in {op}: the result is beyond hookpipe's 128-bit BigInteger/BigDecimal limit")]
    Overflow {
        /// The operation, e.g. `*`.
        op: &'static str,
    },
    /// NaN or an infinity where Java's BigDecimal cannot represent it (arithmetic, comparison).
    #[error("Arithmetic error: {value} can't be converted to BigDecimal")]
    NotFinite {
        /// `NaN`, `Infinity` or `-Infinity`.
        value: &'static str,
    },
    /// A malformed `DecimalFormat` pattern or unknown named number format.
    #[error("Malformed number format {pattern:?}: {reason}")]
    BadNumberFormat {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A malformed `SimpleDateFormat` pattern or unknown named date format.
    #[error("Malformed date format {pattern:?}: {reason}")]
    BadDateFormat {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A string that does not match the date format it is parsed with.
    #[error("The string doesn't match the expected date/time/date-time format. The string to parse was: \"{text}\". The expected format was: \"{pattern}\".")]
    Unparseable {
        /// The text that failed to parse.
        text: String,
        /// The pattern (or format name) it was parsed with.
        pattern: String,
    },
    /// A date whose kind (date, time or date-time) is unknown, where FreeMarker needs it.
    #[error("Can't convert the date to string, because it is not known which parts of the date variable are in use. Use ?date, ?time, or ?datetime built-in.")]
    UnknownDateKind,
    /// `?url` with no charset argument and no `url_escaping_charset` setting, or an unsupported charset.
    #[error("Unsupported or missing URL escaping charset: {charset:?}")]
    BadCharset {
        /// The charset name as given (empty when none was set).
        charset: String,
    },
}

#[cfg(test)]
mod tests;
