//! `java.text.DecimalFormat` for locale en_US: pattern compilation (`applyPattern`, with its
//! errors), FreeMarker's named formats and its extended `"pattern;; option=value"` syntax, and
//! formatting (`subformat`) of every [`Number`] kind.

use bytes::BytesMut;

use super::digits::{Digits, RoundingMode};
use super::{write_int, Number};
use crate::template::format::FormatError;

/// A compiled number format: the `number_format` setting or a `?string("...")` argument,
/// parsed once and then applied to any number. Named formats `computer`, `number` (also the
/// empty string), `currency` and `percent` are recognised; anything else is a
/// `java.text.DecimalFormat` pattern in locale en_US with `HALF_EVEN` rounding, optionally
/// followed by FreeMarker's extended options (`"0.00;; roundingMode=halfUp"`).
#[derive(Debug, Clone, PartialEq)]
pub struct NumberFormat {
    computer: bool,
    pos_prefix: String,
    pos_suffix: String,
    neg_prefix: String,
    neg_suffix: String,
    min_int: i32,
    max_int: i32,
    min_frac: i32,
    max_frac: i32,
    /// Digits per group in the integer part; 0 means no grouping.
    grouping: i32,
    decimal_always: bool,
    exponential: bool,
    min_exp_digits: i32,
    multiplier: i32,
    rounding: RoundingMode,
    decimal_sep: char,
    grouping_sep: char,
    exponent_sep: String,
    infinity: String,
    nan: String,
    /// The pattern has a currency sign: the monetary decimal separator applies.
    currency: bool,
    /// Symbols the affixes are resolved with (FreeMarker's extended options change them).
    symbols: Symbols,
}

/// The `DecimalFormatSymbols` that end up in affixes (en_US defaults).
#[derive(Debug, Clone, PartialEq)]
struct Symbols {
    percent: char,
    per_mill: char,
    minus: char,
    currency_symbol: String,
    currency_code: String,
    monetary_decimal: char,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            percent: '%',
            per_mill: '\u{2030}',
            minus: '-',
            currency_symbol: "$".to_owned(),
            currency_code: "USD".to_owned(),
            monetary_decimal: '.',
        }
    }
}

// Placeholders for the localised symbols in affixes, resolved by `resolve_affixes`.
const PERCENT: char = '\u{e000}';
const PER_MILL: char = '\u{e001}';
const CURRENCY: char = '\u{e002}';
const CURRENCY_CODE: char = '\u{e003}';
const MINUS: char = '\u{e004}';

/// Java's cap on fraction digits when formatting a `double`.
const DOUBLE_FRACTION_DIGITS: i32 = 340;

/// en_US `NumberFormat.getNumberInstance` (JDK 17 CLDR).
const NUMBER_PATTERN: &str = "#,##0.###";
/// en_US `NumberFormat.getCurrencyInstance` (JDK 17 CLDR).
const CURRENCY_PATTERN: &str = "\u{a4}#,##0.00";
/// en_US `NumberFormat.getPercentInstance` (JDK 17 CLDR).
const PERCENT_PATTERN: &str = "#,##0%";

impl NumberFormat {
    /// Compiles a format spec (a named format or a `DecimalFormat` pattern). A malformed
    /// pattern fails with [`FormatError::BadNumberFormat`] carrying Java's reason.
    pub fn new(spec: &str) -> Result<NumberFormat, FormatError> {
        match spec {
            "computer" => Ok(NumberFormat::computer()),
            "number" => NumberFormat::pattern(NUMBER_PATTERN, spec).map(Self::resolved),
            "currency" => NumberFormat::pattern(CURRENCY_PATTERN, spec).map(Self::resolved),
            "percent" => NumberFormat::pattern(PERCENT_PATTERN, spec).map(Self::resolved),
            _ if spec.starts_with('@') => Err(FormatError::BadNumberFormat {
                pattern: spec.to_owned(),
                reason: "custom number formats (@name) are not supported".to_owned(),
            }),
            _ => {
                let (pattern, options) = split_extended(spec);
                let mut format = if pattern.is_empty() {
                    // FreeMarker applies the pattern to a `getNumberInstance` object, and
                    // Java's `applyPattern("")` resets only the digit counts: grouping by 3
                    // stays.
                    let mut format = NumberFormat::pattern(NUMBER_PATTERN, spec)?;
                    format.min_int = 0;
                    format.max_frac = i32::MAX;
                    format
                } else {
                    NumberFormat::pattern(pattern, spec)?
                };
                if let Some(options) = options {
                    format.apply_options(options, spec)?;
                }
                Ok(format.resolved())
            }
        }
    }

