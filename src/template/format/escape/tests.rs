//! Escape tests. Every expectation comes from the reference engine: the table
//! `testdata/escape.tsv` is filled in by `testdata/oracle.py` (`ftl-oracle --amplitude --batch`);
//! strings are JSON literals there so control characters survive the tab-separated format.

use super::*;

/// Evaluates one table row as the oracle template does (see `testdata/oracle.py`).
fn eval_row(value: &str, op: &str, arg: &str) -> Result<String, FormatError> {
    let mut out = BytesMut::new();
    let charset = || {
        if arg.is_empty() {
            // No argument and no url_escaping_charset setting: FreeMarker fails.
            Err(FormatError::BadCharset {
                charset: String::new(),
            })
        } else {
            UrlCharset::from_name(arg)
        }
    };
    match op {
        "json_string" => json_string(value, &mut out),
        "js_string" => js_string(value, &mut out),
        "html" => html(value, &mut out),
        "xhtml" => xhtml(value, &mut out),
        "xml" => xml(value, &mut out),
        "url" => url_with_charset_name(value, arg, false, &mut out)?,
        "url_path" => url_with_charset_name(value, arg, true, &mut out)?,
        "url_enum" => url(value, charset()?, &mut out),
        "upper_case" => upper_case(value, &mut out),
        "lower_case" => lower_case(value, &mut out),
        "cap_first" => cap_first(value, &mut out),
        "uncap_first" => uncap_first(value, &mut out),
        "capitalize" => capitalize(value, &mut out),
        "trim" => out.extend_from_slice(java_trim(value).as_bytes()),
        "length" => out.extend_from_slice(utf16_len(value).to_string().as_bytes()),
        "jackson" => jackson_string(value, &mut out),
        other => panic!("bad op {other}"),
    }
    Ok(String::from_utf8(out.to_vec()).expect("UTF-8"))
}

#[test]
fn oracle_table() {
    let table = include_str!("../testdata/escape.tsv");
    let mut failures = Vec::new();
    let mut rows = 0;
    for line in table.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "malformed row {line:?}");
        rows += 1;
        let value: String = serde_json::from_str(cols[1]).expect("JSON string literal");
        let got = match eval_row(&value, cols[2], cols[3]) {
            Ok(s) => serde_json::to_string(&s).expect("serialisable"),
            Err(_) => "ERR".to_owned(),
        };
        let expected = if cols[4] == "ERR" {
            "ERR".to_owned()
        } else {
            // Re-encode so both sides use serde_json's escaping.
            let s: String = serde_json::from_str(cols[4]).expect("JSON string literal");
            serde_json::to_string(&s).expect("serialisable")
        };
        if got != expected {
            failures.push(format!(
                "{} {} {:?}: expected {}, got {}",
                cols[1], cols[2], cols[3], expected, got
            ));
        }
    }
    assert!(rows > 1000, "the table is loaded");
    assert!(
        failures.is_empty(),
        "{} of {rows} rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn writers_append_without_touching_existing_bytes() {
    let mut out = BytesMut::from(&b"prefix:"[..]);
    json_string("a\"b", &mut out);
    html("<", &mut out);
    assert_eq!(&out[..], b"prefix:a\\\"b&lt;");
}
