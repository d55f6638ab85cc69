//! The format-level part of every conformance case in hookpipe's ranges for this module
//! (`../shared/ftl-conformance/cases/`, numbers 000-049, 250-299, 300-399, 400-449), with the
//! expected text copied from the case's `expected.txt` (produced by `ftl-oracle --amplitude`).
//! Each test names its case; the template itself is run by the engine's conformance runner.

use bytes::BytesMut;

use super::date::{from_epoch_millis, IsoFormat};
use super::escape;
use super::*;

/// `${n}` under `number_format=computer`.
fn c(n: &Number) -> String {
    let mut out = BytesMut::new();
    n.write_computer(&mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

/// A number literal in a template (`1.50`, `00012`): a `BigDecimal`.
fn lit(text: &str) -> Number {
    Number::parse(text).unwrap()
}

/// A JSON integer as Jackson reads it.
fn int(v: i64) -> Number {
    Number::from_json_i64(v)
}

fn with(f: impl FnOnce(&mut BytesMut)) -> String {
    let mut out = BytesMut::new();
    f(&mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

fn fmt(n: &Number, pattern: &str) -> String {
    with(|out| NumberFormat::new(pattern).unwrap().format(n, out).unwrap())
}

#[test]
fn case_003_to_010_number_interpolation() {
    assert_eq!(c(&int(1666642052123)), "1666642052123"); // 003
    assert_eq!(c(&int(9007199254740993)), "9007199254740993"); // 004
    assert_eq!(
        with(|o| int(9007199254740993).write_c(o)),
        "9007199254740993"
    );
    assert_eq!(
        c(&Number::from_json_integer_text("12345678901234567890").unwrap()),
        "12345678901234567890"
    ); // 005
       // The JSON text of each input, parsed as Jackson parses it.
    let doubles = [
        ("1234.5", "1234.5"), // 006
        ("0.1", "0.1"),
        ("1.0", "1"),
        ("100.0", "100"),
        ("1e-7", "0.0000001"), // 007
        ("1.0E-10", "0.0000000001"),
        ("1e-17", "0"),                 // 008
        ("-0.0", "-0"),                 // 009
        ("0.30000000000000004", "0.3"), // 010
        ("123456789.123456789", "123456789.12345679"),
    ];
    for (json, expected) in doubles {
        let v: f64 = json.parse().unwrap();
        assert_eq!(c(&Number::Double(v)), expected, "{json}");
    }
}

#[test]
fn case_250_251_concatenation_uses_computer_format() {
    assert_eq!(c(&lit("1")), "1");
    assert_eq!(c(&lit("1").add(&lit("2")).unwrap()), "3");
    assert_eq!(c(&lit("1234567")), "1234567");
    assert_eq!(c(&int(1666642052123)), "1666642052123");
    assert_eq!(c(&lit("1.5")), "1.5");
}

#[test]
fn case_252_253_254_division() {
    let div = |a: &Number, b: &Number| c(&a.div(b).unwrap());
    // 252: ${7 / 2} ${6 / 3} ${10 / 4} ${input.a / input.b} with a=9, b=2
    assert_eq!(div(&lit("7"), &lit("2")), "3.5");
    assert_eq!(div(&lit("6"), &lit("3")), "2");
    assert_eq!(div(&lit("10"), &lit("4")), "2.5");
    assert_eq!(div(&int(9), &int(2)), "4.5");
    // 253
    assert_eq!(div(&lit("1"), &lit("3")), "0.333333333333");
    assert_eq!(div(&lit("2"), &lit("3")), "0.666666666667");
    assert_eq!(div(&lit("100"), &lit("7")), "14.285714285714");
    let third = lit("1").div(&lit("3")).unwrap();
    assert_eq!(c(&third.mul(&lit("3")).unwrap()), "0.999999999999");
    assert_eq!(div(&int(10), &int(3)), "3.333333333333");
    // 254: ${(7 / 2)?int} ${(7 / 2)?floor} ${(-7 / 2)?int} ${(input.ms / 1000)?int}
    let half = lit("7").div(&lit("2")).unwrap();
    assert_eq!(c(&half.to_int()), "3");
    assert_eq!(c(&half.floor().unwrap()), "3");
    let minus = lit("7").neg().unwrap().div(&lit("2")).unwrap();
    assert_eq!(c(&minus.to_int()), "-3");
    let secs = int(1666642052999).div(&lit("1000")).unwrap();
    assert_eq!(c(&secs.to_int()), "1666642052");
}

#[test]
fn case_256_272_precedence_and_unary_minus() {
    // 256: ${2 * 3 % 4} ${-2 - -3} ${-input.n} ${input.n - -1}
    let six = lit("2").mul(&lit("3")).unwrap();
    assert_eq!(c(&six.rem(&lit("4")).unwrap()), "2");
    let minus_two = lit("2").neg().unwrap();
    assert_eq!(c(&minus_two.sub(&lit("3").neg().unwrap()).unwrap()), "1");
    assert_eq!(c(&int(5).neg().unwrap()), "-5");
    assert_eq!(c(&int(5).sub(&lit("1").neg().unwrap()).unwrap()), "6");
    // 272: ${-2.5?round} ${(-2.5)?round} ${-3.2?floor} ${(-3.2)?floor} ${-5?abs} ${(-5)?abs}
    assert_eq!(c(&lit("2.5").round().unwrap().neg().unwrap()), "-3");
    assert_eq!(c(&lit("2.5").neg().unwrap().round().unwrap()), "-2");
    assert_eq!(c(&lit("3.2").floor().unwrap().neg().unwrap()), "-3");
    assert_eq!(c(&lit("3.2").neg().unwrap().floor().unwrap()), "-4");
    assert_eq!(c(&lit("5").abs().unwrap().neg().unwrap()), "-5");
    assert_eq!(c(&lit("5").neg().unwrap().abs().unwrap()), "5");
    assert_eq!(c(&Number::Double(-2.5).round().unwrap()), "-2");
}

#[test]
fn case_261_int_float_equality() {
    assert!(int(1).num_eq(&Number::Double(1.0)).unwrap());
    assert!(lit("1").num_eq(&lit("1.0")).unwrap());
    assert!(int(1).num_eq(&lit("1")).unwrap());
    assert!(!int(9007199254740993)
        .num_eq(&lit("9007199254740992"))
        .unwrap());
}

#[test]
fn case_274_number_literal_forms() {
    assert_eq!(c(&lit("1.50")), "1.5");
    assert_eq!(c(&lit("00012")), "12");
    assert_eq!(c(&lit("0.5")), "0.5");
    assert_eq!(c(&lit("1000000")), "1000000");
}

#[test]
fn case_302_303_string_number_patterns() {
    let f = Number::Double(1234.5);
    let i = int(1234567);
    let r = Number::Double(0.256);
    let got = [
        fmt(&f, "0.00"),
        fmt(&i, "#,##0"),
        fmt(&f, "0.#"),
        fmt(&f, "000000.000"),
        fmt(&r, "0%"),
        fmt(&i, "000"),
    ]
    .join(" ");
    assert_eq!(got, "1234.50 1,234,567 1234.5 001234.500 26% 1234567");
    let got = [
        fmt(&lit("2.5"), "0"),
        fmt(&lit("3.5"), "0"),
        fmt(&lit("0.125"), "0.00"),
        fmt(&lit("0.135"), "0.00"),
        fmt(&lit("1.005"), "0.00"),
        fmt(&Number::Double(4.5), "0"),
    ]
    .join(" ");
    assert_eq!(got, "2 4 0.12 0.14 1.00 4");
}

#[test]
fn case_306_307_number_parse() {
    assert_eq!(c(&lit("12.5")), "12.5");
    assert_eq!(c(&Number::parse("1e3").unwrap()), "1000");
    assert_eq!(
        c(&Number::parse("-7").unwrap().add(&lit("1")).unwrap()),
        "-6"
    );
    assert_eq!(c(&Number::parse("1.50").unwrap()), "1.5");
    let big = Number::parse("9007199254740993").unwrap();
    assert_eq!(c(&big.add(&lit("1")).unwrap()), "9007199254740994");
    // 307: " 42 "?number fails.
    assert!(matches!(
        Number::parse(" 42 "),
        Err(FormatError::NotANumber { .. })
    ));
}

#[test]
fn case_308_int_round_floor_ceiling() {
    let xs = [1.5, 2.5, -1.5, -2.5, -3.7, 3.2];
    let got: Vec<String> = xs
        .iter()
        .map(|&x| {
            let n = Number::Double(x);
            format!(
                "{}/{}/{}/{}",
                c(&n.to_int()),
                c(&n.round().unwrap()),
                c(&n.floor().unwrap()),
                c(&n.ceiling().unwrap())
            )
        })
        .collect();
    assert_eq!(
        got.join(" "),
        "1/2/1/2 2/3/2/3 -1/-1/-2/-1 -2/-2/-3/-2 -3/-4/-4/-3 3/3/3/4"
    );
}

#[test]
fn case_310_to_315_case_trim_length() {
    assert_eq!(
        with(|o| escape::upper_case("Hello World 123", o)),
        "HELLO WORLD 123"
    );
    assert_eq!(
        with(|o| escape::lower_case("Hello World 123", o)),
        "hello world 123"
    );
    // 311
    assert_eq!(with(|o| escape::upper_case("straße", o)), "STRASSE");
    assert_eq!(with(|o| escape::lower_case("ÉCOLE", o)), "école");
    assert_eq!(escape::utf16_len(&with(|o| escape::lower_case("İ", o))), 2);
    assert_eq!(with(|o| escape::cap_first("ǆ", o)), "Ǆ");
    // 313
    assert_eq!(
        with(|o| escape::capitalize("hELLO wORLD", o)),
        "Hello World"
    );
    assert_eq!(
        with(|o| escape::capitalize("o'neil mc-donald", o)),
        "O'neil Mc-donald"
    );
    assert_eq!(with(|o| escape::capitalize("x", o)), "X");
    // 314
    assert_eq!(escape::java_trim("   padded  "), "padded");
    assert_eq!(escape::java_trim("\t\n x \r\n"), "x");
    // 315
    let lens: Vec<usize> = ["abc", "é中", "smile 😀", "😀"]
        .iter()
        .map(|s| escape::utf16_len(s))
        .collect();
    assert_eq!(lens, [3, 2, 8, 2]);
}

#[test]
fn case_326_to_333_escapes() {
    assert_eq!(
        with(|o| escape::json_string("He said \"hi\" \\ / </script>\n\ttab 'single'", o)),
        r#"He said \"hi\" \\ / <\/script>\n\ttab 'single'"#
    );
    assert_eq!(
        with(|o| escape::json_string("a\u{1}b\u{1f}c\u{7f}d\u{2028}e\u{2029}f\u{a0}g", o)),
        "a\\u0001b\\u001Fc\\u007Fd\\u2028e\\u2029f\u{a0}g"
    );
    assert_eq!(
        with(|o| escape::json_string("Zoë 中文 😀 ✓", o)),
        "Zoë 中文 😀 ✓"
    );
    // 329
    assert_eq!(
        with(|o| escape::js_string("It's \"q\" </b>\n\u{1}", o)),
        r#"It\'s \"q\" <\/b>\n\x01"#
    );
    assert_eq!(with(|o| escape::json_string("]]>", o)), "]]\\u003E");
    assert_eq!(with(|o| escape::js_string("<!--", o)), "\\x3C!--");
    assert_eq!(with(|o| escape::js_string("a>b", o)), "a>b");
    // 330
    assert_eq!(
        with(|o| escape::html("<a href=\"x\" title='y'>Tom & Jerry</a>", o)),
        "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;Tom &amp; Jerry&lt;/a&gt;"
    );
    // 333: url_escaping_charset="UTF-8"
    let utf8 = UrlCharset::from_name("UTF-8").unwrap();
    assert_eq!(
        with(|o| escape::url("/p/a b?x=ü", utf8, o)),
        "%2Fp%2Fa%20b%3Fx%3D%C3%BC"
    );
    assert_eq!(
        with(|o| escape::url_path("/p/a b?x=ü", utf8, o)),
        "/p/a%20b%3Fx%3D%C3%BC"
    );
}

fn parse(text: &str, pattern: &str, kind: DateKind) -> DateValue {
    DateFormat::new(pattern, kind)
        .unwrap()
        .parse(text, kind)
        .unwrap()
}

fn dfmt(v: &DateValue, pattern: &str) -> String {
    with(|o| {
        DateFormat::new(pattern, v.kind)
            .unwrap()
            .format(v, o)
            .unwrap()
    })
}

const EVENT_TIME: &str = "2022-02-28 20:07:01.795";
const MILLIS_PATTERN: &str = "yyyy-MM-dd HH:mm:ss.SSS";

#[test]
fn case_400_to_405_event_time_parsing() {
    let d = parse(EVENT_TIME, MILLIS_PATTERN, DateKind::DateTime);
    assert_eq!(
        dfmt(&d, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"),
        "2022-02-28T20:07:01.795Z"
    ); // 400
       // 402: six fraction digits are 795000 milliseconds.
    let micro = "2022-02-28 20:07:01.795000";
    let d6 = parse(micro, MILLIS_PATTERN, DateKind::DateTime);
    assert_eq!(dfmt(&d6, MILLIS_PATTERN), "2022-02-28 20:20:16.000");
    let d6b = parse(micro, "yyyy-MM-dd HH:mm:ss.SSSSSS", DateKind::DateTime);
    assert_eq!(d6b.millis, 1646079616000);
    // 403: datetime_format="yyyy-MM-dd HH:mm:ss.S"
    let pattern = "yyyy-MM-dd HH:mm:ss.S";
    let got: Vec<String> = [
        EVENT_TIME,
        "2022-02-28 20:07:01.005",
        "2022-02-28 20:07:01.050",
    ]
    .iter()
    .map(|t| dfmt(&parse(t, pattern, DateKind::DateTime), pattern))
    .collect();
    assert_eq!(
        got.join(" | "),
        "2022-02-28 20:07:01.795 | 2022-02-28 20:07:01.5 | 2022-02-28 20:07:01.50"
    );
    // 404: default formats
    assert_eq!(dfmt(&d, ""), "Feb 28, 2022, 8:07:01 PM");
    assert_eq!(dfmt(&d.with_kind(DateKind::Date), ""), "Feb 28, 2022");
    assert_eq!(dfmt(&d.with_kind(DateKind::Time), ""), "8:07:01 PM");
    // 405: no pattern: parsed with the default (medium) format, which does not match.
    let err = DateFormat::new("", DateKind::DateTime)
        .unwrap()
        .parse(EVENT_TIME, DateKind::DateTime)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "The string doesn't match the expected date/time/date-time format. The string to parse \
         was: \"2022-02-28 20:07:01.795\". The expected format was: \"MMM d, y, h:mm:ss a\"."
    );
}

#[test]
fn case_407_named_styles() {
    let d = parse(EVENT_TIME, MILLIS_PATTERN, DateKind::DateTime);
    assert_eq!(dfmt(&d, "short"), "2/28/22, 8:07 PM");
    assert_eq!(dfmt(&d, "medium"), "Feb 28, 2022, 8:07:01 PM");
    assert_eq!(dfmt(&d, "long"), "February 28, 2022 at 8:07:01 PM UTC");
    assert_eq!(
        dfmt(&d, "full"),
        "Monday, February 28, 2022 at 8:07:01 PM Coordinated Universal Time"
    );
    assert_eq!(dfmt(&d, "iso"), "2022-02-28T20:07:01.795Z");
    assert_eq!(dfmt(&d, "xs"), "2022-02-28T20:07:01.795Z");
    assert_eq!(dfmt(&d, "iso_m_nz"), "2022-02-28T20:07");
}

#[test]
fn case_409_to_413_time_iso_epoch_lenient() {
    // 409
    let t = parse("20:07:01", "HH:mm:ss", DateKind::Time);
    assert_eq!(dfmt(&t, ""), "8:07:01 PM");
    assert_eq!(t.millis, 72421000);
    assert_eq!(dfmt(&t, "h:mm a"), "8:07 PM");
    // 410
    let a = parse("2022-02-28T20:07:01.795Z", "iso", DateKind::DateTime);
    assert_eq!(a.millis, 1646078821795);
    let utc_ms = IsoFormat::builtin("iso_utc_ms").unwrap();
    let b = parse("2022-02-28T21:07:01+01:00", "iso", DateKind::DateTime);
    assert_eq!(
        with(|o| utc_ms.write(&b, o).unwrap()),
        "2022-02-28T20:07:01Z"
    );
    let c3 = parse("2022-02-28T20:07:01", "iso", DateKind::DateTime);
    assert_eq!(
        with(|o| date::write_iso_utc(&c3, o).unwrap()),
        "2022-02-28T20:07:01Z"
    );
    // 411
    let n = from_epoch_millis(1646078821795, DateKind::DateTime);
    assert_eq!(
        with(|o| utc_ms.write(&n, o).unwrap()),
        "2022-02-28T20:07:01.795Z"
    );
    assert_eq!(
        dfmt(
            &from_epoch_millis(1646078821795, DateKind::Date),
            "yyyy-MM-dd"
        ),
        "2022-02-28"
    );
    assert_eq!(dfmt(&n, ""), "Feb 28, 2022, 8:07:01 PM");
    // 412: ("1692206763"?number * 1000)?number_to_datetime
    let ms = Number::parse("1692206763")
        .unwrap()
        .mul(&lit("1000"))
        .unwrap()
        .long_value();
    let d = from_epoch_millis(ms, DateKind::DateTime);
    assert_eq!(
        with(|o| date::write_iso_utc(&d, o).unwrap()),
        "2023-08-16T17:26:03Z"
    );
    assert_eq!(dfmt(&d, "yyyy-MM-dd HH:mm:ss"), "2023-08-16 17:26:03");
    // 413: lenient overflow
    let pattern = "yyyy-MM-dd HH:mm:ss";
    let o = parse("2022-13-45 25:61:00", pattern, DateKind::DateTime);
    assert_eq!(dfmt(&o, pattern), "2023-02-15 02:01:00");
}

#[test]
fn case_416_to_418_patterns_compare_iso_setting() {
    let d = parse(EVENT_TIME, MILLIS_PATTERN, DateKind::DateTime);
    assert_eq!(
        dfmt(&d, "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"),
        "2022-02-28T20:07:01.795Z"
    );
    assert_eq!(
        dfmt(&d, "EEE, dd MMM yyyy HH:mm:ss Z"),
        "Mon, 28 Feb 2022 20:07:01 +0000"
    );
    assert_eq!(dfmt(&d, "D w a"), "59 10 PM");
    // 417: ${(a?long - b?long) / 1000}
    let b = parse(
        "2022-02-28 20:06:00.000",
        MILLIS_PATTERN,
        DateKind::DateTime,
    );
    assert!(d.millis > b.millis);
    let diff = Number::Long(d.millis).sub(&Number::Long(b.millis)).unwrap();
    assert_eq!(c(&diff.div(&lit("1000")).unwrap()), "61.795");
    // 418: datetime_format="iso"
    let iso = parse("2022-02-28T20:07:01.795Z", "iso", DateKind::DateTime);
    assert_eq!(dfmt(&iso, "iso"), "2022-02-28T20:07:01.795Z");
    assert_eq!(iso.millis, 1646078821795);
}

/// A random string over characters that matter to the parsers.
fn random_text(rng: &mut fastrand::Rng, alphabet: &[char], max_len: usize) -> String {
    let len = rng.usize(0..=max_len);
    (0..len)
        .map(|_| alphabet[rng.usize(0..alphabet.len())])
        .collect()
}

#[test]
fn hostile_specs_and_inputs_never_panic() {
    let mut rng = fastrand::Rng::with_seed(2026);
    let number_chars: Vec<char> = "0#,.;E%‰¤'-+ 1234567890abcxyz=_\"\u{e000}\u{e004}é"
        .chars()
        .collect();
    let date_chars: Vec<char> = "yMdHhKkmsSEaDFwWuzZXYLG'-:.T /,+Z0123456789 _nzfusmhixo"
        .chars()
        .collect();
    let numbers = [
        Number::Int(i32::MIN),
        Number::Long(i64::MAX),
        Number::BigInteger(i128::MIN + 1),
        Number::Decimal(Decimal::new(i128::MAX, -1_000)),
        Number::Decimal(Decimal::new(-1, 1_000)),
        Number::Double(f64::MIN_POSITIVE),
        Number::Double(-f64::MAX),
        Number::Double(f64::NAN),
        Number::Double(f64::NEG_INFINITY),
    ];
    for _ in 0..3000 {
        let spec = random_text(&mut rng, &number_chars, 24);
        if let Ok(f) = NumberFormat::new(&spec) {
            for n in &numbers {
                let mut out = BytesMut::new();
                let _ = f.format(n, &mut out);
            }
        }
        let _ = Number::parse(&spec);
        for a in &numbers {
            for b in &numbers[..3] {
                let _ = (
                    a.add(b),
                    a.sub(b),
                    a.mul(b),
                    a.div(b),
                    a.rem(b),
                    a.compare(b),
                );
            }
            let _ = (a.round(), a.floor(), a.ceiling(), a.abs(), a.neg());
            let mut out = BytesMut::new();
            a.write_jackson(&mut out);
        }
    }
    let instants = [i64::MIN, i64::MAX, 0, -1, 1646078821795, -62135769600001];
    for _ in 0..3000 {
        let spec = random_text(&mut rng, &date_chars, 24);
        let text = random_text(&mut rng, &date_chars, 30);
        for kind in [
            DateKind::Date,
            DateKind::Time,
            DateKind::DateTime,
            DateKind::Unknown,
        ] {
            if let Ok(f) = DateFormat::new(&spec, kind) {
                for &millis in &instants {
                    let mut out = BytesMut::new();
                    let _ = f.format(&DateValue::new(millis, kind), &mut out);
                }
                let _ = f.parse(&text, kind);
                let _ = f.parse(&spec, kind);
            }
        }
        let mut out = BytesMut::new();
        escape::json_string(&text, &mut out);
        escape::js_string(&text, &mut out);
        escape::capitalize(&text, &mut out);
        let _ = escape::url_with_charset_name(&text, &spec, false, &mut out);
    }
}