    fn resolved(mut self) -> NumberFormat {
        self.resolve_affixes();
        self
    }

    /// The `computer` format (hookpipe's profile default): FreeMarker's
    /// `DecimalFormat("0.################")` with `INF`, `-INF` and `NaN`.
    pub fn computer() -> NumberFormat {
        NumberFormat {
            computer: true,
            pos_prefix: String::new(),
            pos_suffix: String::new(),
            neg_prefix: "-".to_owned(),
            neg_suffix: String::new(),
            min_int: 1,
            max_int: i32::MAX,
            min_frac: 0,
            max_frac: 16,
            grouping: 0,
            decimal_always: false,
            exponential: false,
            min_exp_digits: 0,
            multiplier: 1,
            rounding: RoundingMode::HalfEven,
            decimal_sep: '.',
            grouping_sep: ',',
            exponent_sep: "E".to_owned(),
            infinity: "INF".to_owned(),
            nan: "NaN".to_owned(),
            currency: false,
            symbols: Symbols::default(),
        }
    }

    /// Whether this is the `computer` format (lets the VM take its fast path).
    pub fn is_computer(&self) -> bool {
        self.computer
    }

    /// Java's `DecimalFormat.applyPattern` (en_US symbols).
    fn pattern(pattern: &str, spec: &str) -> Result<NumberFormat, FormatError> {
        let bad = |reason: String| FormatError::BadNumberFormat {
            pattern: spec.to_owned(),
            reason,
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut format = NumberFormat {
            computer: false,
            infinity: "\u{221e}".to_owned(),
            nan: "NaN".to_owned(),
            min_int: 1,
            ..NumberFormat::computer()
        };
        let mut pos = 0;
        let mut got_negative = false;
        let mut currency = false;
        for part in 0..2 {
            if pos >= chars.len() && part == 1 {
                break;
            }
            let mut prefix = String::new();
            let mut suffix = String::new();
            let mut in_quote = false;
            let mut phase = 0;
            let mut digit_left = 0i32;
            let mut zero_digits = 0i32;
            let mut digit_right = 0i32;
            let mut grouping_count = -1i32;
            let mut decimal_pos = -1i32;
            let mut multiplier = 1;
            let mut exponential = false;
            let mut min_exp_digits = 0;
            let mut reached_end = true;
            while pos < chars.len() {
                let ch = chars[pos];
                if phase == 1 {
                    match ch {
                        '#' => {
                            if zero_digits > 0 {
                                digit_right += 1;
                            } else {
                                digit_left += 1;
                            }
                            if grouping_count >= 0 && decimal_pos < 0 {
                                grouping_count += 1;
                            }
                        }
                        '0' => {
                            if digit_right > 0 {
                                return Err(bad(format!(
                                    "Unexpected '0' in pattern \"{pattern}\""
                                )));
                            }
                            zero_digits += 1;
                            if grouping_count >= 0 && decimal_pos < 0 {
                                grouping_count += 1;
                            }
                        }
                        ',' => grouping_count = 0,
                        '.' => {
                            if decimal_pos >= 0 {
                                return Err(bad(format!(
                                    "Multiple decimal separators in pattern \"{pattern}\""
                                )));
                            }
                            decimal_pos = digit_left + zero_digits + digit_right;
                        }
                        'E' => {
                            if exponential {
                                return Err(bad(format!(
                                    "Multiple exponential symbols in pattern \"{pattern}\""
                                )));
                            }
                            exponential = true;
                            pos += 1;
                            while pos < chars.len() && chars[pos] == '0' {
                                min_exp_digits += 1;
                                pos += 1;
                            }
                            if digit_left + zero_digits < 1 || min_exp_digits < 1 {
                                return Err(bad(format!(
                                    "Malformed exponential pattern \"{pattern}\""
                                )));
                            }
                            phase = 2;
                            continue;
                        }
                        _ => {
                            phase = 2;
                            continue;
                        }
                    }
                    pos += 1;
                    continue;
                }
                // Phases 0 (prefix) and 2 (suffix).
                let affix = if phase == 0 { &mut prefix } else { &mut suffix };
                if in_quote {
                    if ch == '\'' {
                        if chars.get(pos + 1) == Some(&'\'') {
                            pos += 1;
                            affix.push('\'');
                        } else {
                            in_quote = false;
                        }
                    } else {
                        affix.push(ch);
                    }
                    pos += 1;
                    continue;
                }
                match ch {
                    '#' | '0' | ',' | '.' if phase == 0 => {
                        phase = 1;
                        continue;
                    }
                    '#' | '0' | ',' | '.' => {
                        return Err(bad(format!(
                            "Unquoted special character '{ch}' in pattern \"{pattern}\""
                        )));
                    }
                    '\'' => {
                        if chars.get(pos + 1) == Some(&'\'') {
                            pos += 1;
                            affix.push('\'');
                        } else {
                            in_quote = true;
                        }
                    }
                    ';' => {
                        if phase == 0 || part == 1 {
                            return Err(bad(format!(
                                "Unquoted special character ';' in pattern \"{pattern}\""
                            )));
                        }
                        pos += 1;
                        reached_end = false;
                        break;
                    }
                    '%' => {
                        if multiplier != 1 {
                            return Err(bad(format!(
                                "Too many percent/per mille characters in pattern \"{pattern}\""
                            )));
                        }
                        multiplier = 100;
                        affix.push(PERCENT);
                    }
                    '\u{2030}' => {
                        if multiplier != 1 {
                            return Err(bad(format!(
                                "Too many percent/per mille characters in pattern \"{pattern}\""
                            )));
                        }
                        multiplier = 1000;
                        affix.push(PER_MILL);
                    }
                    '\u{a4}' => {
                        currency = true;
                        if chars.get(pos + 1) == Some(&'\u{a4}') {
                            pos += 1;
                            affix.push(CURRENCY_CODE);
                        } else {
                            affix.push(CURRENCY);
                        }
                    }
                    '-' => affix.push(MINUS),
                    _ => affix.push(ch),
                }
                pos += 1;
            }
            if in_quote {
                return Err(bad(format!("Malformed pattern \"{pattern}\"")));
            }
            if part == 0 {
                // Java's `applyPattern` validation and normalisation of the positive pattern.
                if zero_digits == 0 && digit_left > 0 && decimal_pos >= 0 {
                    let mut n = decimal_pos;
                    if n == 0 {
                        n += 1;
                    }
                    digit_right = digit_left - n;
                    digit_left = n - 1;
                    zero_digits = 1;
                }
                if (decimal_pos < 0 && digit_right > 0)
                    || (decimal_pos >= 0
                        && (decimal_pos < digit_left || decimal_pos > digit_left + zero_digits))
                    || grouping_count == 0
                {
                    return Err(bad(format!("Malformed pattern \"{pattern}\"")));
                }
                let total = digit_left + zero_digits + digit_right;
                let effective_decimal_pos = if decimal_pos >= 0 { decimal_pos } else { total };
                format.min_int = effective_decimal_pos - digit_left;
                format.max_int = if exponential {
                    digit_left + format.min_int
                } else {
                    i32::MAX
                };
                format.max_frac = if decimal_pos >= 0 {
                    total - decimal_pos
                } else {
                    0
                };
                format.min_frac = if decimal_pos >= 0 {
                    digit_left + zero_digits - decimal_pos
                } else {
                    0
                };
                format.grouping = grouping_count.max(0);
                format.decimal_always = decimal_pos == 0 || decimal_pos == total;
                format.exponential = exponential;
                format.min_exp_digits = min_exp_digits;
                format.multiplier = multiplier;
                format.pos_prefix = prefix;
                format.pos_suffix = suffix;
            } else {
                got_negative = true;
                format.neg_prefix = prefix;
                format.neg_suffix = suffix;
            }
            if reached_end {
                break;
            }
        }
        if !got_negative {
            format.neg_prefix = format!("{MINUS}{}", format.pos_prefix);
            format.neg_suffix = format.pos_suffix.clone();
        }
        format.currency = currency;
        Ok(format)
    }

    /// Replaces the symbol placeholders of the affixes with the (possibly customised) symbols.
    fn resolve_affixes(&mut self) {
        let symbols = &self.symbols;
        let resolve = |affix: &mut String| {
            if affix
                .chars()
                .any(|c| ('\u{e000}'..='\u{e004}').contains(&c))
            {
                let mut resolved = String::new();
                for c in affix.chars() {
                    match c {
                        PERCENT => resolved.push(symbols.percent),
                        PER_MILL => resolved.push(symbols.per_mill),
                        CURRENCY => resolved.push_str(&symbols.currency_symbol),
                        CURRENCY_CODE => resolved.push_str(&symbols.currency_code),
                        MINUS => resolved.push(symbols.minus),
                        other => resolved.push(other),
                    }
                }
                *affix = resolved;
            }
        };
        resolve(&mut self.pos_prefix);
        resolve(&mut self.pos_suffix);
        resolve(&mut self.neg_prefix);
        resolve(&mut self.neg_suffix);
        if self.currency {
            self.decimal_sep = self.symbols.monetary_decimal;
        }
    }

    /// FreeMarker's extended options (`roundingMode=halfUp multiplier=1000 ...`): `name=value`
    /// pairs separated by white-space or one comma; a value is quoted (`'...'` or `"..."`) or
    /// made of letters, digits, `_` and non-ASCII characters.
    fn apply_options(&mut self, options: &str, spec: &str) -> Result<(), FormatError> {
        let bad = |reason: String| FormatError::BadNumberFormat {
            pattern: spec.to_owned(),
            reason,
        };
        let chars: Vec<char> = options.chars().collect();
        let mut i = 0;
        let skip_ws = |i: &mut usize| {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
        };
        let word_char = |c: char| c.is_alphanumeric() || c == '_' || !c.is_ascii();
        skip_ws(&mut i);
        while i < chars.len() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if i == start {
                return Err(bad(format!("Expected a(n) name at position {start}")));
            }
            let name: String = chars[start..i].iter().collect();
            skip_ws(&mut i);
            if chars.get(i) != Some(&'=') {
                return Err(bad(format!("Expected \"=\" at position {i}")));
            }
            i += 1;
            skip_ws(&mut i);
            let value: String = match chars.get(i) {
                Some(&q) if q == '\'' || q == '"' => {
                    let mut value = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err(bad("Unterminated quoted value".to_owned())),
                            Some(&c) if c == q && chars.get(i + 1) == Some(&q) => {
                                value.push(q);
                                i += 2;
                            }
                            Some(&c) if c == q => {
                                i += 1;
                                break;
                            }
                            Some(&c) => {
                                value.push(c);
                                i += 1;
                            }
                        }
                    }
                    value
                }
                _ => {
                    let start = i;
                    while i < chars.len() && word_char(chars[i]) {
                        i += 1;
                    }
                    if i == start {
                        return Err(bad(format!("Expected a(n) value at position {start}")));
                    }
                    chars[start..i].iter().collect()
                }
            };
            self.apply_option(&name, &value, spec)?;
            // A separator: white-space, or one comma with optional white-space around it.
            let before = i;
            skip_ws(&mut i);
            if chars.get(i) == Some(&',') {
                i += 1;
                skip_ws(&mut i);
                if i >= chars.len() {
                    return Err(bad(format!(
                        "Expected a(n) name at position {i}, but reached the end of the input"
                    )));
                }
            } else if i == before && i < chars.len() {
                return Err(bad(format!(
                    "Expected a(n) parameter separator whitespace or comma at position {i}"
                )));
            }
        }
        Ok(())
    }

    fn apply_option(&mut self, name: &str, value: &str, spec: &str) -> Result<(), FormatError> {
        let bad = |reason: String| FormatError::BadNumberFormat {
            pattern: spec.to_owned(),
            reason: format!("{value:?} is an invalid value for the {name:?} parameter: {reason}"),
        };
        let single_char = || {
            let mut chars = value.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(c),
                _ => Err(bad("Must contain exactly 1 character.".to_owned())),
            }
        };
        match name {
            "roundingMode" => self.rounding = match value {
                "up" => RoundingMode::Up,
                "down" => RoundingMode::Down,
                "ceiling" => RoundingMode::Ceiling,
                "floor" => RoundingMode::Floor,
                "halfUp" => RoundingMode::HalfUp,
                "halfDown" => RoundingMode::HalfDown,
                "halfEven" => RoundingMode::HalfEven,
                "unnecessary" => RoundingMode::Unnecessary,
                _ => return Err(bad(
                    "Should be one of: up, down, ceiling, floor, halfDown, halfEven, unnecessary"
                        .to_owned(),
                )),
            },
            "multiplier" | "multipier" => {
                self.multiplier = value
                    .parse()
                    .map_err(|_| bad("Malformed integer.".to_owned()))?
            }
            "decimalSeparator" => self.decimal_sep = single_char()?,
            "monetaryDecimalSeparator" => self.symbols.monetary_decimal = single_char()?,
            "groupingSeparator" => self.grouping_sep = single_char()?,
            "exponentSeparator" => self.exponent_sep = value.to_owned(),
            "minusSign" => self.symbols.minus = single_char()?,
            "percent" => self.symbols.percent = single_char()?,
            "perMill" => self.symbols.per_mill = single_char()?,
            "infinity" => self.infinity = value.to_owned(),
            "nan" => self.nan = value.to_owned(),
            "currencySymbol" => self.symbols.currency_symbol = value.to_owned(),
            "currencyCode" => {
                let symbol = currency_symbol(value)
                    .ok_or_else(|| bad("Not a known ISO 4217 code.".to_owned()))?;
                self.symbols.currency_code = value.to_owned();
                self.symbols.currency_symbol = symbol.to_owned();
            }
            _ => {
                return Err(FormatError::BadNumberFormat {
                    pattern: spec.to_owned(),
                    reason: format!(
                        "Unsupported parameter name, {name:?}. The supported names are: \
                         currencyCode, currencySymbol, decimalSeparator, exponentSeparator, \
                         groupingSeparator, infinity, minusSign, monetaryDecimalSeparator, \
                         multiplier, nan, perMill, percent, roundingMode"
                    ),
                })
            }
        }
        Ok(())
    }

    /// Appends `number` formatted with this format.
    pub fn format(&self, number: &Number, out: &mut BytesMut) -> Result<(), FormatError> {
        let (negative, mut digits, is_integer) = match *number {
            Number::Double(v) => {
                if v.is_nan() || (v.is_infinite() && self.multiplier == 0) {
                    out.extend_from_slice(self.nan.as_bytes());
                    return Ok(());
                }
                let negative =
                    (v < 0.0 || (v == 0.0 && v.is_sign_negative())) ^ (self.multiplier < 0);
                let v = if self.multiplier != 1 {
                    v * f64::from(self.multiplier)
                } else {
                    v
                };
                if v.is_infinite() {
                    self.write_prefix(negative, out);
                    out.extend_from_slice(self.infinity.as_bytes());
                    self.write_suffix(negative, out);
                    return Ok(());
                }
                (negative, Digits::from_f64(v), false)
            }
            Number::Decimal(d) => {
                let d = if self.multiplier != 1 {
                    d.checked_mul(&super::Decimal::new(i128::from(self.multiplier), 0))?
                } else {
                    d
                };
                (d.unscaled < 0, Digits::from_decimal(&d), false)
            }
            Number::Int(_) | Number::Long(_) | Number::BigInteger(_) => {
                let v = match *number {
                    Number::Int(v) => i128::from(v),
                    Number::Long(v) => i128::from(v),
                    Number::BigInteger(v) => v,
                    _ => 0,
                };
                if self.computer {
                    write_int(v, out);
                    return Ok(());
                }
                let v = v
                    .checked_mul(i128::from(self.multiplier))
                    .ok_or(FormatError::Overflow { op: "format" })?;
                (v < 0, Digits::from_u128(v.unsigned_abs()), true)
            }
        };
        if self.exponential {
            digits.round(
                self.max_int.saturating_add(self.max_frac),
                false,
                self.rounding,
                negative,
            )?;
        } else if !is_integer {
            let max_frac = if matches!(number, Number::Double(_)) {
                self.max_frac.min(DOUBLE_FRACTION_DIGITS)
            } else {
                self.max_frac
            };
            digits.round(max_frac, true, self.rounding, negative)?;
        }
        self.write_prefix(negative, out);
        if self.exponential {
            self.write_exponential(&digits, out);
        } else {
            self.write_fixed(&digits, is_integer, out);
        }
        self.write_suffix(negative, out);
        Ok(())
    }

    fn write_prefix(&self, negative: bool, out: &mut BytesMut) {
        let prefix = if negative {
            &self.neg_prefix
        } else {
            &self.pos_prefix
        };
        out.extend_from_slice(prefix.as_bytes());
    }

    fn write_suffix(&self, negative: bool, out: &mut BytesMut) {
        let suffix = if negative {
            &self.neg_suffix
        } else {
            &self.pos_suffix
        };
        out.extend_from_slice(suffix.as_bytes());
    }

    /// Java's `DecimalFormat.subformat`, fixed-point branch.
    fn write_fixed(&self, digits: &Digits, is_integer: bool, out: &mut BytesMut) {
        let mut decimal_buf = [0u8; 4];
        let decimal = self.decimal_sep.encode_utf8(&mut decimal_buf).as_bytes();
        let mut count = self.min_int;
        let mut index = 0usize;
        if digits.decimal_at > 0 && count < digits.decimal_at {
            count = digits.decimal_at;
        }
        if count > self.max_int {
            count = self.max_int;
            index = (digits.decimal_at - count).max(0) as usize;
        }
        let start = out.len();
        let mut i = count - 1;
        while i >= 0 {
            if i < digits.decimal_at && index < digits.count {
                out.extend_from_slice(&[b'0' + digits.d[index]]);
                index += 1;
            } else {
                out.extend_from_slice(b"0");
            }
            if self.grouping > 0 && i > 0 && i % self.grouping == 0 {
                let mut buf = [0u8; 4];
                out.extend_from_slice(self.grouping_sep.encode_utf8(&mut buf).as_bytes());
            }
            i -= 1;
        }
        let fraction_present = self.min_frac > 0 || (!is_integer && index < digits.count);
        if !fraction_present && out.len() == start {
            out.extend_from_slice(b"0");
        }
        if self.decimal_always || fraction_present {
            out.extend_from_slice(decimal);
        }
        for i in 0..self.max_frac {
            if i >= self.min_frac && (is_integer || index >= digits.count) {
                break;
            }
            if -1 - i > digits.decimal_at - 1 {
                out.extend_from_slice(b"0");
                continue;
            }
            if !is_integer && index < digits.count {
                out.extend_from_slice(&[b'0' + digits.d[index]]);
                index += 1;
            } else {
                out.extend_from_slice(b"0");
            }
        }
    }

    /// Java's `DecimalFormat.subformat`, exponential branch.
    fn write_exponential(&self, digits: &Digits, out: &mut BytesMut) {
        let mut exponent = digits.decimal_at;
        let repeat = self.max_int;
        let mut min_int = self.min_int;
        if repeat > 1 && repeat > self.min_int {
            exponent = if exponent >= 1 {
                ((exponent - 1) / repeat) * repeat
            } else {
                ((exponent - repeat) / repeat) * repeat
            };
            min_int = 1;
        } else {
            exponent -= min_int;
        }
        let mut minimum_digits = self.min_int.saturating_add(self.min_frac);
        if minimum_digits < 0 {
            minimum_digits = i32::MAX;
        }
        let integer_digits = if digits.is_zero() {
            min_int
        } else {
            digits.decimal_at - exponent
        };
        if minimum_digits < integer_digits {
            minimum_digits = integer_digits;
        }
        let total = (digits.count as i32).max(minimum_digits);
        let mut decimal_buf = [0u8; 4];
        let decimal = self.decimal_sep.encode_utf8(&mut decimal_buf).as_bytes();
        for i in 0..total {
            if i == integer_digits {
                out.extend_from_slice(decimal);
            }
            if (i as usize) < digits.count {
                out.extend_from_slice(&[b'0' + digits.d[i as usize]]);
            } else {
                out.extend_from_slice(b"0");
            }
        }
        if self.decimal_always && total == integer_digits {
            out.extend_from_slice(decimal);
        }
        out.extend_from_slice(self.exponent_sep.as_bytes());
        if digits.is_zero() {
            exponent = 0;
        }
        if exponent < 0 {
            out.extend_from_slice(b"-");
        }
        let magnitude = exponent.unsigned_abs();
        let exp_digits = magnitude.checked_ilog10().map_or(1, |l| l + 1) as i32;
        for _ in exp_digits..self.min_exp_digits {
            out.extend_from_slice(b"0");
        }
        write_int(i128::from(magnitude), out);
    }
}

