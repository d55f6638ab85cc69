//! Java numbers as FreeMarker sees them: the five kinds a JSON document or a template produces
//! (`Integer`, `Long`, `BigInteger`, `BigDecimal`, `Double`), FreeMarker's default arithmetic
//! (`ArithmeticEngine.BIGDECIMAL_ENGINE`: every operand becomes a `BigDecimal`), the conversions
//! behind `?int ?long ?round ?floor ?ceiling ?abs ?number`, and formatting: the `computer`
//! format, `?c`, `java.text.DecimalFormat` patterns and the named `number`, `currency` and
//! `percent` formats of locale en_US, and Java's `Double.toString`.
//!
//! Limit: `BigInteger` and the unscaled part of `BigDecimal` are held in an `i128` (38 digits);
//! an operation whose exact result does not fit fails with [`FormatError::Overflow`] instead of
//! silently losing digits.

use std::cmp::Ordering;

use bytes::BytesMut;

use super::FormatError;

/// A Java `BigDecimal`: `unscaled × 10^-scale`. The scale is part of the value as in Java
/// (`1.50` has scale 2 and prints as such in `Double`-free contexts), and may be negative
/// (`new BigDecimal("1.0E10")` is `10 × 10^9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    unscaled: i128,
    scale: i32,
}

impl Decimal {
    /// The decimal `unscaled × 10^-scale`.
    pub fn new(unscaled: i128, scale: i32) -> Decimal {
        Decimal { unscaled, scale }
    }

    /// The unscaled value.
    pub fn unscaled(&self) -> i128 {
        self.unscaled
    }

    /// The scale (digits after the decimal point; negative for trailing zeros before it).
    pub fn scale(&self) -> i32 {
        self.scale
    }

    /// Parses Java `new BigDecimal(String)` syntax (`-1.25`, `1E+3`, `.5`).
    pub fn parse(text: &str) -> Result<Decimal, FormatError> {
        let _ = text;
        todo!()
    }

    /// `BigDecimal.toString()`: plain notation, or scientific when the exponent is small or large
    /// (Jackson writes `BigDecimal` this way).
    pub fn write_java(&self, out: &mut BytesMut) {
        let _ = out;
        todo!()
    }
}

/// A number value with the Java type FreeMarker would hold. The kind matters: it decides how
/// `${n}`, `?c` and `UtilClass.toJsonString` print the value, even where values compare equal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// `java.lang.Integer` (JSON integers in the `int` range, `?int`, `?size`, loop counters).
    Int(i32),
    /// `java.lang.Long` (JSON integers in the `long` range, `?long`).
    Long(i64),
    /// `java.math.BigInteger` (JSON integers beyond `long`; limited to `i128` here).
    BigInteger(i128),
    /// `java.math.BigDecimal` (every arithmetic result and number literal with a fraction).
    Decimal(Decimal),
    /// `java.lang.Double` (JSON numbers with a fraction or exponent).
    Double(f64),
}

impl Number {
    /// The number Jackson makes of a JSON integer that fits a `long`: `Integer` when it fits an
    /// `int`, else `Long`.
    pub fn from_json_i64(value: i64) -> Number {
        let _ = value;
        todo!()
    }

    /// The number Jackson makes of a non-negative JSON integer (`BigInteger` beyond `long`).
    pub fn from_json_u64(value: u64) -> Number {
        let _ = value;
        todo!()
    }

    /// The number Jackson makes of the text of a JSON integer of any size (`BigInteger` beyond
    /// `long`); fails with [`FormatError::Overflow`] beyond the `i128` limit.
    pub fn from_json_integer_text(text: &str) -> Result<Number, FormatError> {
        let _ = text;
        todo!()
    }

    /// `a + b` under FreeMarker's BigDecimal arithmetic.
    pub fn add(&self, other: &Number) -> Result<Number, FormatError> {
        let _ = other;
        todo!()
    }

    /// `a - b` under FreeMarker's BigDecimal arithmetic.
    pub fn sub(&self, other: &Number) -> Result<Number, FormatError> {
        let _ = other;
        todo!()
    }

    /// `a * b` under FreeMarker's BigDecimal arithmetic.
    pub fn mul(&self, other: &Number) -> Result<Number, FormatError> {
        let _ = other;
        todo!()
    }

    /// `a / b`: `BigDecimal.divide(b, max(12, scales…), HALF_UP)` as FreeMarker's BigDecimal
    /// engine does, trailing zeros handled as it handles them.
    pub fn div(&self, other: &Number) -> Result<Number, FormatError> {
        let _ = other;
        todo!()
    }

