//! Code generation: element tree → flat bytecode. Variables are resolved to slots here (loop
//! variables, macro parameters and `#local`s to frame slots, `#assign`ed names to global slots),
//! so the VM never looks a name up in a map.

use std::collections::HashMap;

use super::ast::*;
use super::instr::*;
use crate::template::vm::builtins::Bi;

/// A code generation error: message and position.
#[derive(Debug, Clone)]
pub struct GenError {
    /// What is wrong.
    pub message: String,
    /// Where.
    pub pos: Pos,
}

type GResult<T> = Result<T, GenError>;

#[derive(Clone)]
enum Binding {
    /// A plain local slot (parameter, `#local`, nested-content variable, lambda parameter).
    Slot(u32),
    /// A loop variable: its value slot and its loop.
    Loop { slot: u32, lp: u32 },
}

#[derive(Default)]
struct Frame {
    slots: u32,
    loops: u32,
    scopes: Vec<Vec<(String, Binding)>>,
    /// Parameters and `#local` names of a macro/function.
    locals: HashMap<String, u32>,
    is_function: bool,
    in_macro: bool,
}

impl Frame {
    fn slot(&mut self) -> u32 {
        self.slots += 1;
        self.slots - 1
    }
}

enum BreakKind {
    Loop,
    Switch,
}

struct Breakable {
    kind: BreakKind,
    breaks: Vec<usize>,
    continues: Vec<usize>,
    /// How many capture/compress regions were open when the loop or switch began.
    regions: usize,
}

/// An output region a jump may leave early.
#[derive(Clone, Copy)]
enum Region {
    Capture,
    Compress,
}

struct Gen<'s> {
    src: &'s str,
    p: Program,
    frame: Frame,
    globals: HashMap<String, u32>,
    macros: HashMap<String, u32>,
    breakables: Vec<Breakable>,
    /// Innermost `#list` loop (for `#items` and `#sep`).
    list_loops: Vec<u32>,
    /// Open `<#assign x>...` captures and `#compress` blocks of the current frame.
    regions: Vec<Region>,
    str_consts: HashMap<String, u32>,
    /// Parameter names of each macro (known before any body is compiled).
    macro_params: Vec<Vec<String>>,
    /// json mode: escape interpolations that sit inside a JSON string literal.
    json_mode: bool,
    /// json mode: whether the static text so far (in document order) left a string open.
    json_in_string: bool,
}

/// Compiles a parsed template.
pub fn generate(
    root: &Node,
    src: &str,
    html_output: bool,
    json_mode: bool,
    input_name: &str,
) -> GResult<Program> {
    let mut g = Gen::new(src);
    g.p.input_name = input_name.to_string();
    g.p.html_output = html_output;
    g.json_mode = json_mode;
    g.collect(root);
    g.body(&root.children)?;
    g.emit(Instr::Ret);
    g.p.main_end = g.here();
    g.p.main_slots = g.frame.slots;
    g.p.main_loops = g.frame.loops;
    g.compile_macros(root)?;
    g.p.index_input_keys();
    Ok(g.p)
}

/// Compiles a standalone expression: the program leaves the value on the stack and returns.
pub fn generate_expr(e: &Expr, src: &str) -> GResult<Program> {
    let mut g = Gen::new(src);
    g.value(e)?;
    g.emit(Instr::Ret);
    g.p.main_end = g.here();
    g.p.main_slots = g.frame.slots;
    g.p.main_loops = g.frame.loops;
    g.p.index_input_keys();
    Ok(g.p)
}

fn loop_prop(name: &str) -> Option<LoopProp> {
    Some(match name {
        "index" => LoopProp::Index,
        "counter" => LoopProp::Counter,
        "has_next" => LoopProp::HasNext,
        "is_first" => LoopProp::IsFirst,
        "is_last" => LoopProp::IsLast,
        "item_parity" => LoopProp::Parity,
        "item_parity_cap" => LoopProp::ParityCap,
        "is_even_item" => LoopProp::IsEven,
        "is_odd_item" => LoopProp::IsOdd,
        _ => return None,
    })
}