/// Splits FreeMarker's extended syntax at the end of the standard pattern: `pattern;; options`,
/// or `positive;negative; options` (after a negative subpattern a single `;` ends it).
/// Semicolons inside quotes do not count.
fn split_extended(spec: &str) -> (&str, Option<&str>) {
    let bytes = spec.as_bytes();
    let mut in_quote = false;
    let mut seen_negative = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => in_quote = !in_quote,
            b';' if !in_quote => {
                if seen_negative {
                    return (&spec[..i], Some(&spec[i + 1..]));
                }
                if bytes.get(i + 1) == Some(&b';') {
                    return (&spec[..i], Some(&spec[i + 2..]));
                }
                seen_negative = true;
            }
            _ => {}
        }
        i += 1;
    }
    (spec, None)
}

/// The en_US symbol of the ISO 4217 currencies hookpipe knows (JDK 17 CLDR); other codes are
/// refused, as Java refuses unknown ones.
fn currency_symbol(code: &str) -> Option<&'static str> {
    Some(match code {
        "USD" => "$",
        "EUR" => "\u{20ac}",
        "GBP" => "\u{a3}",
        "JPY" => "\u{a5}",
        "CAD" => "CA$",
        "AUD" => "A$",
        "NZD" => "NZ$",
        "HKD" => "HK$",
        "MXN" => "MX$",
        "BRL" => "R$",
        "CNY" => "CN\u{a5}",
        "INR" => "\u{20b9}",
        "KRW" => "\u{20a9}",
        "ILS" => "\u{20aa}",
        "VND" => "\u{20ab}",
        "TWD" => "NT$",
        "XAF" => "FCFA",
        "XOF" => "F\u{202f}CFA",
        "CHF" => "CHF",
        "SEK" => "SEK",
        "NOK" => "NOK",
        "DKK" => "DKK",
        "PLN" => "PLN",
        "CZK" => "CZK",
        "HUF" => "HUF",
        "RUB" => "RUB",
        "TRY" => "TRY",
        "ZAR" => "ZAR",
        "SGD" => "SGD",
        "THB" => "THB",
        "IDR" => "IDR",
        "MYR" => "MYR",
        "PHP" => "PHP",
        "AED" => "AED",
        "SAR" => "SAR",
        _ => return None,
    })
}
