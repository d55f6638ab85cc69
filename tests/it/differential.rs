//! Differential test of the template engine against the reference FreeMarker (`ftl-oracle`).
//!
//! A seeded generator (`support/ftlgen.rs`) writes random templates and inputs from the FTL
//! subset hookpipe supports; each case is rendered by the reference Java engine (one JVM for the
//! whole run, `ftl-oracle --amplitude --batch`) and by hookpipe's engine in-process, and the two
//! must agree: the same bytes, or both an error. Every mismatch ever found is pinned as a named
//! regression case under `tests/it/regressions/`, which [`regressions`] runs without Java.
//!
//! Knobs (environment variables):
//! - `HOOKPIPE_DIFF_CASES=N`: how many cases (default 2000; `0` skips the random run).
//! - `HOOKPIPE_DIFF_SEED=S`: the first case's seed (default fixed, so CI is deterministic); case
//!   `i` uses seed `S + i`, so `HOOKPIPE_DIFF_SEED=<seed printed> HOOKPIPE_DIFF_CASES=1` replays one.
//! - `HOOKPIPE_DIFF_FEATURES=a,b` (only those), `-a,-b` (the default set but those) or `all`:
//!   generated areas (see `ftlgen::FEATURES`). The default set leaves out the features that
//!   exercise documented differences from FreeMarker (`locale`, `bignum`), so it fails on bugs only.
//! - `HOOKPIPE_DIFF_SHOW=N`: mismatches printed in full and minimised (default 8).
//! - `HOOKPIPE_DIFF_MATRIX=1`: run N cases for each feature alone (with `interp`) and print a
//!   table of which areas agree (documented differences are printed but do not fail it).
//! - `HOOKPIPE_DIFF_DUMP=FILE`: also write every case and FreeMarker's verdict there (JSON lines),
//!   to inspect what the generator produces.
//! - `HOOKPIPE_FTL_ORACLE=PATH`: the oracle script (default `<manifest>/../shared/tools/ftl-oracle/ftl-oracle`).
//!
//! Mismatches are also written, minimised, with the oracle's expected result, to
//! `<target>/tmp/difftest/` in the regression-case layout, ready to be named and moved.

#[path = "support/ftlgen.rs"]
mod ftlgen;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::BytesMut;
use hookpipe::template::{Options, RenderState, Template};

use ftlgen::{Case, Features, Json};

const DEFAULT_SEED: u64 = 0x5eed_f7e1;
const DEFAULT_CASES: u64 = 2000;
/// Longest the oracle may take to answer one request (the first includes JVM start-up and javac).
const ORACLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Oracle queries spent minimising one mismatch.
const MINIMISE_BUDGET: usize = 400;

// ---------------------------------------------------------------------------------------------
// The reference engine.

/// What an engine made of a case.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Rendered these bytes.
    Output(Vec<u8>),
    /// Refused the template or failed while rendering (message is informational).
    Error(String),
    /// Panicked (always a bug in hookpipe).
    Panic(String),
}

impl Outcome {
    fn show(&self) -> String {
        match self {
            Outcome::Output(b) => format!("output {:?}", String::from_utf8_lossy(b)),
            Outcome::Error(e) => format!("error {e:?}"),
            Outcome::Panic(e) => format!("PANIC {e:?}"),
        }
    }
}

/// One `ftl-oracle --amplitude --batch` JVM, answering requests one line at a time.
struct Oracle {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<String>,
    queries: usize,
}

fn oracle_path() -> PathBuf {
    match std::env::var_os("HOOKPIPE_FTL_ORACLE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/ftl-oracle/ftl-oracle"),
    }
}