    /// `a % b` under FreeMarker's BigDecimal arithmetic (the sign follows `a`).
    pub fn rem(&self, other: &Number) -> Result<Number, FormatError> {
        let _ = other;
        todo!()
    }

    /// Unary minus, keeping the kind as FreeMarker does.
    pub fn neg(&self) -> Result<Number, FormatError> {
        todo!()
    }

    /// Numeric comparison (`1 == 1.0`, `<`, `gte`...), as FreeMarker's engine compares: by value,
    /// regardless of kind. NaN and infinities fail as they do in FreeMarker.
    pub fn compare(&self, other: &Number) -> Result<Ordering, FormatError> {
        let _ = other;
        todo!()
    }

    /// `==` on numbers: [`Number::compare`] is `Equal`.
    pub fn num_eq(&self, other: &Number) -> Result<bool, FormatError> {
        Ok(self.compare(other)? == Ordering::Equal)
    }

    /// Java `doubleValue()`.
    pub fn to_f64(&self) -> f64 {
        todo!()
    }

    /// Whether the value has no fractional part (an integral kind, or a whole `BigDecimal` /
    /// finite `Double`).
    pub fn is_integer(&self) -> bool {
        todo!()
    }

    /// Java `intValue()` (truncates; wraps or saturates exactly as Java does per kind).
    pub fn int_value(&self) -> i32 {
        todo!()
    }

    /// Java `longValue()` (truncates; wraps or saturates exactly as Java does per kind).
    pub fn long_value(&self) -> i64 {
        todo!()
    }

    /// `?int`.
    pub fn to_int(&self) -> Number {
        todo!()
    }

    /// `?long`.
    pub fn to_long(&self) -> Number {
        todo!()
    }

    /// `?round` (half up, towards positive infinity on .5).
    pub fn round(&self) -> Result<Number, FormatError> {
        todo!()
    }

    /// `?floor`.
    pub fn floor(&self) -> Result<Number, FormatError> {
        todo!()
    }

    /// `?ceiling`.
    pub fn ceiling(&self) -> Result<Number, FormatError> {
        todo!()
    }

    /// `?abs`, keeping the kind.
    pub fn abs(&self) -> Result<Number, FormatError> {
        todo!()
    }

    /// `?number` and number literals: FreeMarker's `ArithmeticEngine.toNumber`, including the
    /// kinds it picks and its errors.
    pub fn parse(text: &str) -> Result<Number, FormatError> {
        let _ = text;
        todo!()
    }

    /// `${n}` under `number_format=computer`.
    pub fn write_computer(&self, out: &mut BytesMut) {
        let _ = out;
        todo!()
    }

    /// `n?c` (FreeMarker 2.3.31, incompatible_improvements 2.3.31).
    pub fn write_c(&self, out: &mut BytesMut) {
        let _ = out;
        todo!()
    }

    /// How Jackson's default `ObjectMapper` writes the number (`Double` via `Double.toString`,
    /// `BigDecimal` via `toString`), for `UtilClass.toJsonString`.
    pub fn write_jackson(&self, out: &mut BytesMut) {
        let _ = out;
        todo!()
    }
}

/// Java's `Double.toString(d)` (`1.0`, `1.0E10`, `-0.0`, `NaN`, `Infinity`), JDK 17 output.
pub fn write_java_double(value: f64, out: &mut BytesMut) {
    let _ = (value, out);
    todo!()
}

/// A compiled number format: the `number_format` setting or a `?string("...")` argument, parsed
/// once and then applied to any number. Named formats `computer`, `number`, `currency`,
/// `percent` and `c` are recognised; anything else is a `java.text.DecimalFormat` pattern in
/// locale en_US with `HALF_EVEN` rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberFormat {
    kind: FormatKind,
}

#[derive(Debug, Clone, PartialEq)]
enum FormatKind {
    Computer,
}

impl NumberFormat {
    /// Compiles a format spec (a named format or a `DecimalFormat` pattern).
    pub fn new(spec: &str) -> Result<NumberFormat, FormatError> {
        let _ = spec;
        todo!()
    }

    /// The `computer` format (hookpipe's profile default).
    pub fn computer() -> NumberFormat {
        NumberFormat {
            kind: FormatKind::Computer,
        }
    }

    /// Whether this is the `computer` format (lets the VM take its fast path).
    pub fn is_computer(&self) -> bool {
        matches!(self.kind, FormatKind::Computer)
    }

    /// Appends `number` formatted with this format.
    pub fn format(&self, number: &Number, out: &mut BytesMut) -> Result<(), FormatError> {
        let _ = (number, out);
        todo!()
    }
}