impl<'s> Gen<'s> {
    fn new(src: &'s str) -> Gen<'s> {
        Gen {
            src,
            p: Program {
                input_name: "input".into(),
                ..Program::default()
            },
            frame: Frame::default(),
            globals: HashMap::new(),
            macros: HashMap::new(),
            breakables: Vec::new(),
            list_loops: Vec::new(),
            regions: Vec::new(),
            str_consts: HashMap::new(),
            macro_params: Vec::new(),
            json_mode: false,
            json_in_string: false,
        }
    }

    fn err<T>(&self, pos: Pos, message: impl Into<String>) -> GResult<T> {
        Err(GenError {
            message: message.into(),
            pos,
        })
    }

    fn emit(&mut self, i: Instr) -> usize {
        self.p.code.push(i);
        self.p.code.len() - 1
    }

    fn here(&self) -> u32 {
        self.p.code.len() as u32
    }

    fn patch(&mut self, at: usize, target: u32) {
        use Instr::*;
        let i = &mut self.p.code[at];
        *i = match *i {
            Jump(_) => Jump(target),
            JumpIf(f, _, d) => JumpIf(f, target, d),
            ShortJump(f, _, d) => ShortJump(f, target, d),
            DefaultJump(_) => DefaultJump(target),
            JumpIfSet(s, _) => JumpIfSet(s, target),
            LoopInit(l, _, d) => LoopInit(l, target, d),
            LoopNext(l, a, b, _) => LoopNext(l, a, b, target),
            JumpIfLast(l, _) => JumpIfLast(l, target),
            other => other,
        };
    }

    fn str_const(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.str_consts.get(s) {
            return i;
        }
        self.p.consts.push(Const::Str(s.to_string()));
        let i = self.p.consts.len() as u32 - 1;
        self.str_consts.insert(s.to_string(), i);
        i
    }

    fn dbg(&mut self, e: &Expr) -> u32 {
        let start = e.pos.offset as usize;
        let end = (e.end as usize).min(self.src.len());
        let text = self
            .src
            .get(start..end)
            .unwrap_or("")
            .trim_end()
            .to_string();
        self.p.dbg.push(Dbg {
            line: e.pos.line,
            col: e.pos.col,
            text,
        });
        self.p.dbg.len() as u32 - 1
    }

    fn dbg_pos(&mut self, pos: Pos, text: &str) -> u32 {
        self.p.dbg.push(Dbg {
            line: pos.line,
            col: pos.col,
            text: text.to_string(),
        });
        self.p.dbg.len() as u32 - 1
    }

    // ------------------------------------------------------------ pre-pass

    fn collect(&mut self, n: &Node) {
        match &n.kind {
            NodeKind::Assign(Scope::Global, items) => {
                for a in items {
                    self.global(&a.name);
                }
            }
            NodeKind::Capture(Scope::Global, name) => {
                self.global(name);
            }
            NodeKind::Macro { name, params, .. } if !self.macros.contains_key(name) => {
                self.macro_params
                    .push(params.iter().map(|p| p.name.clone()).collect());
                let idx = self.p.macros.len() as u32;
                self.macros.insert(name.clone(), idx);
                self.p.macros.push(MacroInfo {
                    name: name.clone(),
                    pc: 0,
                    slots: 0,
                    loops: 0,
                    params: Vec::new(),
                    function: false,
                    end: 0,
                });
            }
            _ => {}
        }
        for c in &n.children {
            self.collect(c);
        }
    }

    fn global(&mut self, name: &str) -> u32 {
        if let Some(&g) = self.globals.get(name) {
            return g;
        }
        let g = self.p.globals.len() as u32;
        self.p.globals.push(name.to_string());
        self.globals.insert(name.to_string(), g);
        g
    }

    fn collect_locals(n: &Node, out: &mut Vec<String>) {
        match &n.kind {
            NodeKind::Assign(Scope::Local, items) => {
                for a in items {
                    out.push(a.name.clone());
                }
            }
            NodeKind::Capture(Scope::Local, name) => out.push(name.clone()),
            NodeKind::Macro { .. } => return,
            _ => {}
        }
        for c in &n.children {
            Gen::collect_locals(c, out);
        }
    }

    fn compile_macros(&mut self, root: &Node) -> GResult<()> {
        let mut defs = Vec::new();
        fn find<'n>(n: &'n Node, out: &mut Vec<&'n Node>) {
            if let NodeKind::Macro { .. } = n.kind {
                out.push(n);
            }
            for c in &n.children {
                find(c, out);
            }
        }
        find(root, &mut defs);
        let mut done = std::collections::HashSet::new();
        for def in defs {
            let NodeKind::Macro {
                name,
                params,
                function,
            } = &def.kind
            else {
                continue;
            };
            if !done.insert(name.clone()) {
                continue;
            }
            let idx = self.macros[name];
            let saved = std::mem::take(&mut self.frame);
            let saved_breaks = std::mem::take(&mut self.breakables);
            let saved_lists = std::mem::take(&mut self.list_loops);
            let saved_regions = std::mem::take(&mut self.regions);
            self.frame.in_macro = true;
            self.frame.is_function = *function;
            for (i, prm) in params.iter().enumerate() {
                self.frame.locals.insert(prm.name.clone(), i as u32);
            }
            self.frame.slots = params.len() as u32;
            let mut locals = Vec::new();
            for c in &def.children {
                Gen::collect_locals(c, &mut locals);
            }
            for l in locals {
                if !self.frame.locals.contains_key(&l) {
                    let s = self.frame.slot();
                    self.frame.locals.insert(l, s);
                }
            }
            let pc = self.here();
            for (i, prm) in params.iter().enumerate() {
                match &prm.default {
                    Some(d) => {
                        let j = self.emit(Instr::JumpIfSet(i as u32, 0));
                        self.value(d)?;
                        self.emit(Instr::Store(i as u32));
                        let h = self.here();
                        self.patch(j, h);
                    }
                    None => {
                        self.emit(Instr::RequireParam(i as u32, idx));
                    }
                }
            }
            self.body(&def.children)?;
            if *function {
                // A function that ends without #return returns nothing (missing).
                self.emit(Instr::PushMissing);
                self.emit(Instr::ReturnValue);
            } else {
                self.emit(Instr::Ret);
            }
            let end = self.here();
            let info = &mut self.p.macros[idx as usize];
            info.pc = pc;
            info.end = end;
            info.slots = self.frame.slots;
            info.loops = self.frame.loops;
            info.params = params.iter().map(|p| p.name.clone()).collect();
            info.function = *function;
            self.frame = saved;
            self.breakables = saved_breaks;
            self.list_loops = saved_lists;
            self.regions = saved_regions;
        }
        Ok(())
    }

