//! Dates as FreeMarker holds them (a `java.util.Date`: milliseconds since the epoch, plus which
//! parts are in use), formatted and parsed the way Java's `SimpleDateFormat` does it with
//! `lenient=true`, in time zone UTC and locale en_US (JDK 17 CLDR data), together with
//! FreeMarker's named styles (`short`, `medium`, `long`, `full`, `short_medium`...) and its ISO
//! 8601 formats (`iso`, `xs`, with options like `iso_m_nz`; the `?iso_utc` family).
//!
//! Calendars: `SimpleDateFormat` uses Java's `GregorianCalendar`, which switches to the Julian
//! calendar before 1582-10-15; so does this module. FreeMarker's ISO formats use the proleptic
//! Gregorian calendar throughout, as FreeMarker does.
//!
//! Known simplifications (not seen in webhook templates): when parsing, day-of-week (`E`, `u`)
//! and week fields (`w`, `W`, `F`, `Y`) are read but do not move the date, and time zone names
//! other than UTC/GMT/Z, numeric offsets and the US zones (`PST`, `EST`...) are not recognised.

use std::fmt::Write as _;

use bytes::BytesMut;

use super::number::StackBuf;
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
    /// Not known: cannot be printed with a named style or ISO format without `?date`, `?time`
    /// or `?datetime` first (an explicit pattern works).
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

const MILLIS_PER_DAY: i64 = 86_400_000;
/// 1582-10-15T00:00:00Z, the first day of the Gregorian calendar in Java's `GregorianCalendar`.
const GREGORIAN_CUTOVER_MILLIS: i64 = -12_219_292_800_000;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const SHORT_MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// Sunday first, as Java's `Calendar.DAY_OF_WEEK` (1 = Sunday).
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const SHORT_WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1..=12; any day, lenient).
fn days_from_gregorian(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + (day - 1)
}

/// The proleptic Gregorian date (year, month 1..=12, day) of a day number.
fn gregorian_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a Julian calendar date (month 1..=12; any day, lenient).
fn days_from_julian(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(4);
    let yoe = y - era * 4;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    // Day 0 of the Julian "era" arithmetic is 0000-03-01 (Julian) = 1969-12-19 Gregorian
    // offset: Julian 0000-03-01 is 719_470 days before 1970-01-01.
    era * 1461 + yoe * 365 + doy - 719_470 + (day - 1)
}

/// The Julian calendar date (year, month 1..=12, day) of a day number.
fn julian_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_470;
    let era = z.div_euclid(1461);
    let doe = z - era * 1461;
    let yoe = ((doe - doe / 1460) / 365).min(3);
    let doy = doe - 365 * yoe;
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 4 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether a day number falls in Java's Julian period.
fn is_julian_day(days: i64) -> bool {
    days < GREGORIAN_CUTOVER_MILLIS / MILLIS_PER_DAY
}

/// Day number of (year, month, day) in Java's hybrid calendar.
fn days_from_hybrid(year: i64, month: i64, day: i64) -> i64 {
    let gregorian = days_from_gregorian(year, month, day);
    if is_julian_day(gregorian) {
        days_from_julian(year, month, day)
    } else {
        gregorian
    }
}

/// (year, month, day) in Java's hybrid calendar.
fn hybrid_from_days(days: i64) -> (i64, i64, i64) {
    if is_julian_day(days) {
        julian_from_days(days)
    } else {
        gregorian_from_days(days)
    }
}

/// The calendar fields `SimpleDateFormat` prints, for one instant in UTC.
struct Fields {
    /// Proleptic year (1 BC is 0).
    year: i64,
    month: i64,
    day: i64,
    /// 1 = Sunday.
    weekday: i64,
    day_of_year: i64,
    week_year: i64,
    week_of_year: i64,
    week_of_month: i64,
    /// Days since the 1st of the month.
    day_index: i64,
    hour: i64,
    minute: i64,
    second: i64,
    milli: i64,
}

impl Fields {
    fn of(millis: i64, hybrid: bool) -> Fields {
        let days = millis.div_euclid(MILLIS_PER_DAY);
        let ms = millis.rem_euclid(MILLIS_PER_DAY);
        let (year, month, day) = if hybrid {
            hybrid_from_days(days)
        } else {
            gregorian_from_days(days)
        };
        let to_days = |y, m, d| {
            if hybrid {
                days_from_hybrid(y, m, d)
            } else {
                days_from_gregorian(y, m, d)
            }
        };
        let weekday_of = |d: i64| (d + 4).rem_euclid(7) + 1;
        let weekday = weekday_of(days);
        let jan1 = to_days(year, 1, 1);
        let day_of_year = days - jan1 + 1;
        // Weeks start on Sunday and week 1 holds January 1 (en_US: minimal days 1).
        let week_start = days - (weekday - 1);
        let next_jan1 = to_days(year + 1, 1, 1);
        let (week_year, week_of_year) = if week_start + 6 >= next_jan1 {
            (year + 1, 1)
        } else {
            let first_week_start = jan1 - (weekday_of(jan1) - 1);
            (year, (week_start - first_week_start) / 7 + 1)
        };
        // Counted in actual days since the 1st, which differs from the day number only in the
        // month of the Julian-Gregorian cutover.
        let first_of_month = to_days(year, month, 1);
        let day_index = days - first_of_month;
        let week_of_month = (day_index + weekday_of(first_of_month) - 1) / 7 + 1;
        Fields {
            year,
            month,
            day,
            weekday,
            day_of_year,
            week_year,
            week_of_year,
            week_of_month,
            day_index,
            hour: ms / 3_600_000,
            minute: ms / 60_000 % 60,
            second: ms / 1000 % 60,
            milli: ms % 1000,
        }
    }
}

