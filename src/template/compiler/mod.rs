//! The compiler half of the engine: [`lexer`] → [`parser`] (element tree, [`ast`]) →
//! [`whitespace`] stripping → [`codegen`] into the flat bytecode of [`instr`] → [`optimize`]
//! (superinstructions for the hot sequences).

pub mod ast;
pub mod codegen;
pub mod instr;
pub mod lexer;
pub mod optimize;
pub mod parser;
pub mod whitespace;

use crate::template::CompileError;
use instr::Program;

/// Builds a compile error with a caret snippet for the byte offset `at` of `source`.
pub fn error_at(name: &str, source: &str, at: usize, message: String) -> CompileError {
    let at = at.min(source.len());
    let mut at = at;
    while !source.is_char_boundary(at) {
        at -= 1;
    }
    let line_start = source[..at].rfind(['\n', '\r']).map_or(0, |i| i + 1);
    let line_no = 1 + count_lines(&source[..line_start]);
    let line_end = source[at..]
        .find(['\n', '\r'])
        .map_or(source.len(), |i| at + i);
    let col = source[line_start..at].chars().count() as u32 + 1;
    let line_text = &source[line_start..line_end];
    let caret: String = line_text[..at - line_start]
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    CompileError {
        name: name.to_string(),
        line: line_no,
        column: col,
        message,
        snippet: format!("{line_text}\n{caret}^"),
    }
}

fn count_lines(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            n += 1;
        } else if b[i] == b'\r' {
            n += 1;
            if i + 1 < b.len() && b[i + 1] == b'\n' {
                i += 1;
            }
        }
        i += 1;
    }
    n
}

/// Compiles a template source into a program.
pub fn compile_template(
    name: &str,
    source: &str,
    json_mode: bool,
) -> Result<Program, CompileError> {
    compile_template_bound(name, source, json_mode, "input")
}

/// [`compile_template`] with the rendered value bound to the variable `input_name` instead of
/// `input` (which is then an ordinary, missing, variable).
pub fn compile_template_bound(
    name: &str,
    source: &str,
    json_mode: bool,
    input_name: &str,
) -> Result<Program, CompileError> {
    let (mut root, header) =
        parser::parse_template(source).map_err(|e| error_at(name, source, e.at, e.message))?;
    whitespace::strip(&mut root, header.strip_whitespace);
    let mut program = codegen::generate(&root, source, header.html_output, json_mode, input_name)
        .map_err(|e| error_at(name, source, e.pos.offset as usize, e.message))?;
    optimize::optimize(&mut program);
    Ok(program)
}

/// Compiles a standalone boolean expression (destination filters).
pub fn compile_expression(name: &str, source: &str) -> Result<Program, CompileError> {
    let e = parser::parse_standalone_expr(source)
        .map_err(|e| error_at(name, source, e.at, e.message))?;
    codegen::generate_expr(&e, source)
        .map_err(|e| error_at(name, source, e.pos.offset as usize, e.message))
}
