//! Peephole optimizer: runs once after code generation and rewrites the instruction sequences
//! that dominate payload templates into superinstructions, so the VM dispatches once where it
//! dispatched three to six times. Every rewrite keeps the program's meaning exactly (same
//! output, same errors at the same positions); a sequence is only fused when no jump lands
//! inside it.
//!
//! - `Jump` to the next instruction (the end of an `#if` without `#else`) is dropped.
//! - `LoopVar(l, HasNext) [Check] JumpIf(false, t)` (`<#if x_has_next>` / `x?has_next`) and
//!   `LoopVar(l, IsLast) [Check] JumpIf(true, t)` become `JumpIfLast(l, t)`.
//! - `JumpIfLast(l, t) [Text(sep)] LoopAgain(l, ...)` with `t` at the `LoopAgain` (a `#sep`
//!   or `<#if x?has_next>` of plain text at the end of a loop body) becomes `SepAgain`.
//! - Runs of two or more `Text` / `EmitLocalDot` / `EmitInputDot` become one `Run`, and so does
//!   `${input.name?c}` (`InputDot; Check; Builtin(C); Emit`), alone or within such a run.
//! - A loop whose body is one such run (or one of those instructions) and ends in `SepAgain`
//!   or `LoopAgain` becomes one `ListRun`: the whole `#list` in one dispatch.

use super::instr::{Instr, ItemLoop, LoopProp, LoopTail, Piece, Program};

/// Applies every rewrite to `p`.
pub fn optimize(p: &mut Program) {
    rewrite(p, drop_jumps_to_next);
    rewrite(p, fuse_has_next);
    rewrite(p, fuse_loop_tail);
    rewrite(p, fuse_runs);
    rewrite(p, fuse_item_loops);
}

/// A matcher: given the code, the number of references to each pc and a position, returns how
/// many instructions it replaces and with what (`None`: they are dropped).
type Matcher = fn(&mut Program, &[u32], usize) -> Option<(usize, Option<Instr>)>;

/// The jump target operand of an instruction, if any.
fn target(i: &Instr) -> Option<u32> {
    use Instr::*;
    match *i {
        Jump(t)
        | JumpIf(_, t, _)
        | ShortJump(_, t, _)
        | DefaultJump(t)
        | JumpIfSet(_, t)
        | LoopInit(_, t, _)
        | LoopNext(_, _, _, t)
        | JumpIfLast(_, t)
        | LoopAgain(_, _, _, t) => Some(t),
        _ => None,
    }
}

/// How many jumps and entry points refer to each pc (`0..=code.len()`).
fn references(p: &Program) -> Vec<u32> {
    let mut refs = vec![0u32; p.code.len() + 1];
    let mut add = |t: u32| {
        if let Some(r) = refs.get_mut(t as usize) {
            *r += 1;
        }
    };
    add(0);
    add(p.main_end);
    for i in &p.code {
        if let Some(t) = target(i) {
            add(t);
        }
    }
    for m in &p.macros {
        add(m.pc);
        add(m.end);
    }
    for l in &p.lambdas {
        add(l.pc);
        add(l.end);
    }
    for s in &p.sites {
        if let Some((pc, _)) = &s.body {
            add(*pc);
            add(s.body_end);
        }
    }
    for t in &p.tails {
        add(t.body);
    }
    refs
}

