//! Java numbers as FreeMarker sees them: the five kinds a JSON document or a template produces
//! (`Integer`, `Long`, `BigInteger`, `BigDecimal`, `Double`), FreeMarker's default arithmetic
//! (`ArithmeticEngine.BIGDECIMAL_ENGINE`: every operand becomes a `BigDecimal`), the conversions
//! behind `?int ?long ?round ?floor ?ceiling ?abs ?number`, and formatting: the `computer`
//! format, `?c`, `java.text.DecimalFormat` patterns and the named `number`, `currency` and
//! `percent` formats of locale en_US, and Java's `Double.toString`.
//!
//! Limits, all reported as errors rather than wrong output:
//! - `BigInteger` and the unscaled part of `BigDecimal` are held in an `i128` (38 digits), and a
//!   `BigDecimal`'s scale is limited to ±1,000,000; an operation whose exact result does not
//!   fit fails with [`FormatError::Overflow`].
//! - A `Double`'s decimal digits follow JDK 17's `FloatingDecimal` (which `Double.toString`
//!   and `DecimalFormat` share): the shortest digits that round-trip, ties between two shortest
//!   candidates broken to the even digit, and Java's exact-integer fast path for integral values
//!   below 2^63. For magnitudes of 2^63 and more, and for the smallest subnormals, JDK 17 at times
//!   prints a longer, non-shortest form (`1.0E23` is `9.999999999999999E22`, `1.84E23` is
//!   `1.8400000000000002E23`, `4.9E-324`); hookpipe prints the shortest form there. Measured
//!   against the oracle: 217 of 100,000 random doubles over the whole range differ, all of them
//!   such magnitudes; none in the conformance corpus.

use std::cmp::Ordering;
use std::fmt::Write as _;

use bytes::BytesMut;

use super::FormatError;

mod decfmt;
mod digits;

pub use decfmt::NumberFormat;
use digits::Digits;

/// The largest scale magnitude a `BigDecimal` may have here (`1E+1000000` has a million
/// digits to print); beyond it parsing and multiplication fail with [`FormatError::Overflow`]
/// instead of producing output no webhook can carry.
const MAX_ABS_SCALE: i64 = 1_000_000;

/// The `computer` format, built once so `${n}` allocates nothing.
static COMPUTER: std::sync::LazyLock<NumberFormat> =
    std::sync::LazyLock::new(NumberFormat::computer);

/// FreeMarker's `minScale` for division and `maxScale` for multiplication.
const MAX_SCALE: i32 = 12;

