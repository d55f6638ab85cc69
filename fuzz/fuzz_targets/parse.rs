//! Fuzzes the template compiler (lexer, parser, code generation) with arbitrary template text:
//! it must return a template or a `CompileError`, never panic, hang or overflow its stack.
#![no_main]

use hookpipe::template::{Options, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Template::compile("fuzz.ftl", source, &Options::default()) {
        // The error must point inside the template (lines and columns are 1-based).
        assert!(e.line >= 1 && e.column >= 1, "bad error position: {e}");
    }
});
