//! The decimal digits of a number, as Java's `java.text.DigitList` holds them: digits
//! `d[0..count]` with no trailing zeros and the position of the decimal point, value
//! `0.d0d1d2… × 10^decimal_at`. Java's `DecimalFormat` and `Double.toString` both work on this
//! form, and so does rounding (`DigitList.round` / `shouldRoundUp`, reproduced here including
//! its treatment of doubles whose shortest decimal form is an exact tie).

use std::cmp::Ordering;
use std::fmt::Write as _;

use bytes::BytesMut;

use super::{Decimal, StackBuf};
use crate::template::format::FormatError;

/// Java's `RoundingMode`, as `DecimalFormat` applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoundingMode {
    Up,
    Down,
    Ceiling,
    Floor,
    HalfUp,
    HalfDown,
    HalfEven,
    Unnecessary,
}

const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Room for the 39 digits of an `i128` plus carries.
const CAP: usize = 48;

/// Digits of a magnitude; see the module doc.
#[derive(Debug, Clone, Copy)]
pub(super) struct Digits {
    pub(super) d: [u8; CAP],
    pub(super) count: usize,
    pub(super) decimal_at: i32,
    /// How the digits relate to the exact value: decides ties the way Java's `FloatingDecimal`
    /// flags (`decimalDigitsExact`, `digitsRoundedUp`) do.
    source: Source,
}

/// Where a [`Digits`] came from, for tie-breaking.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// An exact decimal (integer or `BigDecimal`).
    Exact,
    /// The shortest form of this (absolute) double: compare with its exact binary value.
    Double(f64),
    /// Java's long fast path for integral doubles: reported neither exact nor rounded up, so a
    /// tie rounds up.
    InexactNotRoundedUp,
}

impl Digits {
    fn zero() -> Digits {
        Digits {
            d: [0; CAP],
            count: 0,
            decimal_at: 0,
            source: Source::Exact,
        }
    }

    /// Whether the value is zero (no digits).
    pub(super) fn is_zero(&self) -> bool {
        self.count == 0
    }

    fn strip_trailing_zeros(&mut self) {
        while self.count > 0 && self.d[self.count - 1] == 0 {
            self.count -= 1;
        }
        if self.count == 0 {
            self.decimal_at = 0;
        }
    }

    /// The digits JDK 17's `FloatingDecimal` gives `|value|` (finite): the shortest that
    /// round-trip, except for integral values in `[1, 2^63)`, where Java takes the exact integer
    /// and drops only the low digits its table calls insignificant (`1.37342863480957901E18`),
    /// and reports the digits inexact (so `DecimalFormat` rounds a tie up: `-58325.0` with
    /// `0.###E0` is `-5.833E4`).
    pub(super) fn from_f64(value: f64) -> Digits {
        let v = value.abs();
        let mut digits = Digits::zero();
        if v == 0.0 {
            return digits;
        }
        if v.fract() == 0.0 && (1.0..TWO_POW_63).contains(&v) {
            return Digits::from_f64_long_path(v);
        }
        let mut buf = StackBuf::<40>::new();
        let _ = write!(buf, "{v:e}");
        let text = buf.as_str();
        let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
        for b in mantissa.bytes().filter(u8::is_ascii_digit) {
            if digits.count < CAP {
                digits.d[digits.count] = b - b'0';
                digits.count += 1;
            }
        }
        digits.decimal_at = exp.parse::<i32>().unwrap_or(0) + 1;
        digits.source = Source::Double(v);
        digits.strip_trailing_zeros();
        if digits.count < 19 {
            digits.break_tie_to_even(v);
        }
        digits
    }