impl Oracle {
    fn spawn() -> Result<Oracle, String> {
        let path = oracle_path();
        if !path.is_file() {
            return Err(format!(
                "reference renderer not found at {}; set HOOKPIPE_FTL_ORACLE to ftl-oracle \
                 (or HOOKPIPE_DIFF_CASES=0 to skip the random differential run)",
                path.display()
            ));
        }
        let mut child = Command::new(&path)
            .args(["--amplitude", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let stdin = child.stdin.take().ok_or("oracle stdin not piped")?;
        let stdout = child.stdout.take().ok_or("oracle stdout not piped")?;
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Oracle {
            child,
            stdin,
            replies,
            queries: 0,
        })
    }

    /// Renders one case. `None` when the oracle's answer cannot be compared (its output is not
    /// valid Unicode, e.g. a lone surrogate from slicing an emoji).
    fn render(&mut self, template: &str, input: &str) -> Result<Option<Outcome>, String> {
        self.queries += 1;
        let mut line = String::from("{\"template\":");
        ftlgen::write_json_string(template, &mut line);
        line.push_str(",\"input\":");
        line.push_str(input);
        line.push_str("}\n");
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("writing to the oracle: {e}"))?;
        let reply = self
            .replies
            .recv_timeout(ORACLE_TIMEOUT)
            .map_err(|e| format!("no answer from the oracle within {ORACLE_TIMEOUT:?}: {e}"))?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&reply) else {
            return Ok(None);
        };
        if let Some(out) = v.get("output").and_then(|o| o.as_str()) {
            if out.contains('\u{fffd}') {
                return Ok(None);
            }
            return Ok(Some(Outcome::Output(out.as_bytes().to_vec())));
        }
        match v.get("error").and_then(|e| e.as_str()) {
            Some(e) => Ok(Some(Outcome::Error(e.to_string()))),
            None => Err(format!("unexpected oracle reply: {reply}")),
        }
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// hookpipe's engine.

thread_local! {
    /// Set while the engine runs under `catch_unwind`, so expected panics stay quiet.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
}

fn engine_options() -> Options {
    Options {
        fuel: 2_000_000,
        max_output: 1 << 20,
        ..Options::default()
    }
}

/// Longest one in-process render may take before the run is declared hung (fuel should stop any
/// template long before).
const ENGINE_TIMEOUT: Duration = Duration::from_secs(20);

/// A thread that renders with hookpipe's engine, so a hang is a reported failure rather than
/// a test that never ends (and a deep recursion gets a large stack).
struct EngineWorker {
    jobs: mpsc::Sender<(String, String)>,
    done: mpsc::Receiver<Outcome>,
}

fn engine_worker() -> &'static std::sync::Mutex<EngineWorker> {
    static WORKER: std::sync::OnceLock<std::sync::Mutex<EngineWorker>> = std::sync::OnceLock::new();
    WORKER.get_or_init(|| {
        let (jobs, rx) = mpsc::channel::<(String, String)>();
        let (tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("hookpipe-engine".into())
            .stack_size(64 << 20)
            .spawn(move || {
                for (template, input) in rx {
                    if tx.send(render_in_process(&template, &input)).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn engine worker");
        std::sync::Mutex::new(EngineWorker { jobs, done })
    })
}

/// Renders with hookpipe's engine on the worker thread, bounded by [`ENGINE_TIMEOUT`].
fn run_engine(template: &str, input: &str) -> Outcome {
    let worker = engine_worker()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    worker
        .jobs
        .send((template.to_string(), input.to_string()))
        .expect("engine worker alive");
    match worker.done.recv_timeout(ENGINE_TIMEOUT) {
        Ok(outcome) => outcome,
        Err(e) => panic!(
            "hookpipe's engine did not finish within {ENGINE_TIMEOUT:?} ({e}); fuel not \
             enforced? template {template:?}, input {input}"
        ),
    }
}

/// Renders with hookpipe's engine; a panic is caught and reported as [`Outcome::Panic`].
fn render_in_process(template: &str, input: &str) -> Outcome {
    install_quiet_panic_hook();
    let mut bytes = input.as_bytes().to_vec();
    let tape = match simd_json::to_tape(&mut bytes) {
        Ok(t) => t,
        Err(e) => return Outcome::Error(format!("input is not JSON: {e}")),
    };
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t = match Template::compile("t", template, &engine_options()) {
            Ok(t) => t,
            Err(e) => return Outcome::Error(e.to_string()),
        };
        let mut state = RenderState::default();
        let mut out = BytesMut::new();
        match t.render(&mut state, tape.as_value(), &mut out) {
            Ok(()) => Outcome::Output(out.to_vec()),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }));
    QUIET.with(|q| q.set(false));
    result.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        Outcome::Panic(msg)
    })
}