/// `10^n` for `n` in `0..=38`, the powers that fit an `i128`.
fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// A small stack buffer that `core::fmt` can write into, so number text is produced without
/// allocating.
pub(crate) struct StackBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    pub(crate) fn new() -> Self {
        StackBuf {
            buf: [0; N],
            len: 0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only `write_str` fills the buffer, and it copies whole `&str`s.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> std::fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Appends the decimal text of an integer.
fn write_int(value: i128, out: &mut BytesMut) {
    let mut buf = StackBuf::<48>::new();
    let _ = write!(buf, "{value}");
    out.extend_from_slice(buf.as_str().as_bytes());
}

/// A Java `BigDecimal`: `unscaled × 10^-scale`. The scale is part of the value as in Java
/// (`1.50` has scale 2, and Jackson writes it as `1.50`), and may be negative
/// (`new BigDecimal("1.0E10")` is `10 × 10^9`). The derived `==` is Java's `equals` (scale
/// included); numeric comparison is [`Number::compare`].
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

    /// Parses Java `new BigDecimal(String)` syntax (`-1.25`, `+3`, `1E+3`, `.5`, `5.`): no
    /// white-space, no `_`, no hexadecimal.
    pub fn parse(text: &str) -> Result<Decimal, FormatError> {
        let not_a_number = || FormatError::NotANumber {
            text: text.to_owned(),
        };
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                i = 1;
                true
            }
            Some(b'+') => {
                i = 1;
                false
            }
            _ => false,
        };
        let mut unscaled: i128 = 0;
        let mut digits = 0usize;
        let mut frac_digits: i64 = 0;
        let mut seen_point = false;
        let mut overflow = false;
        while i < bytes.len() {
            match bytes[i] {
                b @ b'0'..=b'9' => {
                    digits += 1;
                    if seen_point {
                        frac_digits += 1;
                    }
                    match unscaled
                        .checked_mul(10)
                        .and_then(|u| u.checked_add(i128::from(b - b'0')))
                    {
                        Some(u) => unscaled = u,
                        None => overflow = true,
                    }
                }
                b'.' if !seen_point => seen_point = true,
                b'e' | b'E' => break,
                _ => return Err(not_a_number()),
            }
            i += 1;
        }
        if digits == 0 {
            return Err(not_a_number());
        }
        let mut exponent: i64 = 0;
        if i < bytes.len() {
            // bytes[i] is 'e' or 'E'.
            let exp_text = &text[i + 1..];
            let exp_digits = exp_text.strip_prefix(['+', '-']).unwrap_or(exp_text);
            if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(not_a_number());
            }
            exponent = exp_text.parse::<i64>().map_err(|_| not_a_number())?;
        }
        if overflow {
            return Err(FormatError::Overflow { op: "?number" });
        }
        let scale = frac_digits - exponent;
        if scale.abs() > MAX_ABS_SCALE {
            return Err(FormatError::Overflow { op: "?number" });
        }
        let scale = scale as i32;
        Ok(Decimal {
            unscaled: if negative { -unscaled } else { unscaled },
            scale,
        })
    }

    /// `BigDecimal.toString()`: plain notation, or scientific when the scale is negative or the
    /// adjusted exponent is below -6 (Jackson writes `BigDecimal` this way: `1E+3`, `1E-7`).
    pub fn write_java(&self, out: &mut BytesMut) {
        let mut buf = StackBuf::<48>::new();
        let _ = write!(buf, "{}", self.unscaled.unsigned_abs());
        let digits = buf.as_str().as_bytes();
        if self.unscaled < 0 {
            out.extend_from_slice(b"-");
        }
        let ndigits = digits.len() as i64;
        let adjusted = -i64::from(self.scale) + (ndigits - 1);
        if self.scale == 0 {
            out.extend_from_slice(digits);
        } else if self.scale > 0 && adjusted >= -6 {
            let point = ndigits - i64::from(self.scale);
            if point > 0 {
                let point = point as usize;
                out.extend_from_slice(&digits[..point]);
                out.extend_from_slice(b".");
                out.extend_from_slice(&digits[point..]);
            } else {
                out.extend_from_slice(b"0.");
                for _ in 0..-point {
                    out.extend_from_slice(b"0");
                }
                out.extend_from_slice(digits);
            }
        } else {
            out.extend_from_slice(&digits[..1]);
            if digits.len() > 1 {
                out.extend_from_slice(b".");
                out.extend_from_slice(&digits[1..]);
            }
            out.extend_from_slice(b"E");
            if adjusted >= 0 {
                out.extend_from_slice(b"+");
            }
            write_int(i128::from(adjusted), out);
        }
    }

    /// The unscaled value at a larger (or equal) scale, if it fits.
    fn unscaled_at(&self, scale: i32) -> Option<i128> {
        let diff = u32::try_from(i64::from(scale) - i64::from(self.scale)).ok()?;
        if self.unscaled == 0 {
            return Some(0);
        }
        self.unscaled.checked_mul(pow10(diff)?)
    }

    fn checked_add(&self, other: &Decimal, op: &'static str) -> Result<Decimal, FormatError> {
        let scale = self.scale.max(other.scale);
        let a = self.unscaled_at(scale);
        let b = other.unscaled_at(scale);
        match (a, b) {
            (Some(a), Some(b)) => a
                .checked_add(b)
                .map(|u| Decimal::new(u, scale))
                .ok_or(FormatError::Overflow { op }),
            _ => Err(FormatError::Overflow { op }),
        }
    }

    fn negate(&self) -> Result<Decimal, FormatError> {
        self.unscaled
            .checked_neg()
            .map(|u| Decimal::new(u, self.scale))
            .ok_or(FormatError::Overflow { op: "-" })
    }

    fn checked_mul(&self, other: &Decimal) -> Result<Decimal, FormatError> {
        let overflow = FormatError::Overflow { op: "*" };
        let unscaled = self
            .unscaled
            .checked_mul(other.unscaled)
            .ok_or(overflow.clone())?;
        let scale = i64::from(self.scale) + i64::from(other.scale);
        if scale.abs() > MAX_ABS_SCALE {
            return Err(overflow);
        }
        Ok(Decimal::new(unscaled, scale as i32))
    }

    /// `BigDecimal.divide(divisor, scale, ROUND_HALF_UP)`, by long division so the dividend may
    /// be shifted beyond 128 bits as long as the quotient fits.
    fn divide_half_up(&self, divisor: &Decimal, scale: i32) -> Result<Decimal, FormatError> {
        if divisor.unscaled == 0 {
            return Err(FormatError::DivisionByZero);
        }
        let overflow = FormatError::Overflow { op: "/" };
        // quotient = round(a.u * 10^(scale - a.s + b.s) / b.u)
        let shift = i64::from(scale) - i64::from(self.scale) + i64::from(divisor.scale);
        let negative = (self.unscaled < 0) != (divisor.unscaled < 0);
        let mut num = self.unscaled.unsigned_abs();
        let mut den = divisor.unscaled.unsigned_abs();
        if shift < 0 {
            for _ in 0..-shift {
                match den.checked_mul(10) {
                    Some(d) => den = d,
                    // The divisor dwarfs the dividend: the quotient rounds to zero.
                    None => return Ok(Decimal::new(0, scale)),
                }
            }
        }
        let mut quotient = num / den;
        num %= den;
        for _ in 0..shift.max(0) {
            if quotient == 0 && num == 0 {
                break;
            }
            let widened = num.checked_mul(10).ok_or(overflow.clone())?;
            quotient = quotient
                .checked_mul(10)
                .and_then(|q| q.checked_add(widened / den))
                .ok_or(overflow.clone())?;
            num = widened % den;
        }
        if num != 0 && num >= den - num {
            quotient = quotient.checked_add(1).ok_or(overflow.clone())?;
        }
        let quotient = i128::try_from(quotient).map_err(|_| overflow)?;
        Ok(Decimal::new(
            if negative { -quotient } else { quotient },
            scale,
        ))
    }

    /// `setScale(scale, ROUND_HALF_UP)` for a scale below the current one.
    fn reduce_scale_half_up(&self, scale: i32) -> Decimal {
        if self.scale <= scale {
            return *self;
        }
        let drop = i64::from(self.scale) - i64::from(scale);
        let magnitude = self.unscaled.unsigned_abs();
        let rounded = match u32::try_from(drop).ok().and_then(|d| 10u128.checked_pow(d)) {
            Some(p) => {
                let (q, r) = (magnitude / p, magnitude % p);
                if r != 0 && r >= p - r {
                    q + 1
                } else {
                    q
                }
            }
            None => 0,
        };
        let rounded = rounded as i128;
        Decimal::new(if self.unscaled < 0 { -rounded } else { rounded }, scale)
    }

    /// FreeMarker's multiplication (both engines): the exact product, rounded half up to 12
    /// fraction digits when it has more (`0.1 * 0.333333333333` is `0.033333333333`).
    fn multiply_capped(&self, other: &Decimal) -> Result<Decimal, FormatError> {
        Ok(self.checked_mul(other)?.reduce_scale_half_up(MAX_SCALE))
    }

    fn signum(&self) -> i32 {
        self.unscaled.signum() as i32
    }

    fn compare(&self, other: &Decimal) -> Ordering {
        let scale = self.scale.max(other.scale);
        match (self.unscaled_at(scale), other.unscaled_at(scale)) {
            (Some(a), Some(b)) => a.cmp(&b),
            // The one that no longer fits is the larger in magnitude (the other is exact).
            (None, Some(_)) => {
                if self.unscaled > 0 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (Some(_), None) => {
                if other.unscaled > 0 {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (None, None) => Ordering::Equal,
        }
    }

    /// Java `BigDecimal.doubleValue()` (correctly rounded).
    fn to_f64(self) -> f64 {
        let mut buf = StackBuf::<64>::new();
        let _ = write!(buf, "{}e{}", self.unscaled, -i64::from(self.scale));
        buf.as_str().parse().unwrap_or(f64::NAN)
    }

    /// The integer part (towards zero), wrapping modulo 2^128 when it does not fit, which keeps
    /// the low bits Java's `intValue()`/`longValue()` look at.
    fn trunc_wrapping(&self) -> i128 {
        if self.scale <= 0 {
            let mut v = self.unscaled;
            for _ in 0..(-i64::from(self.scale)).min(200) {
                v = v.wrapping_mul(10);
            }
            v
        } else {
            match u32::try_from(self.scale).ok().and_then(pow10) {
                Some(p) => self.unscaled / p,
                None => 0,
            }
        }
    }

    fn is_integer(&self) -> bool {
        self.scale <= 0
            || match u32::try_from(self.scale).ok().and_then(pow10) {
                Some(p) => self.unscaled % p == 0,
                None => self.unscaled == 0,
            }
    }
}

/// A number value with the Java type FreeMarker would hold. The kind matters: it decides how
/// `${n}`, `?c` and `UtilClass.toJsonString` print the value, even where values compare equal.
/// The derived `==` is structural (`Int(1) != Long(1)`); FreeMarker's `==` is
/// [`Number::num_eq`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// `java.lang.Integer` (JSON integers in the `int` range, `?int`, `?size`, loop counters).
    Int(i32),
    /// `java.lang.Long` (JSON integers in the `long` range, `?long`, the result of `%`).
    Long(i64),
    /// `java.math.BigInteger` (JSON integers beyond `long`; limited to `i128` here).
    BigInteger(i128),
    /// `java.math.BigDecimal` (every arithmetic result, number literals, `?number`).
    Decimal(Decimal),
    /// `java.lang.Double` (JSON numbers with a fraction or exponent).
    Double(f64),
}

impl Number {
    /// The number Jackson makes of a JSON integer that fits a `long`: `Integer` when it fits an
    /// `int`, else `Long`, except that Jackson reads `-9223372036854775808` as a `BigInteger`
    /// (checked with `?abs`, which then gives `9223372036854775808`).
    pub fn from_json_i64(value: i64) -> Number {
        match i32::try_from(value) {
            Ok(v) => Number::Int(v),
            Err(_) if value == i64::MIN => Number::BigInteger(i128::from(value)),
            Err(_) => Number::Long(value),
        }
    }

    /// The number Jackson makes of a non-negative JSON integer (`BigInteger` beyond `long`).
    pub fn from_json_u64(value: u64) -> Number {
        match i64::try_from(value) {
            Ok(v) => Number::from_json_i64(v),
            Err(_) => Number::BigInteger(i128::from(value)),
        }
    }

    /// The number Jackson makes of the text of a JSON integer of any size (`BigInteger` beyond
    /// `long`); fails with [`FormatError::Overflow`] beyond the `i128` limit.
    pub fn from_json_integer_text(text: &str) -> Result<Number, FormatError> {
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FormatError::NotANumber {
                text: text.to_owned(),
            });
        }
        let value: i128 = text
            .parse()
            .map_err(|_| FormatError::Overflow { op: "JSON integer" })?;
        Ok(match i64::try_from(value) {
            Ok(v) => Number::from_json_i64(v),
            Err(_) => Number::BigInteger(value),
        })
    }

    /// The value as FreeMarker's `ArithmeticEngine.toBigDecimal` sees it: a `Double` goes through
    /// `Double.toString`, so `0.1` is exactly `0.1` and `1.0E10` has scale -9.
    pub fn to_decimal(&self) -> Result<Decimal, FormatError> {
        match *self {
            Number::Int(v) => Ok(Decimal::new(i128::from(v), 0)),
            Number::Long(v) => Ok(Decimal::new(i128::from(v), 0)),
            Number::BigInteger(v) => Ok(Decimal::new(v, 0)),
            Number::Decimal(d) => Ok(d),
            Number::Double(v) => {
                if v.is_nan() {
                    Err(FormatError::NotFinite { value: "NaN" })
                } else if v.is_infinite() {
                    Err(FormatError::NotFinite {
                        value: if v > 0.0 { "Infinity" } else { "-Infinity" },
                    })
                } else {
                    Ok(Digits::from_f64(v).java_to_string_decimal(v < 0.0))
                }
            }
        }
    }

    /// `a + b` under FreeMarker's BigDecimal arithmetic.
    pub fn add(&self, other: &Number) -> Result<Number, FormatError> {
        let r = self.to_decimal()?.checked_add(&other.to_decimal()?, "+")?;
        Ok(Number::Decimal(r))
    }

    /// `a - b` under FreeMarker's BigDecimal arithmetic.
    pub fn sub(&self, other: &Number) -> Result<Number, FormatError> {
        let b = other.to_decimal()?.negate()?;
        let r = self.to_decimal()?.checked_add(&b, "-")?;
        Ok(Number::Decimal(r))
    }

    /// `a * b` under FreeMarker's BigDecimal arithmetic: the exact product, rounded half up to 12
    /// fraction digits when it has more.
    pub fn mul(&self, other: &Number) -> Result<Number, FormatError> {
        let r = self.to_decimal()?.multiply_capped(&other.to_decimal()?)?;
        Ok(Number::Decimal(r))
    }

    /// `a / b`: `a.divide(b, max(12, a.scale, b.scale), HALF_UP)`, as FreeMarker's BigDecimal
    /// engine does (`1/3` is `0.333333333333`, `10/4` is `2.500000000000`).
    pub fn div(&self, other: &Number) -> Result<Number, FormatError> {
        let a = self.to_decimal()?;
        let b = other.to_decimal()?;
        let scale = MAX_SCALE.max(a.scale).max(b.scale);
        Ok(Number::Decimal(a.divide_half_up(&b, scale)?))
    }

    /// `a % b`: FreeMarker's BigDecimal engine takes both operands' `longValue()` (truncating
    /// fractions: `7.5 % 2` is `1`) and returns a `Long`; the sign follows `a`.
    pub fn rem(&self, other: &Number) -> Result<Number, FormatError> {
        let b = other.long_value();
        if b == 0 {
            return Err(FormatError::DivisionByZero);
        }
        Ok(Number::Long(self.long_value().wrapping_rem(b)))
    }

    /// Unary minus: FreeMarker multiplies by `Integer(-1)` with its conservative engine, so the
    /// kind is kept (`Integer.MIN_VALUE` stays itself, as Java's overflow check lets it), and a
    /// `BigDecimal` is rounded half up to 12 fraction digits like any product.
    pub fn neg(&self) -> Result<Number, FormatError> {
        Ok(match *self {
            Number::Int(v) => Number::Int(v.wrapping_neg()),
            Number::Long(v) => Number::Long(v.wrapping_neg()),
            Number::BigInteger(v) => {
                Number::BigInteger(v.checked_neg().ok_or(FormatError::Overflow { op: "-" })?)
            }
            Number::Decimal(d) => Number::Decimal(d.negate()?.reduce_scale_half_up(MAX_SCALE)),
            Number::Double(v) => Number::Double(-v),
        })
    }

    /// The sign, as FreeMarker's `NumberUtil.getSignum` (NaN has none).
    fn signum(&self) -> Result<i32, FormatError> {
        Ok(match *self {
            Number::Int(v) => v.signum(),
            Number::Long(v) => v.signum() as i32,
            Number::BigInteger(v) => v.signum() as i32,
            Number::Decimal(d) => d.signum(),
            Number::Double(v) => {
                if v.is_nan() {
                    return Err(FormatError::NotFinite { value: "NaN" });
                } else if v > 0.0 {
                    1
                } else if v < 0.0 {
                    -1
                } else {
                    0
                }
            }
        })
    }

    /// Numeric comparison (`1 == 1.0`, `<`, `gte`...) as FreeMarker's BigDecimal engine compares:
    /// by value regardless of kind; infinities compare with anything, NaN with nothing.
    pub fn compare(&self, other: &Number) -> Result<Ordering, FormatError> {
        let (s1, s2) = (self.signum()?, other.signum()?);
        if s1 != s2 {
            return Ok(s1.cmp(&s2));
        }
        if s1 == 0 {
            return Ok(Ordering::Equal);
        }
        match (*self, *other) {
            (Number::Double(a), Number::Double(b)) => Ok(a.total_cmp(&b)),
            (Number::Double(a), b) if a.is_infinite() => Ok(a.total_cmp(&b.to_f64())),
            (a, Number::Double(b)) if b.is_infinite() => Ok(a.to_f64().total_cmp(&b)),
            (a, b) => Ok(a.to_decimal()?.compare(&b.to_decimal()?)),
        }
    }

    /// `==` on numbers: [`Number::compare`] is `Equal`.
    pub fn num_eq(&self, other: &Number) -> Result<bool, FormatError> {
        Ok(self.compare(other)? == Ordering::Equal)
    }

    /// Java `doubleValue()`.
    pub fn to_f64(&self) -> f64 {
        match *self {
            Number::Int(v) => f64::from(v),
            Number::Long(v) => v as f64,
            Number::BigInteger(v) => v as f64,
            Number::Decimal(d) => d.to_f64(),
            Number::Double(v) => v,
        }
    }

    /// Whether the value has no fractional part (an integral kind, or a whole `BigDecimal` /
    /// finite `Double`).
    pub fn is_integer(&self) -> bool {
        match *self {
            Number::Int(_) | Number::Long(_) | Number::BigInteger(_) => true,
            Number::Decimal(d) => d.is_integer(),
            Number::Double(v) => v.is_finite() && v.fract() == 0.0,
        }
    }

    /// Java `intValue()`: truncates; integral kinds wrap to the low 32 bits, a `Double`
    /// saturates (NaN is 0).
    pub fn int_value(&self) -> i32 {
        match *self {
            Number::Int(v) => v,
            Number::Double(v) => v as i32,
            _ => self.long_value() as i32,
        }
    }

    /// Java `longValue()`: truncates; integral kinds wrap to the low 64 bits, a `Double`
    /// saturates (NaN is 0).
    pub fn long_value(&self) -> i64 {
        match *self {
            Number::Int(v) => i64::from(v),
            Number::Long(v) => v,
            Number::BigInteger(v) => v as i64,
            Number::Decimal(d) => d.trunc_wrapping() as i64,
            Number::Double(v) => v as i64,
        }
    }

    /// `?int`: an `Integer` of [`Number::int_value`].
    pub fn to_int(&self) -> Number {
        Number::Int(self.int_value())
    }

    /// `?long`: a `Long` of [`Number::long_value`].
    pub fn to_long(&self) -> Number {
        Number::Long(self.long_value())
    }

    /// `?round`: `new BigDecimal(doubleValue()).add(0.5)` rounded to floor, so halves go up
    /// (`-2.5` is `-2`); a `BigDecimal` of scale 0. Infinite or NaN fails.
    pub fn round(&self) -> Result<Number, FormatError> {
        let v = self.finite_f64()?;
        let floor = v.floor();
        let r = if v - floor >= 0.5 { floor + 1.0 } else { floor };
        Self::whole_f64_to_decimal(r)
    }

    /// `?floor`: `new BigDecimal(doubleValue())` rounded to floor (a `BigDecimal`).
    pub fn floor(&self) -> Result<Number, FormatError> {
        Self::whole_f64_to_decimal(self.finite_f64()?.floor())
    }

    /// `?ceiling`: `new BigDecimal(doubleValue())` rounded to ceiling (a `BigDecimal`).
    pub fn ceiling(&self) -> Result<Number, FormatError> {
        Self::whole_f64_to_decimal(self.finite_f64()?.ceil())
    }

    fn finite_f64(&self) -> Result<f64, FormatError> {
        let v = self.to_f64();
        if v.is_finite() {
            Ok(v)
        } else {
            Err(FormatError::NotFinite {
                value: if v.is_nan() {
                    "NaN"
                } else if v > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                },
            })
        }
    }

    fn whole_f64_to_decimal(v: f64) -> Result<Number, FormatError> {
        // 2^127: beyond it an `i128` cannot hold the (exact) integer value of the double.
        if v.abs() >= 1.701_411_834_604_692_3e38 {
            return Err(FormatError::Overflow { op: "?round" });
        }
        Ok(Number::Decimal(Decimal::new(v as i128, 0)))
    }

    /// `?abs`, keeping the kind (`Integer.MIN_VALUE` stays itself, as in Java).
    pub fn abs(&self) -> Result<Number, FormatError> {
        Ok(match *self {
            Number::Int(v) => Number::Int(v.wrapping_abs()),
            Number::Long(v) => Number::Long(v.wrapping_abs()),
            Number::BigInteger(v) => Number::BigInteger(
                v.checked_abs()
                    .ok_or(FormatError::Overflow { op: "?abs" })?,
            ),
            Number::Decimal(d) if d.unscaled < 0 => Number::Decimal(d.negate()?),
            Number::Decimal(d) => Number::Decimal(d),
            Number::Double(v) => Number::Double(if v < 0.0 { -v } else { v }),
        })
    }

    /// `?number` and number literals: FreeMarker's `ArithmeticEngine.toNumber`: `INF`,
    /// `Infinity`, `-INF`, `-Infinity` and `NaN` become a `Double`, anything else must be Java
    /// `BigDecimal` syntax and becomes a `BigDecimal` (`"1.50"` keeps scale 2).
    pub fn parse(text: &str) -> Result<Number, FormatError> {
        match text {
            "INF" | "Infinity" => Ok(Number::Double(f64::INFINITY)),
            "-INF" | "-Infinity" => Ok(Number::Double(f64::NEG_INFINITY)),
            "NaN" => Ok(Number::Double(f64::NAN)),
            _ => Decimal::parse(text).map(Number::Decimal),
        }
    }

    /// `${n}` under `number_format=computer`: integers in full, `Double` and `BigDecimal`
    /// through `DecimalFormat("0.################")` with `HALF_EVEN` (at most 16 fraction
    /// digits, never an exponent, `-0` for negative zero), and `INF`, `-INF`, `NaN`.
    pub fn write_computer(&self, out: &mut BytesMut) {
        match *self {
            Number::Int(v) => write_int(i128::from(v), out),
            Number::Long(v) => write_int(i128::from(v), out),
            Number::BigInteger(v) => write_int(v, out),
            Number::Double(v) if v.is_nan() => out.extend_from_slice(b"NaN"),
            Number::Double(v) if v.is_infinite() => {
                out.extend_from_slice(if v > 0.0 { b"INF" } else { b"-INF" })
            }
            _ => {
                // The computer format cannot fail on a finite number.
                let _ = COMPUTER.format(self, out);
            }
        }
    }

    /// `n?c`. In FreeMarker 2.3.31 (incompatible_improvements 2.3.31) it prints exactly what the
    /// `computer` format prints, for every kind (checked with the oracle on integers, doubles
    /// tiny and huge, negative zero, infinities, NaN and long `BigDecimal`s).
    pub fn write_c(&self, out: &mut BytesMut) {
        self.write_computer(out)
    }

    /// How Jackson's default `ObjectMapper` writes the number (`Double` via `Double.toString`,
    /// non-finite doubles as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, `BigDecimal` via
    /// `toString`), for `UtilClass.toJsonString`.
    pub fn write_jackson(&self, out: &mut BytesMut) {
        match *self {
            Number::Int(v) => write_int(i128::from(v), out),
            Number::Long(v) => write_int(i128::from(v), out),
            Number::BigInteger(v) => write_int(v, out),
            Number::Decimal(d) => d.write_java(out),
            Number::Double(v) if v.is_nan() => out.extend_from_slice(b"\"NaN\""),
            Number::Double(v) if v.is_infinite() => out.extend_from_slice(if v > 0.0 {
                b"\"Infinity\""
            } else {
                b"\"-Infinity\""
            }),
            Number::Double(v) => write_java_double(v, out),
        }
    }
}

/// Java's `Double.toString(d)` (`1.0`, `100.0`, `0.001`, `1.0E7`, `1.0E-4`, `-0.0`, `NaN`,
/// `Infinity`): plain notation for magnitudes in `[10^-3, 10^7)`, else computerized scientific
/// notation, at least one fraction digit either way. See the module doc for the digits.
pub fn write_java_double(value: f64, out: &mut BytesMut) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 {
            b"Infinity"
        } else {
            b"-Infinity"
        });
    } else {
        Digits::from_f64(value).write_java_to_string(value.is_sign_negative(), out);
    }
}

#[cfg(test)]
mod tests;