/// One element of a compiled `SimpleDateFormat` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Text printed (and matched) as is.
    Literal(String),
    /// A pattern letter repeated `count` times.
    Field(char, usize),
}

/// A compiled `SimpleDateFormat` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The pattern text (error messages quote it).
    source: String,
    tokens: Vec<Token>,
    /// Java's `defaultCenturyStart` year (80 years before the format was made), for two-digit
    /// years.
    century_start_year: i64,
    /// Milliseconds of `defaultCenturyStart`.
    century_start_millis: i64,
}

const PATTERN_LETTERS: &str = "GyMdkHmsSEDFwWahKzZYuXL";

impl Pattern {
    /// Java's `SimpleDateFormat.compile`.
    fn compile(pattern: &str, spec: &str) -> Result<Pattern, FormatError> {
        let bad = |reason: String| FormatError::BadDateFormat {
            pattern: spec.to_owned(),
            reason,
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                if chars.get(i + 1) == Some(&'\'') {
                    literal.push('\'');
                    i += 2;
                    continue;
                }
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(bad("Unterminated quote".to_owned())),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            literal.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            literal.push(other);
                            i += 1;
                        }
                    }
                }
                continue;
            }
            if c.is_ascii_alphabetic() {
                if !PATTERN_LETTERS.contains(c) {
                    return Err(bad(format!("Illegal pattern character '{c}'")));
                }
                let mut count = 1;
                while chars.get(i + count) == Some(&c) {
                    count += 1;
                }
                if c == 'X' && count > 3 {
                    return Err(bad(format!("invalid ISO 8601 format: length={count}")));
                }
                if !literal.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut literal)));
                }
                tokens.push(Token::Field(c, count));
                i += count;
                continue;
            }
            literal.push(c);
            i += 1;
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        let (century_start_year, century_start_millis) = century_start();
        Ok(Pattern {
            source: pattern.to_owned(),
            tokens,
            century_start_year,
            century_start_millis,
        })
    }

    fn format(&self, millis: i64, out: &mut BytesMut) {
        let f = Fields::of(millis, true);
        for token in &self.tokens {
            match token {
                Token::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Token::Field(c, count) => format_field(*c, *count, &f, out),
            }
        }
    }
}

/// Java's `defaultCenturyStart`: now minus 80 years (year and epoch millis).
fn century_start() -> (i64, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let days = now.div_euclid(MILLIS_PER_DAY);
    let (y, m, d) = gregorian_from_days(days);
    let start_days = days_from_gregorian(y - 80, m, d);
    (
        y - 80,
        start_days * MILLIS_PER_DAY + now.rem_euclid(MILLIS_PER_DAY),
    )
}

/// Appends the non-negative `value` zero-padded to `width` digits.
fn pad(value: i64, width: usize, out: &mut BytesMut) {
    let mut buf = StackBuf::<24>::new();
    let _ = write!(buf, "{value}");
    let digits = buf.as_str().as_bytes();
    for _ in digits.len()..width {
        out.extend_from_slice(b"0");
    }
    out.extend_from_slice(digits);
}

/// Java's `SimpleDateFormat.subFormat` for one field, en_US, UTC.
fn format_field(c: char, count: usize, f: &Fields, out: &mut BytesMut) {
    let year_of_era = if f.year <= 0 { 1 - f.year } else { f.year };
    match c {
        'G' => out.extend_from_slice(if f.year <= 0 { b"BC" } else { b"AD" }),
        'y' | 'Y' => {
            // `y` is the year of the era; `Y` the proleptic week year (1200 BC is -1199).
            let y = if c == 'y' { year_of_era } else { f.week_year };
            if y < 0 {
                out.extend_from_slice(b"-");
            }
            if count == 2 {
                pad(y.abs() % 100, 2, out);
            } else {
                pad(y.abs(), count, out);
            }
        }
        'M' | 'L' => {
            let m = (f.month - 1) as usize;
            if count >= 4 {
                out.extend_from_slice(MONTHS[m].as_bytes());
            } else if count == 3 {
                out.extend_from_slice(SHORT_MONTHS[m].as_bytes());
            } else {
                pad(f.month, count, out);
            }
        }
        'd' => pad(f.day, count, out),
        'k' => pad(if f.hour == 0 { 24 } else { f.hour }, count, out),
        'H' => pad(f.hour, count, out),
        'm' => pad(f.minute, count, out),
        's' => pad(f.second, count, out),
        'S' => pad(f.milli, count, out),
        'E' => {
            let w = (f.weekday - 1) as usize;
            let name = if count >= 4 {
                WEEKDAYS[w]
            } else {
                SHORT_WEEKDAYS[w]
            };
            out.extend_from_slice(name.as_bytes());
        }
        'u' => pad(if f.weekday == 1 { 7 } else { f.weekday - 1 }, count, out),
        'D' => pad(f.day_of_year, count, out),
        'F' => pad(f.day_index / 7 + 1, count, out),
        'w' => pad(f.week_of_year, count, out),
        'W' => pad(f.week_of_month, count, out),
        'a' => out.extend_from_slice(if f.hour < 12 { b"AM" } else { b"PM" }),
        'h' => {
            let h = f.hour % 12;
            pad(if h == 0 { 12 } else { h }, count, out)
        }
        'K' => pad(f.hour % 12, count, out),
        'z' => out.extend_from_slice(if count >= 4 {
            b"Coordinated Universal Time"
        } else {
            b"UTC"
        }),
        'Z' => out.extend_from_slice(b"+0000"),
        'X' => out.extend_from_slice(b"Z"),
        _ => {}
    }
}

/// en_US date patterns of the JDK 17 CLDR data, by Java style (0 full .. 3 short).
const DATE_STYLES: [&str; 4] = ["EEEE, MMMM d, y", "MMMM d, y", "MMM d, y", "M/d/yy"];
/// en_US time patterns of the JDK 17 CLDR data, by Java style.
const TIME_STYLES: [&str; 4] = ["h:mm:ss a zzzz", "h:mm:ss a z", "h:mm:ss a", "h:mm a"];

