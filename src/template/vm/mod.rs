//! The VM: runs a compiled [`Program`] over an input, appending to the caller's buffer. A flat
//! dispatch loop over instructions; macro and function calls recurse (bounded depth). Fuel is
//! charged per code-region entry and per loop iteration (an upper bound of the instructions
//! run, see [`Vm::exec`]) and the output size is capped, so hostile templates fail cleanly.

pub mod builtins;
pub mod state;
pub mod value;

use std::borrow::Cow;

use bytes::BytesMut;
use simd_json::prelude::*;
use simd_json::tape::Value as TapeValue;

use crate::template::compiler::ast::{BinOp, RangeKind};
use crate::template::compiler::instr::*;
use crate::template::format::{DateFormat, DateKind, Number, NumberFormat};
pub use state::RenderState;
use value::{Method, Range, Value};

/// Deepest macro/function call nesting before a render fails.
const MAX_DEPTH: u32 = 32;

/// An internal render failure: the message and the debug entry of the blamed expression.
#[derive(Debug)]
pub struct VmError {
    /// What went wrong.
    pub message: String,
    /// Index into `Program::dbg`, or `u32::MAX`.
    pub dbg: u32,
    /// `#stop` (not an error).
    pub stop: bool,
}

type VResult<T> = Result<T, VmError>;

#[cold]
fn fail(dbg: u32, message: impl Into<String>) -> VmError {
    VmError {
        message: message.into(),
        dbg,
        stop: false,
    }
}

/// Limits of one render.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Fuel: an upper bound of the instructions run (see [`Vm::exec`]).
    pub fuel: u64,
    /// Output bytes.
    pub max_output: usize,
}

/// Settings that `#setting` can change during a render.
pub struct Settings<'a> {
    /// Boxed: a `NumberFormat` is hundreds of bytes, and the VM struct is built per render.
    number_format: Option<Box<NumberFormat>>,
    boolean_true: Cow<'a, str>,
    boolean_false: Cow<'a, str>,
    datetime_format: Cow<'a, str>,
    date_format: Cow<'a, str>,
    time_format: Cow<'a, str>,
    /// `url_escaping_charset`, when set.
    pub(crate) url_charset: Option<Cow<'a, str>>,
    /// The locale uses `,` as decimal separator and `.` for grouping (de, es, it, nl, pt...):
    /// formatted numbers (not computer format) have the two swapped.
    pub(crate) comma_decimal: bool,
}

/// Formats `n` with a (non-computer) number format into `out`, applying the locale's separators.
pub(crate) fn format_number(
    f: &NumberFormat,
    n: &Number,
    comma_decimal: bool,
    out: &mut BytesMut,
) -> Result<(), crate::template::format::FormatError> {
    let start = out.len();
    f.format(n, out)?;
    if comma_decimal {
        for b in &mut out[start..] {
            *b = match *b {
                b',' => b'.',
                b'.' => b',',
                other => other,
            };
        }
    }
    Ok(())
}

struct Ctx<'c> {
    base: usize,
    loop_base: usize,
    caller: Option<&'c Ctx<'c>>,
    site: Option<u32>,
    /// Position of the macro/function call that made this frame (`u32::MAX` at top level).
    call_dbg: u32,
}

pub(crate) enum LoopSrc<'a> {
    Arr(simd_json::tape::array::Iter<'a, 'a>),
    Obj(simd_json::tape::object::Iter<'a, 'a>),
    Pool(u32),
    PoolHash(u32),
    Range(Range),
}

/// The state of one `#list` loop.
pub(crate) struct LoopState<'a> {
    src: LoopSrc<'a>,
    index: usize,
    len: Option<usize>,
    started: bool,
}

/// One render in progress.
pub struct Vm<'a, 'o> {
    p: &'a Program,
    out: &'o mut BytesMut,
    /// `out_start + max_output`: the output length past which the render fails.
    out_limit: usize,
    limits: Limits,
    fuel: u64,
    depth: u32,
    input: Value<'a>,
    /// `input.<Program::input_keys[k]>` for the first 64 `k`, once looked up in this render.
    input_cache: Vec<Value<'a>>,
    /// Bit `k`: `input_cache[k]` holds this render's value.
    input_filled: u64,
    stack: Vec<Value<'a>>,
    locals: Vec<Value<'a>>,
    globals: Vec<Value<'a>>,
    loops: Vec<LoopState<'a>>,
    seqs: Vec<Value<'a>>,
    hashes: Vec<(Value<'a>, Value<'a>)>,
    marks: Vec<usize>,
    arena: String,
    scratch: BytesMut,
    settings: Settings<'a>,
}

impl<'a, 'o> Vm<'a, 'o> {
    /// Prepares a render, borrowing the reusable buffers of `state`, and applies the
    /// template's initial settings. Built in place (inlined, infallible construction) so the
    /// large VM struct is not copied around per render.
    #[inline(always)]
    pub fn new(
        p: &'a Program,
        state: &mut RenderState,
        input: TapeValue<'a, 'a>,
        out: &'o mut BytesMut,
        limits: Limits,
    ) -> Vm<'a, 'o> {
        let out_start = out.len();
        let mut vm = Vm {
            p,
            out,
            out_limit: out_start.saturating_add(limits.max_output),
            limits,
            fuel: limits.fuel,
            depth: 0,
            input: Value::from_tape(input),
            input_cache: state::retype(std::mem::take(&mut state.input_cache)),
            input_filled: 0,
            stack: state::retype(std::mem::take(&mut state.stack)),
            locals: state::retype(std::mem::take(&mut state.locals)),
            globals: state::retype(std::mem::take(&mut state.globals)),
            loops: state::retype(std::mem::take(&mut state.loops)),
            seqs: state::retype(std::mem::take(&mut state.seqs)),
            hashes: state::retype(std::mem::take(&mut state.hashes)),
            marks: std::mem::take(&mut state.marks),
            arena: std::mem::take(&mut state.arena),
            scratch: std::mem::take(&mut state.scratch),
            settings: Settings {
                number_format: None,
                boolean_true: Cow::Borrowed("true"),
                boolean_false: Cow::Borrowed("false"),
                datetime_format: Cow::Borrowed(""),
                date_format: Cow::Borrowed(""),
                time_format: Cow::Borrowed(""),
                url_charset: None,
                comma_decimal: false,
            },
        };
        vm.marks.clear();
        vm.arena.clear();
        vm.scratch.clear();
        vm.globals.resize(p.globals.len(), Value::Missing);
        vm.input_cache.clear();
        vm
    }

    /// Applies the settings a template was compiled with (before it runs).
    pub fn apply_initial(&mut self, initial: &'a [(String, String)]) -> VResult<()> {
        for (name, value) in initial {
            self.apply_setting(name, Cow::Borrowed(value.as_str()), u32::MAX)?;
        }
        Ok(())
    }