// ---------------------------------------------------------------------------------------------
// Comparison.

/// How hookpipe disagreed with FreeMarker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Both rendered, different bytes.
    OutputDiffers,
    /// FreeMarker rendered, hookpipe failed.
    EngineErrs,
    /// FreeMarker failed, hookpipe rendered.
    EngineAccepts,
    /// hookpipe panicked.
    EnginePanics,
}

fn compare(oracle: &Outcome, engine: &Outcome) -> Option<Kind> {
    match (oracle, engine) {
        (_, Outcome::Panic(_)) => Some(Kind::EnginePanics),
        (Outcome::Output(a), Outcome::Output(b)) if a == b => None,
        (Outcome::Output(_), Outcome::Output(_)) => Some(Kind::OutputDiffers),
        (Outcome::Output(_), Outcome::Error(_)) => Some(Kind::EngineErrs),
        (Outcome::Error(_), Outcome::Output(_)) => Some(Kind::EngineAccepts),
        (Outcome::Error(_), Outcome::Error(_)) => None,
        (Outcome::Panic(_), _) => unreachable!("the oracle never reports a panic"),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// Shrinks a mismatching case while it keeps mismatching the same way: drops template chunks
/// (split at tag and interpolation boundaries) and input entries. Bounded by [`MINIMISE_BUDGET`].
fn minimise(oracle: &mut Oracle, case: &Case, kind: Kind) -> (String, Json) {
    let start = oracle.queries;
    let mut template = case.template.clone();
    let mut input = case.input.clone();
    let still_fails = |oracle: &mut Oracle, t: &str, i: &Json| -> bool {
        if oracle.queries - start >= MINIMISE_BUDGET {
            return false;
        }
        let text = i.to_text();
        match oracle.render(t, &text) {
            Ok(Some(o)) => compare(&o, &run_engine(t, &text)) == Some(kind),
            _ => false,
        }
    };
    // Template: remove runs of chunks, large runs first.
    let mut chunks = split_chunks(&template);
    let mut size = chunks.len() / 2;
    while size >= 1 {
        let mut i = 0;
        while i + size <= chunks.len() {
            let mut candidate = chunks.clone();
            candidate.drain(i..i + size);
            let t: String = candidate.concat();
            if !t.is_empty() && still_fails(oracle, &t, &input) {
                chunks = candidate;
                template = t;
            } else {
                i += 1;
            }
        }
        size /= 2;
    }
    // Input: drop entries and elements while it still fails.
    'outer: loop {
        for smaller in input.shrink_candidates() {
            if still_fails(oracle, &template, &smaller) {
                input = smaller;
                continue 'outer;
            }
        }
        break;
    }
    (template, input)
}

/// Splits a template before every `<#`, `</#`, `<@`, `${` and line break, and after every `>`
/// and `}`, so chunks are roughly whole tags, interpolations and text runs.
fn split_chunks(t: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut cur = String::new();
    let mut chars = t.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let rest = &t[i..];
        if !cur.is_empty()
            && (rest.starts_with("<#")
                || rest.starts_with("</#")
                || rest.starts_with("<@")
                || rest.starts_with("${")
                || c == '\n')
        {
            chunks.push(std::mem::take(&mut cur));
        }
        cur.push(c);
        if c == '>' || c == '}' {
            chunks.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    chunks
}

fn mismatch_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("difftest")
}

/// Writes a case in the regression layout, with the oracle's verdict as the expectation.
fn write_case(dir: &Path, template: &str, input: &Json, expected: &Outcome, actual: &Outcome) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create mismatch dir");
    std::fs::write(dir.join("template.ftl"), template).expect("write template");
    std::fs::write(dir.join("input.json"), input.to_text()).expect("write input");
    match expected {
        Outcome::Output(b) => std::fs::write(dir.join("expected.txt"), b),
        Outcome::Error(e) | Outcome::Panic(e) => {
            std::fs::write(dir.join("expected.error"), format!("ERROR: {e}\n"))
        }
    }
    .expect("write expected");
    std::fs::write(dir.join("hookpipe.txt"), actual.show()).expect("write actual");
}