/// Java style number of a FreeMarker style name.
fn style_index(name: &str) -> Option<usize> {
    match name {
        "full" => Some(0),
        "long" => Some(1),
        "medium" => Some(2),
        "short" => Some(3),
        _ => None,
    }
}

/// The `SimpleDateFormat` pattern Java's `DateFormat.get*Instance` uses for a named style, or
/// `None` when `spec` is not a style name.
fn named_style_pattern(spec: &str, kind: DateKind) -> Option<String> {
    let (first, second) = match spec.split_once('_') {
        Some((a, b)) => (style_index(a)?, Some(style_index(b)?)),
        None => (style_index(spec)?, None),
    };
    Some(match kind {
        DateKind::Date => DATE_STYLES[first].to_owned(),
        // FreeMarker gives a date or a time the first of two styles.
        DateKind::Time => TIME_STYLES[first].to_owned(),
        DateKind::DateTime | DateKind::Unknown => {
            let time = second.unwrap_or(first);
            // Java glues with the pattern of the shorter of the two styles.
            let glue = if first.max(time) <= 1 { " 'at' " } else { ", " };
            format!("{}{glue}{}", DATE_STYLES[first], TIME_STYLES[time])
        }
    })
}

/// Accuracy of an ISO 8601 format (FreeMarker's `DateUtil.ACCURACY_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsoAccuracy {
    /// `HH`.
    Hours,
    /// `HH:mm`.
    Minutes,
    /// `HH:mm:ss`.
    Seconds,
    /// `HH:mm:ss` plus `.SSS` with trailing zeros dropped, when the milliseconds are not 0.
    Milliseconds,
    /// `HH:mm:ss.SSS` always.
    MillisecondsForced,
}

/// An ISO 8601 output style: FreeMarker's `iso`/`xs` formats and its `?iso_*` built-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoFormat {
    /// XML Schema flavour (`xs`): a date may carry its zone, years are not shifted.
    pub xs: bool,
    /// How much of the time is shown.
    pub accuracy: IsoAccuracy,
    /// `Some(false)` for `_nz`, `Some(true)` for `_fz`, `None` for the default (shown).
    pub show_offset: Option<bool>,
}

impl IsoFormat {
    /// The format of a `?iso_*` built-in (`iso_utc`, `iso_utc_ms`, `iso_utc_nz`, `iso_local_m`,
    /// `iso_utc_fz`...); `None` for another name. The time zone is UTC either way in hookpipe's
    /// profile, so `iso_local*` equals `iso_utc*`. The bare `?iso`/`?iso_ms`/... forms take a time
    /// zone argument in FreeMarker and are not covered here.
    pub fn builtin(name: &str) -> Option<IsoFormat> {
        let rest = name
            .strip_prefix("iso_utc")
            .or_else(|| name.strip_prefix("iso_local"))?;
        let mut format = IsoFormat {
            xs: false,
            accuracy: IsoAccuracy::Seconds,
            show_offset: None,
        };
        let options = match rest.strip_suffix("_nz") {
            Some(r) => {
                format.show_offset = Some(false);
                r
            }
            None => match rest.strip_suffix("_fz") {
                Some(r) if name.starts_with("iso_utc") => {
                    format.show_offset = Some(true);
                    r
                }
                _ => rest,
            },
        };
        format.accuracy = match options {
            "" => IsoAccuracy::Seconds,
            "_ms" => IsoAccuracy::Milliseconds,
            "_m" => IsoAccuracy::Minutes,
            "_h" => IsoAccuracy::Hours,
            _ => return None,
        };
        Some(format)
    }