    /// `input.<Program::input_keys[k]>`, searched once per render and then served from
    /// `input_cache` (templates often read the same `input.name` in every loop iteration).
    #[inline(always)]
    fn input_dot(&mut self, k: u32, dbg: u32) -> VResult<Value<'a>> {
        let k = k as usize;
        if k < 64 && self.input_filled & (1 << k) != 0 {
            if let Some(&v) = self.input_cache.get(k) {
                return Ok(v);
            }
        }
        self.input_dot_search(k, dbg)
    }

    #[inline(never)]
    fn input_dot_search(&mut self, k: usize, dbg: u32) -> VResult<Value<'a>> {
        if self.input_filled == 0 && k < 64 {
            if let Value::Json(j) = self.input {
                if let Some(o) = j.as_object() {
                    self.scan_input(&o);
                    return Ok(self.input_cache.get(k).copied().unwrap_or(Value::Missing));
                }
            }
        }
        let p = self.p;
        let Some(name) = p.input_keys.get(k) else {
            return Err(fail(dbg, "internal error: bad input key"));
        };
        let v = self.dot_fast(self.input, name.as_str(), dbg)?;
        if k < 64 {
            if self.input_cache.len() <= k {
                self.input_cache.resize(k + 1, Value::Missing);
            }
            self.input_cache[k] = v;
            self.input_filled |= 1 << k;
        }
        Ok(v)
    }

    /// Resolves the first 64 `input_keys` in one pass over the input object (the first entry
    /// of each name wins, as in [`json_get`]), instead of one search from the start per name.
    /// Keys whose length no wanted name has are skipped after one bit test.
    fn scan_input(&mut self, o: &simd_json::tape::Object<'a, 'a>) {
        let p = self.p;
        let names = &p.input_keys[..p.input_keys.len().min(64)];
        let n = names.len();
        self.input_cache.clear();
        self.input_cache.resize(n, Value::Missing);
        let all: u64 = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let mut todo = all;
        for (key, v) in o.iter() {
            let kb = key.as_bytes();
            let same_length = p.input_key_lens.get(kb.len().min(63)).copied();
            let mut bits = same_length.unwrap_or(all) & todo;
            while bits != 0 {
                let j = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if key_eq(kb, names[j].as_bytes()) {
                    self.input_cache[j] = Value::from_tape(v);
                    todo &= !(1u64 << j);
                }
            }
            if todo == 0 {
                break;
            }
        }
        self.input_filled = all;
    }

    /// Gives the buffers back to `state` for the next render.
    pub fn finish(&mut self, state: &mut RenderState) {
        use std::mem::take;
        state.input_cache = state::retype(take(&mut self.input_cache));
        state.stack = state::retype(take(&mut self.stack));
        state.locals = state::retype(take(&mut self.locals));
        state.globals = state::retype(take(&mut self.globals));
        state.seqs = state::retype(take(&mut self.seqs));
        state.hashes = state::retype(take(&mut self.hashes));
        state.loops = state::retype(take(&mut self.loops));
        state.marks = take(&mut self.marks);
        state.arena = take(&mut self.arena);
        state.scratch = take(&mut self.scratch);
    }

    /// Runs the main template.
    pub fn run_main(&mut self) -> VResult<()> {
        self.locals
            .resize(self.p.main_slots as usize, Value::Missing);
        self.reserve_loops(self.p.main_loops as usize);
        let ctx = Ctx {
            base: 0,
            loop_base: 0,
            caller: None,
            site: None,
            call_dbg: u32::MAX,
        };
        match self.exec(0, self.p.main_end, &ctx) {
            Ok(()) => Ok(()),
            Err(e) if e.stop => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs a standalone expression program and returns its value.
    pub fn run_expr(&mut self) -> VResult<Value<'a>> {
        self.locals
            .resize(self.p.main_slots as usize, Value::Missing);
        self.reserve_loops(self.p.main_loops as usize);
        let ctx = Ctx {
            base: 0,
            loop_base: 0,
            caller: None,
            site: None,
            call_dbg: u32::MAX,
        };
        self.exec(0, self.p.main_end, &ctx)?;
        Ok(self.stack.pop().unwrap_or(Value::Missing))
    }

    // ------------------------------------------------------------ helpers

    /// Reserves `n` loop slots for a new frame; returns the frame's loop base.
    fn reserve_loops(&mut self, n: usize) -> usize {
        let base = self.loops.len();
        for _ in 0..n {
            self.loops.push(LoopState {
                src: LoopSrc::Pool(0),
                index: 0,
                len: Some(0),
                started: false,
            });
        }
        base
    }

    /// Fails when the run-time pools grew past what the output cap allows (hostile templates
    /// doubling a string or a sequence in a loop).
    fn check_pools(&self) -> VResult<()> {
        let cap = self.limits.max_output.saturating_mul(4).max(1 << 20);
        if self.arena.len() > cap || (self.seqs.len() + self.hashes.len()) * 16 > cap {
            return Err(fail(
                u32::MAX,
                "The template built values larger than the output limit allows",
            ));
        }
        Ok(())
    }

    fn pop(&mut self) -> Value<'a> {
        self.stack.pop().unwrap_or(Value::Missing)
    }

    /// The text of a string value.
    pub(crate) fn str_of<'s>(&'s self, v: &Value<'a>) -> Option<&'s str> {
        match *v {
            Value::Str(s) => Some(s),
            Value::Empty => Some(""),
            Value::Arena(a, b) | Value::Markup(a, b) => Some(&self.arena[a as usize..b as usize]),
            _ => None,
        }
    }

    /// Appends `s` to the arena and returns it as a value.
    pub(crate) fn arena_str(&mut self, s: &str) -> Value<'a> {
        if self.arena.len() > self.limits.max_output.saturating_mul(4).max(1 << 20) {
            return Value::Str("");
        }
        let a = self.arena.len() as u32;
        self.arena.push_str(s);
        Value::Arena(a, self.arena.len() as u32)
    }

    /// Moves the scratch buffer's text into the arena.
    pub(crate) fn scratch_to_arena(&mut self) -> VResult<Value<'a>> {
        let a = self.arena.len() as u32;
        match std::str::from_utf8(&self.scratch) {
            Ok(s) => self.arena.push_str(s),
            Err(_) => {
                return Err(fail(
                    u32::MAX,
                    "internal error: formatter produced invalid UTF-8",
                ))
            }
        }
        self.scratch.clear();
        self.check_pools()?;
        Ok(Value::Arena(a, self.arena.len() as u32))
    }

    /// Fails when the output grew past the cap (one comparison on the hot path).
    #[inline(always)]
    fn check_output(&self) -> VResult<()> {
        if self.out.len() > self.out_limit {
            return Err(self.output_error());
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn output_error(&self) -> VmError {
        fail(
            u32::MAX,
            format!(
                "The output exceeds the limit of {} bytes",
                self.limits.max_output
            ),
        )
    }

    pub(crate) fn dbg_text(&self, dbg: u32) -> &str {
        self.p.dbg.get(dbg as usize).map_or("", |d| d.text.as_str())
    }

    pub(crate) fn type_error(
        &self,
        dbg: u32,
        what: &str,
        expected: &str,
        v: &Value<'a>,
    ) -> VmError {
        fail(
            dbg,
            format!(
                "For \"{what}\": Expected {expected}, but this has evaluated to {} {}:\n==> {}",
                if v.type_name().starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                },
                v.type_name(),
                self.dbg_text(dbg)
            ),
        )
    }

    fn missing_error(&self, dbg: u32) -> VmError {
        fail(
            dbg,
            format!(
                "The following has evaluated to null or missing:\n==> {}",
                self.dbg_text(dbg)
            ),
        )
    }

    // ------------------------------------------------------------ settings

    fn apply_setting(&mut self, name: &str, value: Cow<'a, str>, dbg: u32) -> VResult<()> {
        match name {
            "number_format" => {
                self.settings.number_format = if value == "computer" {
                    None
                } else {
                    Some(Box::new(
                        NumberFormat::new(&value).map_err(|e| fail(dbg, e.to_string()))?,
                    ))
                };
            }
            "boolean_format" => {
                if value == "c" || value == "true,false" {
                    self.settings.boolean_true = Cow::Borrowed("true");
                    self.settings.boolean_false = Cow::Borrowed("false");
                } else {
                    let Some((t, f)) = value.split_once(',') else {
                        return Err(fail(
                            dbg,
                            format!(
                                "Invalid boolean_format {value:?}: must be \"c\" or \"yes,no\""
                            ),
                        ));
                    };
                    let (t, f) = (t.to_string(), f.to_string());
                    self.settings.boolean_true = Cow::Owned(t);
                    self.settings.boolean_false = Cow::Owned(f);
                }
            }
            "datetime_format" => self.settings.datetime_format = value,
            "date_format" => self.settings.date_format = value,
            "time_format" => self.settings.time_format = value,
            "url_escaping_charset" => self.settings.url_charset = Some(value),
            "locale" => {
                let lang = value.split(['_', '-']).next().unwrap_or("");
                self.settings.comma_decimal = matches!(
                    lang,
                    "de" | "es" | "it" | "nl" | "pt" | "da" | "id" | "tr" | "el"
                );
            }
            "time_zone"
            | "sql_date_and_time_time_zone"
            | "output_encoding"
            | "classic_compatible"
            | "template_exception_handler"
            | "api_builtin_enabled"
            | "show_error_tips"
            | "c_format" => {}
            _ => return Err(fail(dbg, format!("Unknown setting: {name:?}"))),
        }
        Ok(())
    }

    // ------------------------------------------------------------ formatting

    /// [`Vm::write_interp`] with the common cases (a borrowed string outside HTML output, a
    /// boolean) inlined into the caller.
    #[inline(always)]
    fn write_interp_fast(&mut self, v: Value<'a>, dbg: u32, html: bool) -> VResult<()> {
        match (v, html) {
            (Value::Str(s), false) => self.out.extend_from_slice(s.as_bytes()),
            (Value::Bool(b), _) => {
                let text = if b {
                    &self.settings.boolean_true
                } else {
                    &self.settings.boolean_false
                };
                self.out.extend_from_slice(text.as_bytes());
            }
            _ => return self.write_interp(v, dbg, html),
        }
        Ok(())
    }

    /// Writes a scalar as an interpolation does.
    fn write_interp(&mut self, v: Value<'a>, dbg: u32, html: bool) -> VResult<()> {
        match v {
            Value::Empty => {}
            Value::Str(s) => {
                if html {
                    crate::template::format::escape::html(s, self.out);
                } else {
                    self.out.extend_from_slice(s.as_bytes());
                }
            }
            Value::Arena(a, b) => {
                let s = &self.arena[a as usize..b as usize];
                if html {
                    crate::template::format::escape::html(s, self.out);
                } else {
                    self.out.extend_from_slice(s.as_bytes());
                }
            }
            Value::Markup(a, b) => {
                self.out
                    .extend_from_slice(&self.arena.as_bytes()[a as usize..b as usize]);
            }
            Value::Num(n) => self.write_number(&n, dbg)?,
            Value::Bool(b) => {
                let s = if b {
                    &self.settings.boolean_true
                } else {
                    &self.settings.boolean_false
                };
                self.out.extend_from_slice(s.as_bytes());
            }
            Value::Date(d) => {
                let f = DateFormat::new(self.date_spec(d.kind), d.kind)
                    .map_err(|e| fail(dbg, e.to_string()))?;
                f.format(&d, self.out).map_err(|e| fail(dbg, e.to_string()))?;
            }
            Value::Missing => return Err(self.missing_error(dbg)),
            other => {
                return Err(fail(
                    dbg,
                    format!(
                        "For \"${{...}}\" content: Expected a string or something automatically convertible to string (number, date or boolean), or \"template output\" , but this has evaluated to {} {}:\n==> {}",
                        if other.type_name().starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" },
                        other.type_name(),
                        self.dbg_text(dbg)
                    ),
                ))
            }
        }
        Ok(())
    }

    fn write_number(&mut self, n: &Number, dbg: u32) -> VResult<()> {
        match &self.settings.number_format {
            None => n.write_computer(self.out),
            Some(f) => format_number(f, n, self.settings.comma_decimal, self.out)
                .map_err(|e| fail(dbg, e.to_string()))?,
        }
        Ok(())
    }

    pub(crate) fn date_spec(&self, kind: DateKind) -> &str {
        match kind {
            DateKind::Date => &self.settings.date_format,
            DateKind::Time => &self.settings.time_format,
            _ => &self.settings.datetime_format,
        }
    }

    /// The `boolean_format` texts.
    pub(crate) fn bool_text(&self, b: bool) -> &str {
        if b {
            &self.settings.boolean_true
        } else {
            &self.settings.boolean_false
        }
    }

    /// Converts a scalar to text into the scratch buffer (string concatenation, `?string`).
    pub(crate) fn scalar_to_scratch(&mut self, v: Value<'a>, dbg: u32) -> VResult<()> {
        match v {
            Value::Str(s) => self.scratch.extend_from_slice(s.as_bytes()),
            Value::Empty => {}
            Value::Arena(a, b) | Value::Markup(a, b) => self
                .scratch
                .extend_from_slice(&self.arena.as_bytes()[a as usize..b as usize]),
            Value::Num(n) => match &self.settings.number_format {
                None => n.write_computer(&mut self.scratch),
                Some(f) => format_number(f, &n, self.settings.comma_decimal, &mut self.scratch)
                    .map_err(|e| fail(dbg, e.to_string()))?,
            },
            Value::Bool(b) => {
                let s = if b {
                    &self.settings.boolean_true
                } else {
                    &self.settings.boolean_false
                };
                self.scratch.extend_from_slice(s.as_bytes());
            }
            Value::Date(d) => {
                let f = DateFormat::new(self.date_spec(d.kind), d.kind)
                    .map_err(|e| fail(dbg, e.to_string()))?;
                f.format(&d, &mut self.scratch)
                    .map_err(|e| fail(dbg, e.to_string()))?;
            }
            Value::Missing => return Err(self.missing_error(dbg)),
            other => {
                return Err(self.type_error(
                    dbg,
                    "+",
                    "a string or something automatically convertible to string",
                    &other,
                ))
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ data access

    /// `recv.name`, with the JSON-object case (the hot path) first and without a `Result`.
    #[inline(always)]
    fn dot_fast(&mut self, recv: Value<'a>, name: &'a str, dbg: u32) -> VResult<Value<'a>> {
        if let Value::Json(j) = recv {
            if let Some(o) = j.as_object() {
                return Ok(json_get(&o, name.as_bytes()));
            }
        }
        self.dot(recv, name, dbg)
    }

    #[inline(never)]
    fn dot(&mut self, recv: Value<'a>, name: &'a str, dbg: u32) -> VResult<Value<'a>> {
        Ok(match recv {
            Value::Missing | Value::Empty => Value::Missing,
            Value::Json(v) => {
                if let Some(obj) = v.as_object() {
                    json_get(&obj, name.as_bytes())
                } else {
                    match name {
                        "iterator" => Value::Method(Method::Iterator, Some(v)),
                        "size" => Value::Method(Method::Size, Some(v)),
                        "isEmpty" => Value::Method(Method::IsEmpty, Some(v)),
                        _ => Value::Missing,
                    }
                }
            }
            Value::Hash(start, len) => self.hash_get(start, len, name),
            Value::Util => match name {
                "toJsonString" | "toJson" => Value::Method(Method::ToJson, None),
                _ => Value::Missing,
            },
            Value::Statics => {
                if name == "com.amplitude.integrations.connector.utils.FtlUtils" {
                    Value::Util
                } else {
                    Value::Missing
                }
            }
            other => {
                return Err(self
                    .type_error(dbg, ".\" left-hand operand", "a hash", &other)
                    .with_prefix())
            }
        })
    }

    fn hash_get(&self, start: u32, len: u32, name: &str) -> Value<'a> {
        // Later keys win (hash concatenation keeps the last value), so search backwards.
        for i in (start..start + len).rev() {
            let (k, v) = self.hashes[i as usize];
            if self.str_of(&k) == Some(name) {
                return v;
            }
        }
        Value::Missing
    }

    /// Number of items of a sequence value, if it is one.
    pub(crate) fn seq_len(&self, v: &Value<'a>) -> Option<usize> {
        match v {
            Value::Json(j) => j.as_array().map(|a| a.len()),
            Value::Seq(_, len) | Value::Coll(_, len) => Some(*len as usize),
            Value::Empty => Some(0),
            Value::Range(r) => r.len.map(|l| l as usize),
            _ => None,
        }
    }

    /// Pushes all items of a sequence onto the stack; returns how many.
    pub(crate) fn push_items(&mut self, v: Value<'a>, dbg: u32, what: &str) -> VResult<usize> {
        match v {
            Value::Empty => Ok(0),
            Value::Json(j) => {
                let Some(arr) = j.as_array() else {
                    return Err(self.type_error(dbg, what, "a sequence", &v));
                };
                let n = arr.len();
                for item in arr.iter() {
                    self.stack.push(Value::from_tape(item));
                }
                Ok(n)
            }
            Value::Seq(s, len) | Value::Coll(s, len) => {
                for i in s..s + len {
                    let item = self.seqs[i as usize];
                    self.stack.push(item);
                }
                Ok(len as usize)
            }
            Value::Range(r) => {
                let Some(len) = r.len else {
                    return Err(fail(
                        dbg,
                        "This operation is not supported on an unbounded range",
                    ));
                };
                if len > 1_000_000 {
                    return Err(fail(
                        dbg,
                        "Range too large to materialise (over 1,000,000 items)",
                    ));
                }
                for i in 0..len as i64 {
                    self.stack.push(Value::Num(Number::Int(
                        r.start.wrapping_add(i.wrapping_mul(r.step)) as i32,
                    )));
                }
                Ok(len as usize)
            }
            other => Err(self.type_error(dbg, what, "a sequence", &other)),
        }
    }

    /// Moves the top `n` stack values into the sequence pool as a new sequence.
    pub(crate) fn make_seq(&mut self, n: usize) -> Value<'a> {
        if self.check_pools().is_err() {
            // Keep going with an empty sequence; the next check fails the render.
            let from = self.stack.len() - n;
            self.stack.truncate(from);
            return Value::Seq(0, 0);
        }
        let start = self.seqs.len() as u32;
        let from = self.stack.len() - n;
        self.seqs.extend(self.stack.drain(from..));
        Value::Seq(start, n as u32)
    }

    fn index(&mut self, recv: Value<'a>, key: Value<'a>, dbg: u32) -> VResult<Value<'a>> {
        if let Value::Range(r) = key {
            return self.slice(recv, r, dbg);
        }
        if let Value::Empty | Value::Missing = recv {
            // Only reached inside `(...)!` / `(...)??`: a missing step gives missing.
            return Ok(Value::Missing);
        }
        if let Value::Num(n) = key {
            let i = n.int_value();
            return Ok(match recv {
                Value::Json(j) => match j.as_array() {
                    Some(a) if i >= 0 => a.get(i as usize).map_or(Value::Missing, Value::from_tape),
                    Some(_) => Value::Missing,
                    None => {
                        return Err(self.type_error(
                            dbg,
                            "[]\" left-hand operand",
                            "a sequence",
                            &recv,
                        ))
                    }
                },
                Value::Seq(s, len) | Value::Coll(s, len) => {
                    if i >= 0 && (i as u32) < len {
                        self.seqs[(s + i as u32) as usize]
                    } else {
                        Value::Missing
                    }
                }
                Value::Range(r) => {
                    if i >= 0 && r.len.is_none_or(|l| (i as u64) < l) {
                        Value::Num(Number::Int(
                            r.start.wrapping_add((i as i64).wrapping_mul(r.step)) as i32,
                        ))
                    } else {
                        Value::Missing
                    }
                }
                Value::Str(_) | Value::Arena(..) => {
                    let s = self.str_of(&recv).unwrap_or("");
                    match s.chars().nth(i.max(0) as usize) {
                        Some(c) if i >= 0 => {
                            let mut buf = [0u8; 4];
                            let cs: &str = c.encode_utf8(&mut buf);
                            let cs = cs.to_string();
                            self.arena_str(&cs)
                        }
                        _ => return Err(fail(dbg, format!("String index out of range: {i}"))),
                    }
                }
                other => {
                    return Err(self.type_error(
                        dbg,
                        "[]\" left-hand operand",
                        "a sequence",
                        &other,
                    ))
                }
            });
        }
        let Some(k) = self.str_of(&key) else {
            return Err(self.type_error(dbg, "[]\" key", "a string or number", &key));
        };
        // Keys borrowed from the arena cannot outlive it as 'a; copy the small key when needed.
        match recv {
            Value::Json(j) => {
                if let Some(obj) = j.as_object() {
                    Ok(obj.get(k).map_or(Value::Missing, Value::from_tape))
                } else {
                    Ok(match k {
                        "iterator" => Value::Method(Method::Iterator, Some(j)),
                        "size" => Value::Method(Method::Size, Some(j)),
                        "isEmpty" => Value::Method(Method::IsEmpty, Some(j)),
                        _ => Value::Missing,
                    })
                }
            }
            Value::Hash(s, len) => {
                let k = k.to_string();
                Ok(self.hash_get(s, len, &k))
            }
            Value::Util => Ok(match k {
                "toJsonString" | "toJson" => Value::Method(Method::ToJson, None),
                _ => Value::Missing,
            }),
            Value::Statics => Ok(
                if k == "com.amplitude.integrations.connector.utils.FtlUtils" {
                    Value::Util
                } else {
                    Value::Missing
                },
            ),
            Value::Missing => Ok(Value::Missing),
            other => Err(self.type_error(dbg, "[]\" left-hand operand", "a hash", &other)),
        }
    }

    /// How many items `x[r]` takes from a value of `size` items (FreeMarker's range-key rules:
    /// an empty range gives an empty result, `a..*n` stops at the end, other overruns fail).
    fn slice_len(&self, r: Range, size: usize, dbg: u32) -> VResult<usize> {
        let first = r.start;
        if first < 0 {
            return Err(fail(dbg, format!("Negative range start index ({first}) isn't allowed for a range used for slicing")));
        }
        if r.len == Some(0) {
            return Ok(0);
        }
        let size = size as i64;
        if first > size || (first == size && r.len.is_some() && !r.adaptive && r.step > 0) {
            return Err(fail(
                dbg,
                format!("Range start index {first} is out of bounds, because the sliced value has only {size} items"),
            ));
        }
        Ok(match r.len {
            None => (size - first) as usize,
            Some(len) => {
                let len = len.min(i64::MAX as u64) as i64;
                let last = first.saturating_add((len - 1).saturating_mul(r.step));
                if last < 0 {
                    return Err(fail(dbg, format!("Negative range end index ({last}) isn't allowed for a range used for slicing")));
                }
                if last >= size {
                    if r.adaptive {
                        (size - first).unsigned_abs() as usize
                    } else {
                        return Err(fail(
                            dbg,
                            format!("Range end index {last} is out of bounds, because the sliced value has only {size} items"),
                        ));
                    }
                } else {
                    len as usize
                }
            }
        })
    }

    fn slice(&mut self, recv: Value<'a>, r: Range, dbg: u32) -> VResult<Value<'a>> {
        let recv = if let Value::Num(_) | Value::Date(_) | Value::Bool(_) = recv {
            // A number, date or boolean is sliced as its text.
            self.scratch.clear();
            self.scalar_to_scratch(recv, dbg)?;
            self.scratch_to_arena()?
        } else {
            recv
        };
        if let Some(s) = self.str_of(&recv) {
            let chars: Vec<char> = s.chars().collect();
            let n = self.slice_len(r, chars.len(), dbg)?;
            let sub: String = (0..n as i64)
                .map(|i| chars[(r.start + i * r.step) as usize])
                .collect();
            return Ok(self.arena_str(&sub));
        }
        let base = self.stack.len();
        let size = self.push_items(recv, dbg, "[]\" left-hand operand")?;
        let n = match self.slice_len(r, size, dbg) {
            Ok(n) => n,
            Err(e) => {
                self.stack.truncate(base);
                return Err(e);
            }
        };
        let from = self.seqs.len() as u32;
        for i in 0..n as i64 {
            let idx = r.start + i * r.step;
            let v = self.stack[base + idx as usize];
            self.seqs.push(v);
        }
        self.stack.truncate(base);
        Ok(Value::Seq(from, n as u32))
    }

    // ------------------------------------------------------------ operators

    pub(crate) fn values_equal(&self, a: &Value<'a>, b: &Value<'a>, dbg: u32) -> VResult<bool> {
        match (a, b) {
            (Value::Num(x), Value::Num(y)) => x.num_eq(y).map_err(|e| fail(dbg, e.to_string())),
            (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
            (Value::Date(x), Value::Date(y)) => Ok(x.millis == y.millis),
            _ => match (self.str_of(a), self.str_of(b)) {
                (Some(x), Some(y)) => Ok(x == y),
                _ => Err(fail(
                    dbg,
                    format!(
                        "Can't compare values of these types. Allowed comparisons are between two numbers, two strings, two dates, or two booleans.\nLeft hand operand is {} {}.\nRight hand operand is {} {}.",
                        article(a.type_name()), a.type_name(), article(b.type_name()), b.type_name()
                    ),
                )),
            },
        }
    }

    fn compare(&self, op: BinOp, a: &Value<'a>, b: &Value<'a>, dbg: u32) -> VResult<bool> {
        let ord = match (a, b) {
            (Value::Num(x), Value::Num(y)) => x.compare(y).map_err(|e| fail(dbg, e.to_string()))?,
            (Value::Date(x), Value::Date(y)) => x.millis.cmp(&y.millis),
            _ => {
                if self.str_of(a).is_some() && self.str_of(b).is_some() {
                    let sym = match op {
                        BinOp::Lt => "<",
                        BinOp::Le => "<=",
                        BinOp::Gt => ">",
                        _ => ">=",
                    };
                    return Err(fail(
                        dbg,
                        format!("Can't use operator \"{sym}\" on string values."),
                    ));
                }
                return Err(fail(
                    dbg,
                    format!(
                        "Can't compare values of these types. Allowed comparisons are between two numbers, two strings, two dates, or two booleans.\nLeft hand operand is {} {}.\nRight hand operand is {} {}.",
                        article(a.type_name()), a.type_name(), article(b.type_name()), b.type_name()
                    ),
                ));
            }
        };
        Ok(match op {
            BinOp::Lt => ord.is_lt(),
            BinOp::Le => ord.is_le(),
            BinOp::Gt => ord.is_gt(),
            _ => ord.is_ge(),
        })
    }

    fn binary(&mut self, op: BinOp, a: Value<'a>, b: Value<'a>, dbg: u32) -> VResult<Value<'a>> {
        let num_err = |e: crate::template::format::FormatError| fail(dbg, e.to_string());
        match op {
            BinOp::Eq => return Ok(Value::Bool(self.values_equal(&a, &b, dbg)?)),
            BinOp::Ne => return Ok(Value::Bool(!self.values_equal(&a, &b, dbg)?)),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                return Ok(Value::Bool(self.compare(op, &a, &b, dbg)?))
            }
            _ => {}
        }
        if let (Value::Num(x), Value::Num(y)) = (&a, &b) {
            let r = match op {
                BinOp::Add => x.add(y),
                BinOp::Sub => x.sub(y),
                BinOp::Mul => x.mul(y),
                BinOp::Div => x.div(y),
                _ => x.rem(y),
            }
            .map_err(num_err)?;
            return Ok(Value::Num(r));
        }
        if op != BinOp::Add {
            let bad = if matches!(a, Value::Num(_)) { &b } else { &a };
            return Err(self.type_error(dbg, "arithmetic operand", "a number", bad));
        }
        // + on sequences, hashes, or strings.
        let a_seq = self.seq_len(&a).is_some() && !matches!(a, Value::Json(j) if j.is_object());
        let b_seq = self.seq_len(&b).is_some() && !matches!(b, Value::Json(j) if j.is_object());
        if a_seq && b_seq {
            let base = self.stack.len();
            let n1 = self.push_items(a, dbg, "+")?;
            let n2 = self.push_items(b, dbg, "+")?;
            debug_assert_eq!(self.stack.len(), base + n1 + n2);
            return Ok(self.make_seq(n1 + n2));
        }
        let a_hash = matches!(a, Value::Hash(..)) || matches!(a, Value::Json(j) if j.is_object());
        let b_hash = matches!(b, Value::Hash(..)) || matches!(b, Value::Json(j) if j.is_object());
        if a_hash && b_hash {
            let start = self.hashes.len() as u32;
            self.push_pairs(a);
            self.push_pairs(b);
            // Keep the first position of each key, the last value (LinkedHashMap putAll).
            let end = self.hashes.len();
            let mut i = start as usize;
            let mut w = start as usize;
            while i < end {
                let (k, v) = self.hashes[i];
                let ks = self.str_of(&k).unwrap_or("").to_string();
                let mut found = None;
                for j in start as usize..w {
                    if self.str_of(&self.hashes[j].0) == Some(ks.as_str()) {
                        found = Some(j);
                        break;
                    }
                }
                match found {
                    Some(j) => self.hashes[j].1 = v,
                    None => {
                        self.hashes[w] = (k, v);
                        w += 1;
                    }
                }
                i += 1;
            }
            self.hashes.truncate(w);
            return Ok(Value::Hash(start, w as u32 - start));
        }
        self.scratch.clear();
        self.scalar_to_scratch(a, dbg)?;
        self.scalar_to_scratch(b, dbg)?;
        self.scratch_to_arena()
    }

    pub(crate) fn push_pairs(&mut self, h: Value<'a>) {
        match h {
            Value::Hash(s, len) => {
                for i in s..s + len {
                    let p = self.hashes[i as usize];
                    self.hashes.push(p);
                }
            }
            Value::Json(j) => {
                if let Some(o) = j.as_object() {
                    for (k, v) in o.iter() {
                        self.hashes.push((Value::Str(k), Value::from_tape(v)));
                    }
                }
            }
            _ => {}
        }
    }

    fn make_range(&mut self, kind: RangeKind, dbg: u32) -> VResult<Value<'a>> {
        let end = if kind == RangeKind::Unbounded {
            None
        } else {
            Some(self.pop())
        };
        let start = self.pop();
        let Value::Num(s) = start else {
            return Err(self.type_error(dbg, "..\" left-hand operand", "a number", &start));
        };
        let s = s.long_value();
        let r = match end {
            None => Range {
                start: s,
                len: None,
                step: 1,
                adaptive: false,
            },
            Some(Value::Num(e)) => {
                let e = e.long_value();
                match kind {
                    RangeKind::Inclusive => Range {
                        start: s,
                        len: Some(e.abs_diff(s).saturating_add(1)),
                        step: if e >= s { 1 } else { -1 },
                        adaptive: false,
                    },
                    RangeKind::Exclusive => Range {
                        start: s,
                        len: Some(e.abs_diff(s)),
                        step: if e >= s { 1 } else { -1 },
                        adaptive: false,
                    },
                    _ => Range {
                        start: s,
                        len: Some(e.unsigned_abs()),
                        step: if e >= 0 { 1 } else { -1 },
                        adaptive: true,
                    },
                }
            }
            Some(other) => {
                return Err(self.type_error(dbg, "..\" right-hand operand", "a number", &other))
            }
        };
        Ok(Value::Range(r))
    }

    // ------------------------------------------------------------ loops

    fn loop_init(&mut self, l: usize, v: Value<'a>, dbg: u32) -> VResult<bool> {
        let (src, len) = match v {
            Value::Json(j) => {
                if let Some(a) = j.as_array() {
                    let n = a.len();
                    (LoopSrc::Arr(a.iter()), Some(n))
                } else if let Some(o) = j.as_object() {
                    let n = o.len();
                    (LoopSrc::Obj(o.iter()), Some(n))
                } else {
                    return Err(self.type_error(
                        dbg,
                        "#list\" list source",
                        "a sequence or collection",
                        &v,
                    ));
                }
            }
            Value::Seq(s, n) | Value::Coll(s, n) => (LoopSrc::Pool(s), Some(n as usize)),
            Value::Empty => (LoopSrc::Pool(0), Some(0)),
            Value::Hash(s, n) => (LoopSrc::PoolHash(s), Some(n as usize)),
            Value::Range(r) => (LoopSrc::Range(r), r.len.map(|x| x as usize)),
            other => {
                return Err(self.type_error(
                    dbg,
                    "#list\" list source",
                    "a sequence or collection",
                    &other,
                ))
            }
        };
        let st = LoopState {
            src,
            index: 0,
            len,
            started: false,
        };
        match self.loops.get_mut(l) {
            Some(slot) => *slot = st,
            None => return Err(fail(dbg, "internal error: loop slot out of range")),
        }
        Ok(len == Some(0))
    }

    /// Advances loop `l`, storing its next item into local slot `a` (and, for hash listing,
    /// the value into slot `b`, unless `b` is `u32::MAX`). `false` when the loop is exhausted.
    /// Writes the locals in place rather than returning a pair of values (they are large).
    #[inline(always)]
    fn loop_next(&mut self, l: usize, a: usize, b: u32, base: usize) -> bool {
        let st = &mut self.loops[l];
        if st.started {
            st.index += 1;
        } else {
            st.started = true;
        }
        if let Some(len) = st.len {
            if st.index >= len {
                return false;
            }
        }
        let idx = st.index;
        let (x, y) = match &mut st.src {
            LoopSrc::Arr(it) => match it.next() {
                Some(v) => {
                    // The common case (a JSON array): no second value.
                    self.locals[a] = Value::from_tape(v);
                    return true;
                }
                None => return false,
            },
            LoopSrc::Obj(it) => match it.next() {
                Some((k, v)) => (Value::Str(k), Value::from_tape(v)),
                None => return false,
            },
            LoopSrc::Pool(s) => {
                let s = *s;
                (self.seqs[s as usize + idx], Value::Missing)
            }
            LoopSrc::PoolHash(s) => {
                let s = *s;
                self.hashes[s as usize + idx]
            }
            LoopSrc::Range(r) => (
                Value::Num(Number::Int(
                    r.start.wrapping_add((idx as i64).wrapping_mul(r.step)) as i32,
                )),
                Value::Missing,
            ),
        };
        self.locals[a] = x;
        if b != u32::MAX {
            self.locals[base + b as usize] = y;
        }
        true
    }

    fn has_next(&self, l: usize) -> bool {
        let st = &self.loops[l];
        match st.len {
            Some(len) => st.index + 1 < len,
            None => true,
        }
    }

    // ------------------------------------------------------------ calls

    fn call_function(
        &mut self,
        m: u32,
        argc: usize,
        dbg: u32,
        ctx: &Ctx<'_>,
    ) -> VResult<Value<'a>> {
        let _ = ctx;
        let info = &self.p.macros[m as usize];
        if !info.function {
            return Err(fail(
                dbg,
                format!(
                    "{} is a macro, not a function; call it with <@{}/>",
                    info.name, info.name
                ),
            ));
        }
        if argc > info.params.len() {
            return Err(fail(
                dbg,
                format!(
                    "Function {:?} takes {} arguments, but {argc} were given",
                    info.name,
                    info.params.len()
                ),
            ));
        }
        if self.depth >= MAX_DEPTH {
            return Err(fail(dbg, "Too deep recursion of macro or function calls"));
        }
        let base = self.locals.len();
        self.locals
            .resize(base + info.slots as usize, Value::Missing);
        let from = self.stack.len() - argc;
        for i in 0..argc {
            self.locals[base + i] = self.stack[from + i];
        }
        self.stack.truncate(from);
        let (pc, end) = (info.pc, info.end);
        let loop_base = self.reserve_loops(info.loops as usize);
        let new = Ctx {
            base,
            loop_base,
            caller: None,
            site: None,
            call_dbg: dbg,
        };
        self.depth += 1;
        let stack_before = self.stack.len();
        // What a function body prints is discarded, as in FreeMarker.
        let out_mark = self.out.len();
        let r = self.exec(pc as usize, end, &new);
        self.out.truncate(out_mark);
        self.depth -= 1;
        self.locals.truncate(base);
        self.loops.truncate(loop_base);
        r?;
        let v = if self.stack.len() > stack_before {
            self.pop()
        } else {
            Value::Missing
        };
        self.stack.truncate(stack_before);
        Ok(v)
    }

    fn call_macro(&mut self, m: u32, site: u32, ctx: &Ctx<'_>) -> VResult<()> {
        let info = &self.p.macros[m as usize];
        let s = &self.p.sites[site as usize];
        let argc = s.arg_params.len();
        let dbg = s.dbg;
        if let Some(u) = &s.unknown_arg {
            return Err(fail(
                dbg,
                format!("Macro {:?} has no parameter with name {u:?}.", info.name),
            ));
        }
        if argc > info.params.len() {
            return Err(fail(
                dbg,
                format!(
                    "Macro {:?} only accepts {} parameters, but got {argc}.",
                    info.name,
                    info.params.len()
                ),
            ));
        }
        if self.depth >= MAX_DEPTH {
            return Err(fail(dbg, "Too deep recursion of macro or function calls"));
        }
        let base = self.locals.len();
        self.locals
            .resize(base + info.slots as usize, Value::Missing);
        let from = self.stack.len() - argc;
        for (i, &pidx) in s.arg_params.iter().enumerate() {
            self.locals[base + pidx as usize] = self.stack[from + i];
        }
        self.stack.truncate(from);
        let loop_base = self.reserve_loops(info.loops as usize);
        let new = Ctx {
            base,
            loop_base,
            caller: Some(ctx),
            site: Some(site),
            call_dbg: dbg,
        };
        self.depth += 1;
        let r = self.exec(info.pc as usize, info.end, &new);
        self.depth -= 1;
        self.locals.truncate(base);
        self.loops.truncate(loop_base);
        r
    }

    /// Runs lambda `idx` on `arg` in frame `ctx`, returning its value.
    pub(crate) fn call_lambda(
        &mut self,
        idx: u32,
        arg: Value<'a>,
        ctx_base: usize,
        ctx_loop: usize,
    ) -> VResult<Value<'a>> {
        let info = &self.p.lambdas[idx as usize];
        match self.locals.get_mut(ctx_base + info.slot as usize) {
            Some(slot) => *slot = arg,
            None => {
                return Err(fail(
                    u32::MAX,
                    "A lambda can only be used where it is written",
                ))
            }
        }
        let ctx = Ctx {
            base: ctx_base,
            loop_base: ctx_loop,
            caller: None,
            site: None,
            call_dbg: u32::MAX,
        };
        if self.depth >= MAX_DEPTH {
            return Err(fail(u32::MAX, "Too deep recursion"));
        }
        self.depth += 1;
        let before = self.stack.len();
        let r = self.exec(info.pc as usize, info.end, &ctx);
        self.depth -= 1;
        r?;
        let v = if self.stack.len() > before {
            self.pop()
        } else {
            Value::Missing
        };
        self.stack.truncate(before);
        Ok(v)
    }

    fn call_value(&mut self, argc: usize, dbg: u32, ctx: &Ctx<'_>) -> VResult<()> {
        let callee = self.stack[self.stack.len() - argc - 1];
        match callee {
            Value::Macro(m) => {
                let v = self.call_function(m, argc, dbg, ctx)?;
                self.pop(); // callee
                self.stack.push(v);
            }
            Value::Method(kind, recv) => {
                let from = self.stack.len() - argc;
                let result = match kind {
                    Method::Iterator => recv.map_or(Value::Missing, Value::Json),
                    Method::Size => Value::Num(Number::Int(
                        recv.and_then(|r| r.as_array()).map_or(0, |a| a.len()) as i32,
                    )),
                    Method::IsEmpty => {
                        Value::Bool(recv.and_then(|r| r.as_array()).is_none_or(|a| a.is_empty()))
                    }
                    Method::ToJson => {
                        if argc != 1 {
                            return Err(fail(dbg, "toJsonString takes exactly one argument"));
                        }
                        let arg = self.stack[from];
                        self.scratch.clear();
                        let mut buf = std::mem::take(&mut self.scratch);
                        let r = builtins::write_json(self, arg, &mut buf, 0);
                        self.scratch = buf;
                        r.map_err(|m| fail(dbg, m))?;
                        self.scratch_to_arena()?
                    }
                };
                self.stack.truncate(from - 1);
                self.stack.push(result);
            }
            other => {
                return Err(fail(
                    dbg,
                    format!(
                        "Expected a method or function, but this has evaluated to {} {}:\n==> {}",
                        article(other.type_name()),
                        other.type_name(),
                        self.dbg_text(dbg)
                    ),
                ))
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ the loop

    /// Takes `n` units of fuel, or fails when the budget is spent.
    #[inline(always)]
    fn charge(&mut self, n: usize) -> VResult<()> {
        match self.fuel.checked_sub(n as u64) {
            Some(left) => {
                self.fuel = left;
                Ok(())
            }
            None => Err(out_of_fuel()),
        }
    }

    /// Runs the code region `pc..end` (the main template, a macro or function body, a nested
    /// body or a lambda) until its `Ret`.
    ///
    /// Fuel is charged per region entry and per loop iteration rather than per instruction,
    /// yet it still bounds the instructions executed: entering charges the region's length
    /// (straight-line code runs each instruction at most once), and every backward jump from
    /// `j` to `t` charges `j - t + 1`, the instructions it may run again. An instruction runs
    /// at most once plus once per backward jump over it, so the total never exceeds the fuel
    /// charged.
    fn exec(&mut self, mut pc: usize, end: u32, ctx: &Ctx<'_>) -> VResult<()> {
        let p = self.p;
        let code = &p.code[..];
        self.charge((end as usize).saturating_sub(pc).max(1))?;
        loop {
            let Some(&ins) = code.get(pc) else {
                return Ok(());
            };
            pc += 1;
            match ins {
                Instr::Text(s, e) => {
                    self.out
                        .extend_from_slice(&p.text.as_bytes()[s as usize..e as usize]);
                    self.check_output()?;
                }
                Instr::Emit(dbg) => {
                    let v = self.pop();
                    self.write_interp(v, dbg, p.html_output)?;
                    self.check_output()?;
                }
                Instr::EmitJson(dbg) => {
                    let v = self.pop();
                    self.scratch.clear();
                    self.scalar_to_scratch(v, dbg)?;
                    let text = std::mem::take(&mut self.scratch);
                    match std::str::from_utf8(&text) {
                        Ok(s) => crate::template::format::escape::json_string(s, self.out),
                        Err(_) => return Err(fail(dbg, "internal error: invalid UTF-8")),
                    }
                    self.scratch = text;
                    self.scratch.clear();
                    self.check_output()?;
                }
                Instr::Const(i) => {
                    let v = match &p.consts[i as usize] {
                        Const::Str(s) => Value::Str(s.as_str()),
                        Const::Num(n) => Value::Num(*n),
                        Const::Bool(b) => Value::Bool(*b),
                    };
                    self.stack.push(v);
                }
                Instr::PushMissing => self.stack.push(Value::Missing),
                Instr::PushEmpty => self.stack.push(Value::Empty),
                Instr::Load(s) => {
                    let v = self.locals[ctx.base + s as usize];
                    self.stack.push(v);
                }
                Instr::Store(s) => {
                    let v = self.pop();
                    self.locals[ctx.base + s as usize] = v;
                }
                Instr::LoadGlobal(g) => {
                    let v = self.globals[g as usize];
                    let v = if v.is_missing() {
                        match p.globals[g as usize].as_str() {
                            name if name == p.input_name => self.input,
                            "UtilClass" => Value::Util,
                            "statics" => Value::Statics,
                            _ => Value::Missing,
                        }
                    } else {
                        v
                    };
                    self.stack.push(v);
                }
                Instr::StoreGlobal(g) => {
                    let v = self.pop();
                    self.globals[g as usize] = v;
                }
                Instr::LoadRoot(r) => self.stack.push(match r {
                    Root::Input => self.input,
                    Root::UtilClass => Value::Util,
                    Root::Statics => Value::Statics,
                }),
                Instr::MacroRef(m) => self.stack.push(Value::Macro(m)),
                Instr::Check(dbg) => {
                    if self.stack.last().is_none_or(|v| v.is_missing()) {
                        return Err(self.missing_error(dbg));
                    }
                }
                Instr::Dot(name, dbg) => {
                    let recv = self.pop();
                    let Const::Str(n) = &p.consts[name as usize] else {
                        return Err(fail(dbg, "internal error: bad name constant"));
                    };
                    let v = self.dot_fast(recv, n.as_str(), dbg)?;
                    self.stack.push(v);
                }
                Instr::LocalDot(slot, name, dbg) => {
                    let recv = self.locals[ctx.base + slot as usize];
                    if recv.is_missing() {
                        return Err(self.missing_error(dbg));
                    }
                    let Const::Str(n) = &p.consts[name as usize] else {
                        return Err(fail(dbg, "internal error: bad name constant"));
                    };
                    let v = self.dot_fast(recv, n.as_str(), dbg)?;
                    self.stack.push(v);
                }
                Instr::InputDot(k, dbg) => {
                    let v = self.input_dot(k, dbg)?;
                    self.stack.push(v);
                }
                Instr::EmitLocalDot(slot, name, rdbg, dbg) => {
                    let recv = self.locals[ctx.base + slot as usize];
                    if recv.is_missing() {
                        return Err(self.missing_error(rdbg));
                    }
                    let Const::Str(n) = &p.consts[name as usize] else {
                        return Err(fail(dbg, "internal error: bad name constant"));
                    };
                    let v = self.dot_fast(recv, n.as_str(), dbg)?;
                    self.write_interp_fast(v, dbg, p.html_output)?;
                    self.check_output()?;
                }
                Instr::EmitInputDot(k, dbg) => {
                    let v = self.input_dot(k, dbg)?;
                    self.write_interp_fast(v, dbg, p.html_output)?;
                    self.check_output()?;
                }
                Instr::Index(dbg) => {
                    let key = self.pop();
                    let recv = self.pop();
                    let v = self.index(recv, key, dbg)?;
                    self.stack.push(v);
                }
                Instr::Call(argc, dbg) => self.call_value(argc as usize, dbg, ctx)?,
                Instr::Builtin(bi, argc, dbg) => {
                    builtins::apply(self, bi, argc as usize, dbg, ctx.base, ctx.loop_base)?;
                    self.check_pools()?;
                }
                Instr::Exists => {
                    let v = self.pop();
                    self.stack.push(Value::Bool(!v.is_missing()));
                }
                Instr::DefaultJump(t) => {
                    if self.stack.last().is_some_and(|v| !v.is_missing()) {
                        pc = t as usize;
                    } else {
                        self.pop();
                    }
                }
                Instr::JumpIfSet(s, t) => {
                    if !self.locals[ctx.base + s as usize].is_missing() {
                        pc = t as usize;
                    }
                }
                Instr::RequireParam(i, m) => {
                    if self.locals[ctx.base + i as usize].is_missing() {
                        let info = &p.macros[m as usize];
                        let pname = info.params.get(i as usize).map_or("?", |s| s.as_str());
                        return Err(fail(
                            ctx.call_dbg,
                            format!(
                                "When calling {} {:?}, required parameter {pname:?} (parameter #{}) was not specified.",
                                if info.function { "function" } else { "macro" },
                                info.name,
                                i + 1
                            ),
                        ));
                    }
                }
                Instr::Not(dbg) => {
                    let v = self.pop();
                    match v {
                        Value::Bool(b) => self.stack.push(Value::Bool(!b)),
                        other => {
                            return Err(self.type_error(dbg, "!\" operand", "a boolean", &other))
                        }
                    }
                }
                Instr::Neg(dbg) => {
                    let v = self.pop();
                    match v {
                        Value::Num(n) => {
                            let r = n.neg().map_err(|e| fail(dbg, e.to_string()))?;
                            self.stack.push(Value::Num(r));
                        }
                        other => {
                            return Err(self.type_error(dbg, "-\" operand", "a number", &other))
                        }
                    }
                }
                Instr::Plus(dbg) => {
                    if !matches!(self.stack.last(), Some(Value::Num(_))) {
                        let v = self.pop();
                        return Err(self.type_error(dbg, "+\" operand", "a number", &v));
                    }
                }
                Instr::Bin(op, dbg) => {
                    let b = self.pop();
                    let a = self.pop();
                    let v = self.binary(op, a, b, dbg)?;
                    self.stack.push(v);
                    self.check_pools()?;
                }
                Instr::JumpIf(flag, t, dbg) => {
                    let v = self.pop();
                    match v {
                        Value::Bool(b) => {
                            if b == flag {
                                pc = t as usize;
                            }
                        }
                        other => {
                            return Err(self.type_error(
                                dbg,
                                "#if\" condition",
                                "a boolean",
                                &other,
                            ))
                        }
                    }
                }
                Instr::ShortJump(flag, t, dbg) => match self.stack.last() {
                    Some(Value::Bool(b)) => {
                        if *b == flag {
                            pc = t as usize;
                        } else {
                            self.pop();
                        }
                    }
                    _ => {
                        let v = self.pop();
                        return Err(self.type_error(
                            dbg,
                            "&&\" or \"||\" operand",
                            "a boolean",
                            &v,
                        ));
                    }
                },
                Instr::CheckBool(dbg) => {
                    if !matches!(self.stack.last(), Some(Value::Bool(_))) {
                        let v = self.pop();
                        return Err(self.type_error(
                            dbg,
                            "&&\" or \"||\" operand",
                            "a boolean",
                            &v,
                        ));
                    }
                }
                Instr::Jump(t) => {
                    if (t as usize) < pc {
                        self.charge(pc - t as usize)?;
                    }
                    pc = t as usize;
                }
                Instr::MakeRange(kind, dbg) => {
                    let r = self.make_range(kind, dbg)?;
                    self.stack.push(r);
                }
                Instr::MakeSeq(n) => {
                    let v = self.make_seq(n as usize);
                    self.stack.push(v);
                }
                Instr::MakeHash(n) => {
                    let n = n as usize;
                    let from = self.stack.len() - 2 * n;
                    let start = self.hashes.len() as u32;
                    for i in 0..n {
                        let k = self.stack[from + 2 * i];
                        let v = self.stack[from + 2 * i + 1];
                        if self.str_of(&k).is_none() {
                            return Err(self.type_error(u32::MAX, "{...}\" key", "a string", &k));
                        }
                        self.hashes.push((k, v));
                    }
                    self.stack.truncate(from);
                    // Duplicate keys: the later value wins but keeps the first position.
                    let h = Value::Hash(start, n as u32);
                    let h = self.dedupe_hash(h);
                    self.stack.push(h);
                }
                Instr::Concat(n, dbg) => {
                    let from = self.stack.len() - n as usize;
                    self.scratch.clear();
                    for i in 0..n as usize {
                        let v = self.stack[from + i];
                        self.scalar_to_scratch(v, dbg)?;
                    }
                    self.stack.truncate(from);
                    let v = self.scratch_to_arena()?;
                    self.stack.push(v);
                }
                Instr::CheckListing(hash_listing, dbg) => {
                    let v = self.stack.last().copied().unwrap_or(Value::Missing);
                    let is_hash = match v {
                        Value::Json(j) => j.as_object().is_some(),
                        Value::Hash(..) => true,
                        _ => false,
                    };
                    let is_seq = match v {
                        Value::Json(j) => j.as_array().is_some(),
                        Value::Seq(..) | Value::Coll(..) | Value::Range(_) => true,
                        _ => false,
                    };
                    if is_hash && !hash_listing {
                        return Err(fail(dbg, "The value you try to list is an extended_hash, thus you must specify two loop variables after the \"as\"; one for the key, and another for the value, like <#... as k, v>)."));
                    }
                    if is_seq && hash_listing {
                        return Err(fail(dbg, "The value you try to list is a sequence, thus you must specify only one loop variable after the \"as\" (there's no separate key and value)."));
                    }
                }
                Instr::LoopInit(l, t, dbg) => {
                    let v = self.pop();
                    if self.loop_init(ctx.loop_base + l as usize, v, dbg)? {
                        pc = t as usize;
                    }
                }
                Instr::LoopAgain(l, a, b, body) => {
                    let (li, ai) = (ctx.loop_base + l as usize, ctx.base + a as usize);
                    if self.loop_next(li, ai, b, ctx.base) {
                        self.charge(pc.saturating_sub(body as usize))?;
                        pc = body as usize;
                    }
                }
                Instr::SepAgain(i) => {
                    let t = &p.tails[i as usize];
                    let li = ctx.loop_base + t.lp as usize;
                    if self.has_next(li) {
                        self.out.extend_from_slice(
                            &p.text.as_bytes()[t.sep.0 as usize..t.sep.1 as usize],
                        );
                        self.check_output()?;
                    }
                    let ai = ctx.base + t.a as usize;
                    if self.loop_next(li, ai, t.b, ctx.base) {
                        self.charge(pc.saturating_sub(t.body as usize))?;
                        pc = t.body as usize;
                    }
                }
                Instr::Run(s, e) => self.run_pieces(s, e, ctx)?,
                Instr::ListRun(i) => self.list_run(&p.item_loops[i as usize], ctx)?,
                Instr::LoopNext(l, a, b, t) => {
                    let (li, ai) = (ctx.loop_base + l as usize, ctx.base + a as usize);
                    if !self.loop_next(li, ai, b, ctx.base) {
                        pc = t as usize;
                    }
                }
                Instr::JumpIfLast(l, t) => {
                    if !self.has_next(ctx.loop_base + l as usize) {
                        pc = t as usize;
                    }
                }
                Instr::LoopVar(l, prop) => {
                    let li = ctx.loop_base + l as usize;
                    let idx = self.loops[li].index;
                    let v = match prop {
                        LoopProp::Index => Value::Num(Number::Int(idx as i32)),
                        LoopProp::Counter => Value::Num(Number::Int(idx as i32 + 1)),
                        LoopProp::HasNext => Value::Bool(self.has_next(li)),
                        LoopProp::IsFirst => Value::Bool(idx == 0),
                        LoopProp::IsLast => Value::Bool(!self.has_next(li)),
                        LoopProp::Parity => Value::Str(if idx % 2 == 0 { "odd" } else { "even" }),
                        LoopProp::ParityCap => {
                            Value::Str(if idx % 2 == 0 { "Odd" } else { "Even" })
                        }
                        LoopProp::IsEven => Value::Bool(idx % 2 == 1),
                        LoopProp::IsOdd => Value::Bool(idx % 2 == 0),
                    };
                    self.stack.push(v);
                }
                Instr::LoopCycle(l, argc) => {
                    let li = ctx.loop_base + l as usize;
                    let idx = self.loops[li].index;
                    let argc = argc as usize;
                    if argc == 0 {
                        return Err(fail(u32::MAX, "?item_cycle needs at least one argument"));
                    }
                    let from = self.stack.len() - argc;
                    let v = self.stack[from + idx % argc];
                    self.stack.truncate(from);
                    self.stack.push(v);
                }
                Instr::CallMacro(m, site) => self.call_macro(m, site, ctx)?,
                Instr::Nested(argc, dbg) => {
                    let argc = argc as usize;
                    let (Some(caller), Some(site)) = (ctx.caller, ctx.site) else {
                        self.stack.truncate(self.stack.len() - argc);
                        continue;
                    };
                    let body_end = p.sites[site as usize].body_end;
                    let body = p.sites[site as usize].body.as_ref();
                    let Some((bpc, slots)) = body else {
                        self.stack.truncate(self.stack.len() - argc);
                        continue;
                    };
                    let from = self.stack.len() - argc;
                    for (i, s) in slots.iter().enumerate() {
                        let v = if i < argc {
                            self.stack[from + i]
                        } else {
                            Value::Missing
                        };
                        self.locals[caller.base + *s as usize] = v;
                    }
                    self.stack.truncate(from);
                    if self.depth >= MAX_DEPTH {
                        return Err(fail(dbg, "Too deep recursion"));
                    }
                    self.depth += 1;
                    let r = self.exec(*bpc as usize, body_end, caller);
                    self.depth -= 1;
                    r?;
                }
                Instr::Ret | Instr::ReturnValue => return Ok(()),
                Instr::CaptureBegin | Instr::CompressBegin => self.marks.push(self.out.len()),
                Instr::CaptureEnd => {
                    let m = self.marks.pop().unwrap_or(self.out.len());
                    let a = self.arena.len() as u32;
                    match std::str::from_utf8(&self.out[m..]) {
                        Ok(s) => self.arena.push_str(s),
                        Err(_) => {
                            return Err(fail(
                                u32::MAX,
                                "internal error: captured output is not UTF-8",
                            ))
                        }
                    }
                    self.out.truncate(m);
                    self.stack.push(Value::Arena(a, self.arena.len() as u32));
                }
                Instr::CaptureAbort => {
                    let m = self.marks.pop().unwrap_or(self.out.len());
                    self.out.truncate(m);
                }
                Instr::CompressEnd => {
                    let m = self.marks.pop().unwrap_or(self.out.len());
                    self.scratch.clear();
                    compress(&self.out[m..], &mut self.scratch);
                    self.out.truncate(m);
                    self.out.extend_from_slice(&self.scratch);
                    self.scratch.clear();
                }
                Instr::Setting(name, dbg) => {
                    let v = self.pop();
                    let Const::Str(n) = &p.consts[name as usize] else {
                        return Err(fail(dbg, "internal error: bad setting constant"));
                    };
                    let val: Cow<'a, str> = match v {
                        Value::Str(s) => Cow::Borrowed(s),
                        Value::Arena(a, b) => {
                            Cow::Owned(self.arena[a as usize..b as usize].to_string())
                        }
                        Value::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
                        other => {
                            return Err(self.type_error(
                                dbg,
                                "#setting\" value",
                                "a string",
                                &other,
                            ))
                        }
                    };
                    self.apply_setting(n.as_str(), val, dbg)?;
                }
                Instr::Lambda(i) => self.stack.push(Value::Lambda(i)),
                Instr::Fail(msg, dbg) => {
                    let Const::Str(m) = &p.consts[msg as usize] else {
                        return Err(fail(dbg, "template error"));
                    };
                    return Err(fail(dbg, m.clone()));
                }
                Instr::Pop => {
                    self.pop();
                }
                Instr::CaseEq(slot, dbg) => {
                    let c = self.pop();
                    let v = self.locals[ctx.base + slot as usize];
                    let eq = self.values_equal(&v, &c, dbg)?;
                    self.stack.push(Value::Bool(eq));
                }
                Instr::Stop => {
                    return Err(VmError {
                        message: String::new(),
                        dbg: u32::MAX,
                        stop: true,
                    })
                }
            }
        }
    }

    /// Runs pieces `s..e` of [`Program::pieces`] (an [`Instr::Run`]), then checks the output
    /// cap once (a run's output is bounded by its pieces).
    #[inline(never)]
    fn run_pieces(&mut self, s: u32, e: u32, ctx: &Ctx<'_>) -> VResult<()> {
        self.pieces(s, e, ctx)?;
        self.check_output()
    }

    /// Static text and `${x.name}` interpolations, exactly as their `Text` / `EmitLocalDot` /
    /// `EmitInputDot` instructions would write them.
    #[inline(always)]
    fn pieces(&mut self, s: u32, e: u32, ctx: &Ctx<'_>) -> VResult<()> {
        let p = self.p;
        let text = p.text.as_bytes();
        for piece in &p.pieces[s as usize..e as usize] {
            match *piece {
                Piece::Text(a, b) => self.out.extend_from_slice(&text[a as usize..b as usize]),
                Piece::LocalDot {
                    slot,
                    name_start,
                    name_end,
                    rdbg,
                    dbg,
                } => {
                    let recv = self.locals[ctx.base + slot as usize];
                    let obj = match recv {
                        Value::Json(j) => j.as_object(),
                        Value::Missing => return Err(self.missing_error(rdbg)),
                        _ => None,
                    };
                    let v = match obj {
                        Some(o) => json_get(&o, &text[name_start as usize..name_end as usize]),
                        None => {
                            let name = &p.text[name_start as usize..name_end as usize];
                            self.dot(recv, name, dbg)?
                        }
                    };
                    self.write_interp_fast(v, dbg, p.html_output)?;
                }
                Piece::InputDot(k, dbg) => {
                    let v = self.input_dot(k, dbg)?;
                    self.write_interp_fast(v, dbg, p.html_output)?;
                }
                Piece::InputC {
                    k,
                    dot_dbg,
                    check_dbg,
                    bi_dbg,
                    emit_dbg,
                } => self.input_c(k, [dot_dbg, check_dbg, bi_dbg, emit_dbg], ctx)?,
            }
        }
        Ok(())
    }

    /// [`Vm::pieces`] for an item loop whose `LocalDot` pieces all read the item `obj`, a JSON
    /// object (so the receiver can neither be missing nor need the slow `dot`).
    #[inline(always)]
    fn item_pieces(
        &mut self,
        obj: &simd_json::tape::Object<'a, 'a>,
        s: u32,
        e: u32,
        ctx: &Ctx<'_>,
    ) -> VResult<()> {
        let p = self.p;
        let text = p.text.as_bytes();
        for piece in &p.pieces[s as usize..e as usize] {
            match *piece {
                Piece::Text(a, b) => self.out.extend_from_slice(&text[a as usize..b as usize]),
                Piece::LocalDot {
                    name_start,
                    name_end,
                    dbg,
                    ..
                } => {
                    let v = json_get(obj, &text[name_start as usize..name_end as usize]);
                    self.write_interp_fast(v, dbg, p.html_output)?;
                }
                Piece::InputDot(k, dbg) => {
                    let v = self.input_dot(k, dbg)?;
                    self.write_interp_fast(v, dbg, p.html_output)?;
                }
                Piece::InputC {
                    k,
                    dot_dbg,
                    check_dbg,
                    bi_dbg,
                    emit_dbg,
                } => self.input_c(k, [dot_dbg, check_dbg, bi_dbg, emit_dbg], ctx)?,
            }
        }
        Ok(())
    }

    /// `${input.name?c}` as its `InputDot; Check; Builtin(C); Emit` instructions (debug
    /// entries in that order): booleans and numbers are written directly, anything else goes
    /// through the built-in.
    #[inline(always)]
    fn input_c(&mut self, k: u32, dbg: [u32; 4], ctx: &Ctx<'_>) -> VResult<()> {
        let v = self.input_dot(k, dbg[0])?;
        if !self.p.html_output {
            match v {
                Value::Bool(b) => {
                    self.out
                        .extend_from_slice(if b { b"true" } else { b"false" });
                    return Ok(());
                }
                Value::Num(n) => {
                    n.write_c(self.out);
                    return Ok(());
                }
                _ => {}
            }
        }
        self.input_c_slow(v, dbg, ctx)
    }

    #[inline(never)]
    fn input_c_slow(&mut self, v: Value<'a>, dbg: [u32; 4], ctx: &Ctx<'_>) -> VResult<()> {
        if v.is_missing() {
            return Err(self.missing_error(dbg[1]));
        }
        self.stack.push(v);
        builtins::apply(self, builtins::Bi::C, 0, dbg[2], ctx.base, ctx.loop_base)?;
        self.check_pools()?;
        let r = self.pop();
        self.write_interp(r, dbg[3], self.p.html_output)
    }

    /// Runs the rest of a `#list` fused into an [`ItemLoop`], with the same output and errors
    /// as its `LoopNext; Run; SepAgain` instructions. Each item charges the fuel of its body
    /// (a JSON array: all items up front, its length being known).
    #[inline(never)]
    fn list_run(&mut self, it: &ItemLoop, ctx: &Ctx<'_>) -> VResult<()> {
        let text = self.p.text.as_bytes();
        let li = ctx.loop_base + it.lp as usize;
        let ai = ctx.base + it.a as usize;
        let cost = (it.middle.1 - it.middle.0) as usize + 2;
        if ai >= self.locals.len() || li >= self.loops.len() {
            return Err(fail(u32::MAX, "internal error: loop slot out of range"));
        }
        self.out
            .extend_from_slice(&text[it.head.0 as usize..it.head.1 as usize]);
        // The common case, a JSON array listed from its start: iterate the tape directly.
        let st = &mut self.loops[li];
        if let (LoopSrc::Arr(_), false, Some(len), u32::MAX) = (&st.src, st.started, st.len, it.b) {
            let done = LoopState {
                src: LoopSrc::Pool(0),
                index: len.saturating_sub(1),
                len: Some(len),
                started: true,
            };
            let LoopSrc::Arr(items) = std::mem::replace(st, done).src else {
                return Ok(());
            };
            // The whole loop's fuel up front (the array's length is known).
            self.charge(cost.saturating_mul(len))?;
            let p = self.p;
            let (join, tail) = (
                &text[it.join.0 as usize..it.join.1 as usize],
                &text[it.tail.0 as usize..it.tail.1 as usize],
            );
            let mut left = len;
            // The cohort shape: the body is one `${item.name}` between texts.
            if let (
                true,
                [Piece::LocalDot {
                    name_start,
                    name_end,
                    dbg,
                    ..
                }],
            ) = (
                it.direct,
                &p.pieces[it.middle.0 as usize..it.middle.1 as usize],
            ) {
                let name = &text[*name_start as usize..*name_end as usize];
                for v in items.take(len) {
                    left -= 1;
                    match v.as_object() {
                        Some(o) => {
                            let field = json_get(&o, name);
                            self.write_interp_fast(field, *dbg, p.html_output)?;
                        }
                        None => {
                            self.locals[ai] = Value::from_tape(v);
                            self.pieces(it.middle.0, it.middle.1, ctx)?;
                        }
                    }
                    self.out
                        .extend_from_slice(if left > 0 { join } else { tail });
                    self.check_output()?;
                }
                return Ok(());
            }
            for v in items.take(len) {
                left -= 1;
                match v.as_object() {
                    Some(o) if it.direct => self.item_pieces(&o, it.middle.0, it.middle.1, ctx)?,
                    _ => {
                        self.locals[ai] = Value::from_tape(v);
                        self.pieces(it.middle.0, it.middle.1, ctx)?;
                    }
                }
                self.out
                    .extend_from_slice(if left > 0 { join } else { tail });
                self.check_output()?;
            }
            return Ok(());
        }
        while self.loop_next(li, ai, it.b, ctx.base) {
            self.charge(cost)?;
            self.pieces(it.middle.0, it.middle.1, ctx)?;
            let (s, e) = if self.has_next(li) { it.join } else { it.tail };
            self.out.extend_from_slice(&text[s as usize..e as usize]);
            self.check_output()?;
        }
        Ok(())
    }

    fn dedupe_hash(&mut self, h: Value<'a>) -> Value<'a> {
        let Value::Hash(start, n) = h else { return h };
        let start = start as usize;
        let end = start + n as usize;
        let mut w = start;
        for i in start..end {
            let (k, v) = self.hashes[i];
            let mut found = None;
            for j in start..w {
                if self.str_of(&self.hashes[j].0) == self.str_of(&k) {
                    found = Some(j);
                    break;
                }
            }
            match found {
                Some(j) => self.hashes[j].1 = v,
                None => {
                    self.hashes[w] = (k, v);
                    w += 1;
                }
            }
        }
        self.hashes.truncate(w);
        Value::Hash(start as u32, (w - start) as u32)
    }
}

#[cold]
#[inline(never)]
fn out_of_fuel() -> VmError {
    fail(
        u32::MAX,
        "The template ran out of fuel (instruction budget exceeded)",
    )
}

impl VmError {
    fn with_prefix(self) -> VmError {
        self
    }
}

/// `obj[name]` on the tape: the first entry whose key equals `name` (as simd-json's
/// `Object::get`), comparing lengths first and short keys without a `memcmp` call.
#[inline(always)]
fn json_get<'a>(obj: &simd_json::tape::Object<'a, 'a>, name: &[u8]) -> Value<'a> {
    for (k, v) in obj.iter() {
        if key_eq(k.as_bytes(), name) {
            return Value::from_tape(v);
        }
    }
    Value::Missing
}

/// Byte equality tuned for object keys (mostly under 16 bytes): lengths first, then at most
/// two 8-byte (or 4-byte) word comparisons, with no `memcmp` call and no panic path.
#[inline(always)]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    fn word8(s: &[u8]) -> u64 {
        <[u8; 8]>::try_from(s).map_or(0, u64::from_le_bytes)
    }
    fn word4(s: &[u8]) -> u32 {
        <[u8; 4]>::try_from(s).map_or(0, u32::from_le_bytes)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        return word8(&a[..8]) == word8(&b[..8]) && word8(&a[n - 8..]) == word8(&b[n - 8..]);
    }
    if (4..8).contains(&n) {
        return word4(&a[..4]) == word4(&b[..4]) && word4(&a[n - 4..]) == word4(&b[n - 4..]);
    }
    if n < 4 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    a == b
}