    /// When the exact value of `v` lies exactly halfway between two decimals of the shortest
    /// length, Java's `FloatingDecimal` takes the one with the even last digit, where Rust's
    /// shortest form may take the other (`111275153569243.125` prints as
    /// `1.1127515356924312E14` in Java).
    fn break_tie_to_even(&mut self, v: f64) {
        let bits = v.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as i32;
        let fraction = bits & ((1u64 << 52) - 1);
        let (mut mantissa, mut exp2) = if biased == 0 {
            (fraction, -1074)
        } else {
            (fraction | (1u64 << 52), biased - 1075)
        };
        let zeros = mantissa.trailing_zeros();
        mantissa >>= zeros;
        exp2 += zeros as i32;
        // The exact value as `p × 10^exp10` with no trailing zeros in `p`, when `p` is small.
        let (p, exp10) = if exp2 < 0 {
            let k = (-exp2) as u32;
            match 5u128
                .checked_pow(k)
                .and_then(|f| f.checked_mul(u128::from(mantissa)))
            {
                Some(p) => (p, -(k as i32)),
                None => return,
            }
        } else {
            let mut m = u128::from(mantissa);
            let mut t = 0;
            while t < exp2 && m % 5 == 0 {
                m /= 5;
                t += 1;
            }
            match 1u128
                .checked_shl((exp2 - t) as u32)
                .filter(|_| exp2 - t < 127)
                .and_then(|f| f.checked_mul(m))
            {
                Some(p) => (p, t),
                None => return,
            }
        };
        let lower = 10u128.pow(self.count as u32);
        if !(lower..lower * 10).contains(&p) || p % 10 != 5 {
            return;
        }
        let mut kept = p / 10;
        if kept % 2 == 1 {
            kept += 1;
        }
        let rebuilt = Digits::from_u128(kept);
        self.d = rebuilt.d;
        self.count = rebuilt.count;
        self.decimal_at = rebuilt.decimal_at + exp10 + 1;
    }