#[derive(Default)]
struct Tally {
    cases: u64,
    mismatches: u64,
}

/// What one run of generated cases found.
#[derive(Default)]
struct RunReport {
    compared: u64,
    oracle_errors: u64,
    mismatches: u64,
    /// The summary table and the details of the first mismatches.
    summary: String,
    details: String,
}

/// Generates and compares `cases` cases from `seed` with `features`; prints and minimises the
/// first `show` mismatches.
fn run_cases(
    oracle: &mut Oracle,
    features: &Features,
    seed: u64,
    cases: u64,
    show: u64,
    dump: &mut Option<std::io::BufWriter<std::fs::File>>,
) -> RunReport {
    let mut by_kind: BTreeMap<Kind, u64> = BTreeMap::new();
    let mut by_feature: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut r = RunReport::default();
    let mut skipped = 0u64;
    let mut shown = 0u64;
    let mut panics: BTreeSet<String> = BTreeSet::new();
    for i in 0..cases {
        let case_seed = seed.wrapping_add(i);
        let case = ftlgen::generate(case_seed, features);
        let input = case.input.to_text();
        let expected = match oracle.render(&case.template, &input) {
            Ok(Some(o)) => o,
            Ok(None) => {
                skipped += 1;
                continue;
            }
            Err(e) => panic!("case seed {case_seed}: {e}"),
        };
        if matches!(expected, Outcome::Error(_)) {
            r.oracle_errors += 1;
        }
        if let Some(d) = dump.as_mut() {
            let line = serde_json::json!({
                "seed": case_seed,
                "template": case.template,
                "input": input,
                "freemarker": expected.show(),
            });
            writeln!(d, "{line}").expect("write HOOKPIPE_DIFF_DUMP");
        }
        let actual = run_engine(&case.template, &input);
        let kind = compare(&expected, &actual);
        for f in &case.features {
            let t = by_feature.entry(f).or_default();
            t.cases += 1;
            t.mismatches += u64::from(kind.is_some());
        }
        let Some(kind) = kind else { continue };
        *by_kind.entry(kind).or_default() += 1;
        if let Outcome::Panic(p) = &actual {
            panics.insert(p.clone());
        }
        if shown < show {
            shown += 1;
            let (t, inp) = minimise(oracle, &case, kind);
            let text = inp.to_text();
            let exp = oracle
                .render(&t, &text)
                .ok()
                .flatten()
                .unwrap_or(expected.clone());
            let act = run_engine(&t, &text);
            let dir = mismatch_dir().join(format!("seed-{case_seed}"));
            write_case(&dir, &t, &inp, &exp, &act);
            r.details.push_str(&format!(
                "\n--- mismatch {kind:?}, case seed {case_seed} (replay: HOOKPIPE_DIFF_SEED={case_seed} HOOKPIPE_DIFF_CASES=1)\n\
                 features: {:?}\n\
                 minimised template: {t:?}\n\
                 minimised input:    {text}\n\
                 freemarker: {}\n\
                 hookpipe:   {}\n\
                 full template: {:?}\n\
                 saved to {}\n",
                case.features,
                exp.show(),
                act.show(),
                case.template,
                dir.display(),
            ));
        }
    }
    r.compared = cases - skipped;
    r.mismatches = by_kind.values().sum();
    let enabled: Vec<&str> = features.names().collect();
    r.summary = format!(
        "differential: features {}; seed {seed}, {cases} cases ({skipped} not comparable), {} \
         FreeMarker errors, {} mismatches {by_kind:?}\nper feature (cases / mismatches):\n",
        enabled.join(","),
        r.oracle_errors,
        r.mismatches,
    );
    for (f, t) in &by_feature {
        r.summary
            .push_str(&format!("  {f:<11} {:>6} / {:>6}\n", t.cases, t.mismatches));
    }
    if !panics.is_empty() {
        r.summary
            .push_str(&format!("distinct panics: {panics:?}\n"));
    }
    r
}

