//! The bytecode: a flat instruction vector plus the tables instructions index into (text pool,
//! constants, debug positions, macros, call sites, lambdas). A compiled [`Program`] is immutable
//! and shared between threads.

use super::ast::{BinOp, RangeKind};
use crate::template::format::Number;
use crate::template::vm::builtins::Bi;

/// A data-model root variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `input`: the JSON document.
    Input,
    /// `UtilClass`: Amplitude's JSON helper.
    UtilClass,
    /// `statics`: the static-class hash (only the FtlUtils entry).
    Statics,
}

/// Loop-variable properties (`x?index`, `x_has_next`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopProp {
    /// `?index` (0-based).
    Index,
    /// `?counter` (1-based).
    Counter,
    /// `?has_next`.
    HasNext,
    /// `?is_first`.
    IsFirst,
    /// `?is_last`.
    IsLast,
    /// `?item_parity` ("odd"/"even").
    Parity,
    /// `?item_parity_cap` ("Odd"/"Even").
    ParityCap,
    /// `?is_even_item`.
    IsEven,
    /// `?is_odd_item`.
    IsOdd,
}

/// One VM instruction. `dbg` operands index [`Program::dbg`] (the expression blamed on error).
#[derive(Debug, Clone, Copy)]
pub enum Instr {
    /// Appends `text[start..end]` of the text pool to the output.
    Text(u32, u32),
    /// Pops a value and appends it as `${...}` does; fails on missing or non-scalar values.
    Emit(u32),
    /// Like `Emit`, but JSON-string-escapes the text (json mode, inside a JSON string literal).
    EmitJson(u32),
    /// Pushes constant `consts[i]`.
    Const(u32),
    /// Pushes the missing value (an unset variable).
    PushMissing,
    /// Pushes the empty string-sequence-hash that `x!` gives for a missing `x`.
    PushEmpty,
    /// Pushes local slot `i` of the current frame.
    Load(u32),
    /// Pops into local slot `i` of the current frame.
    Store(u32),
    /// Pushes global (template namespace) variable `i`.
    LoadGlobal(u32),
    /// Pops into global variable `i`.
    StoreGlobal(u32),
    /// Pushes a data-model root variable.
    LoadRoot(Root),
    /// Pushes a reference to macro/function `i`.
    MacroRef(u32),
    /// Fails with "has evaluated to null or missing" when the top of the stack is missing.
    Check(u32),
    /// Pops a hash, pushes its sub-variable `consts[name]` (missing stays missing).
    Dot(u32, u32),
    /// Fused `Load(slot); Check(dbg); Dot(name)`: pushes `local.name`.
    LocalDot(u32, u32, u32),
    /// Fused `LoadRoot(Input); Dot(name)`: pushes `input.name`, where `name` is
    /// `Program::input_keys[k]` (the VM looks these up once per render).
    InputDot(u32, u32),
    /// Fused `${local.name}`: appends the sub-variable as `Emit(dbg)` would.
    EmitLocalDot(u32, u32, u32, u32),
    /// Fused `${input.name}` (`name` as in `InputDot`): appends the sub-variable as
    /// `Emit(dbg)` would.
    EmitInputDot(u32, u32),
    /// Pops a key and a container, pushes the item (sequence index, hash key, or slice).
    Index(u32),
    /// Pops `argc` arguments and a callee (method or function), pushes the result.
    Call(u8, u32),
    /// Applies built-in `id` to `argc` arguments and the receiver below them.
    Builtin(Bi, u8, u32),
    /// Pops a value, pushes `true` when it is not missing.
    Exists,
    /// Jumps to the target keeping the top when it is not missing; else pops it.
    DefaultJump(u32),
    /// Jumps when local slot `slot` is not missing (parameter defaults).
    JumpIfSet(u32, u32),
    /// Fails when parameter `i` (local slot `i`) of macro `m` is missing.
    RequireParam(u32, u32),
    /// Pops a boolean, pushes its negation.
    Not(u32),
    /// Pops a number, pushes its negation.
    Neg(u32),
    /// Pops a number and pushes it back (checks the type).
    Plus(u32),
    /// Pops two operands, pushes the result of the operator.
    Bin(BinOp, u32),
    /// Pops a boolean; jumps to the target when it equals the flag.
    JumpIf(bool, u32, u32),
    /// `&&`/`||` short circuit: if the top boolean equals the flag, jump keeping it; else pop.
    ShortJump(bool, u32, u32),
    /// Fails unless the top of the stack is a boolean.
    CheckBool(u32),
    /// Unconditional jump.
    Jump(u32),
    /// Pops the end (unless unbounded) and the start, pushes a range.
    MakeRange(RangeKind, u32),
    /// Pops `n` values, pushes a sequence of them.
    MakeSeq(u32),
    /// Pops `n` key/value pairs, pushes a hash.
    MakeHash(u32),
    /// Pops `n` values, pushes their concatenation as a string (string-literal interpolation).
    Concat(u32, u32),
    /// Fails unless the listed value on top suits the loop variables: a hash needs `k, v`
    /// (flag true), a sequence only one.
    CheckListing(bool, u32),
    /// Pops the listed value into loop `l` of the frame; jumps to the target when it is empty.
    LoopInit(u32, u32, u32),
    /// Advances loop `l`, storing the item into local `a` (and the value into `b` for hash
    /// listing); jumps to the target when exhausted.
    LoopNext(u32, u32, u32, u32),
    /// The bottom of a loop body: advances loop `l` as `LoopNext(l, a, b, _)` and jumps back
    /// to the body at the target when there is an item; falls through when exhausted (one
    /// dispatch per item instead of `Jump` + `LoopNext`).
    LoopAgain(u32, u32, u32, u32),
    /// Jumps when loop `l` is at its last item (skips `#sep`).
    JumpIfLast(u32, u32),
    /// Pushes a property of loop `l`.
    LoopVar(u32, LoopProp),
    /// Pops `argc` values, pushes `?item_cycle` of loop `l`.
    LoopCycle(u32, u8),
    /// Calls macro `mac` with the arguments of call site `site` on the stack.
    CallMacro(u32, u32),
    /// Pops `argc` values and runs the caller's nested content with them as loop variables.
    Nested(u8, u32),
    /// Ends a macro, function, nested body or lambda body.
    Ret,
    /// Returns the top of the stack from the current function.
    ReturnValue,
    /// Starts capturing output (`<#assign x>...`).
    CaptureBegin,
    /// Ends capturing: pushes the captured text as a string.
    CaptureEnd,
    /// Leaves a capture early (`#break` inside it): drops what it captured.
    CaptureAbort,
    /// Starts `#compress`.
    CompressBegin,
    /// Ends `#compress`: collapses the white-space of what was written since the begin.
    CompressEnd,
    /// Pops a value and applies it to setting `consts[name]`.
    Setting(u32, u32),
    /// Pushes lambda `i`.
    Lambda(u32),
    /// Fails with message `consts[msg]`.
    Fail(u32, u32),
    /// Pops and discards.
    Pop,
    /// Pops the `#switch` case value, compares with local `slot`, pushes the equality.
    CaseEq(u32, u32),
    /// Stops rendering successfully (`#stop`).
    Stop,
    /// Superinstruction: runs pieces `start..end` of [`Program::pieces`] (static text and
    /// `${local.name}` / `${input.name}` interpolations) in one dispatch. Made by the optimizer
    /// from straight-line runs of `Text`/`EmitLocalDot`/`EmitInputDot`.
    Run(u32, u32),
    /// Superinstruction: the tail of a loop body with a plain-text separator,
    /// `JumpIfLast; Text(sep); LoopAgain`. Runs [`Program::tails`]`[i]`: when the loop has
    /// another item it writes the separator, advances and jumps back to the body; otherwise it
    /// advances (ending the loop) and falls through.
    SepAgain(u32),
    /// Superinstruction: a whole `#list` whose body is straight-line text and `${x.name}`
    /// interpolations (`LoopNext; Run; SepAgain` or `LoopNext; Run; LoopAgain`). Runs every
    /// remaining item of the loop of [`Program::item_loops`]`[i]` in one dispatch, then falls
    /// through.
    ListRun(u32),
}

