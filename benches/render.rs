//! Render benchmarks: hookpipe's template engine beside minijinja on the seed templates.
//!
//! One criterion group per fixture in `perf/fixtures/` (the event template, the cohort template
//! with 3 and with 100 users, the per-user template), with ids like `render/cohort_100/hookpipe`
//! and `render/cohort_100/minijinja`. Both engines render an already decoded input into a reused
//! buffer, so the numbers compare rendering alone. Setup asserts that hookpipe renders exactly
//! the reference FreeMarker output (`expected.txt`) and that the Jinja template renders the same
//! bytes, so no benchmark can measure a no-op or a wrong result. `cargo bench --bench render --
//! --test` runs each once as a check.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hookpipe::template::{Options, RenderState, Template};

/// The fixtures, in the order they are reported.
const FIXTURES: &[&str] = &["event", "cohort_3", "cohort_100", "per_user"];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("perf/fixtures")
        .join(name)
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

fn text(dir: &Path, file: &str) -> String {
    String::from_utf8(read(dir, file))
        .unwrap_or_else(|e| panic!("{}: not UTF-8: {e}", dir.join(file).display()))
}

fn render(c: &mut Criterion) {
    for &name in FIXTURES {
        let dir = fixture_dir(name);
        let ftl = text(&dir, "template.ftl");
        let jinja = text(&dir, "template.j2");
        let input = read(&dir, "input.json");
        let expected = read(&dir, "expected.txt");

        let mut group = c.benchmark_group(format!("render/{name}"));
        group.throughput(Throughput::Bytes(expected.len() as u64));

        // hookpipe: compiled once, rendering a decoded tape into a reused buffer.
        let template = Template::compile(name, &ftl, &Options::default())
            .unwrap_or_else(|e| panic!("{name}: template does not compile: {e}"));
        let mut json = input.clone();
        let tape = simd_json::to_tape(&mut json)
            .unwrap_or_else(|e| panic!("{name}: input.json is not JSON: {e}"));
        let mut state = RenderState::default();
        let mut out = BytesMut::with_capacity(expected.len() * 2);
        template
            .render(&mut state, tape.as_value(), &mut out)
            .unwrap_or_else(|e| panic!("{name}: render failed: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected),
            "{name}: hookpipe's output differs from FreeMarker's"
        );
        group.bench_function("hookpipe", |b| {
            b.iter(|| {
                out.clear();
                template
                    .render(&mut state, black_box(tape.as_value()), &mut out)
                    .expect("render");
                assert_eq!(out.len(), expected.len());
            })
        });

        // minijinja: the equivalent Jinja template on the same data, into a reused Vec.
        let mut env = minijinja::Environment::new();
        env.set_keep_trailing_newline(true);
        env.add_template(name, &jinja)
            .unwrap_or_else(|e| panic!("{name}: template.j2: {e}"));
        let tmpl = env.get_template(name).expect("just added");
        let data: serde_json::Value = serde_json::from_slice(&input).expect("input is JSON");
        let ctx = minijinja::context! { input => minijinja::Value::from_serialize(&data) };
        let mut buf = Vec::with_capacity(expected.len() * 2);
        tmpl.render_captured_to(&ctx, &mut buf)
            .unwrap_or_else(|e| panic!("{name}: minijinja render failed: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&buf),
            String::from_utf8_lossy(&expected),
            "{name}: template.j2 does not render FreeMarker's bytes"
        );
        group.bench_function("minijinja", |b| {
            b.iter(|| {
                buf.clear();
                tmpl.render_captured_to(black_box(&ctx), &mut buf)
                    .expect("render");
                assert_eq!(buf.len(), expected.len());
            })
        });
        group.finish();
    }
}

criterion_group!(benches, render);
criterion_main!(benches);
