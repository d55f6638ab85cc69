//! A FreeMarker (FTL) template engine: a compiler to flat bytecode and a VM that renders into a
//! reusable byte buffer. It knows nothing of Kafka, HTTP or config files: it takes a template and
//! a JSON value, and writes bytes.
//!
//! CONTRACT (the engine is being written; these signatures are what the rest of hookpipe uses).

use bytes::BytesMut;

pub mod format;

/// A decoded JSON document, read without copying (simd-json's tape keeps key order, as Jackson does).
pub type Input<'tape, 'input> = simd_json::tape::Value<'tape, 'input>;

/// Compile-time options of a template.
#[derive(Debug, Clone)]
pub struct Options {
    /// FreeMarker settings applied before the template runs (`number_format`, `datetime_format`, ...).
    pub settings: Vec<(String, String)>,
    /// Escape interpolations inside JSON string literals and validate the output as JSON.
    pub json_mode: bool,
    /// Instructions one render may execute before it fails.
    pub fuel: u64,
    /// Largest output one render may produce, in bytes.
    pub max_output: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Vec::new(),
            json_mode: false,
            fuel: 10_000_000,
            max_output: 16 << 20,
        }
    }
}

/// A compile error: template name, line, column, message and a caret snippet.
#[derive(Debug, thiserror::Error)]
#[error("{name}:{line}:{column}: {message}")]
pub struct CompileError {
    /// The template's name (a file name or a config path).
    pub name: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// What is wrong.
    pub message: String,
}

/// A render error with the position of the instruction that failed.
#[derive(Debug, thiserror::Error)]
#[error("{name}:{line}:{column}: {message}")]
pub struct RenderError {
    /// The template's name.
    pub name: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// What went wrong.
    pub message: String,
}

/// Per-worker scratch space (VM stacks) reused across renders so a render allocates nothing.
#[derive(Debug, Default)]
pub struct RenderState {}

/// A compiled template. Cheap to share between threads (`Send + Sync`).
#[derive(Debug)]
pub struct Template {}

impl Template {
    /// Compiles `source`; `name` appears in every error.
    pub fn compile(
        _name: &str,
        _source: &str,
        _options: &Options,
    ) -> Result<Template, CompileError> {
        unimplemented!("template engine under construction")
    }

    /// Renders with `input` bound to the variable `input`, appending to `out`.
    pub fn render(
        &self,
        _state: &mut RenderState,
        _input: Input<'_, '_>,
        _out: &mut BytesMut,
    ) -> Result<(), RenderError> {
        unimplemented!("template engine under construction")
    }
}

/// A compiled boolean FTL expression over `input`, for destination filters
/// (`input.event_properties.plan == "pro"`).
#[derive(Debug)]
pub struct Condition {}

impl Condition {
    /// Compiles a boolean expression.
    pub fn compile(
        _name: &str,
        _expression: &str,
        _options: &Options,
    ) -> Result<Condition, CompileError> {
        unimplemented!("template engine under construction")
    }

    /// Evaluates it; a non-boolean result or a missing value is an error.
    pub fn eval(
        &self,
        _state: &mut RenderState,
        _input: Input<'_, '_>,
    ) -> Result<bool, RenderError> {
        unimplemented!("template engine under construction")
    }
}
