//! Fuzzes the VM: the input is a template and a JSON document separated by the first NUL byte
//! (no NUL: the whole input is the template and a fixed cohort-shaped document is used). Fuel
//! and the output cap are low, so hostile templates must fail cleanly with a `RenderError`
//! instead of spinning or growing without bound; nothing may panic.
#![no_main]

use bytes::BytesMut;
use hookpipe::template::{Options, RenderState, Template};
use libfuzzer_sys::fuzz_target;

/// Used when the fuzzer's bytes carry no (valid) JSON of their own.
const DEFAULT_INPUT: &str = r#"{"event_type":"click","user_id":"u1","event_time":"2022-02-28 20:07:01.795","n":3,"f":-2.5,"big":12345678901234567890,"flag":true,"nothing":null,"tags":["a","b,c",""],"users":[{"user_id":"x@example.com","user_properties":{"city":"Köln"}},{"user_id":"y"}],"props":{"plan":"pro","score":0.1}}"#;

/// Low limits: a render may execute this many instructions…
const FUEL: u64 = 20_000;
/// …and produce this many bytes.
const MAX_OUTPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let (template, json) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(source) = std::str::from_utf8(template) else {
        return;
    };
    let options = Options {
        fuel: FUEL,
        max_output: MAX_OUTPUT,
        ..Options::default()
    };
    let Ok(compiled) = Template::compile("fuzz.ftl", source, &options) else {
        return;
    };
    let mut bytes = json.to_vec();
    let mut fallback = DEFAULT_INPUT.as_bytes().to_vec();
    let tape = match simd_json::to_tape(&mut bytes) {
        Ok(tape) => tape,
        Err(_) => simd_json::to_tape(&mut fallback).expect("the default input is valid JSON"),
    };
    let mut state = RenderState::default();
    let mut out = BytesMut::new();
    // Twice with the same state: a failed render must leave the scratch space reusable.
    for _ in 0..2 {
        out.clear();
        if compiled
            .render(&mut state, tape.as_value(), &mut out)
            .is_ok()
        {
            assert!(
                out.len() <= MAX_OUTPUT,
                "output cap exceeded: {} bytes",
                out.len()
            );
        }
    }
});