pub(crate) fn article(t: &str) -> &'static str {
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Java's `Character.isWhitespace`.
fn java_ws(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | '\u{1c}'..='\u{1f}'
    ) || (c.is_whitespace() && !matches!(c, '\u{a0}' | '\u{2007}' | '\u{202f}' | '\u{85}'))
}

/// `#compress`, as FreeMarker's `StandardCompress` writer: leading and trailing white-space
/// (Java's definition) is dropped, and each inner run becomes the first line break it contains
/// (`\r\n`, `\r` or `\n`, kept as written) or else one space.
fn compress(input: &[u8], out: &mut BytesMut) {
    #[derive(PartialEq)]
    enum St {
        AtBeginning,
        Init,
        SawCr,
        Cr,
        CrLf,
        Lf,
    }
    let text = String::from_utf8_lossy(input);
    let mut state = St::AtBeginning;
    let mut in_ws = true;
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if java_ws(c) {
            in_ws = true;
            match state {
                St::Init if c == '\r' => state = St::SawCr,
                St::Init if c == '\n' => state = St::Lf,
                St::SawCr => state = if c == '\n' { St::CrLf } else { St::Cr },
                _ => {}
            }
            continue;
        }
        if in_ws {
            in_ws = false;
            match state {
                St::SawCr | St::Cr => out.extend_from_slice(b"\r"),
                St::CrLf => out.extend_from_slice(b"\r\n"),
                St::Lf => out.extend_from_slice(b"\n"),
                St::AtBeginning => {}
                St::Init => out.extend_from_slice(b" "),
            }
            state = St::Init;
        }
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

#[cfg(test)]
mod key_tests {
    use super::key_eq;

    #[test]
    fn key_eq_agrees_with_slice_equality_at_every_length() {
        let base: Vec<u8> = (b'a'..=b'z').collect();
        for n in 0..=base.len() {
            let a = &base[..n];
            assert!(key_eq(a, a), "{n}");
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 0x20;
                assert!(!key_eq(a, &b), "{n} differing at {i}");
            }
            if n > 0 {
                assert!(!key_eq(a, &base[..n - 1]), "{n} vs shorter");
            }
        }
    }
}