    /// Parses the options after `iso`/`xs` in a format string (`_m_nz`, ` ms`...), as
    /// FreeMarker's `ISOLikeTemplateDateFormat` does.
    fn parse_options(xs: bool, options: &str, spec: &str) -> Result<IsoFormat, FormatError> {
        let bad = |reason: String| FormatError::BadDateFormat {
            pattern: spec.to_owned(),
            reason,
        };
        let chars: Vec<char> = options.chars().collect();
        let mut accuracy = IsoAccuracy::Milliseconds;
        let mut show_offset = None;
        let mut utc_set = false;
        let mut after_separator = false;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            if c == '_' || c == ' ' {
                after_separator = true;
                continue;
            }
            if !after_separator {
                return Err(bad(format!(
                    "Missing space or \"_\" before \"{c}\" (at char pos. {i})."
                )));
            }
            match c {
                'h' | 'm' | 's' => {
                    if accuracy != IsoAccuracy::Milliseconds {
                        return Err(bad(format!(
                            "Character \"{c}\" is unexpected as accuracy was already specified earlier (at char pos. {i})."
                        )));
                    }
                    accuracy = match c {
                        'h' => IsoAccuracy::Hours,
                        'm' if chars.get(i) == Some(&'s') => {
                            i += 1;
                            IsoAccuracy::MillisecondsForced
                        }
                        'm' => IsoAccuracy::Minutes,
                        _ => IsoAccuracy::Seconds,
                    };
                    if xs && accuracy < IsoAccuracy::Seconds {
                        return Err(bad(
                            "Less than seconds accuracy isn't allowed by the XML Schema format"
                                .to_owned(),
                        ));
                    }
                }
                'f' if chars.get(i) == Some(&'u') => {
                    if utc_set {
                        return Err(bad("The UTC usage option was already set earlier.".to_owned()));
                    }
                    utc_set = true;
                    i += 1;
                }
                'n' | 'f' => {
                    if show_offset.is_some() {
                        return Err(bad(format!(
                            "Character \"{c}\" is unexpected as zone offset visibility was already specified earlier. (at char pos. {i})."
                        )));
                    }
                    if chars.get(i) != Some(&'z') {
                        return Err(bad(format!(
                            "\"{c}\" must be followed by \"z\" (at char pos. {i})."
                        )));
                    }
                    i += 1;
                    show_offset = Some(c == 'f');
                }
                'u' => {
                    if utc_set {
                        return Err(bad("The UTC usage option was already set earlier.".to_owned()));
                    }
                    utc_set = true;
                }
                _ => {
                    return Err(bad(format!(
                        "Unexpected character, \"{c}\". Expected the beginning of one of: h, m, s, ms, nz, fz, u (at char pos. {i})."
                    )))
                }
            }
            after_separator = false;
        }
        Ok(IsoFormat {
            xs,
            accuracy,
            show_offset,
        })
    }

    /// Appends `value` in this ISO style (FreeMarker's `DateUtil.dateToString`, UTC).
    pub fn write(&self, value: &DateValue, out: &mut BytesMut) -> Result<(), FormatError> {
        let (date_part, time_part) = match value.kind {
            DateKind::Date => (true, false),
            DateKind::Time => (false, true),
            DateKind::DateTime => (true, true),
            DateKind::Unknown => return Err(FormatError::UnknownDateKind),
        };
        let offset = self.show_offset.unwrap_or(true) && (time_part || self.xs);
        let f = Fields::of(value.millis, false);
        if date_part {
            let year = if !self.xs && f.year <= 0 {
                // Java's BC year y prints as -y + 1 in ISO mode: the proleptic year itself.
                f.year
            } else if self.xs && f.year <= 0 {
                f.year - 1
            } else {
                f.year
            };
            if (0..9999).contains(&year) {
                pad(year, 4, out);
            } else {
                pad(year, 1, out);
            }
            out.extend_from_slice(b"-");
            pad(f.month, 2, out);
            out.extend_from_slice(b"-");
            pad(f.day, 2, out);
            if time_part {
                out.extend_from_slice(b"T");
            }
        }
        if time_part {
            pad(f.hour, 2, out);
            if self.accuracy >= IsoAccuracy::Minutes {
                out.extend_from_slice(b":");
                pad(f.minute, 2, out);
                if self.accuracy >= IsoAccuracy::Seconds {
                    out.extend_from_slice(b":");
                    pad(f.second, 2, out);
                    if self.accuracy >= IsoAccuracy::Milliseconds {
                        let forced = self.accuracy == IsoAccuracy::MillisecondsForced;
                        if f.milli != 0 || forced {
                            out.extend_from_slice(b".");
                            let mut x = f.milli;
                            let mut forced_digits = if forced { 3 } else { 0 };
                            loop {
                                out.extend_from_slice(&[b'0' + (x / 100) as u8]);
                                forced_digits -= 1;
                                x = x % 100 * 10;
                                if x == 0 && forced_digits <= 0 {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
        if offset {
            out.extend_from_slice(b"Z");
        }
        Ok(())
    }

    /// Parses ISO 8601 (or XML Schema) text as FreeMarker's `DateUtil.parseISO8601*` /
    /// `parseXS*` do: strict, proleptic Gregorian, UTC unless the text has an offset.
    fn parse(&self, text: &str, kind: DateKind) -> Result<i64, String> {
        let mut p = IsoParser {
            s: text.as_bytes(),
            i: 0,
        };
        let result = match kind {
            DateKind::Date => p.date(self.xs),
            DateKind::Time => p.time(self.xs),
            DateKind::DateTime | DateKind::Unknown => p.date_time(self.xs),
        };
        match result {
            Some(millis) if p.i == p.s.len() => millis,
            _ => Err(format!(
                "The value ({text}) didn't match the expected ISO 8601 pattern"
            )),
        }
    }

    fn description(&self, kind: DateKind) -> &'static str {
        match (self.xs, kind) {
            (false, DateKind::Date) => "ISO 8601 (subset) date",
            (false, DateKind::Time) => "ISO 8601 (subset) time",
            (false, _) => "ISO 8601 (subset) date-time",
            (true, DateKind::Date) => "W3C XML Schema date",
            (true, DateKind::Time) => "W3C XML Schema time",
            (true, _) => "W3C XML Schema dateTime",
        }
    }
}

/// A hand-written matcher for FreeMarker's ISO 8601 / XML Schema regular expressions
/// (extended and basic forms). Each step returns `None` when the text does not match, and
/// `Some(Err(reason))` when it matches but names an impossible date or time.
struct IsoParser<'a> {
    s: &'a [u8],
    i: usize,
}

type IsoResult = Option<Result<i64, String>>;

impl IsoParser<'_> {
    fn digits(&mut self, min: usize, max: usize) -> Option<&str> {
        let start = self.i;
        while self.i < self.s.len() && self.i - start < max && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        if self.i - start < min {
            self.i = start;
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i]).ok()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Year, month and day: `-?YYYY+-MM-DD` (or basic `YYYYMMDD`; `xs`: `-?Y+-MM-DD`).
    fn ymd(&mut self, xs: bool) -> Option<(i64, i64, i64, bool)> {
        let start = self.i;
        let negative = self.eat(b'-');
        let digits_start = self.i;
        let mut n = 0;
        while self.i + n < self.s.len() && self.s[self.i + n].is_ascii_digit() {
            n += 1;
        }
        // Extended form: year digits then '-'.
        if self.s.get(self.i + n) == Some(&b'-') && (n >= 4 || (xs && n >= 1)) {
            let year: i64 = std::str::from_utf8(&self.s[digits_start..digits_start + n])
                .ok()?
                .parse()
                .ok()?;
            self.i += n + 1;
            let month = self.digits(2, 2)?.parse().ok()?;
            if !self.eat(b'-') {
                self.i = start;
                return None;
            }
            let day = self.digits(2, 2)?.parse().ok()?;
            return Some((if negative { -year } else { year }, month, day, true));
        }
        if xs || n < 8 {
            self.i = start;
            return None;
        }
        // Basic form: the lazy year takes all but the last four digits of the run that
        // precedes the time or the end.
        let year_len = n - 4;
        let text = std::str::from_utf8(&self.s[digits_start..digits_start + n]).ok()?;
        let year: i64 = text[..year_len].parse().ok()?;
        let month = text[year_len..year_len + 2].parse().ok()?;
        let day = text[year_len + 2..].parse().ok()?;
        self.i += n;
        Some((if negative { -year } else { year }, month, day, false))
    }

    fn day_number(year: i64, month: i64, day: i64, xs: bool) -> Result<i64, String> {
        if !(1..=12).contains(&month) {
            return Err("The month part must be between 1 and 12.".to_owned());
        }
        if !(1..=31).contains(&day) {
            return Err("The day-of-month part must be between 1 and 31.".to_owned());
        }
        // ISO: 0000 is 1 BC; XML Schema: -0001 is 1 BC and 0000 is not allowed.
        let proleptic = if xs && year <= 0 {
            if year == 0 {
                return Err(
                    "Year 0 is not allowed in XML schema dates. BC 1 is -1, AD 1 is 1.".to_owned(),
                );
            }
            year + 1
        } else {
            year
        };
        let days = days_from_gregorian(proleptic, month, day);
        if gregorian_from_days(days) != (proleptic, month, day) {
            return Err("Date calculation faliure. Probably the date is formally correct, but refers to an unexistent date (like February 30).".to_owned());
        }
        Ok(days)
    }

    /// `HH[:mm[:ss[.f+]]]` (extended) or `HH[mm[ss[.f+]]]` (basic); `xs` requires all three.
    fn hms(&mut self, xs: bool, extended: bool) -> Option<Result<i64, String>> {
        let hours: i64 = self.digits(2, 2)?.parse().ok()?;
        let mut minutes = 0;
        let mut seconds = 0;
        let mut millis = 0;
        let sep = |p: &mut Self| !extended || p.eat(b':');
        let save = self.i;
        if sep(self) {
            if let Some(m) = self.digits(2, 2) {
                minutes = m.parse().ok()?;
                let save2 = self.i;
                if sep(self) {
                    if let Some(s) = self.digits(2, 2) {
                        seconds = s.parse().ok()?;
                        let save3 = self.i;
                        if self.eat(b'.') || (!xs && self.eat(b',')) {
                            match self.digits(1, usize::MAX) {
                                Some(f) => {
                                    let f = &f[..f.len().min(3)];
                                    let v: i64 = f.parse().ok()?;
                                    millis = v * [100, 10, 1][f.len() - 1];
                                }
                                None => self.i = save3,
                            }
                        }
                    } else if xs {
                        return None;
                    } else {
                        self.i = save2;
                    }
                } else if xs {
                    return None;
                }
            } else if xs {
                return None;
            } else {
                self.i = save;
            }
        } else if xs {
            return None;
        }
        if !(0..=24).contains(&hours) {
            return Some(Err(
                "The hour-of-day part must be between 0 and 24.".to_owned()
            ));
        }
        if minutes > 59 {
            return Some(Err("The minute part can't be more than 59.".to_owned()));
        }
        // FreeMarker's regex allows a leap second, but its strict calendar then rejects it.
        if seconds > 59 {
            return Some(Err("The second part can't be more than 59.".to_owned()));
        }
        if hours == 24 && (minutes != 0 || seconds != 0 || millis != 0) {
            return Some(Err(
                "Hour 24 is only allowed in the case of midnight.".to_owned()
            ));
        }
        Some(Ok(((hours * 60 + minutes) * 60 + seconds) * 1000 + millis))
    }

    /// An optional zone: `Z`, `±hh:mm` (xs), `±hh[:mm]` (extended), `±hh[mm]` (basic);
    /// the offset in milliseconds to subtract.
    fn zone(&mut self, xs: bool, extended: bool) -> Option<Result<i64, String>> {
        if self.eat(b'Z') {
            return Some(Ok(0));
        }
        let sign = match self.s.get(self.i) {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Some(Ok(0)),
        };
        self.i += 1;
        let hours: i64 = self.digits(2, 2)?.parse().ok()?;
        let mut minutes = 0;
        let save = self.i;
        if xs || extended {
            if self.eat(b':') {
                minutes = self.digits(2, 2)?.parse().ok()?;
            } else if xs {
                return None;
            } else {
                self.i = save;
            }
        } else if let Some(m) = self.digits(2, 2) {
            minutes = m.parse().ok()?;
        }
        if hours > 23 {
            return Some(Err(
                "The offset-hours part can't be more than 23.".to_owned()
            ));
        }
        if minutes > 59 {
            return Some(Err(
                "The offset-minutes part can't be more than 59.".to_owned()
            ));
        }
        Some(Ok(sign * (hours * 60 + minutes) * 60_000))
    }

    fn date(&mut self, xs: bool) -> IsoResult {
        let (y, m, d, _) = self.ymd(xs)?;
        let offset = if xs { self.zone(true, true)? } else { Ok(0) };
        Some(Self::day_number(y, m, d, xs).and_then(|days| Ok(days * MILLIS_PER_DAY - offset?)))
    }

    fn time(&mut self, xs: bool) -> IsoResult {
        let start = self.i;
        let extended = !xs && {
            // Extended when a ':' follows the hours.
            self.s.get(start + 2) == Some(&b':')
        };
        let time = self.hms(xs, xs || extended)?;
        let zone = self.zone(xs, xs || extended)?;
        Some(time.and_then(|t| Ok(t - zone?)))
    }

    fn date_time(&mut self, xs: bool) -> IsoResult {
        let (y, m, d, extended) = self.ymd(xs)?;
        if !self.eat(b'T') {
            return None;
        }
        let time = self.hms(xs, xs || extended)?;
        let zone = self.zone(xs, xs || extended)?;
        Some(Self::day_number(y, m, d, xs).and_then(|days| {
            let t = time?;
            Ok(days * MILLIS_PER_DAY + t - zone?)
        }))
    }
}

/// What a [`DateFormat`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A `SimpleDateFormat` pattern (explicit or from a named style).
    Pattern(Pattern),
    /// A named style given for a value of unknown kind: FreeMarker cannot apply it.
    NamedForUnknown,
    /// FreeMarker's `iso...` / `xs...` formats.
    Iso(IsoFormat),
}

/// A compiled date format: one `date_format` / `time_format` / `datetime_format` setting value
/// or `?string("...")` argument, parsed once. It is a FreeMarker named style (`short`,
/// `medium`, `long`, `full`, or `X_Y` for date and time styles), an ISO 8601 format (`iso`,
/// `xs`, with options like `iso_m_nz`), or a `SimpleDateFormat` pattern. The empty string is
/// FreeMarker's default (`medium`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    spec: String,
    kind: Kind,
}

impl DateFormat {
    /// Compiles `spec` for values of `kind` (named styles depend on the kind). A malformed
    /// pattern fails with [`FormatError::BadDateFormat`] carrying Java's or FreeMarker's reason.
    pub fn new(spec: &str, kind: DateKind) -> Result<DateFormat, FormatError> {
        let effective = if spec.is_empty() { "medium" } else { spec };
        let kind = if let Some(rest) = effective.strip_prefix("iso") {
            Kind::Iso(IsoFormat::parse_options(false, rest, spec)?)
        } else if let Some(rest) = effective.strip_prefix("xs") {
            Kind::Iso(IsoFormat::parse_options(true, rest, spec)?)
        } else if effective.starts_with('@') {
            return Err(FormatError::BadDateFormat {
                pattern: spec.to_owned(),
                reason: "custom date formats (@name) are not supported".to_owned(),
            });
        } else if kind == DateKind::Unknown && named_style_pattern(effective, kind).is_some() {
            Kind::NamedForUnknown
        } else if let Some(pattern) = named_style_pattern(effective, kind) {
            Kind::Pattern(Pattern::compile(&pattern, spec)?)
        } else {
            Kind::Pattern(Pattern::compile(effective, spec)?)
        };
        Ok(DateFormat {
            spec: spec.to_owned(),
            kind,
        })
    }

    /// The Java pattern or format name, as FreeMarker's error messages show it
    /// (`MMM d, y, h:mm:ss a`, `ISO 8601 (subset) date-time`).
    pub fn description(&self, kind: DateKind) -> String {
        match &self.kind {
            Kind::Pattern(p) => p.source.clone(),
            Kind::NamedForUnknown => self.spec.clone(),
            Kind::Iso(iso) => iso.description(kind).to_owned(),
        }
    }

    /// Appends `value` formatted with this format (UTC, en_US). ISO formats and named styles
    /// fail with [`FormatError::UnknownDateKind`] on a value of unknown kind.
    pub fn format(&self, value: &DateValue, out: &mut BytesMut) -> Result<(), FormatError> {
        match &self.kind {
            Kind::Pattern(p) => {
                p.format(value.millis, out);
                Ok(())
            }
            Kind::NamedForUnknown => Err(FormatError::UnknownDateKind),
            Kind::Iso(iso) => iso.write(value, out),
        }
    }

    /// Parses `text` as FreeMarker's `?date`/`?time`/`?datetime` (with or without a pattern
    /// argument) do: `SimpleDateFormat.parse` with `lenient=true` (fields overflow into the next
    /// unit, a fraction's digits are a count of milliseconds, text after the match is ignored),
    /// or strict ISO 8601 for ISO formats. The result has the given `kind`.
    pub fn parse(&self, text: &str, kind: DateKind) -> Result<DateValue, FormatError> {
        let unparseable = || FormatError::Unparseable {
            text: text.to_owned(),
            pattern: self.description(kind),
        };
        let millis = match &self.kind {
            Kind::Pattern(p) => parse_lenient(p, text).ok_or_else(unparseable)?,
            Kind::NamedForUnknown => return Err(FormatError::UnknownDateKind),
            Kind::Iso(iso) => iso.parse(text, kind).map_err(|_| unparseable())?,
        };
        Ok(DateValue::new(millis, kind))
    }
}

/// `?iso_utc` and friends: see [`IsoFormat::builtin`].
pub fn write_iso_utc(value: &DateValue, out: &mut BytesMut) -> Result<(), FormatError> {
    IsoFormat {
        xs: false,
        accuracy: IsoAccuracy::Seconds,
        show_offset: None,
    }
    .write(value, out)
}

/// `?number_to_datetime` (and `?number_to_date` / `?number_to_time` with another kind): the
/// number as epoch milliseconds (Java `longValue()` of it).
pub fn from_epoch_millis(millis: i64, kind: DateKind) -> DateValue {
    DateValue::new(millis, kind)
}

/// The calendar fields a lenient parse collects, each with the order it was set in (Java's
/// `Calendar` resolves conflicts by the most recently set field).
#[derive(Default)]
struct Parsed {
    era_bc: bool,
    year: Option<i64>,
    ambiguous_year: bool,
    month: Option<(i64, u32)>,
    day_of_month: Option<(i64, u32)>,
    day_of_year: Option<(i64, u32)>,
    hour_of_day: Option<(i64, u32)>,
    hour: Option<(i64, u32)>,
    pm: Option<(bool, u32)>,
    minute: i64,
    second: i64,
    milli: i64,
    offset_millis: Option<i64>,
}

/// Whether a pattern letter is parsed as a number when it directly follows another field
/// (Java's `shouldObeyCount`).
fn is_numeric_field(c: char, count: usize) -> bool {
    match c {
        'M' | 'L' => count <= 2,
        'y' | 'Y' | 'd' | 'k' | 'H' | 'm' | 's' | 'S' | 'D' | 'F' | 'w' | 'W' | 'K' | 'h' | 'u' => {
            true
        }
        _ => false,
    }
}

/// Java's `SimpleDateFormat.parse(String)` with `lenient=true`, UTC, en_US. `None` when the
/// text does not match.
fn parse_lenient(p: &Pattern, text: &str) -> Option<i64> {
    // Work on chars; short texts (every real timestamp) stay on the stack.
    let mut stack = ['\0'; 64];
    let heap: Vec<char>;
    let s: &[char] = if text.len() <= stack.len() {
        let mut n = 0;
        for c in text.chars() {
            stack[n] = c;
            n += 1;
        }
        &stack[..n]
    } else {
        heap = text.chars().collect();
        &heap
    };
    let mut pos = 0usize;
    let mut parsed = Parsed::default();
    let mut stamp = 0u32;
    for (index, token) in p.tokens.iter().enumerate() {
        match token {
            Token::Literal(lit) => {
                // Java fails the whole parse on a literal mismatch.
                for c in lit.chars() {
                    if s.get(pos) != Some(&c) {
                        return None;
                    }
                    pos += 1;
                }
            }
            Token::Field(c, count) => {
                stamp += 1;
                let obey_count = match p.tokens.get(index + 1) {
                    Some(Token::Field(n, ncount)) => is_numeric_field(*n, *ncount),
                    _ => false,
                };
                match parse_field(s, pos, *c, *count, obey_count, &mut parsed, stamp, p) {
                    Some(next) => pos = next,
                    None => return None,
                }
            }
        }
    }
    if pos == 0 && !p.tokens.is_empty() {
        return None;
    }
    finish(p, &parsed)
}

/// Java's `SimpleDateFormat.subParse` for one field: the position after it, or `None`.
#[allow(clippy::too_many_arguments)]
fn parse_field(
    s: &[char],
    mut pos: usize,
    c: char,
    count: usize,
    obey_count: bool,
    parsed: &mut Parsed,
    stamp: u32,
    p: &Pattern,
) -> Option<usize> {
    // Java skips spaces and tabs before every field.
    while pos < s.len() && (s[pos] == ' ' || s[pos] == '\t') {
        pos += 1;
    }
    if pos >= s.len() {
        return None;
    }
    let start = pos;
    let text_field = match c {
        'G' | 'E' | 'a' | 'z' | 'Z' | 'X' => true,
        'M' | 'L' => count >= 3,
        _ => false,
    };
    if text_field {
        return parse_text_field(s, pos, c, parsed, stamp);
    }
    // A number: Java's DecimalFormat (integer only, no grouping) on the text, limited to
    // `count` characters when the next field abuts this one.
    let limit = if obey_count {
        (pos + count).min(s.len())
    } else {
        s.len()
    };
    let mut negative = false;
    if pos < limit && s[pos] == '-' {
        negative = true;
        pos += 1;
    }
    let digits_start = pos;
    let mut value: i64 = 0;
    while pos < limit && s[pos].is_ascii_digit() {
        value = value
            .saturating_mul(10)
            .saturating_add(i64::from(s[pos] as u8 - b'0'));
        pos += 1;
    }
    if pos == digits_start {
        return None;
    }
    // Java keeps `intValue()` of the parsed number.
    let value = i64::from((if negative { -value } else { value }) as i32);
    match c {
        'y' => {
            let two_digits = count <= 2 && pos - start == 2 && !negative;
            if two_digits {
                let ambiguous = p.century_start_year % 100;
                parsed.ambiguous_year = value == ambiguous;
                let base = p.century_start_year.div_euclid(100) * 100;
                parsed.year = Some(value + base + if value < ambiguous { 100 } else { 0 });
            } else {
                parsed.year = Some(value);
            }
        }
        'M' | 'L' => parsed.month = Some((value - 1, stamp)),
        'd' => parsed.day_of_month = Some((value, stamp)),
        'D' => parsed.day_of_year = Some((value, stamp)),
        'H' => parsed.hour_of_day = Some((value, stamp)),
        'k' => parsed.hour_of_day = Some((if value == 24 { 0 } else { value }, stamp)),
        'h' => parsed.hour = Some((if value == 12 { 0 } else { value }, stamp)),
        'K' => parsed.hour = Some((value, stamp)),
        'm' => parsed.minute = value,
        's' => parsed.second = value,
        'S' => parsed.milli = value,
        // Week and day-of-week numbers are accepted but do not move the date.
        _ => {}
    }
    Some(pos)
}

/// Case-insensitive match of the longest of `names` at `pos`; (index, end).
fn match_names<'a>(
    s: &[char],
    pos: usize,
    names: impl IntoIterator<Item = &'a str>,
) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (i, name) in names.into_iter().enumerate() {
        let len = name.chars().count();
        if pos + len <= s.len()
            && s[pos..pos + len]
                .iter()
                .zip(name.chars())
                .all(|(a, b)| a.to_lowercase().eq(b.to_lowercase()))
            && best.is_none_or(|(_, end)| pos + len > end)
        {
            best = Some((i, pos + len));
        }
    }
    best
}