/// Runs `m` over the code once, left to right, then renumbers every jump target and entry
/// point.
fn rewrite(p: &mut Program, m: Matcher) {
    let refs = references(p);
    let old = p.code.clone();
    let mut code = Vec::with_capacity(old.len());
    let mut map = vec![0u32; old.len() + 1];
    let mut i = 0;
    while i < old.len() {
        let at = code.len() as u32;
        match m(p, &refs, i) {
            Some((n, fused)) if n >= 1 && i + n <= old.len() => {
                // Jumps into a dropped or fused instruction land on its replacement (or, when
                // dropped, on what follows).
                for slot in &mut map[i..i + n] {
                    *slot = at;
                }
                code.extend(fused);
                i += n;
            }
            _ => {
                map[i] = at;
                code.push(old[i]);
                i += 1;
            }
        }
    }
    map[old.len()] = code.len() as u32;
    let re = |t: u32| map.get(t as usize).copied().unwrap_or(t);
    for ins in &mut code {
        use Instr::*;
        *ins = match *ins {
            Jump(t) => Jump(re(t)),
            JumpIf(f, t, d) => JumpIf(f, re(t), d),
            ShortJump(f, t, d) => ShortJump(f, re(t), d),
            DefaultJump(t) => DefaultJump(re(t)),
            JumpIfSet(s, t) => JumpIfSet(s, re(t)),
            LoopInit(l, t, d) => LoopInit(l, re(t), d),
            LoopNext(l, a, b, t) => LoopNext(l, a, b, re(t)),
            JumpIfLast(l, t) => JumpIfLast(l, re(t)),
            LoopAgain(l, a, b, t) => LoopAgain(l, a, b, re(t)),
            other => other,
        };
    }
    p.code = code;
    p.main_end = re(p.main_end);
    for mi in &mut p.macros {
        mi.pc = re(mi.pc);
        mi.end = re(mi.end);
    }
    for l in &mut p.lambdas {
        l.pc = re(l.pc);
        l.end = re(l.end);
    }
    for s in &mut p.sites {
        if let Some((pc, _)) = &mut s.body {
            *pc = re(*pc);
            s.body_end = re(s.body_end);
        }
    }
    for t in &mut p.tails {
        t.body = re(t.body);
    }
}

/// `Jump(i + 1)` at `i` → nothing.
fn drop_jumps_to_next(p: &mut Program, _refs: &[u32], i: usize) -> Option<(usize, Option<Instr>)> {
    match p.code[i] {
        Instr::Jump(t) if t as usize == i + 1 => Some((1, None)),
        _ => None,
    }
}

/// `LoopVar(l, HasNext) [Check] JumpIf(false, t)` → `JumpIfLast(l, t)`, and the `IsLast` form.
/// The loop variable is always a boolean, so the type check of `JumpIf` cannot fail.
fn fuse_has_next(p: &mut Program, refs: &[u32], i: usize) -> Option<(usize, Option<Instr>)> {
    let code = &p.code;
    let Instr::LoopVar(l, prop) = code[i] else {
        return None;
    };
    let mut j = i + 1;
    if matches!(code.get(j), Some(Instr::Check(_))) && refs[j] == 0 {
        j += 1;
    }
    let Some(&Instr::JumpIf(flag, t, _)) = code.get(j) else {
        return None;
    };
    if refs[j] != 0 {
        return None;
    }
    match (prop, flag) {
        (LoopProp::HasNext, false) | (LoopProp::IsLast, true) => {
            Some((j + 1 - i, Some(Instr::JumpIfLast(l, t))))
        }
        _ => None,
    }
}

/// `JumpIfLast(l, t) [Text(sep)] LoopAgain(l, a, b, body)` with `t` the `LoopAgain` and no
/// other jump into the sequence → `SepAgain`.
fn fuse_loop_tail(p: &mut Program, refs: &[u32], i: usize) -> Option<(usize, Option<Instr>)> {
    let code = &p.code;
    let Instr::JumpIfLast(l, t) = code[i] else {
        return None;
    };
    let (sep, again_at) = match code.get(i + 1) {
        Some(&Instr::Text(s, e)) if refs[i + 1] == 0 => ((s, e), i + 2),
        _ => ((0, 0), i + 1),
    };
    let Some(&Instr::LoopAgain(l2, a, b, body)) = code.get(again_at) else {
        return None;
    };
    // The only reference to the `LoopAgain` must be this `JumpIfLast`.
    if l2 != l || t as usize != again_at || refs[again_at] != 1 {
        return None;
    }
    let idx = p.tails.len() as u32;
    p.tails.push(LoopTail {
        lp: l,
        a,
        b,
        body,
        sep,
    });
    Some((again_at + 1 - i, Some(Instr::SepAgain(idx))))
}