/// One step of a [`Instr::Run`].
#[derive(Debug, Clone, Copy)]
pub enum Piece {
    /// Appends `text[start..end]` of the text pool.
    Text(u32, u32),
    /// `${local.name}` as `EmitLocalDot`: local slot, the name as a range of the text pool,
    /// the receiver's debug entry and the interpolation's.
    LocalDot {
        /// Local slot of the receiver.
        slot: u32,
        /// Start of the name in the text pool.
        name_start: u32,
        /// End of the name in the text pool.
        name_end: u32,
        /// Debug entry blamed when the receiver is missing.
        rdbg: u32,
        /// Debug entry of the interpolation.
        dbg: u32,
    },
    /// `${input.name}` as `EmitInputDot`: index into [`Program::input_keys`] and debug entry.
    InputDot(u32, u32),
    /// `${input.name?c}`, as `InputDot; Check; Builtin(C); Emit` (payload templates print
    /// booleans and numbers this way).
    InputC {
        /// Index into [`Program::input_keys`].
        k: u32,
        /// Debug entry of the `InputDot`.
        dot_dbg: u32,
        /// Debug entry of the `Check` (blamed when the value is missing).
        check_dbg: u32,
        /// Debug entry of the `?c`.
        bi_dbg: u32,
        /// Debug entry of the interpolation.
        emit_dbg: u32,
    },
}