    // ------------------------------------------------------------ statements

    fn body(&mut self, nodes: &[Node]) -> GResult<()> {
        for n in nodes {
            self.node(n)?;
        }
        Ok(())
    }

    fn text(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        if self.json_mode {
            // Track JSON string literals through the static text (document order; a heuristic
            // documented in docs/templates.md).
            let mut escaped = false;
            for c in t.chars() {
                if self.json_in_string {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        self.json_in_string = false;
                    }
                } else if c == '"' {
                    self.json_in_string = true;
                }
            }
        }
        // Merge with a directly preceding text instruction when possible.
        if let Some(Instr::Text(s, e)) = self.p.code.last().copied() {
            if e as usize == self.p.text.len() && self.last_is_not_target() {
                self.p.text.push_str(t);
                let len = self.p.code.len();
                self.p.code[len - 1] = Instr::Text(s, self.p.text.len() as u32);
                return;
            }
        }
        let s = self.p.text.len() as u32;
        self.p.text.push_str(t);
        self.emit(Instr::Text(s, self.p.text.len() as u32));
    }

    fn last_is_not_target(&self) -> bool {
        // Conservative: merging is only safe when no jump targets the next instruction, which
        // we cannot know yet; texts are only adjacent after stripping, so merge never happens
        // across a label in practice. Keep it off for safety.
        false
    }

    fn node(&mut self, n: &Node) -> GResult<()> {
        match &n.kind {
            NodeKind::Text(t) => self.text(t),
            NodeKind::Interp(e) => {
                if !(self.json_mode && self.json_in_string) {
                    if let ExprKind::Dot(recv, name) = &e.kind {
                        if let Some(fused) = self.fused_dot(recv, name, false) {
                            let d = self.dbg(e);
                            match fused {
                                Instr::LocalDot(s, c, rd) => {
                                    self.emit(Instr::EmitLocalDot(s, c, rd, d));
                                }
                                Instr::InputDot(c, _) => {
                                    self.emit(Instr::EmitInputDot(c, d));
                                }
                                other => {
                                    self.emit(other);
                                    self.emit(Instr::Emit(d));
                                }
                            }
                            return Ok(());
                        }
                    }
                }
                self.expr(e, false)?;
                let d = self.dbg(e);
                if self.json_mode && self.json_in_string {
                    self.emit(Instr::EmitJson(d));
                } else {
                    self.emit(Instr::Emit(d));
                }
            }
            NodeKind::Comment | NodeKind::Trim(..) | NodeKind::Nop | NodeKind::Macro { .. } => {
                if let NodeKind::Nop = n.kind {
                    if self.src[n.begin.offset as usize..].starts_with("<#stop")
                        || self.src[n.begin.offset as usize..].starts_with("[#stop")
                    {
                        self.emit(Instr::Stop);
                    }
                }
            }
            NodeKind::Root | NodeKind::Block => self.body(&n.children)?,
            NodeKind::If => {
                let mut ends = Vec::new();
                for br in &n.children {
                    let NodeKind::IfBranch(cond) = &br.kind else {
                        continue;
                    };
                    match cond {
                        Some(c) => {
                            self.value(c)?;
                            let d = self.dbg(c);
                            let j = self.emit(Instr::JumpIf(false, 0, d));
                            self.body(&br.children)?;
                            ends.push(self.emit(Instr::Jump(0)));
                            let h = self.here();
                            self.patch(j, h);
                        }
                        None => self.body(&br.children)?,
                    }
                }
                let h = self.here();
                for e in ends {
                    self.patch(e, h);
                }
            }
            NodeKind::IfBranch(_) => self.body(&n.children)?,
            NodeKind::List { .. } => self.list(n, None)?,
            NodeKind::ListWithElse => {
                let list = &n.children[0];
                let els = n.children.get(1);
                self.list(list, els)?;
            }
            NodeKind::ListElse => self.body(&n.children)?,
            NodeKind::Items(vars) => {
                let Some(&lp) = self.list_loops.last() else {
                    return self.err(n.begin, "#items must be inside a #list without \"as\"");
                };
                self.loop_body(lp, vars, &n.children)?;
            }
            NodeKind::Sep => {
                let Some(&lp) = self.list_loops.last() else {
                    return self.err(n.begin, "#sep must be inside a #list");
                };
                let j = self.emit(Instr::JumpIfLast(lp, 0));
                self.body(&n.children)?;
                let h = self.here();
                self.patch(j, h);
            }
            NodeKind::Break => {
                let Some(level) = self.breakables.last().map(|b| b.regions) else {
                    return self.err(n.begin, "#break must be inside #list or #switch");
                };
                self.unwind_regions(level);
                let j = self.emit(Instr::Jump(0));
                if let Some(b) = self.breakables.last_mut() {
                    b.breaks.push(j);
                }
            }
            NodeKind::Continue => {
                let pos = self
                    .breakables
                    .iter()
                    .rposition(|b| matches!(b.kind, BreakKind::Loop));
                let Some(i) = pos else {
                    return self.err(n.begin, "#continue must be inside #list");
                };
                self.unwind_regions(self.breakables[i].regions);
                let j = self.emit(Instr::Jump(0));
                self.breakables[i].continues.push(j);
            }
            NodeKind::Assign(scope, items) => {
                for a in items {
                    self.assign(*scope, a)?;
                }
            }
            NodeKind::Capture(scope, name) => {
                self.emit(Instr::CaptureBegin);
                self.regions.push(Region::Capture);
                self.body(&n.children)?;
                self.regions.pop();
                self.emit(Instr::CaptureEnd);
                self.store(*scope, name);
            }
            NodeKind::Call {
                callee,
                positional,
                named,
                loop_vars,
                has_body: _,
            } => self.call_macro(n, callee, positional, named, loop_vars)?,
            NodeKind::Nested(args) => {
                for a in args {
                    self.expr(a, false)?;
                }
                let d = self.dbg_pos(n.begin, "#nested");
                self.emit(Instr::Nested(args.len() as u8, d));
            }
            NodeKind::Return(v) => {
                self.unwind_regions(0);
                if self.frame.is_function {
                    match v {
                        Some(e) => self.value(e)?,
                        None => {
                            self.emit(Instr::PushMissing);
                        }
                    }
                    self.emit(Instr::ReturnValue);
                } else {
                    self.emit(Instr::Ret);
                }
            }
            NodeKind::Switch(v) => self.switch(n, v)?,
            NodeKind::Case(_) => self.body(&n.children)?,
            NodeKind::Setting(name, v) => {
                self.value(v)?;
                let c = self.str_const(name);
                let d = self.dbg(v);
                self.emit(Instr::Setting(c, d));
            }
            NodeKind::Compress => {
                self.emit(Instr::CompressBegin);
                self.regions.push(Region::Compress);
                self.body(&n.children)?;
                self.regions.pop();
                self.emit(Instr::CompressEnd);
            }
            NodeKind::Include => {
                let c = self.str_const(
                    "Template inclusion or import failed: there is no template loader in this profile",
                );
                let d = self.dbg_pos(n.begin, "#include");
                self.emit(Instr::Fail(c, d));
            }
        }
        Ok(())
    }

    /// Closes the capture/compress regions opened after `level` before a jump out of them: a
    /// capture's text is dropped (the assignment never happens), a compress block is compressed.
    fn unwind_regions(&mut self, level: usize) {
        for i in (level..self.regions.len()).rev() {
            match self.regions[i] {
                Region::Capture => self.emit(Instr::CaptureAbort),
                Region::Compress => self.emit(Instr::CompressEnd),
            };
        }
    }

    fn store(&mut self, scope: Scope, name: &str) {
        if scope == Scope::Local && self.frame.in_macro {
            if let Some(&s) = self.frame.locals.get(name) {
                self.emit(Instr::Store(s));
                return;
            }
        }
        let g = self.global(name);
        self.emit(Instr::StoreGlobal(g));
    }

    fn assign(&mut self, scope: Scope, a: &Assignment) -> GResult<()> {
        let var = Expr {
            kind: ExprKind::Var(a.name.clone()),
            pos: a.pos,
            end: a.pos.offset + a.name.len() as u32,
        };
        match a.op {
            AssignOp::Set => {
                let v = a.value.as_ref().expect("parser gives = a value");
                self.value(v)?;
            }
            AssignOp::Op(op) => {
                self.value(&var)?;
                let v = a.value.as_ref().expect("parser gives op= a value");
                self.value(v)?;
                let d = self.dbg(v);
                self.emit(Instr::Bin(op, d));
            }
            AssignOp::Inc | AssignOp::Dec => {
                self.value(&var)?;
                // `++`/`--` need a number (FreeMarker fails on a string instead of concatenating).
                let d = self.dbg(&var);
                self.emit(Instr::Plus(d));
                let one = self.p.consts.len() as u32;
                self.p
                    .consts
                    .push(Const::Num(crate::template::format::Number::Int(1)));
                self.emit(Instr::Const(one));
                let d = self.dbg(&var);
                let op = if a.op == AssignOp::Inc {
                    BinOp::Add
                } else {
                    BinOp::Sub
                };
                self.emit(Instr::Bin(op, d));
            }
        }
        self.store(scope, &a.name);
        Ok(())
    }

    fn list(&mut self, n: &Node, els: Option<&Node>) -> GResult<()> {
        let NodeKind::List { source, vars } = &n.kind else {
            return Ok(());
        };
        self.expr(source, false)?;
        let d = self.dbg(source);
        self.emit(Instr::Check(d));
        let hash_listing = if vars.is_empty() {
            items_vars(&n.children).is_some_and(|v| v > 1)
        } else {
            vars.len() > 1
        };
        self.emit(Instr::CheckListing(hash_listing, d));
        let lp = self.frame.loops;
        self.frame.loops += 1;
        let init = self.emit(Instr::LoopInit(lp, 0, d));
        if vars.is_empty() {
            // #items form: the body runs once, #items loops.
            self.list_loops.push(lp);
            self.body(&n.children)?;
            self.list_loops.pop();
        } else {
            self.list_loops.push(lp);
            self.loop_body(lp, vars, &n.children)?;
            self.list_loops.pop();
        }
        let skip_else = self.emit(Instr::Jump(0));
        let else_pc = self.here();
        self.patch(init, else_pc);
        if let Some(e) = els {
            self.body(&e.children)?;
        }
        let end = self.here();
        self.patch(skip_else, end);
        Ok(())
    }

    /// Emits the iteration of loop `lp` binding `vars`, running `children` per item.
    fn loop_body(&mut self, lp: u32, vars: &[String], children: &[Node]) -> GResult<()> {
        let a = self.frame.slot();
        let b = if vars.len() > 1 {
            self.frame.slot()
        } else {
            u32::MAX
        };
        let top = self.here();
        let next = self.emit(Instr::LoopNext(lp, a, b, 0));
        let mut scope = vec![(vars[0].clone(), Binding::Loop { slot: a, lp })];
        if vars.len() > 1 {
            scope.push((vars[1].clone(), Binding::Slot(b)));
        }
        self.frame.scopes.push(scope);
        self.breakables.push(Breakable {
            kind: BreakKind::Loop,
            breaks: Vec::new(),
            continues: Vec::new(),
            regions: self.regions.len(),
        });
        self.body(children)?;
        // `continue` jumps to `top`; the normal path loops with one instruction.
        self.emit(Instr::LoopAgain(lp, a, b, top + 1));
        let end = self.here();
        self.patch(next, end);
        let br = self.breakables.pop().expect("pushed above");
        for j in br.breaks {
            self.patch(j, end);
        }
        for j in br.continues {
            self.patch(j, top);
        }
        let _ = br.kind;
        self.frame.scopes.pop();
        Ok(())
    }

    fn switch(&mut self, n: &Node, v: &Expr) -> GResult<()> {
        // FreeMarker evaluates the value only to compare it with a #case.
        let tmp = self.frame.slot();
        if n.children
            .iter()
            .any(|c| matches!(c.kind, NodeKind::Case(Some(_))))
        {
            self.value(v)?;
            self.emit(Instr::Store(tmp));
        }
        let mut jumps = Vec::new();
        let mut default_idx = None;
        for (i, c) in n.children.iter().enumerate() {
            match &c.kind {
                NodeKind::Case(Some(e)) => {
                    self.value(e)?;
                    let d = self.dbg(e);
                    self.emit(Instr::CaseEq(tmp, d));
                    jumps.push((i, self.emit(Instr::JumpIf(true, 0, d))));
                }
                NodeKind::Case(None) => default_idx = Some(i),
                _ => {}
            }
        }
        let to_default = self.emit(Instr::Jump(0));
        self.breakables.push(Breakable {
            kind: BreakKind::Switch,
            breaks: Vec::new(),
            continues: Vec::new(),
            regions: self.regions.len(),
        });
        let mut starts = Vec::new();
        for c in &n.children {
            starts.push(self.here());
            self.body(&c.children)?;
        }
        // No case matched: FreeMarker runs the #default body alone (no fall-through into the
        // cases after it), so it gets its own copy.
        let mut skip_default = None;
        if let Some(i) = default_idx {
            skip_default = Some(self.emit(Instr::Jump(0)));
            let h = self.here();
            self.patch(to_default, h);
            self.body(&n.children[i].children)?;
        }
        let end = self.here();
        if let Some(j) = skip_default {
            self.patch(j, end);
        } else {
            self.patch(to_default, end);
        }
        for (i, j) in jumps {
            self.patch(j, starts[i]);
        }
        let br = self.breakables.pop().expect("pushed above");
        for j in br.breaks {
            self.patch(j, end);
        }
        // #continue inside a switch inside a list belongs to the list.
        if !br.continues.is_empty() {
            if let Some(outer) = self
                .breakables
                .iter_mut()
                .rev()
                .find(|b| matches!(b.kind, BreakKind::Loop))
            {
                outer.continues.extend(br.continues);
            }
        }
        Ok(())
    }

    fn call_macro(
        &mut self,
        n: &Node,
        callee: &Expr,
        positional: &[Expr],
        named: &[(String, Expr)],
        loop_vars: &[String],
    ) -> GResult<()> {
        let name = match &callee.kind {
            ExprKind::Var(v) => Some(v.clone()),
            _ => None,
        };
        let mac = name.as_ref().and_then(|nm| self.macros.get(nm).copied());
        let Some(mac) = mac else {
            // FreeMarker fails when the call runs, not when it is parsed.
            let text = self.src[callee.pos.offset as usize..callee.end as usize].to_string();
            let c = self.str_const(&format!(
                "The following has evaluated to null or missing:\n==> {text}"
            ));
            let d = self.dbg(callee);
            self.emit(Instr::Fail(c, d));
            return Ok(());
        };
        let mut arg_params = Vec::new();
        let mut unknown_arg = None;
        for (i, a) in positional.iter().enumerate() {
            self.expr(a, false)?;
            arg_params.push(i as u32);
        }
        for (pname, a) in named {
            self.expr(a, false)?;
            match self.param_index(mac, pname) {
                Some(i) => arg_params.push(i),
                None => {
                    unknown_arg.get_or_insert(pname.clone());
                    arg_params.push(u32::MAX);
                }
            }
        }
        let d = self.dbg_pos(n.begin, name.as_deref().unwrap_or("macro"));
        let site = self.p.sites.len() as u32;
        self.p.sites.push(CallSite {
            arg_params,
            unknown_arg,
            body: None,
            body_end: 0,
            dbg: d,
        });
        self.emit(Instr::CallMacro(mac, site));
        if !n.children.is_empty() || !loop_vars.is_empty() {
            let skip = self.emit(Instr::Jump(0));
            let pc = self.here();
            let mut slots = Vec::new();
            let mut scope = Vec::new();
            for v in loop_vars {
                let s = self.frame.slot();
                slots.push(s);
                scope.push((v.clone(), Binding::Slot(s)));
            }
            self.frame.scopes.push(scope);
            let saved_breaks = std::mem::take(&mut self.breakables);
            let saved_regions = std::mem::take(&mut self.regions);
            self.body(&n.children)?;
            self.breakables = saved_breaks;
            self.regions = saved_regions;
            self.frame.scopes.pop();
            self.emit(Instr::Ret);
            let h = self.here();
            self.patch(skip, h);
            self.p.sites[site as usize].body = Some((pc, slots));
            self.p.sites[site as usize].body_end = h;
        }
        Ok(())
    }

    fn param_index(&self, mac: u32, pname: &str) -> Option<u32> {
        self.macro_params
            .get(mac as usize)
            .and_then(|ps| ps.iter().position(|p| p == pname))
            .map(|i| i as u32)
    }

    // ------------------------------------------------------------ expressions

    fn lookup(&self, name: &str) -> Option<Binding> {
        for scope in self.frame.scopes.iter().rev() {
            for (n, b) in scope.iter().rev() {
                if n == name {
                    return Some(b.clone());
                }
            }
        }
        if self.frame.in_macro {
            if let Some(&s) = self.frame.locals.get(name) {
                return Some(Binding::Slot(s));
            }
        }
        None
    }

    /// Compiles `e` and fails at run time if it is missing.
    fn value(&mut self, e: &Expr) -> GResult<()> {
        self.expr(e, false)?;
        if Gen::may_be_missing(e) {
            let d = self.dbg(e);
            self.emit(Instr::Check(d));
        }
        Ok(())
    }

    fn may_be_missing(e: &Expr) -> bool {
        matches!(
            e.kind,
            ExprKind::Var(_)
                | ExprKind::Dot(..)
                | ExprKind::Index(..)
                | ExprKind::Call(..)
                | ExprKind::Parens(_)
                | ExprKind::Builtin(..)
                | ExprKind::Special(_)
        )
    }

    /// Compiles `e` leaving its value (possibly missing) on the stack. `tolerant` (inside
    /// `(...)!` or `(...)??`) lets a missing step anywhere in a path yield missing.
    fn expr(&mut self, e: &Expr, tolerant: bool) -> GResult<()> {
        match &e.kind {
            ExprKind::Str(s) => {
                let c = self.str_const(s);
                self.emit(Instr::Const(c));
            }
            ExprKind::Num(n) => {
                self.p.consts.push(Const::Num(*n));
                let c = self.p.consts.len() as u32 - 1;
                self.emit(Instr::Const(c));
            }
            ExprKind::Bool(b) => {
                self.p.consts.push(Const::Bool(*b));
                let c = self.p.consts.len() as u32 - 1;
                self.emit(Instr::Const(c));
            }
            ExprKind::Interp(parts) => {
                for part in parts {
                    match part {
                        StrPart::Lit(s) => {
                            let c = self.str_const(s);
                            self.emit(Instr::Const(c));
                        }
                        StrPart::Expr(x) => self.value(x)?,
                    }
                }
                let d = self.dbg(e);
                self.emit(Instr::Concat(parts.len() as u32, d));
            }
            ExprKind::Var(name) => self.var(name)?,
            ExprKind::Special(name) => {
                return self.err(e.pos, format!("Unsupported special variable .{name}"));
            }
            ExprKind::Dot(recv, name) => {
                if let Some(fused) = self.fused_dot(recv, name, tolerant) {
                    self.emit(fused);
                    return Ok(());
                }
                self.expr(recv, tolerant)?;
                if !tolerant && Gen::may_be_missing(recv) {
                    let d = self.dbg(recv);
                    self.emit(Instr::Check(d));
                }
                let c = self.str_const(name);
                let d = self.dbg(e);
                self.emit(Instr::Dot(c, d));
            }
            ExprKind::Index(recv, key) => {
                self.expr(recv, tolerant)?;
                if !tolerant && Gen::may_be_missing(recv) {
                    let d = self.dbg(recv);
                    self.emit(Instr::Check(d));
                }
                self.value(key)?;
                let d = self.dbg(e);
                self.emit(Instr::Index(d));
            }
            ExprKind::Call(callee, args) => {
                self.expr(callee, tolerant)?;
                let d = self.dbg(callee);
                self.emit(Instr::Check(d));
                for a in args {
                    self.expr(a, false)?;
                }
                let d = self.dbg(e);
                self.emit(Instr::Call(args.len() as u8, d));
            }
            ExprKind::Builtin(recv, name, args) => {
                self.builtin(e, recv, name, args.as_deref(), tolerant)?
            }
            ExprKind::Exists(inner) => {
                self.expr(inner, matches!(inner.kind, ExprKind::Parens(_)))?;
                self.emit(Instr::Exists);
            }
            ExprKind::Default(inner, rhs) => {
                // Inside `(...)!`, a missing step before the last one escapes to the outer
                // default (FreeMarker's InvalidReferenceException), so the whole `a.b!c` is missing.
                let mut escape = None;
                match &inner.kind {
                    ExprKind::Dot(recv, name) if tolerant && Gen::may_be_missing(recv) => {
                        self.expr(recv, true)?;
                        let j = self.emit(Instr::DefaultJump(0));
                        self.emit(Instr::PushMissing);
                        escape = Some(self.emit(Instr::Jump(0)));
                        let h = self.here();
                        self.patch(j, h);
                        let c = self.str_const(name);
                        let d = self.dbg(inner);
                        self.emit(Instr::Dot(c, d));
                    }
                    _ => self.expr(inner, matches!(inner.kind, ExprKind::Parens(_)))?,
                }
                let j = self.emit(Instr::DefaultJump(0));
                match rhs {
                    Some(r) => self.value(r)?,
                    None => {
                        self.emit(Instr::PushEmpty);
                    }
                }
                let h = self.here();
                self.patch(j, h);
                if let Some(e) = escape {
                    self.patch(e, h);
                }
            }
            // Only `(...)!` and `(...)??` make the parenthesised expression tolerant.
            ExprKind::Parens(inner) => self.expr(inner, tolerant)?,
            ExprKind::Not(x) => {
                self.value(x)?;
                let d = self.dbg(x);
                self.emit(Instr::Not(d));
            }
            ExprKind::Neg(x) => {
                self.value(x)?;
                let d = self.dbg(x);
                self.emit(Instr::Neg(d));
            }
            ExprKind::Plus(x) => {
                self.value(x)?;
                let d = self.dbg(x);
                self.emit(Instr::Plus(d));
            }
            ExprKind::Binary(op, l, r) if tolerant => {
                // Inside `(...)!`/`(...)??` a missing operand makes the result missing.
                let mut skips = Vec::new();
                self.expr(l, true)?;
                if Gen::may_be_missing(l) {
                    let j = self.emit(Instr::DefaultJump(0));
                    self.emit(Instr::PushMissing);
                    skips.push(self.emit(Instr::Jump(0)));
                    let h = self.here();
                    self.patch(j, h);
                }
                self.expr(r, true)?;
                if Gen::may_be_missing(r) {
                    let j = self.emit(Instr::DefaultJump(0));
                    self.emit(Instr::Pop);
                    self.emit(Instr::PushMissing);
                    skips.push(self.emit(Instr::Jump(0)));
                    let h = self.here();
                    self.patch(j, h);
                }
                let d = self.dbg(e);
                self.emit(Instr::Bin(*op, d));
                let h = self.here();
                for j in skips {
                    self.patch(j, h);
                }
            }
            ExprKind::Binary(op, l, r) => {
                self.value(l)?;
                self.value(r)?;
                let d = self.dbg(e);
                self.emit(Instr::Bin(*op, d));
            }
            ExprKind::And(l, r) | ExprKind::Or(l, r) => {
                let is_and = matches!(e.kind, ExprKind::And(..));
                self.value(l)?;
                let d = self.dbg(l);
                let j = self.emit(Instr::ShortJump(!is_and, 0, d));
                self.value(r)?;
                let d = self.dbg(r);
                self.emit(Instr::CheckBool(d));
                let h = self.here();
                self.patch(j, h);
            }
            ExprKind::Range(l, r, kind) => {
                self.value(l)?;
                if let Some(r) = r {
                    self.value(r)?;
                }
                let d = self.dbg(e);
                self.emit(Instr::MakeRange(*kind, d));
            }
            ExprKind::Seq(items) => {
                for i in items {
                    self.value(i)?;
                }
                self.emit(Instr::MakeSeq(items.len() as u32));
            }
            ExprKind::Hash(pairs) => {
                for (k, v) in pairs {
                    self.value(k)?;
                    self.value(v)?;
                }
                self.emit(Instr::MakeHash(pairs.len() as u32));
            }
            ExprKind::Lambda(..) => {
                return self.err(
                    e.pos,
                    "A lambda (x -> ...) can only be an argument of ?filter or ?map",
                );
            }
        }
        Ok(())
    }

    fn lambda(&mut self, e: &Expr) -> GResult<()> {
        match &e.kind {
            ExprKind::Lambda(param, body) => {
                let slot = self.frame.slot();
                let idx = self.p.lambdas.len() as u32;
                self.p.lambdas.push(LambdaInfo {
                    pc: 0,
                    slot,
                    end: 0,
                });
                self.emit(Instr::Lambda(idx));
                let skip = self.emit(Instr::Jump(0));
                let pc = self.here();
                self.frame
                    .scopes
                    .push(vec![(param.clone(), Binding::Slot(slot))]);
                self.expr(body, false)?;
                self.frame.scopes.pop();
                self.emit(Instr::Ret);
                let h = self.here();
                self.patch(skip, h);
                self.p.lambdas[idx as usize].pc = pc;
                self.p.lambdas[idx as usize].end = h;
            }
            _ => self.value(e)?,
        }
        Ok(())
    }

    /// `x.name` on a local or on `input` as one instruction (the hot path of payload templates).
    fn fused_dot(&mut self, recv: &Expr, name: &str, tolerant: bool) -> Option<Instr> {
        let ExprKind::Var(v) = &recv.kind else {
            return None;
        };
        if tolerant {
            return None;
        }
        match self.lookup(v) {
            Some(Binding::Slot(s)) | Some(Binding::Loop { slot: s, .. }) => {
                let c = self.str_const(name);
                let d = self.dbg(recv);
                Some(Instr::LocalDot(s, c, d))
            }
            None if *v == self.p.input_name
                && !self.globals.contains_key(v)
                && !self.macros.contains_key(v) =>
            {
                let c = self.str_const(name);
                let d = self.dbg(recv);
                Some(Instr::InputDot(c, d))
            }
            None => None,
        }
    }

    fn var(&mut self, name: &str) -> GResult<()> {
        if let Some(b) = self.lookup(name) {
            match b {
                Binding::Slot(s) | Binding::Loop { slot: s, .. } => {
                    self.emit(Instr::Load(s));
                }
            }
            return Ok(());
        }
        // Legacy loop variables: x_index, x_has_next.
        for (suffix, prop) in [
            ("_index", LoopProp::Index),
            ("_has_next", LoopProp::HasNext),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(Binding::Loop { lp, .. }) = self.lookup(base) {
                    self.emit(Instr::LoopVar(lp, prop));
                    return Ok(());
                }
            }
        }
        if let Some(&g) = self.globals.get(name) {
            self.emit(Instr::LoadGlobal(g));
            return Ok(());
        }
        if let Some(&m) = self.macros.get(name) {
            self.emit(Instr::MacroRef(m));
            return Ok(());
        }
        if name == self.p.input_name {
            self.emit(Instr::LoadRoot(Root::Input));
            return Ok(());
        }
        match name {
            "UtilClass" => self.emit(Instr::LoadRoot(Root::UtilClass)),
            "statics" => self.emit(Instr::LoadRoot(Root::Statics)),
            _ => self.emit(Instr::PushMissing),
        };
        Ok(())
    }

    fn builtin(
        &mut self,
        e: &Expr,
        recv: &Expr,
        name: &str,
        args: Option<&[Expr]>,
        tolerant: bool,
    ) -> GResult<()> {
        // Loop variable built-ins.
        if let ExprKind::Var(v) = &recv.kind {
            if let Some(Binding::Loop { lp, .. }) = self.lookup(v) {
                if let Some(prop) = loop_prop(name) {
                    self.emit(Instr::LoopVar(lp, prop));
                    return Ok(());
                }
                if name == "item_cycle" {
                    let args = args.unwrap_or(&[]);
                    for a in args {
                        self.value(a)?;
                    }
                    self.emit(Instr::LoopCycle(lp, args.len() as u8));
                    return Ok(());
                }
            }
        }
        if loop_prop(name).is_some() || name == "item_cycle" {
            return self.err(
                e.pos,
                format!("?{name} can only be used on a loop variable"),
            );
        }
        if name == "then" {
            let args = args.unwrap_or(&[]);
            if args.len() != 2 {
                return self.err(e.pos, "?then needs exactly 2 arguments");
            }
            self.value(recv)?;
            let d = self.dbg(recv);
            let j = self.emit(Instr::JumpIf(false, 0, d));
            self.value(&args[0])?;
            let end = self.emit(Instr::Jump(0));
            let h = self.here();
            self.patch(j, h);
            self.value(&args[1])?;
            let h = self.here();
            self.patch(end, h);
            return Ok(());
        }
        let Some(bi) = Bi::from_name(name) else {
            return self.err(e.pos, format!("Unknown built-in: \"{name}\""));
        };
        // Inside `(...)!`/`(...)??` a missing receiver makes the whole chain missing, as
        // FreeMarker's default operator catches the InvalidReferenceException.
        let mut skip = None;
        if bi.tolerates_missing() {
            // `(a.b)?has_content` and the like also cover the whole parenthesised chain.
            self.expr(recv, matches!(recv.kind, ExprKind::Parens(_)))?;
        } else if tolerant && Gen::may_be_missing(recv) {
            self.expr(recv, true)?;
            let j = self.emit(Instr::DefaultJump(0));
            self.emit(Instr::PushMissing);
            skip = Some(self.emit(Instr::Jump(0)));
            let h = self.here();
            self.patch(j, h);
        } else {
            self.value(recv)?;
        }
        let args = args.unwrap_or(&[]);
        for a in args {
            if matches!(bi, Bi::Filter | Bi::Map) {
                self.lambda(a)?;
            } else {
                // FreeMarker passes a missing argument on; the built-in decides.
                self.expr(a, false)?;
            }
        }
        let d = self.dbg(recv);
        self.emit(Instr::Builtin(bi, args.len() as u8, d));
        if let Some(j) = skip {
            let h = self.here();
            self.patch(j, h);
        }
        Ok(())
    }
}

/// The loop-variable count of the `#items` belonging to a `#list` whose body is `nodes`.
fn items_vars(nodes: &[Node]) -> Option<usize> {
    nodes.iter().find_map(|n| match &n.kind {
        NodeKind::Items(vars) => Some(vars.len()),
        NodeKind::List { .. } | NodeKind::ListWithElse => None,
        _ => items_vars(&n.children),
    })
}
