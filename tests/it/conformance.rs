//! The FreeMarker conformance corpus (`../shared/ftl-conformance`, or `HOOKPIPE_CONFORMANCE_DIR`):
//! every case renders byte-for-byte what the reference engine printed, or fails where it failed.

use std::path::PathBuf;

use bytes::BytesMut;
use hookpipe::template::{Options, RenderState, Template};

fn corpus_dir() -> PathBuf {
    match std::env::var_os("HOOKPIPE_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/ftl-conformance"),
    }
}

enum Outcome {
    Pass,
    Fail(String),
}

fn run_case(dir: &std::path::Path) -> Outcome {
    let template = match std::fs::read_to_string(dir.join("template.ftl")) {
        Ok(t) => t,
        Err(e) => return Outcome::Fail(format!("cannot read template.ftl: {e}")),
    };
    let mut input = match std::fs::read(dir.join("input.json")) {
        Ok(i) => i,
        Err(e) => return Outcome::Fail(format!("cannot read input.json: {e}")),
    };
    let expected = std::fs::read(dir.join("expected.txt")).ok();
    let tape = match simd_json::to_tape(&mut input) {
        Ok(t) => t,
        Err(e) => return Outcome::Fail(format!("input.json does not parse: {e}")),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t =
            Template::compile("t", &template, &Options::default()).map_err(|e| e.to_string())?;
        let mut state = RenderState::default();
        let mut out = BytesMut::new();
        t.render(&mut state, tape.as_value(), &mut out)
            .map_err(|e| e.to_string())?;
        Ok::<Vec<u8>, String>(out.to_vec())
    }));
    let result = match result {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Outcome::Fail(format!("PANIC: {msg}"));
        }
    };
    match (expected, result) {
        (Some(exp), Ok(got)) if exp == got => Outcome::Pass,
        (Some(exp), Ok(got)) => Outcome::Fail(diff_snippet(&exp, &got)),
        (Some(_), Err(e)) => Outcome::Fail(format!("unexpected error: {e}")),
        (None, Err(_)) => Outcome::Pass,
        (None, Ok(got)) => Outcome::Fail(format!(
            "expected an error, got output {:?}",
            String::from_utf8_lossy(&got)
        )),
    }
}

fn diff_snippet(exp: &[u8], got: &[u8]) -> String {
    let at = exp
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(exp.len().min(got.len()));
    let from = at.saturating_sub(40);
    format!(
        "first difference at byte {at}\n      expected: {:?}\n      got:      {:?}",
        String::from_utf8_lossy(&exp[from..(at + 40).min(exp.len())]),
        String::from_utf8_lossy(&got[from..(at + 40).min(got.len())])
    )
}

#[test]
fn conformance_corpus() {
    let cases = corpus_dir().join("cases");
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(&cases) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) => panic!(
            "conformance corpus not found at {} ({e}); set HOOKPIPE_CONFORMANCE_DIR",
            cases.display()
        ),
    };
    dirs.sort();
    // Panics are reported per case below; keep the default hook from flooding the output.
    std::panic::set_hook(Box::new(|_| {}));
    assert!(!dirs.is_empty(), "no cases in {}", cases.display());
    let filter = std::env::var("HOOKPIPE_CONFORMANCE_FILTER").unwrap_or_default();
    let mut passed = 0;
    let mut failed = Vec::new();
    for d in &dirs {
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if !name.contains(&filter) {
            continue;
        }
        match run_case(d) {
            Outcome::Pass => passed += 1,
            Outcome::Fail(why) => failed.push((name, why)),
        }
    }
    for (name, why) in &failed {
        eprintln!("FAIL {name}: {why}");
    }
    eprintln!("conformance: {passed} passed, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} conformance cases failed",
        failed.len()
    );
}