/// The piece an instruction becomes inside a `Run`, if it can be one.
fn piece(p: &mut Program, i: Instr) -> Option<Piece> {
    Some(match i {
        Instr::Text(s, e) => Piece::Text(s, e),
        Instr::EmitInputDot(k, d) => Piece::InputDot(k, d),
        Instr::EmitLocalDot(slot, c, rdbg, dbg) => {
            let name = match p.consts.get(c as usize) {
                Some(super::instr::Const::Str(s)) => s.clone(),
                _ => return None,
            };
            let name_start = p.text.len() as u32;
            p.text.push_str(&name);
            Piece::LocalDot {
                slot,
                name_start,
                name_end: p.text.len() as u32,
                rdbg,
                dbg,
            }
        }
        _ => return None,
    })
}

fn is_piece(i: &Instr) -> bool {
    matches!(
        i,
        Instr::Text(..) | Instr::EmitInputDot(..) | Instr::EmitLocalDot(..)
    )
}

/// `InputDot; Check; Builtin(C, 0); Emit` at `i` with no jump into it: `${input.name?c}`.
fn input_c(p: &Program, refs: &[u32], i: usize) -> Option<Piece> {
    use crate::template::vm::builtins::Bi;
    match p.code.get(i..i + 4)? {
        &[Instr::InputDot(k, dot_dbg), Instr::Check(check_dbg), Instr::Builtin(Bi::C, 0, bi_dbg), Instr::Emit(emit_dbg)]
            if refs[i + 1..i + 4].iter().all(|&r| r == 0) =>
        {
            Some(Piece::InputC {
                k,
                dot_dbg,
                check_dbg,
                bi_dbg,
                emit_dbg,
            })
        }
        _ => None,
    }
}

/// The instructions a run step starting at `i` spans: 1 for a piece instruction, 4 for
/// `${input.name?c}`, 0 for anything else.
fn unit(p: &Program, refs: &[u32], i: usize) -> usize {
    if is_piece(&p.code[i]) {
        1
    } else if input_c(p, refs, i).is_some() {
        4
    } else {
        0
    }
}

/// Two or more `Text` / `EmitLocalDot` / `EmitInputDot` / `${input.name?c}` in a row (or one
/// `${input.name?c}`), with no jump into the middle → `Run`.
fn fuse_runs(p: &mut Program, refs: &[u32], i: usize) -> Option<(usize, Option<Instr>)> {
    let first = unit(p, refs, i);
    if first == 0 {
        return None;
    }
    let mut units = vec![(i, first)];
    let mut n = first;
    while i + n < p.code.len() && refs[i + n] == 0 {
        let u = unit(p, refs, i + n);
        if u == 0 {
            break;
        }
        units.push((i + n, u));
        n += u;
    }
    if units.len() < 2 && first == 1 {
        return None;
    }
    let start = p.pieces.len();
    for (k, len) in units {
        let next = if len == 4 {
            input_c(p, refs, k)?
        } else {
            let ins = p.code[k];
            piece(p, ins)?
        };
        // Texts that are neighbours in the pool (white-space stripping splits them) merge.
        if p.pieces.len() > start {
            if let (Some(Piece::Text(_, e)), Piece::Text(s2, e2)) = (p.pieces.last_mut(), next) {
                if *e == s2 {
                    *e = e2;
                    continue;
                }
            }
        }
        p.pieces.push(next);
    }
    let start = start as u32;
    Some((n, Some(Instr::Run(start, p.pieces.len() as u32))))
}

/// Appends the concatenation of text-pool ranges to the pool; returns the new range.
fn join_text(p: &mut Program, parts: &[(u32, u32)]) -> (u32, u32) {
    let mut joined = String::new();
    for &(s, e) in parts {
        joined.push_str(&p.text[s as usize..e as usize]);
    }
    let start = p.text.len() as u32;
    p.text.push_str(&joined);
    (start, p.text.len() as u32)
}