fn parse_text_field(
    s: &[char],
    pos: usize,
    c: char,
    parsed: &mut Parsed,
    stamp: u32,
) -> Option<usize> {
    match c {
        'G' => {
            let (i, end) = match_names(s, pos, ["BC", "AD"])?;
            parsed.era_bc = i == 0;
            Some(end)
        }
        'M' | 'L' => {
            let (i, end) =
                match_names(s, pos, MONTHS).or_else(|| match_names(s, pos, SHORT_MONTHS))?;
            parsed.month = Some((i as i64, stamp));
            Some(end)
        }
        'E' => {
            let (_, end) =
                match_names(s, pos, WEEKDAYS).or_else(|| match_names(s, pos, SHORT_WEEKDAYS))?;
            Some(end)
        }
        'a' => {
            let (i, end) = match_names(s, pos, ["AM", "PM"])?;
            parsed.pm = Some((i == 1, stamp));
            Some(end)
        }
        _ => parse_zone(s, pos, c, parsed),
    }
}

/// Time zones: `Z`, `±hh`, `±hhmm`, `±hh:mm`, `GMT`/`UTC` with an optional offset, and a few
/// names.
fn parse_zone(s: &[char], pos: usize, c: char, parsed: &mut Parsed) -> Option<usize> {
    if c == 'X' && s.get(pos) == Some(&'Z') {
        parsed.offset_millis = Some(0);
        return Some(pos + 1);
    }
    const NAMES: [(&str, i64); 13] = [
        ("Coordinated Universal Time", 0),
        ("Greenwich Mean Time", 0),
        ("UTC", 0),
        ("GMT", 0),
        ("UT", 0),
        ("PST", -8),
        ("PDT", -7),
        ("MST", -7),
        ("MDT", -6),
        ("CST", -6),
        ("CDT", -5),
        ("EST", -5),
        ("EDT", -4),
    ];
    let mut pos = pos;
    let mut named = false;
    if c != 'X' {
        if let Some((i, end)) = match_names(s, pos, NAMES.iter().map(|(n, _)| *n)) {
            parsed.offset_millis = Some(NAMES[i].1 * 3_600_000);
            pos = end;
            named = true;
            if NAMES[i].1 != 0 || !matches!(s.get(pos), Some('+') | Some('-')) {
                return Some(pos);
            }
        }
    }
    let sign = match s.get(pos) {
        Some('+') => 1,
        Some('-') => -1,
        _ => return if named { Some(pos) } else { None },
    };
    let digit = |i: usize| s.get(i).and_then(|c| c.to_digit(10)).map(i64::from);
    let mut i = pos + 1;
    let h1 = digit(i)?;
    i += 1;
    let hours = match digit(i) {
        Some(h2) => {
            i += 1;
            h1 * 10 + h2
        }
        None => h1,
    };
    let mut minutes = 0;
    let after_hours = i;
    if s.get(i) == Some(&':') {
        i += 1;
    }
    match (digit(i), digit(i + 1)) {
        (Some(m1), Some(m2)) => {
            minutes = m1 * 10 + m2;
            i += 2;
        }
        _ => i = after_hours,
    }
    if hours > 23 || minutes > 59 {
        return None;
    }
    parsed.offset_millis = Some(sign * (hours * 60 + minutes) * 60_000);
    Some(i)
}