    /// `FloatingDecimal.dtoa`'s fast path for an integral double `1 <= v < 2^63`
    /// (`developLongDigits` with `insignificantDigitsForPow2`).
    fn from_f64_long_path(v: f64) -> Digits {
        // Java's insignificantDigitsNumber table, indexed by binExp - 54.
        const INSIGNIFICANT: [u32; 9] = [0, 0, 0, 0, 1, 1, 1, 2, 2];
        let bin_exp = ((v.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        let p2 = bin_exp - 54;
        let insignificant = if p2 > 1 {
            INSIGNIFICANT[p2 as usize]
        } else {
            0
        };
        let mut lvalue = v as u64;
        let mut dropped = 0;
        if insignificant != 0 {
            let pow = 10u64.pow(insignificant);
            let residue = lvalue % pow;
            lvalue /= pow;
            if residue >= pow / 2 {
                lvalue += 1;
            }
            dropped = insignificant as i32;
        }
        let mut digits = Digits::from_u128(u128::from(lvalue));
        digits.decimal_at += dropped;
        digits.source = Source::InexactNotRoundedUp;
        digits
    }

    /// The digits of an integer magnitude.
    pub(super) fn from_u128(value: u128) -> Digits {
        let mut digits = Digits::zero();
        if value == 0 {
            return digits;
        }
        let mut buf = StackBuf::<48>::new();
        let _ = write!(buf, "{value}");
        for b in buf.as_str().bytes() {
            digits.d[digits.count] = b - b'0';
            digits.count += 1;
        }
        digits.decimal_at = digits.count as i32;
        digits.strip_trailing_zeros();
        digits
    }

    /// The digits of a decimal's magnitude.
    pub(super) fn from_decimal(value: &Decimal) -> Digits {
        let mut digits = Digits::from_u128(value.unscaled.unsigned_abs());
        if !digits.is_zero() {
            digits.decimal_at = digits.decimal_at.saturating_sub(value.scale);
        }
        digits
    }

    /// The digits as an integer, and the power of ten of the last one.
    fn integer_and_exponent(&self) -> (u128, i32) {
        let mut n: u128 = 0;
        for &digit in &self.d[..self.count] {
            n = n * 10 + u128::from(digit);
        }
        (n, self.decimal_at - self.count as i32)
    }

    /// `new BigDecimal(Double.toString(v))`, given `v`'s digits: the scale Java's text implies
    /// (`0.1` scale 1, `100.0` scale 1, `1.0E10` scale -9).
    pub(super) fn java_to_string_decimal(&self, negative: bool) -> Decimal {
        if self.is_zero() {
            return Decimal::new(0, 1);
        }
        let (n, last_exp) = self.integer_and_exponent();
        let count = self.count as i32;
        let e = self.decimal_at - 1;
        let scale = if (-3..7).contains(&e) {
            (count - self.decimal_at).max(1)
        } else {
            (count - 1).max(1) - e
        };
        // value = n × 10^last_exp = unscaled × 10^-scale
        let pad = (last_exp + scale) as u32;
        let unscaled = (n as i128) * 10i128.pow(pad);
        Decimal::new(if negative { -unscaled } else { unscaled }, scale)
    }

    /// Java's `Double.toString` text for these digits.
    pub(super) fn write_java_to_string(&self, negative: bool, out: &mut BytesMut) {
        if negative {
            out.extend_from_slice(b"-");
        }
        if self.is_zero() {
            out.extend_from_slice(b"0.0");
            return;
        }
        let digit = |i: usize| b'0' + self.d[i];
        let e = self.decimal_at - 1;
        if (-3..7).contains(&e) {
            if e >= 0 {
                let int_len = (e + 1) as usize;
                for i in 0..int_len {
                    out.extend_from_slice(&[if i < self.count { digit(i) } else { b'0' }]);
                }
                out.extend_from_slice(b".");
                if self.count > int_len {
                    for i in int_len..self.count {
                        out.extend_from_slice(&[digit(i)]);
                    }
                } else {
                    out.extend_from_slice(b"0");
                }
            } else {
                out.extend_from_slice(b"0.");
                for _ in 0..(-e - 1) {
                    out.extend_from_slice(b"0");
                }
                for i in 0..self.count {
                    out.extend_from_slice(&[digit(i)]);
                }
            }
        } else {
            out.extend_from_slice(&[digit(0), b'.']);
            if self.count > 1 {
                for i in 1..self.count {
                    out.extend_from_slice(&[digit(i)]);
                }
            } else {
                out.extend_from_slice(b"0");
            }
            out.extend_from_slice(b"E");
            let mut buf = StackBuf::<16>::new();
            let _ = write!(buf, "{e}");
            out.extend_from_slice(buf.as_str().as_bytes());
        }
    }

    /// How the digits compare with the exact value they stand for: `Greater` when the shortest
    /// form was rounded up (Java's `digitsRoundedUp`), `Equal` when exact.
    fn compare_with_source(&self) -> Ordering {
        match self.source {
            Source::Exact => Ordering::Equal,
            Source::InexactNotRoundedUp => Ordering::Less,
            Source::Double(v) => {
                let (n, last_exp) = self.integer_and_exponent();
                compare_decimal_with_double(n, last_exp, v)
            }
        }
    }

    /// Java's `DigitList.shouldRoundUp(maximumDigits, …)`.
    fn should_round_up(
        &self,
        max: usize,
        mode: RoundingMode,
        negative: bool,
    ) -> Result<bool, FormatError> {
        let any_nonzero_from = |from: usize| self.d[from..self.count].iter().any(|&d| d != 0);
        Ok(match mode {
            RoundingMode::Up => any_nonzero_from(max),
            RoundingMode::Down => false,
            RoundingMode::Ceiling => any_nonzero_from(max) && !negative,
            RoundingMode::Floor => any_nonzero_from(max) && negative,
            RoundingMode::HalfUp | RoundingMode::HalfDown => {
                if self.d[max] > 5 {
                    true
                } else if self.d[max] == 5 {
                    if max == self.count - 1 {
                        match self.compare_with_source() {
                            Ordering::Equal => mode == RoundingMode::HalfUp,
                            Ordering::Greater => false,
                            Ordering::Less => true,
                        }
                    } else {
                        true
                    }
                } else {
                    false
                }
            }
            RoundingMode::HalfEven => {
                if self.d[max] > 5 {
                    true
                } else if self.d[max] == 5 {
                    if max == self.count - 1 {
                        match self.compare_with_source() {
                            Ordering::Greater => false,
                            Ordering::Less => true,
                            Ordering::Equal => max > 0 && self.d[max - 1] % 2 != 0,
                        }
                    } else {
                        any_nonzero_from(max + 1)
                    }
                } else {
                    false
                }
            }
            RoundingMode::Unnecessary => {
                if any_nonzero_from(max) {
                    return Err(FormatError::BadNumberFormat {
                        pattern: "roundingMode=unnecessary".to_owned(),
                        reason: "Rounding needed with the rounding mode being set to RoundingMode.UNNECESSARY"
                            .to_owned(),
                    });
                }
                false
            }
        })
    }

    /// Java's `DigitList.set(…, maximumDigits, fixedPoint)` rounding step: keeps
    /// `maximum` fraction digits when `fixed_point`, else `maximum` significant digits
    /// (0 meaning all).
    pub(super) fn round(
        &mut self,
        maximum: i32,
        fixed_point: bool,
        mode: RoundingMode,
        negative: bool,
    ) -> Result<(), FormatError> {
        if self.is_zero() {
            return Ok(());
        }
        if fixed_point {
            if -self.decimal_at > maximum {
                *self = Digits::zero();
                return Ok(());
            } else if -self.decimal_at == maximum {
                if self.should_round_up(0, mode, negative)? {
                    self.count = 1;
                    self.decimal_at += 1;
                    self.d[0] = 1;
                } else {
                    *self = Digits::zero();
                }
                return Ok(());
            }
        } else if maximum <= 0 {
            return Ok(());
        }
        let max = if fixed_point {
            maximum.saturating_add(self.decimal_at)
        } else {
            maximum
        };
        if max >= 0 && (max as usize) < self.count {
            let mut max = max as usize;
            if self.should_round_up(max, mode, negative)? {
                loop {
                    if max == 0 {
                        self.d[0] = 1;
                        self.decimal_at += 1;
                        max = 0;
                        break;
                    }
                    max -= 1;
                    self.d[max] += 1;
                    if self.d[max] <= 9 {
                        break;
                    }
                }
                max += 1;
            }
            self.count = max;
            while self.count > 0 && self.d[self.count - 1] == 0 {
                self.count -= 1;
            }
            if self.count == 0 {
                *self = Digits::zero();
            }
        }
        Ok(())
    }
}

/// Compares `n × 10^exp10` with the exact binary value of the positive finite double `v`,
/// with a small arbitrary-precision integer (only reached on exact ties of the shortest form).
fn compare_decimal_with_double(n: u128, exp10: i32, v: f64) -> Ordering {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mantissa, exp2) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased - 1075)
    };
    let mut left = BigUint::from_u128(n);
    let mut right = BigUint::from_u128(u128::from(mantissa));
    if exp10 >= 0 {
        left.mul_pow10(exp10 as u32);
    } else {
        right.mul_pow10((-exp10) as u32);
    }
    if exp2 >= 0 {
        right.shl(exp2 as u32);
    } else {
        left.shl((-exp2) as u32);
    }
    left.cmp(&right)
}