/// The operands of one [`Instr::ListRun`]. The body's pieces are rotated so that static text
/// is written with as few copies as possible: `head` once before the first item, then per item
/// the `middle` pieces followed by `join` (the body's last text, the separator and the body's
/// first text, pre-joined in the text pool) when another item follows, else `tail`.
#[derive(Debug, Clone, Copy)]
pub struct ItemLoop {
    /// Loop slot of the frame.
    pub lp: u32,
    /// Local slot of the item (or key).
    pub a: u32,
    /// Local slot of the value in hash listing, or `u32::MAX`.
    pub b: u32,
    /// Text written once, before the first item (a range of the text pool).
    pub head: (u32, u32),
    /// The pieces run for every item (a range of [`Program::pieces`]).
    pub middle: (u32, u32),
    /// Text written after an item that has a successor.
    pub join: (u32, u32),
    /// Text written after the last item.
    pub tail: (u32, u32),
    /// Every `LocalDot` piece reads the item (slot `a`) and there is no value slot: an item
    /// that is a JSON object can be read from the tape without going through its local slot.
    pub direct: bool,
}

/// The operands of one [`Instr::SepAgain`].
#[derive(Debug, Clone, Copy)]
pub struct LoopTail {
    /// Loop slot of the frame.
    pub lp: u32,
    /// Local slot of the item (or key).
    pub a: u32,
    /// Local slot of the value in hash listing, or `u32::MAX`.
    pub b: u32,
    /// First instruction of the body (where the next iteration starts).
    pub body: u32,
    /// The separator text: a range of the text pool.
    pub sep: (u32, u32),
}

/// A constant.
#[derive(Debug, Clone)]
pub enum Const {
    /// A string.
    Str(String),
    /// A number.
    Num(Number),
    /// A boolean.
    Bool(bool),
}

/// Where an expression is, for error messages.
#[derive(Debug, Clone)]
pub struct Dbg {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// The expression's source text.
    pub text: String,
}

/// A macro or function.
#[derive(Debug, Clone)]
pub struct MacroInfo {
    /// Its name.
    pub name: String,
    /// First instruction.
    pub pc: u32,
    /// Local slots its frame needs.
    pub slots: u32,
    /// Loop slots its frame needs.
    pub loops: u32,
    /// Parameter names (their slots are 0..n).
    pub params: Vec<String>,
    /// `#function` (returns a value) rather than `#macro`.
    pub function: bool,
    /// One past its last instruction (a call charges `end - pc` fuel).
    pub end: u32,
}