#[test]
fn random_templates_match_freemarker() {
    let cases = env_u64("HOOKPIPE_DIFF_CASES", DEFAULT_CASES);
    if cases == 0 {
        eprintln!("differential: HOOKPIPE_DIFF_CASES=0, random run skipped");
        return;
    }
    let seed = env_u64("HOOKPIPE_DIFF_SEED", DEFAULT_SEED);
    let show = env_u64("HOOKPIPE_DIFF_SHOW", 8);
    let spec = std::env::var("HOOKPIPE_DIFF_FEATURES").unwrap_or_default();
    let features = Features::parse(&spec).unwrap_or_else(|e| panic!("HOOKPIPE_DIFF_FEATURES: {e}"));
    let mut oracle = Oracle::spawn().unwrap_or_else(|e| panic!("{e}"));
    let mut dump = std::env::var_os("HOOKPIPE_DIFF_DUMP").map(|p| {
        std::io::BufWriter::new(
            std::fs::File::create(&p)
                .unwrap_or_else(|e| panic!("HOOKPIPE_DIFF_DUMP={}: {e}", Path::new(&p).display())),
        )
    });

    if env_u64("HOOKPIPE_DIFF_MATRIX", 0) == 1 {
        // Each feature alone (with plain interpolation), to tell which areas agree.
        let mut table =
            String::from("differential matrix: feature, cases, FreeMarker errors, mismatches\n");
        let mut total = 0;
        for (name, _) in ftlgen::FEATURES {
            let f = Features::parse(&format!("interp,{name}")).expect("known features");
            let r = run_cases(&mut oracle, &f, seed, cases, 0, &mut dump);
            table.push_str(&format!(
                "  {name:<11} {:>6} {:>6} {:>6}\n",
                r.compared, r.oracle_errors, r.mismatches
            ));
            if !ftlgen::KNOWN_DIFFERENCES.contains(name) {
                total += r.mismatches;
            }
        }
        eprintln!("{table}");
        assert!(total == 0, "{total} mismatches\n{table}");
        return;
    }

    let r = run_cases(&mut oracle, &features, seed, cases, show, &mut dump);
    eprintln!("{}", r.summary);
    // The generator must mostly produce templates FreeMarker renders, or agreement means little.
    if spec.is_empty() && r.compared >= 200 {
        let ok_share = (r.compared - r.oracle_errors) as f64 / r.compared as f64;
        assert!(
            ok_share >= 0.6,
            "only {:.0}% of generated cases render in FreeMarker; the generator has degraded",
            ok_share * 100.0
        );
    }
    assert!(
        r.mismatches == 0,
        "{} of {} cases differ from FreeMarker\n{}{}",
        r.mismatches,
        r.compared,
        r.summary,
        r.details
    );
}

// ---------------------------------------------------------------------------------------------
// Named regression cases.

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/regressions")
}

/// Every case under `tests/it/regressions/`: a bug the differential test once found, with the
/// reference engine's verdict (`expected.txt` bytes, or `expected.error`: any error will do).
#[test]
fn regressions() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(regressions_dir())
        .expect("tests/it/regressions exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no regression cases found");
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let template = std::fs::read_to_string(dir.join("template.ftl"))
            .unwrap_or_else(|e| panic!("{name}/template.ftl: {e}"));
        let input = std::fs::read_to_string(dir.join("input.json"))
            .unwrap_or_else(|e| panic!("{name}/input.json: {e}"));
        let expected = if let Ok(b) = std::fs::read(dir.join("expected.txt")) {
            Outcome::Output(b)
        } else if let Ok(e) = std::fs::read_to_string(dir.join("expected.error")) {
            Outcome::Error(e)
        } else {
            panic!("{name}: neither expected.txt nor expected.error");
        };
        let actual = run_engine(&template, &input);
        if let Some(kind) = compare(&expected, &actual) {
            failures.push(format!(
                "{name}: {kind:?}\n  freemarker: {}\n  hookpipe:   {}",
                expected.show(),
                actual.show()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} regression cases fail:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn chunks_rejoin_to_the_template() {
    let t = "a ${x}<#if y>\n b</#if><@m p=1/>${z}";
    let chunks = split_chunks(t);
    assert_eq!(chunks.concat(), t);
    assert!(chunks.contains(&"${x}".to_string()), "{chunks:?}");
    assert!(chunks.contains(&"<#if y>".to_string()), "{chunks:?}");
}
