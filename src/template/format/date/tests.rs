//! Date tests. Every expectation comes from the reference engine: the table
//! `testdata/date.tsv` is filled in by `testdata/oracle.py` (`ftl-oracle --amplitude --batch`,
//! FreeMarker 2.3.31 on JDK 17, time zone UTC, locale en_US).

use super::*;

fn kind_of(name: &str) -> DateKind {
    match name {
        "date" => DateKind::Date,
        "time" => DateKind::Time,
        "datetime" => DateKind::DateTime,
        other => panic!("bad kind {other}"),
    }
}

/// Evaluates one table row as the oracle template does (see `testdata/oracle.py`).
fn eval_row(kind: &str, value: &str, op: &str, arg: &str) -> Result<String, FormatError> {
    let kind = kind_of(kind);
    let mut out = BytesMut::new();
    match op {
        "parse" => {
            let v = DateFormat::new(arg, kind)?.parse(value, kind)?;
            return Ok(v.millis.to_string());
        }
        "format" => {
            let millis: i64 = value.parse().expect("millis");
            DateFormat::new(arg, kind)?.format(&from_epoch_millis(millis, kind), &mut out)?;
        }
        "builtin" => {
            let millis: i64 = value.parse().expect("millis");
            let iso = IsoFormat::builtin(arg).ok_or(FormatError::UnknownDateKind)?;
            iso.write(&from_epoch_millis(millis, kind), &mut out)?;
        }
        other => panic!("bad op {other}"),
    }
    Ok(String::from_utf8(out.to_vec()).expect("UTF-8"))
}

#[test]
fn oracle_table() {
    let table = include_str!("../testdata/date.tsv");
    let mut failures = Vec::new();
    let mut rows = 0;
    for line in table.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "malformed row {line:?}");
        rows += 1;
        let got = match eval_row(cols[0], cols[1], cols[2], cols[3]) {
            Ok(s) => s,
            Err(_) => "ERR".to_owned(),
        };
        if got != cols[4] {
            failures.push(format!(
                "{} {:?} {} {:?}: expected {:?}, got {:?}",
                cols[0], cols[1], cols[2], cols[3], cols[4], got
            ));
        }
    }
    assert!(rows > 5000, "the table is loaded");
    assert!(
        failures.is_empty(),
        "{} of {rows} rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