/// A `<@macro ...>` call site.
#[derive(Debug, Clone)]
pub struct CallSite {
    /// Parameter index of each pushed argument, in push order.
    pub arg_params: Vec<u32>,
    /// Names of arguments that match no parameter (an error when called).
    pub unknown_arg: Option<String>,
    /// Nested content: first instruction, and the caller-frame slots of its loop variables.
    pub body: Option<(u32, Vec<u32>)>,
    /// One past the last instruction of the nested content.
    pub body_end: u32,
    /// The call's position (for errors about the call).
    pub dbg: u32,
}

/// A lambda (`x -> expr`).
#[derive(Debug, Clone)]
pub struct LambdaInfo {
    /// First instruction of the body (ends with `Ret`, result on the stack).
    pub pc: u32,
    /// Local slot of the parameter.
    pub slot: u32,
    /// One past the body's last instruction.
    pub end: u32,
}

/// A compiled template.
#[derive(Debug, Clone, Default)]
pub struct Program {
    /// The instructions; the main template starts at 0 and ends with `Ret`.
    pub code: Vec<Instr>,
    /// Static text pool.
    pub text: String,
    /// Constants.
    pub consts: Vec<Const>,
    /// Expression positions.
    pub dbg: Vec<Dbg>,
    /// Macros and functions.
    pub macros: Vec<MacroInfo>,
    /// Macro call sites.
    pub sites: Vec<CallSite>,
    /// Lambdas.
    pub lambdas: Vec<LambdaInfo>,
    /// One past the main template's last instruction (its `Ret`).
    pub main_end: u32,
    /// Local slots of the main frame.
    pub main_slots: u32,
    /// Loop slots of the main frame.
    pub main_loops: u32,
    /// Global variable names (index = slot).
    pub globals: Vec<String>,
    /// `output_format="HTML"`: escape interpolations.
    pub html_output: bool,
    /// The distinct names `InputDot`/`EmitInputDot` read from `input` (their first operand
    /// indexes this). A render resolves them all in one pass over the input object instead of
    /// one linear key search per access.
    pub input_keys: Vec<String>,
    /// The variable the rendered value is bound to: `input`, or another name given to
    /// `compile_template_bound` (batch templates bind the list of events to `inputs`).
    pub input_name: String,
    /// For each length `n` below 63 (and 63 for longer names), the bit set of the first 64
    /// `input_keys` that are `n` bytes long: one pass over the input object compares each key
    /// only with the names of its length.
    pub input_key_lens: Vec<u64>,
    /// The steps of every [`Instr::Run`].
    pub pieces: Vec<Piece>,
    /// The operands of every [`Instr::SepAgain`].
    pub tails: Vec<LoopTail>,
    /// The operands of every [`Instr::ListRun`].
    pub item_loops: Vec<ItemLoop>,
}

impl Program {
    /// Rewrites the name operand of `InputDot`/`EmitInputDot` from a constant index into an
    /// index of [`Program::input_keys`]. Run once, after code generation.
    pub fn index_input_keys(&mut self) {
        for i in 0..self.code.len() {
            let (c, dbg, emit) = match self.code[i] {
                Instr::InputDot(c, d) => (c, d, false),
                Instr::EmitInputDot(c, d) => (c, d, true),
                _ => continue,
            };
            let name = match self.consts.get(c as usize) {
                Some(Const::Str(s)) => s.as_str(),
                _ => continue,
            };
            let k = match self.input_keys.iter().position(|n| n == name) {
                Some(k) => k,
                None => {
                    self.input_keys.push(name.to_string());
                    self.input_keys.len() - 1
                }
            } as u32;
            self.code[i] = if emit {
                Instr::EmitInputDot(k, dbg)
            } else {
                Instr::InputDot(k, dbg)
            };
        }
        self.input_key_lens = vec![0; 64];
        for (k, name) in self.input_keys.iter().take(64).enumerate() {
            self.input_key_lens[name.len().min(63)] |= 1 << k;
        }
    }
}