/// `LoopNext(l, a, b, exit) X (SepAgain | LoopAgain)` where `X` is a `Run` or a single
/// piece, the loop-back goes to `X`, nothing else jumps into the sequence and `exit` is just
/// after it → `ListRun`.
fn fuse_item_loops(p: &mut Program, refs: &[u32], i: usize) -> Option<(usize, Option<Instr>)> {
    let Instr::LoopNext(l, a, b, exit) = p.code[i] else {
        return None;
    };
    if refs[i] != 0 || exit as usize != i + 3 || refs.get(i + 1) != Some(&1) {
        return None;
    }
    if refs.get(i + 2) != Some(&0) {
        return None;
    }
    let sep = match *p.code.get(i + 2)? {
        Instr::SepAgain(t) => {
            let t = p.tails[t as usize];
            if t.lp != l || t.a != a || t.b != b || t.body as usize != i + 1 {
                return None;
            }
            t.sep
        }
        Instr::LoopAgain(l2, a2, b2, body) => {
            if l2 != l || a2 != a || b2 != b || body as usize != i + 1 {
                return None;
            }
            (0, 0)
        }
        _ => return None,
    };
    let body: Vec<Piece> = match p.code[i + 1] {
        Instr::Run(s, e) => p.pieces[s as usize..e as usize].to_vec(),
        other if is_piece(&other) => vec![piece(p, other)?],
        _ => return None,
    };
    let (head, middle, join, tail) = match (body.first(), body.last()) {
        (Some(&Piece::Text(hs, he)), Some(&Piece::Text(ts, te))) if body.len() >= 2 => {
            let join = join_text(p, &[(ts, te), sep, (hs, he)]);
            ((hs, he), &body[1..body.len() - 1], join, (ts, te))
        }
        _ => ((0, 0), &body[..], sep, (0, 0)),
    };
    // Every `${x.name}` reads the loop variable itself: the VM can read the item straight
    // from the tape instead of through its local slot.
    let direct = b == u32::MAX
        && middle.iter().all(|pc| match pc {
            Piece::LocalDot { slot, .. } => *slot == a,
            _ => true,
        });
    let start = p.pieces.len() as u32;
    p.pieces.extend_from_slice(middle);
    let idx = p.item_loops.len() as u32;
    p.item_loops.push(ItemLoop {
        lp: l,
        a,
        b,
        head,
        middle: (start, p.pieces.len() as u32),
        join,
        tail,
        direct,
    });
    Some((3, Some(Instr::ListRun(idx))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::compiler::compile_template;

    fn ops(src: &str) -> Vec<Instr> {
        compile_template("t", src, false).expect("compiles").code
    }

    #[test]
    fn a_list_of_text_and_interpolations_becomes_one_instruction() {
        let code = ops("<#list input.users as u>{${u.id}}<#sep>, </#list>");
        assert!(
            code.iter().any(|i| matches!(i, Instr::ListRun(_))),
            "{code:?}"
        );
        for gone in ["JumpIfLast", "LoopNext", "LoopAgain", "SepAgain", "Text"] {
            assert!(
                !format!("{code:?}").contains(gone),
                "{gone} left in {code:?}"
            );
        }
    }

    #[test]
    fn legacy_has_next_if_becomes_a_loop_tail() {
        let code = ops("<#list input.users as u>${u.id}<#if u_has_next>,</#if></#list>");
        assert!(
            code.iter().any(|i| matches!(i, Instr::ListRun(_))),
            "{code:?}"
        );
        assert!(
            !code.iter().any(|i| matches!(i, Instr::LoopVar(..))),
            "{code:?}"
        );
        // With a statement in the body the loop stays a loop, but the tail still fuses.
        let code =
            ops("<#list input.users as u><#assign x = 1>${u.id}<#if u?has_next>,</#if></#list>");
        assert!(
            code.iter().any(|i| matches!(i, Instr::SepAgain(_))),
            "{code:?}"
        );
        assert!(
            !code.iter().any(|i| matches!(i, Instr::LoopVar(..))),
            "{code:?}"
        );
    }

    #[test]
    fn fused_loops_render_like_the_reference() {
        let input = r#"{"users":[{"id":"a"},{"id":1},{"id":true},{"x":1}],"n":"N"}"#;
        let cases = [
            (
                "[<#list input.users as u>{${u.id!}}<#sep>, </#list>]",
                "[{a}, {1}, {true}, {}]",
            ),
            (
                "<#list input.users as u>${input.n}<#sep>;</#list>.",
                "N;N;N;N.",
            ),
            (
                "<#list input.users as u>(${input.n}<#if u_has_next>|</#if>)</#list>",
                "(N|)(N|)(N|)(N)",
            ),
            (
                "<#list input.users as u>x<#if u?is_last>!</#if></#list>",
                "xxxx!",
            ),
            ("<#list [] as u>x${u}</#list>-", "-"),
            ("<#list input.users as u>${u.id}<#sep>,</#list>", ""),
        ];
        for (src, want) in cases {
            let t = crate::template::Template::compile("t", src, &Default::default()).expect(src);
            let mut json = input.as_bytes().to_vec();
            let tape = simd_json::to_tape(&mut json).expect("json");
            let mut out = bytes::BytesMut::new();
            let r = t.render(&mut Default::default(), tape.as_value(), &mut out);
            if want.is_empty() {
                // The fourth user has no id: the same error as without fusing, at 1:27.
                let e = r.expect_err(src);
                assert_eq!((e.line, e.column), (1, 27), "{e}");
                assert!(e.message.contains("u.id"), "{e}");
            } else {
                r.expect(src);
                assert_eq!(std::str::from_utf8(&out).expect("utf-8"), want, "{src}");
            }
        }
    }

    #[test]
    fn input_c_is_a_piece_with_the_builtins_results_and_errors() {
        let code = ops("a${input.b?c}b${input.n?c}");
        assert_eq!(code.len(), 2, "one Run and Ret: {code:?}");
        let render = |src: &str| {
            let t = crate::template::Template::compile("t", src, &Default::default())
                .expect("compiles");
            let mut json = br#"{"b":false,"n":12,"d":1.50,"big":12345678901,"s":"x"}"#.to_vec();
            let tape = simd_json::to_tape(&mut json).expect("json");
            let mut out = bytes::BytesMut::new();
            t.render(&mut Default::default(), tape.as_value(), &mut out)
                .map(|()| String::from_utf8_lossy(&out).into_owned())
                .map_err(|e| (e.line, e.column, e.message))
        };
        assert_eq!(
            render("${input.b?c},${input.n?c},${input.d?c},${input.big?c}").as_deref(),
            Ok("false,12,1.5,12345678901")
        );
        let (line, col, msg) = render("x ${input.s?c}").expect_err("?c of a string");
        assert_eq!((line, col), (1, 5), "{msg}");
        assert!(msg.contains("number or boolean"), "{msg}");
        let (_, col, msg) = render("${input.zz?c}").expect_err("missing");
        assert_eq!(col, 3, "{msg}");
        assert!(msg.contains("input.zz"), "{msg}");
    }

    #[test]
    fn a_jump_into_a_sequence_prevents_fusing_it() {
        // The #if's end lands between the two texts: they must stay apart.
        let code = ops("<#if input.a??>a</#if>b${input.x}");
        let runs: Vec<_> = code
            .iter()
            .filter(|i| matches!(i, Instr::Run(..)))
            .collect();
        assert_eq!(runs.len(), 1, "{code:?}");
        assert!(
            code.iter().any(|i| matches!(i, Instr::Text(..))),
            "{code:?}"
        );
    }
}
