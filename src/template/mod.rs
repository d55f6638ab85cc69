//! A FreeMarker (FTL) template engine: a compiler to flat bytecode and a VM that renders into a
//! reusable byte buffer. It knows nothing of Kafka, HTTP or config files: it takes a template and
//! a JSON value, and writes bytes.
//!
//! The language and its semantics follow Apache FreeMarker 2.3.31 under the Amplitude profile
//! (see `docs/templates.md`): `number_format=computer`, `boolean_format=c`, locale en_US, time
//! zone UTC, JSON objects as extended hashes, JSON arrays as sequences that also answer
//! `.iterator()`, `.size()` and `.isEmpty()`, and `UtilClass.toJsonString`.

pub mod compiler;
pub mod format;
pub mod vm;

use bytes::BytesMut;

pub use vm::state::RenderState;

/// A decoded JSON document, read without copying (simd-json's tape keeps key order, as Jackson does).
pub type Input<'tape, 'input> = simd_json::tape::Value<'tape, 'input>;

/// Compile-time options of a template.
#[derive(Debug, Clone)]
pub struct Options {
    /// FreeMarker settings applied before the template runs (`number_format`, `datetime_format`, ...).
    pub settings: Vec<(String, String)>,
    /// Escape interpolations inside JSON string literals and validate the output as JSON.
    pub json_mode: bool,
    /// Work one render may do before it fails: an upper bound of the instructions it runs
    /// (charged per code-region entry and per loop iteration, see `docs/templates.md`).
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
#[error("{name}:{line}:{column}: {message}\n{snippet}")]
pub struct CompileError {
    /// The template's name (a file name or a config path).
    pub name: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// What is wrong.
    pub message: String,
    /// The offending source line and a caret under the column.
    pub snippet: String,
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

/// A compiled template. Cheap to share between threads (`Send + Sync`).
#[derive(Debug)]
pub struct Template {
    name: String,
    program: compiler::instr::Program,
    options: Options,
}

fn limits(o: &Options) -> vm::Limits {
    vm::Limits {
        fuel: o.fuel,
        max_output: o.max_output,
    }
}

#[cold]
fn render_error(name: &str, program: &compiler::instr::Program, e: vm::VmError) -> RenderError {
    let (line, column) = program
        .dbg
        .get(e.dbg as usize)
        .map_or((0, 0), |d| (d.line, d.col));
    RenderError {
        name: name.to_string(),
        line,
        column,
        message: e.message,
    }
}

impl Template {
    /// Compiles `source`; `name` appears in every error.
    pub fn compile(name: &str, source: &str, options: &Options) -> Result<Template, CompileError> {
        Template::compile_bound(name, source, options, "input")
    }

    /// [`Template::compile`] for a template that sees the value given to [`Template::render`] as
    /// the variable `input_name` instead of `input` (a batch template sees its list of events
    /// as `inputs`); `input` is then an ordinary variable, missing unless the template sets it.
    pub fn compile_bound(
        name: &str,
        source: &str,
        options: &Options,
        input_name: &str,
    ) -> Result<Template, CompileError> {
        let program =
            compiler::compile_template_bound(name, source, options.json_mode, input_name)?;
        let t = Template {
            name: name.to_string(),
            program,
            options: options.clone(),
        };
        // Reject bad settings now rather than at the first render.
        for (k, v) in &options.settings {
            t.check_setting(k, v)?;
        }
        Ok(t)
    }

    fn check_setting(&self, name: &str, value: &str) -> Result<(), CompileError> {
        let bad = |m: String| CompileError {
            name: self.name.clone(),
            line: 0,
            column: 0,
            message: m,
            snippet: String::new(),
        };
        match name {
            "number_format" if value != "computer" => {
                format::NumberFormat::new(value).map_err(|e| bad(e.to_string()))?;
            }
            "number_format"
            | "boolean_format"
            | "datetime_format"
            | "date_format"
            | "time_format"
            | "url_escaping_charset"
            | "locale"
            | "time_zone"
            | "output_encoding" => {}
            _ => return Err(bad(format!("Unknown setting: {name:?}"))),
        }
        Ok(())
    }

    /// Renders with `input` bound to the variable `input`, appending to `out`.
    pub fn render(
        &self,
        state: &mut RenderState,
        input: Input<'_, '_>,
        out: &mut BytesMut,
    ) -> Result<(), RenderError> {
        let start = out.len();
        let result = {
            let mut vm = vm::Vm::new(&self.program, state, input, out, limits(&self.options));
            let r = match vm.apply_initial(&self.options.settings) {
                Ok(()) => vm.run_main(),
                Err(e) => Err(e),
            };
            vm.finish(state);
            r
        };
        if let Err(e) = result {
            out.truncate(start);
            return Err(render_error(&self.name, &self.program, e));
        }
        if self.options.json_mode {
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&out[start..]) {
                let message = format!("json mode: the rendered payload is not valid JSON: {e}");
                let (line, column) = (e.line() as u32, e.column() as u32);
                out.truncate(start);
                return Err(RenderError {
                    name: self.name.clone(),
                    line,
                    column,
                    message,
                });
            }
        }
        Ok(())
    }
}

/// A compiled boolean FTL expression over `input`, for destination filters
/// (`input.event_properties.plan == "pro"`).
#[derive(Debug)]
pub struct Condition {
    name: String,
    program: compiler::instr::Program,
    options: Options,
}

impl Condition {
    /// Compiles a boolean expression.
    pub fn compile(
        name: &str,
        expression: &str,
        options: &Options,
    ) -> Result<Condition, CompileError> {
        let program = compiler::compile_expression(name, expression)?;
        Ok(Condition {
            name: name.to_string(),
            program,
            options: options.clone(),
        })
    }

    /// Evaluates it; a non-boolean result or a missing value is an error.
    pub fn eval(&self, state: &mut RenderState, input: Input<'_, '_>) -> Result<bool, RenderError> {
        let mut sink = BytesMut::new();
        let mut vm = vm::Vm::new(
            &self.program,
            state,
            input,
            &mut sink,
            limits(&self.options),
        );
        if let Err(e) = vm.apply_initial(&self.options.settings) {
            vm.finish(state);
            return Err(render_error(&self.name, &self.program, e));
        }
        let r = vm.run_expr();
        let out = match r {
            Ok(vm::value::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(RenderError {
                name: self.name.clone(),
                line: 1,
                column: 1,
                message: format!(
                    "The filter must evaluate to a boolean, but it evaluated to {} {}",
                    vm::article(other.type_name()),
                    other.type_name()
                ),
            }),
            Err(e) => Err(render_error(&self.name, &self.program, e)),
        };
        vm.finish(state);
        out
    }
}

#[cfg(test)]
mod tests;