/// Just enough of an unsigned big integer for [`compare_decimal_with_double`].
#[derive(PartialEq, Eq)]
struct BigUint {
    /// Little-endian 32-bit limbs, no high zero limbs.
    limbs: Vec<u32>,
}

impl BigUint {
    fn from_u128(mut v: u128) -> BigUint {
        let mut limbs = Vec::new();
        while v != 0 {
            limbs.push(v as u32);
            v >>= 32;
        }
        BigUint { limbs }
    }

    fn mul_small(&mut self, m: u32) {
        let mut carry = 0u64;
        for limb in &mut self.limbs {
            let p = u64::from(*limb) * u64::from(m) + carry;
            *limb = p as u32;
            carry = p >> 32;
        }
        if carry != 0 {
            self.limbs.push(carry as u32);
        }
    }

    fn mul_pow10(&mut self, mut k: u32) {
        while k >= 9 {
            self.mul_small(1_000_000_000);
            k -= 9;
        }
        if k > 0 {
            self.mul_small(10u32.pow(k));
        }
    }

    fn shl(&mut self, bits: u32) {
        if self.limbs.is_empty() {
            return;
        }
        let words = (bits / 32) as usize;
        let rest = bits % 32;
        if rest != 0 {
            let mut carry = 0u32;
            for limb in &mut self.limbs {
                let next = *limb >> (32 - rest);
                *limb = (*limb << rest) | carry;
                carry = next;
            }
            if carry != 0 {
                self.limbs.push(carry);
            }
        }
        self.limbs.splice(0..0, std::iter::repeat_n(0, words));
    }
}

impl Ord for BigUint {
    fn cmp(&self, other: &Self) -> Ordering {
        self.limbs
            .len()
            .cmp(&other.limbs.len())
            .then_with(|| self.limbs.iter().rev().cmp(other.limbs.iter().rev()))
    }
}

impl PartialOrd for BigUint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