/// Java's lenient `GregorianCalendar` computation from the parsed fields.
fn finish(p: &Pattern, parsed: &Parsed) -> Option<i64> {
    let mut year = parsed.year.unwrap_or(1970);
    if parsed.era_bc {
        year = 1 - year;
    }
    let month = parsed.month.map_or(0, |(m, _)| m);
    let y = year + month.div_euclid(12);
    let m = month.rem_euclid(12) + 1;
    let days = match (parsed.day_of_year, parsed.day_of_month) {
        (Some((doy, s1)), dom) if dom.is_none_or(|(_, s2)| s1 > s2) => {
            days_from_hybrid(year, 1, 1) + doy - 1
        }
        (_, dom) => days_from_hybrid(y, m, 1) + dom.map_or(1, |(d, _)| d) - 1,
    };
    // Java's `GregorianCalendar` time-of-day resolution: HOUR and AM_PM count as a group only
    // when both are set; otherwise the most recent of them loses to HOUR_OF_DAY.
    let hour_stamp = parsed.hour.map_or(0, |(_, s)| s);
    let pm_stamp = parsed.pm.map_or(0, |(_, s)| s);
    let hour_of_day_stamp = parsed.hour_of_day.map_or(0, |(_, s)| s);
    let group_stamp = if hour_stamp > 0 && pm_stamp > 0 {
        hour_stamp.max(pm_stamp)
    } else {
        0
    };
    let mut best = group_stamp.max(hour_of_day_stamp);
    if best == 0 {
        best = hour_stamp.max(pm_stamp);
    }
    let hour = if best == 0 {
        0
    } else if best == hour_of_day_stamp {
        parsed.hour_of_day.map_or(0, |(h, _)| h)
    } else {
        parsed.hour.map_or(0, |(h, _)| h)
            + if parsed.pm.is_some_and(|(pm, _)| pm) {
                12
            } else {
                0
            }
    };
    let mut millis = days
        .checked_mul(MILLIS_PER_DAY)?
        .checked_add(hour.checked_mul(3_600_000)?)?
        .checked_add(parsed.minute.checked_mul(60_000)?)?
        .checked_add(parsed.second.checked_mul(1000)?)?
        .checked_add(parsed.milli)?
        .checked_sub(parsed.offset_millis.unwrap_or(0))?;
    if parsed.ambiguous_year && millis < p.century_start_millis {
        // Java moves an ambiguous two-digit year a century on when it lands before the
        // century start.
        let f = Fields::of(millis, true);
        let shifted = days_from_hybrid(f.year + 100, f.month, f.day) * MILLIS_PER_DAY
            + millis.rem_euclid(MILLIS_PER_DAY);
        millis = shifted;
    }
    Some(millis)
}

#[cfg(test)]
mod tests;
