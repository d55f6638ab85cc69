//! The parser: template text → element tree ([`Node`]) with expressions ([`Expr`]). It scans
//! static text itself and calls the [`lexer`](super::lexer) inside `${...}` and tags. It detects
//! angle (`<#if>`) or square (`[#if]`) tag syntax from the first tag, reads the `#ftl` header, and
//! reports every error with the byte offset it happened at.

use super::ast::*;
use super::lexer::{lex, LexError, Tok, Token};
use crate::template::format::Number;

/// A parse error: message and byte offset.
#[derive(Debug, Clone)]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// Where (byte offset).
    pub at: usize,
}

impl From<LexError> for ParseError {
    fn from(e: LexError) -> Self {
        ParseError {
            message: e.message,
            at: e.at,
        }
    }
}

type PResult<T> = Result<T, ParseError>;

/// Deepest nesting of expressions plus directives the parser accepts.
const MAX_NEST: u32 = 48;

/// What the `#ftl` header said.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// `strip_whitespace` (default true).
    pub strip_whitespace: bool,
    /// `output_format="HTML"`: interpolations are HTML-escaped.
    pub html_output: bool,
}

/// What ended a run of elements.
#[derive(Debug, Clone)]
enum Boundary {
    Eof,
    /// `</#name>` or `</@name>` (name without the `#`; `@` prefix kept for user directives).
    End {
        name: String,
        at: usize,
        end: usize,
    },
    Else {
        at: usize,
        end: usize,
    },
    ElseIf {
        cond: Expr,
        at: usize,
        end: usize,
    },
    Case {
        value: Option<Expr>,
        at: usize,
        end: usize,
    },
}

/// The parser state.
pub struct Parser<'s> {
    src: &'s str,
    pos: usize,
    square: bool,
    line_starts: Vec<usize>,
    /// Inside a tag (so `>` at depth 0 ends the tag rather than comparing).
    in_tag: bool,
    depth: u32,
    /// Expression and element nesting, bounded so hostile input cannot overflow the stack.
    nest: u32,
}

/// Parses a whole template into its root node and header settings.
pub fn parse_template(src: &str) -> PResult<(Node, Header)> {
    let mut p = Parser::new(src);
    let mut header = Header {
        strip_whitespace: true,
        html_output: false,
    };
    p.square = detect_square(src);
    // #ftl header, possibly after white-space (which is then dropped).
    let trimmed = src.len() - src.trim_start().len();
    let hdr = if p.square { "[#ftl" } else { "<#ftl" };
    if src[trimmed..].starts_with(hdr)
        && src[trimmed + 5..]
            .chars()
            .next()
            .is_some_and(|c| c.is_whitespace() || c == '>' || c == ']' || c == '/')
    {
        p.pos = trimmed + 5;
        p.in_tag = true;
        loop {
            let t = p.peek()?;
            match t.tok {
                Tok::Ident(name) => {
                    p.pos = t.end;
                    p.expect_op("=")?;
                    let v = p.parse_expr()?;
                    match (name, &v.kind) {
                        ("strip_whitespace", ExprKind::Bool(b)) => header.strip_whitespace = *b,
                        ("output_format", ExprKind::Str(s)) => {
                            header.html_output = s == "HTML" || s == "XHTML" || s == "XML"
                        }
                        _ => {}
                    }
                }
                Tok::Op(",") => p.pos = t.end,
                _ => break,
            }
        }
        p.close_tag()?;
        p.in_tag = false;
        // The header swallows the rest of its line.
        let b = src.as_bytes();
        while p.pos < b.len() && (b[p.pos] == b' ' || b[p.pos] == b'\t') {
            p.pos += 1;
        }
        if src[p.pos..].starts_with("\r\n") {
            p.pos += 2;
        } else if p.pos < b.len() && (b[p.pos] == b'\n' || b[p.pos] == b'\r') {
            p.pos += 1;
        }
    }
    let mut children = Vec::new();
    let b = p.parse_elements(&mut children)?;
    match b {
        Boundary::Eof => {}
        Boundary::End { name, at, .. } => {
            return Err(ParseError {
                message: format!(
                    "Encountered \"</{}>\", but there's no open directive to close",
                    name
                ),
                at,
            })
        }
        Boundary::Else { at, .. } | Boundary::ElseIf { at, .. } => {
            return Err(ParseError {
                message: "#else or #elseif outside #if or #list".into(),
                at,
            })
        }
        Boundary::Case { at, .. } => {
            return Err(ParseError {
                message: "#case or #default outside #switch".into(),
                at,
            })
        }
    }
    let root = Node {
        kind: NodeKind::Root,
        begin: Pos {
            line: 1,
            col: 1,
            offset: 0,
        },
        end_line: p.line_col(src.len()).0,
        children,
    };
    Ok((root, header))
}

/// Parses a standalone expression (destination filters).
pub fn parse_standalone_expr(src: &str) -> PResult<Expr> {
    let mut p = Parser::new(src);
    let e = p.parse_expr()?;
    let t = p.peek()?;
    if t.tok != Tok::Eof {
        return Err(p.unexpected(&t, "end of expression"));
    }
    Ok(e)
}

fn detect_square(src: &str) -> bool {
    let b = src.as_bytes();
    let mut i = 0;
    while i + 2 < b.len() {
        let c = b[i];
        if c == b'<' || c == b'[' {
            let rest = &src[i + 1..];
            let is_tag = (rest.starts_with('#') || rest.starts_with("/#"))
                && rest
                    .trim_start_matches('/')
                    .trim_start_matches('#')
                    .chars()
                    .next()
                    .is_some_and(|ch| ch.is_alphabetic() || ch == '-')
                || (rest.starts_with('@') || rest.starts_with("/@"))
                    && rest
                        .trim_start_matches('/')
                        .trim_start_matches('@')
                        .chars()
                        .next()
                        .is_some_and(|ch| ch.is_alphabetic() || ch == '_');
            if is_tag {
                return c == b'[';
            }
        }
        i += 1;
    }
    false
}

fn can_start_expr(t: &Tok<'_>) -> bool {
    match t {
        Tok::Ident(n) => !matches!(*n, "as" | "in" | "using"),
        Tok::Num(_) | Tok::Str { .. } => true,
        Tok::Op(o) => matches!(*o, "(" | "[" | "{" | "-" | "+" | "!" | "."),
        Tok::Eof => false,
    }
}

impl<'s> Parser<'s> {
    fn new(src: &'s str) -> Parser<'s> {
        let mut line_starts = vec![0];
        let b = src.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\n' {
                line_starts.push(i + 1);
            } else if b[i] == b'\r' {
                if i + 1 < b.len() && b[i + 1] == b'\n' {
                    i += 1;
                }
                line_starts.push(i + 1);
            }
            i += 1;
        }
        Parser {
            src,
            pos: 0,
            square: false,
            line_starts,
            in_tag: false,
            depth: 0,
            nest: 0,
        }
    }

    /// 1-based (line, column) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (u32, u32) {
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .src
            .get(start..offset.min(self.src.len()))
            .map_or(0, |s| s.chars().count());
        (line as u32 + 1, col as u32 + 1)
    }

    fn pos_of(&self, offset: usize) -> Pos {
        let (line, col) = self.line_col(offset);
        Pos {
            line,
            col,
            offset: offset as u32,
        }
    }

    /// Line of the last character before `end`.
    fn end_line(&self, end: usize) -> u32 {
        self.line_col(end.saturating_sub(1)).0
    }

    fn err<T>(&self, at: usize, message: impl Into<String>) -> PResult<T> {
        Err(ParseError {
            message: message.into(),
            at,
        })
    }

    fn unexpected(&self, t: &Token<'_>, expecting: &str) -> ParseError {
        let found = match &t.tok {
            Tok::Eof => "end of file".to_string(),
            _ => format!("\"{}\"", &self.src[t.start..t.end]),
        };
        ParseError {
            message: format!("Encountered {found}, but was expecting {expecting}"),
            at: t.start,
        }
    }

    fn peek(&self) -> PResult<Token<'s>> {
        Ok(lex(self.src, self.pos)?)
    }

    fn next(&mut self) -> PResult<Token<'s>> {
        let t = lex(self.src, self.pos)?;
        self.pos = t.end;
        Ok(t)
    }

    fn eat_op(&mut self, op: &str) -> PResult<bool> {
        let t = self.peek()?;
        if t.tok == Tok::Op(op_static(op)) {
            self.pos = t.end;
            return Ok(true);
        }
        Ok(false)
    }

    fn expect_op(&mut self, op: &str) -> PResult<()> {
        let t = self.peek()?;
        if t.tok == Tok::Op(op_static(op)) {
            self.pos = t.end;
            Ok(())
        } else {
            Err(self.unexpected(&t, &format!("\"{op}\"")))
        }
    }

    fn expect_ident(&mut self) -> PResult<(&'s str, usize)> {
        let t = self.next()?;
        match t.tok {
            Tok::Ident(n) => Ok((n, t.start)),
            _ => Err(self.unexpected(&t, "a name")),
        }
    }

    fn tag_close_char(&self) -> u8 {
        if self.square {
            b']'
        } else {
            b'>'
        }
    }

    /// Consumes the end of a tag: `>` (or `]`), returns `true` for `/>`.
    fn close_tag(&mut self) -> PResult<bool> {
        let b = self.src.as_bytes();
        while self.pos < b.len() && (b[self.pos] as char).is_ascii_whitespace() {
            self.pos += 1;
        }
        let close = self.tag_close_char();
        if self.pos < b.len() && b[self.pos] == close {
            self.pos += 1;
            return Ok(false);
        }
        if self.pos + 1 < b.len() && b[self.pos] == b'/' && b[self.pos + 1] == close {
            self.pos += 2;
            return Ok(true);
        }
        let t = self.peek()?;
        Err(self.unexpected(&t, &format!("\"{}\"", close as char)))
    }

    // ---------------------------------------------------------------- template text

    /// Finds the next FTL construct at or after `from`: returns its offset.
    fn find_special(&self, from: usize) -> usize {
        let b = self.src.as_bytes();
        let open = if self.square { b'[' } else { b'<' };
        let mut i = from;
        while i < b.len() {
            let c = b[i];
            if (c == b'$' || c == b'#') && i + 1 < b.len() && b[i + 1] == b'{' {
                return i;
            }
            if c == open && self.tag_kind(i).is_some() {
                return i;
            }
            i += 1;
        }
        b.len()
    }

    /// What kind of tag starts at `i`, if any: 0 comment, 1 directive, 2 end directive,
    /// 3 user directive, 4 end user directive.
    fn tag_kind(&self, i: usize) -> Option<u8> {
        let rest = &self.src[i + 1..];
        let alpha = |s: &str| s.chars().next().is_some_and(|c| c.is_alphabetic());
        if rest.starts_with("#--") {
            return Some(0);
        }
        if let Some(r) = rest.strip_prefix('#') {
            return alpha(r).then_some(1);
        }
        if let Some(r) = rest.strip_prefix("/#") {
            return alpha(r).then_some(2);
        }
        if let Some(r) = rest.strip_prefix('@') {
            return r
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
                .then_some(3);
        }
        if let Some(r) = rest.strip_prefix("/@") {
            let close = self.tag_close_char() as char;
            return r
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$' || c == close)
                .then_some(4);
        }
        None
    }

    fn text_node(&self, start: usize, end: usize) -> Node {
        Node {
            kind: NodeKind::Text(self.src[start..end].to_string()),
            begin: self.pos_of(start),
            end_line: self.end_line(end),
            children: Vec::new(),
        }
    }

    fn leaf(&self, kind: NodeKind, start: usize) -> Node {
        Node {
            kind,
            begin: self.pos_of(start),
            end_line: self.end_line(self.pos),
            children: Vec::new(),
        }
    }

    fn parse_elements(&mut self, out: &mut Vec<Node>) -> PResult<Boundary> {
        self.nest += 1;
        if self.nest > MAX_NEST {
            let at = self.pos;
            self.nest -= 1;
            return self.err(at, "Directives nested too deeply");
        }
        let r = self.parse_elements_inner(out);
        self.nest -= 1;
        r
    }

    fn parse_elements_inner(&mut self, out: &mut Vec<Node>) -> PResult<Boundary> {
        loop {
            let start = self.pos;
            if start >= self.src.len() {
                return Ok(Boundary::Eof);
            }
            let special = self.find_special(start);
            if special > start {
                out.push(self.text_node(start, special));
                self.pos = special;
                continue;
            }
            let b = self.src.as_bytes()[start];
            if b == b'$' || b == b'#' {
                // ${ or #{
                self.pos = start + 2;
                let saved = (self.in_tag, self.depth);
                self.in_tag = false;
                self.depth = 0;
                let e = self.parse_expr()?;
                if b == b'#' && self.eat_op(";")? {
                    // #{x; m1M2}: format spec ignored (computer format applies)
                    let _ = self.next()?;
                }
                let t = self.next()?;
                if t.tok != Tok::Op("}") {
                    return Err(self.unexpected(&t, "\"}\""));
                }
                (self.in_tag, self.depth) = saved;
                out.push(self.leaf(NodeKind::Interp(e), start));
                continue;
            }
            match self.tag_kind(start) {
                Some(0) => {
                    let close = if self.square { "--]" } else { "-->" };
                    match self.src[start + 4..].find(close) {
                        Some(i) => self.pos = start + 4 + i + 3,
                        None => return self.err(start, "Unclosed comment"),
                    }
                    out.push(self.leaf(NodeKind::Comment, start));
                }
                Some(1) => {
                    self.pos = start + 2;
                    if let Some(bnd) = self.parse_directive(start, out)? {
                        return Ok(bnd);
                    }
                }
                Some(2) | Some(4) => {
                    self.pos = start + 2;
                    let b2 = self.src.as_bytes()[start + 2];
                    self.pos += 1;
                    let mut name = String::new();
                    if b2 == b'@' {
                        name.push('@');
                    }
                    let rest = &self.src[self.pos..];
                    let n: usize = rest
                        .chars()
                        .take_while(|c| super::lexer::is_ident_char(*c) || *c == '.')
                        .map(|c| c.len_utf8())
                        .sum();
                    name.push_str(&rest[..n]);
                    self.pos += n;
                    self.in_tag = true;
                    let r = self.close_tag();
                    self.in_tag = false;
                    r?;
                    return Ok(Boundary::End {
                        name,
                        at: start,
                        end: self.pos,
                    });
                }
                Some(3) => {
                    self.pos = start + 2;
                    let node = self.parse_user_directive(start)?;
                    out.push(node);
                }
                _ => {
                    // find_special only stops at tags; keep one character as text to progress.
                    let ch = self.src[start..].chars().next().map_or(1, |c| c.len_utf8());
                    self.pos = start + ch;
                    out.push(self.text_node(start, self.pos));
                }
            }
        }
    }

    /// Parses `<#name ...>` after the `<#`. Returns a boundary for else/elseif/case/default.
    fn parse_directive(&mut self, start: usize, out: &mut Vec<Node>) -> PResult<Option<Boundary>> {
        let (name, name_at) = {
            let rest = &self.src[self.pos..];
            let n: usize = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .map(|c| c.len_utf8())
                .sum();
            let name = &rest[..n];
            let at = self.pos;
            self.pos += n;
            (name, at)
        };
        self.in_tag = true;
        self.depth = 0;
        let r = self.parse_directive_inner(name, name_at, start, out);
        self.in_tag = false;
        r
    }

    fn parse_directive_inner(
        &mut self,
        name: &'s str,
        name_at: usize,
        start: usize,
        out: &mut Vec<Node>,
    ) -> PResult<Option<Boundary>> {
        match name {
            "if" => {
                let cond = self.parse_expr()?;
                self.close_tag()?;
                let node = self.parse_if(cond, start)?;
                out.push(node);
            }
            "elseif" | "elseIf" => {
                let cond = self.parse_expr()?;
                self.close_tag()?;
                return Ok(Some(Boundary::ElseIf {
                    cond,
                    at: start,
                    end: self.pos,
                }));
            }
            "else" => {
                self.close_tag()?;
                return Ok(Some(Boundary::Else {
                    at: start,
                    end: self.pos,
                }));
            }
            "case" => {
                let v = self.parse_expr()?;
                self.close_tag()?;
                return Ok(Some(Boundary::Case {
                    value: Some(v),
                    at: start,
                    end: self.pos,
                }));
            }
            "default" => {
                self.close_tag()?;
                return Ok(Some(Boundary::Case {
                    value: None,
                    at: start,
                    end: self.pos,
                }));
            }
            "list" | "foreach" => {
                let node = self.parse_list(start, name == "foreach")?;
                out.push(node);
            }
            "items" => {
                let t = self.next()?;
                if t.tok != Tok::Ident("as") {
                    return Err(self.unexpected(&t, "\"as\""));
                }
                let vars = self.parse_loop_var_names()?;
                self.close_tag()?;
                let mut children = Vec::new();
                let b = self.parse_elements(&mut children)?;
                let end = self.expect_end(b, "items", start)?;
                out.push(Node {
                    kind: NodeKind::Items(vars),
                    begin: self.pos_of(start),
                    end_line: self.end_line(end),
                    children,
                });
            }
            "sep" => {
                self.close_tag()?;
                let mut children = Vec::new();
                let b = self.parse_elements(&mut children)?;
                match b {
                    Boundary::End { ref name, end, .. } if name == "sep" => {
                        out.push(Node {
                            kind: NodeKind::Sep,
                            begin: self.pos_of(start),
                            end_line: self.end_line(end),
                            children,
                        });
                    }
                    other => {
                        let end_line = children
                            .last()
                            .map_or(self.end_line(self.pos), |c: &Node| c.end_line);
                        out.push(Node {
                            kind: NodeKind::Sep,
                            begin: self.pos_of(start),
                            end_line,
                            children,
                        });
                        return Ok(Some(other));
                    }
                }
            }
            "break" => {
                self.close_tag()?;
                out.push(self.leaf(NodeKind::Break, start));
            }
            "continue" => {
                self.close_tag()?;
                out.push(self.leaf(NodeKind::Continue, start));
            }
            "assign" | "local" | "global" => {
                let scope = if name == "local" {
                    Scope::Local
                } else {
                    Scope::Global
                };
                let node = self.parse_assign(scope, start, name)?;
                out.push(node);
            }
            "macro" | "function" => {
                let node = self.parse_macro(start, name == "function")?;
                out.push(node);
            }
            "nested" => {
                let mut args = Vec::new();
                loop {
                    let t = self.peek()?;
                    if !can_start_expr(&t.tok) {
                        break;
                    }
                    if args.len() >= 250 {
                        return Err(self.unexpected(&t, "at most 250 #nested arguments"));
                    }
                    args.push(self.parse_expr()?);
                    self.eat_op(",")?;
                }
                self.close_tag()?;
                out.push(self.leaf(NodeKind::Nested(args), start));
            }
            "return" => {
                let t = self.peek()?;
                let v = if can_start_expr(&t.tok) {
                    Some(self.parse_expr()?)
                } else {
                    None
                };
                self.close_tag()?;
                out.push(self.leaf(NodeKind::Return(v), start));
            }
            "switch" => {
                let v = self.parse_expr()?;
                self.close_tag()?;
                let node = self.parse_switch(v, start)?;
                out.push(node);
            }
            "setting" => {
                let (n, _) = self.expect_ident()?;
                self.expect_op("=")?;
                let v = self.parse_expr()?;
                self.close_tag()?;
                out.push(self.leaf(NodeKind::Setting(n.to_string(), v), start));
            }
            "compress" => {
                let empty = self.close_tag()?;
                let mut children = Vec::new();
                let mut end = self.pos;
                if !empty {
                    let b = self.parse_elements(&mut children)?;
                    end = self.expect_end(b, "compress", start)?;
                }
                out.push(Node {
                    kind: NodeKind::Compress,
                    begin: self.pos_of(start),
                    end_line: self.end_line(end),
                    children,
                });
            }
            "outputformat" | "autoesc" | "noautoesc" => {
                if name == "outputformat" {
                    let _ = self.parse_expr()?;
                }
                self.close_tag()?;
                let mut children = Vec::new();
                let b = self.parse_elements(&mut children)?;
                let end = self.expect_end(b, name, start)?;
                out.push(Node {
                    kind: NodeKind::Block,
                    begin: self.pos_of(start),
                    end_line: self.end_line(end),
                    children,
                });
            }
            "noparse" => {
                self.close_tag()?;
                let close = if self.square {
                    "[/#noparse"
                } else {
                    "</#noparse"
                };
                let Some(i) = self.src[self.pos..].find(close) else {
                    return self.err(start, "Unclosed #noparse");
                };
                let text_start = self.pos;
                let text_end = self.pos + i;
                self.pos = text_end + close.len();
                self.close_tag()?;
                out.push(Node {
                    kind: NodeKind::Text(self.src[text_start..text_end].to_string()),
                    begin: self.pos_of(start),
                    end_line: self.end_line(self.pos),
                    children: Vec::new(),
                });
            }
            "t" | "lt" | "rt" | "nt" => {
                self.close_tag()?;
                let (l, r) = match name {
                    "t" => (true, true),
                    "lt" => (true, false),
                    "rt" => (false, true),
                    _ => (false, false),
                };
                out.push(self.leaf(NodeKind::Trim(l, r), start));
            }
            "stop" | "flush" => {
                if name == "stop" {
                    let t = self.peek()?;
                    if can_start_expr(&t.tok) {
                        let _ = self.parse_expr()?;
                    }
                }
                self.close_tag()?;
                out.push(self.leaf(NodeKind::Nop, start));
            }
            "include" | "import" => {
                let _ = self.parse_expr()?;
                loop {
                    let t = self.peek()?;
                    match t.tok {
                        Tok::Ident("as") => {
                            self.pos = t.end;
                            self.expect_ident()?;
                        }
                        Tok::Ident(_) => {
                            self.pos = t.end;
                            self.expect_op("=")?;
                            let _ = self.parse_expr()?;
                        }
                        _ => break,
                    }
                }
                self.close_tag()?;
                out.push(self.leaf(NodeKind::Include, start));
            }
            "ftl" => return self.err(start, "The #ftl directive must be the first thing in the template"),
            _ => {
                return self.err(
                    name_at,
                    format!("Unknown directive: #{name}. Help: https://freemarker.apache.org/docs/ref_directive_alphaidx.html"),
                )
            }
        }
        Ok(None)
    }

    fn expect_end(&self, b: Boundary, want: &str, start: usize) -> PResult<usize> {
        match b {
            Boundary::End { name, end, .. } if name == want => Ok(end),
            Boundary::End { name, at, .. } => self.err(
                at,
                format!(
                    "Encountered \"</{}{}>\", but at this place only this can be closed: \"#{want}\"",
                    if name.starts_with('@') { "" } else { "#" },
                    name
                ),
            ),
            Boundary::Eof => self.err(
                self.src.len(),
                format!("Unexpected end of file reached. You have an unclosed #{want}"),
            ),
            Boundary::Else { at, .. } | Boundary::ElseIf { at, .. } | Boundary::Case { at, .. } => {
                let _ = start;
                self.err(at, format!("This directive can't be used inside #{want}"))
            }
        }
    }

    fn parse_if(&mut self, cond: Expr, start: usize) -> PResult<Node> {
        let mut branches = Vec::new();
        let mut cond = Some(cond);
        let mut branch_start = start;
        let mut branch_tag_end = self.pos;
        let mut seen_else = false;
        loop {
            let mut children = Vec::new();
            let b = self.parse_elements(&mut children)?;
            let branch = Node {
                kind: NodeKind::IfBranch(cond.take()),
                begin: self.pos_of(branch_start),
                end_line: self.end_line(branch_tag_end),
                children,
            };
            branches.push(branch);
            match b {
                Boundary::ElseIf { cond: c, at, end } if !seen_else => {
                    cond = Some(c);
                    branch_start = at;
                    branch_tag_end = end;
                }
                Boundary::Else { at, end } if !seen_else => {
                    seen_else = true;
                    branch_start = at;
                    branch_tag_end = end;
                }
                other => {
                    let end = self.expect_end(other, "if", start)?;
                    return Ok(Node {
                        kind: NodeKind::If,
                        begin: self.pos_of(start),
                        end_line: self.end_line(end),
                        children: branches,
                    });
                }
            }
        }
    }

    fn parse_loop_var_names(&mut self) -> PResult<Vec<String>> {
        let (a, _) = self.expect_ident()?;
        let mut vars = vec![a.to_string()];
        if self.eat_op(",")? {
            let (b, _) = self.expect_ident()?;
            vars.push(b.to_string());
        }
        Ok(vars)
    }

    fn parse_list(&mut self, start: usize, foreach: bool) -> PResult<Node> {
        let (source, vars) = if foreach {
            let (v, _) = self.expect_ident()?;
            let t = self.next()?;
            if t.tok != Tok::Ident("in") {
                return Err(self.unexpected(&t, "\"in\""));
            }
            (self.parse_expr()?, vec![v.to_string()])
        } else {
            let source = self.parse_expr()?;
            let t = self.peek()?;
            let vars = if t.tok == Tok::Ident("as") {
                self.pos = t.end;
                self.parse_loop_var_names()?
            } else {
                Vec::new()
            };
            (source, vars)
        };
        self.close_tag()?;
        let list_tag_end = self.pos;
        let mut children = Vec::new();
        let b = self.parse_elements(&mut children)?;
        let end_name = if foreach { "foreach" } else { "list" };
        match b {
            Boundary::Else { at, end: else_end } => {
                if vars.is_empty() && !has_items(&children) {
                    return self.err(
                        start,
                        "#list must have either \"as loopVar\" parameter or nested #items that belongs to it.",
                    );
                }
                let mut list = Node {
                    kind: NodeKind::List { source, vars },
                    begin: self.pos_of(start),
                    end_line: self.end_line(at),
                    children,
                };
                let mut else_children = Vec::new();
                let b2 = self.parse_elements(&mut else_children)?;
                let end = self.expect_end(b2, end_name, start)?;
                // FreeMarker's IteratorBlock spans up to `</#list>`, which matters for
                // white-space stripping of the #else body's first line.
                list.end_line = self.end_line(end);
                let _ = else_end;
                let els = Node {
                    kind: NodeKind::ListElse,
                    begin: self.pos_of(at),
                    end_line: self.end_line(end),
                    children: else_children,
                };
                Ok(Node {
                    kind: NodeKind::ListWithElse,
                    begin: self.pos_of(start),
                    end_line: self.end_line(end),
                    children: vec![list, els],
                })
            }
            other => {
                let end = self.expect_end(other, end_name, start)?;
                let _ = list_tag_end;
                if vars.is_empty() && !has_items(&children) {
                    return self.err(
                        start,
                        "#list must have either \"as loopVar\" parameter or nested #items that belongs to it.",
                    );
                }
                Ok(Node {
                    kind: NodeKind::List { source, vars },
                    begin: self.pos_of(start),
                    end_line: self.end_line(end),
                    children,
                })
            }
        }
    }

    fn parse_switch(&mut self, value: Expr, start: usize) -> PResult<Node> {
        let mut pre = Vec::new();
        let mut b = self.parse_elements(&mut pre)?;
        for n in &pre {
            match &n.kind {
                NodeKind::Text(t) if t.trim().is_empty() => {}
                NodeKind::Comment => {}
                _ => {
                    return self.err(
                        n.begin.offset as usize,
                        "Expected #case or #default inside #switch",
                    )
                }
            }
        }
        let mut cases = Vec::new();
        loop {
            match b {
                Boundary::Case {
                    value: None, at, ..
                } if cases
                    .iter()
                    .any(|c: &Node| matches!(c.kind, NodeKind::Case(None))) =>
                {
                    return self.err(
                        at,
                        "You can only have one default case in a switch statement",
                    );
                }
                Boundary::Case { value: v, at, end } => {
                    let mut children = Vec::new();
                    let next = self.parse_elements(&mut children)?;
                    cases.push(Node {
                        kind: NodeKind::Case(v),
                        begin: self.pos_of(at),
                        end_line: self.end_line(end),
                        children,
                    });
                    b = next;
                }
                other => {
                    let end = self.expect_end(other, "switch", start)?;
                    return Ok(Node {
                        kind: NodeKind::Switch(value),
                        begin: self.pos_of(start),
                        end_line: self.end_line(end),
                        children: cases,
                    });
                }
            }
        }
    }

    fn parse_assign(&mut self, scope: Scope, start: usize, dname: &str) -> PResult<Node> {
        let mut items = Vec::new();
        loop {
            let t = self.peek()?;
            let (name, at) = match t.tok {
                Tok::Ident("in") if !items.is_empty() => {
                    self.pos = t.end;
                    let _ = self.parse_expr()?;
                    continue;
                }
                Tok::Ident(n) => (n.to_string(), t.start),
                Tok::Str { ref value, .. } => (value.clone(), t.start),
                _ if !items.is_empty() => break,
                _ => return Err(self.unexpected(&t, "a variable name")),
            };
            self.pos = t.end;
            let op_tok = self.peek()?;
            let op = match op_tok.tok {
                Tok::Op("=") => AssignOp::Set,
                Tok::Op("+=") => AssignOp::Op(BinOp::Add),
                Tok::Op("-=") => AssignOp::Op(BinOp::Sub),
                Tok::Op("*=") => AssignOp::Op(BinOp::Mul),
                Tok::Op("/=") => AssignOp::Op(BinOp::Div),
                Tok::Op("%=") => AssignOp::Op(BinOp::Mod),
                Tok::Op("++") => AssignOp::Inc,
                Tok::Op("--") => AssignOp::Dec,
                _ if items.is_empty() => {
                    // Capture form: <#assign x>...</#assign>
                    self.close_tag()?;
                    let mut children = Vec::new();
                    let b = self.parse_elements(&mut children)?;
                    let end = self.expect_end(b, dname, start)?;
                    return Ok(Node {
                        kind: NodeKind::Capture(scope, name),
                        begin: self.pos_of(start),
                        end_line: self.end_line(end),
                        children,
                    });
                }
                _ => return Err(self.unexpected(&op_tok, "an assignment operator")),
            };
            self.pos = op_tok.end;
            let value = match op {
                AssignOp::Inc | AssignOp::Dec => None,
                _ => Some(self.parse_expr()?),
            };
            items.push(Assignment {
                name,
                op,
                value,
                pos: self.pos_of(at),
            });
            self.eat_op(",")?;
        }
        self.close_tag()?;
        Ok(self.leaf(NodeKind::Assign(scope, items), start))
    }

    fn parse_macro(&mut self, start: usize, function: bool) -> PResult<Node> {
        let t = self.next()?;
        let name = match t.tok {
            Tok::Ident(n) => n.to_string(),
            Tok::Str { value, .. } => value,
            _ => return Err(self.unexpected(&t, "a macro name")),
        };
        let parens = self.eat_op("(")?;
        let mut params = Vec::new();
        loop {
            let t = self.peek()?;
            match t.tok {
                Tok::Ident(n) => {
                    self.pos = t.end;
                    let default = if self.eat_op("=")? {
                        Some(self.parse_expr()?)
                    } else {
                        None
                    };
                    self.eat_op("...")?;
                    params.push(Param {
                        name: n.to_string(),
                        default,
                    });
                    self.eat_op(",")?;
                }
                _ => break,
            }
        }
        if parens {
            self.expect_op(")")?;
        }
        self.close_tag()?;
        let mut children = Vec::new();
        let b = self.parse_elements(&mut children)?;
        let end = self.expect_end(b, if function { "function" } else { "macro" }, start)?;
        Ok(Node {
            kind: NodeKind::Macro {
                name,
                params,
                function,
            },
            begin: self.pos_of(start),
            end_line: self.end_line(end),
            children,
        })
    }

    fn parse_user_directive(&mut self, start: usize) -> PResult<Node> {
        self.in_tag = true;
        self.depth = 0;
        let r = self.parse_user_directive_inner(start);
        self.in_tag = false;
        r
    }

    fn parse_user_directive_inner(&mut self, start: usize) -> PResult<Node> {
        // Callee: a name with optional .name steps.
        let (n, at) = self.expect_ident()?;
        let mut callee = Expr {
            kind: ExprKind::Var(n.to_string()),
            pos: self.pos_of(at),
            end: self.pos as u32,
        };
        let name_text_start = at;
        while self.src[self.pos..].starts_with('.') {
            self.pos += 1;
            let (m, _) = self.expect_ident()?;
            callee = Expr {
                kind: ExprKind::Dot(Box::new(callee), m.to_string()),
                pos: self.pos_of(at),
                end: self.pos as u32,
            };
        }
        let callee_name = self.src[name_text_start..self.pos].to_string();
        let mut positional = Vec::new();
        let mut named = Vec::new();
        let mut loop_vars = Vec::new();
        loop {
            let t = self.peek()?;
            if let Tok::Ident(nm) = t.tok {
                let after = lex(self.src, t.end)?;
                if after.tok == Tok::Op("=") {
                    self.pos = after.end;
                    let v = self.parse_expr()?;
                    named.push((nm.to_string(), v));
                    self.eat_op(",")?;
                    continue;
                }
            }
            if can_start_expr(&t.tok) {
                positional.push(self.parse_expr()?);
                self.eat_op(",")?;
                continue;
            }
            break;
        }
        if self.eat_op(";")? {
            loop {
                let t = self.peek()?;
                if let Tok::Ident(v) = t.tok {
                    self.pos = t.end;
                    loop_vars.push(v.to_string());
                    self.eat_op(",")?;
                } else {
                    break;
                }
            }
        }
        let empty = self.close_tag()?;
        let mut children = Vec::new();
        let mut end = self.pos;
        if !empty {
            self.in_tag = false;
            let b = self.parse_elements(&mut children)?;
            match b {
                Boundary::End { name, end: e, .. }
                    if name == "@" || name == format!("@{callee_name}") =>
                {
                    end = e
                }
                other => {
                    self.expect_end(other, &format!("@{callee_name}"), start)?;
                }
            }
        }
        Ok(Node {
            kind: NodeKind::Call {
                callee,
                positional,
                named,
                loop_vars,
                has_body: !empty,
            },
            begin: self.pos_of(start),
            end_line: self.end_line(end),
            children,
        })
    }

    // ---------------------------------------------------------------- expressions

    fn mk(&self, kind: ExprKind, start: usize) -> Expr {
        Expr {
            kind,
            pos: self.pos_of(start),
            end: self.pos as u32,
        }
    }

    /// Parses an expression (lowest precedence: `||`).
    pub fn parse_expr(&mut self) -> PResult<Expr> {
        self.nest += 1;
        if self.nest > MAX_NEST {
            let at = self.pos;
            self.nest -= 1;
            return self.err(at, "Expression nested too deeply");
        }
        let r = self.parse_or();
        self.nest -= 1;
        r
    }

    fn parse_or(&mut self) -> PResult<Expr> {
        let start = self.peek()?.start;
        let mut l = self.parse_and()?;
        while self.eat_op("||")? {
            let r = self.parse_and()?;
            l = self.mk(ExprKind::Or(Box::new(l), Box::new(r)), start);
        }
        Ok(l)
    }

    fn parse_and(&mut self) -> PResult<Expr> {
        let start = self.peek()?.start;
        let mut l = self.parse_eq()?;
        while self.eat_op("&&")? {
            let r = self.parse_eq()?;
            l = self.mk(ExprKind::And(Box::new(l), Box::new(r)), start);
        }
        Ok(l)
    }

    fn parse_eq(&mut self) -> PResult<Expr> {
        let start = self.peek()?.start;
        let l = self.parse_rel()?;
        let t = self.peek()?;
        let op = match t.tok {
            Tok::Op("==") | Tok::Op("=") => BinOp::Eq,
            Tok::Op("!=") => BinOp::Ne,
            _ => return Ok(l),
        };
        self.pos = t.end;
        let r = self.parse_rel()?;
        for side in [&l, &r] {
            if let ExprKind::Seq(_) | ExprKind::Hash(_) = side.kind {
                return self.err(
                    side.pos.offset as usize,
                    format!(
                        "Found {} literal: {}. Expecting different type for equality check",
                        if matches!(side.kind, ExprKind::Seq(_)) {
                            "list"
                        } else {
                            "hash"
                        },
                        &self.src[side.pos.offset as usize..side.end as usize]
                    ),
                );
            }
        }
        Ok(self.mk(ExprKind::Binary(op, Box::new(l), Box::new(r)), start))
    }

    fn parse_rel(&mut self) -> PResult<Expr> {
        let start = self.peek()?.start;
        let l = self.parse_range()?;
        let t = self.peek()?;
        let op = match t.tok {
            Tok::Op("<") => BinOp::Lt,
            Tok::Op("<=") => BinOp::Le,
            Tok::Op(">") if !self.in_tag || self.depth > 0 || self.square => BinOp::Gt,
            Tok::Op(">=") => BinOp::Ge,
            Tok::Ident("lt") => BinOp::Lt,
            Tok::Ident("lte") => BinOp::Le,
            Tok::Ident("gt") => BinOp::Gt,
            Tok::Ident("gte") => BinOp::Ge,
            _ => return Ok(l),
        };
        self.pos = t.end;
        let r = self.parse_range()?;
        for side in [&l, &r] {
            if let ExprKind::Str(_) | ExprKind::Interp(_) = &side.kind {
                return self.err(
                    side.pos.offset as usize,
                    format!(
                        "Found string literal: {}. Expecting: number",
                        &self.src[side.pos.offset as usize..side.end as usize]
                    ),
                );
            }
        }
        Ok(self.mk(ExprKind::Binary(op, Box::new(l), Box::new(r)), start))
    }

    fn parse_range(&mut self) -> PResult<Expr> {
        let start = self.peek()?.start;
        let l = self.parse_add()?;
        let t = self.peek()?;
        let kind = match t.tok {
            Tok::Op("..") => RangeKind::Inclusive,
            Tok::Op("..<") | Tok::Op("..!") => RangeKind::Exclusive,
            Tok::Op("..*") => RangeKind::Length,
            _ => return Ok(l),
        };
        self.pos = t.end;
        if kind == RangeKind::Inclusive {
            let n = self.peek()?;
            let ends = !can_start_expr(&n.tok) || matches!(n.tok, Tok::Op("!"));
            if ends {
                return Ok(self.mk(
                    ExprKind::Range(Box::new(l), None, RangeKind::Unbounded),
                    start,
                ));
            }
        }
        let r = self.parse_add()?;
        Ok(self.mk(ExprKind::Range(Box::new(l), Some(Box::new(r)), kind), start))
    }

    fn parse_add(&mut self) -> PResult<Expr> {
        let start = self.peek()?.start;
        let mut l = self.parse_mul()?;
        loop {
            let t = self.peek()?;
            let op = match t.tok {
                Tok::Op("+") => BinOp::Add,
                Tok::Op("-") => BinOp::Sub,
                _ => return Ok(l),
            };
            self.pos = t.end;
            let r = self.parse_mul()?;
            l = self.mk(ExprKind::Binary(op, Box::new(l), Box::new(r)), start);
        }
    }

    fn parse_mul(&mut self) -> PResult<Expr> {
        let start = self.peek()?.start;
        let mut l = self.parse_unary()?;
        loop {
            let t = self.peek()?;
            let op = match t.tok {
                Tok::Op("*") => BinOp::Mul,
                Tok::Op("/") => BinOp::Div,
                Tok::Op("%") => BinOp::Mod,
                _ => return Ok(l),
            };
            self.pos = t.end;
            let r = self.parse_unary()?;
            l = self.mk(ExprKind::Binary(op, Box::new(l), Box::new(r)), start);
        }
    }

    fn parse_unary(&mut self) -> PResult<Expr> {
        self.nest += 1;
        if self.nest > MAX_NEST {
            let at = self.pos;
            self.nest -= 1;
            return self.err(at, "Expression nested too deeply");
        }
        let r = self.parse_unary_inner();
        self.nest -= 1;
        r
    }

    fn parse_unary_inner(&mut self) -> PResult<Expr> {
        let t = self.peek()?;
        match t.tok {
            Tok::Op("!") => {
                self.pos = t.end;
                // FreeMarker: `!` applies to another `!` or a primary expression (`!-x` fails).
                let e = if self.peek()?.tok == Tok::Op("!") {
                    self.parse_unary()?
                } else {
                    self.parse_postfix()?
                };
                Ok(self.mk(ExprKind::Not(Box::new(e)), t.start))
            }
            Tok::Op("-") => {
                self.pos = t.end;
                let e = self.parse_postfix()?;
                Ok(self.mk(ExprKind::Neg(Box::new(e)), t.start))
            }
            Tok::Op("+") => {
                self.pos = t.end;
                let e = self.parse_postfix()?;
                Ok(self.mk(ExprKind::Plus(Box::new(e)), t.start))
            }
            _ => self.parse_postfix(),
        }
    }

    fn parse_args(&mut self, close: &str) -> PResult<Vec<Expr>> {
        self.depth += 1;
        let mut args = Vec::new();
        if !self.eat_op(close)? {
            loop {
                if args.len() >= 250 {
                    let at = self.pos;
                    return self.err(at, "Too many arguments or items (at most 250)");
                }
                args.push(self.parse_arg()?);
                if self.eat_op(close)? {
                    break;
                }
                self.expect_op(",")?;
            }
        }
        self.depth -= 1;
        Ok(args)
    }

    /// An argument: an expression or a lambda `x -> expr`.
    fn parse_arg(&mut self) -> PResult<Expr> {
        let t = self.peek()?;
        if let Tok::Ident(n) = t.tok {
            let after = lex(self.src, t.end)?;
            if after.tok == Tok::Op("->") {
                self.pos = after.end;
                let body = self.parse_expr()?;
                return Ok(self.mk(ExprKind::Lambda(n.to_string(), Box::new(body)), t.start));
            }
        }
        self.parse_expr()
    }

    fn parse_postfix(&mut self) -> PResult<Expr> {
        let start = self.peek()?.start;
        let mut e = self.parse_primary()?;
        loop {
            let t = self.peek()?;
            // Postfix operators must follow without white-space for `.`, `[`, `(`? FreeMarker
            // allows white-space; we do too.
            match t.tok {
                Tok::Op(".") => {
                    if let ExprKind::Str(_)
                    | ExprKind::Interp(_)
                    | ExprKind::Num(_)
                    | ExprKind::Bool(_) = e.kind
                    {
                        let what = match e.kind {
                            ExprKind::Num(_) => "number",
                            ExprKind::Bool(_) => "boolean",
                            _ => "string",
                        };
                        return self.err(
                            e.pos.offset as usize,
                            format!(
                                "Found {what} literal: {}. Expecting: hash",
                                &self.src[e.pos.offset as usize..e.end as usize]
                            ),
                        );
                    }
                    self.pos = t.end;
                    let n = self.next()?;
                    let name = match n.tok {
                        Tok::Ident(s) => s.to_string(),
                        Tok::Op("*") => "*".to_string(),
                        _ => return Err(self.unexpected(&n, "a name after \".\"")),
                    };
                    e = self.mk(ExprKind::Dot(Box::new(e), name), start);
                }
                Tok::Op("[") => {
                    self.pos = t.end;
                    self.depth += 1;
                    let k = self.parse_expr()?;
                    self.expect_op("]")?;
                    self.depth -= 1;
                    e = self.mk(ExprKind::Index(Box::new(e), Box::new(k)), start);
                }
                Tok::Op("(") => {
                    self.pos = t.end;
                    let args = self.parse_args(")")?;
                    e = self.mk(ExprKind::Call(Box::new(e), args), start);
                }
                Tok::Op("??") => {
                    self.pos = t.end;
                    e = self.mk(ExprKind::Exists(Box::new(e)), start);
                }
                Tok::Op("?") => {
                    self.pos = t.end;
                    let n = self.next()?;
                    let mut name = match n.tok {
                        Tok::Ident(s) => s.to_string(),
                        _ => return Err(self.unexpected(&n, "a built-in name after \"?\"")),
                    };
                    // ?string.short, ?datetime.iso ...
                    if matches!(name.as_str(), "string" | "datetime" | "date" | "time")
                        && self.src[self.pos..].starts_with('.')
                    {
                        if let Ok(Token {
                            tok: Tok::Ident(sub),
                            end,
                            ..
                        }) = lex(self.src, self.pos + 1)
                        {
                            let known = if name == "string" {
                                matches!(
                                    sub,
                                    "short"
                                        | "medium"
                                        | "long"
                                        | "full"
                                        | "iso"
                                        | "xs"
                                        | "iso_m_nz"
                                        | "number"
                                        | "computer"
                                        | "currency"
                                        | "percent"
                                )
                            } else {
                                sub == "iso"
                            };
                            if known {
                                self.pos = end;
                                name = format!("{name}.{sub}");
                            }
                        }
                    }
                    let nt = self.peek()?;
                    let args = if nt.tok == Tok::Op("(") && nt.start == self.pos {
                        self.pos = nt.end;
                        Some(self.parse_args(")")?)
                    } else if nt.tok == Tok::Op("[") && name == "string" {
                        self.pos = nt.end;
                        Some(self.parse_args("]")?)
                    } else {
                        None
                    };
                    e = self.mk(ExprKind::Builtin(Box::new(e), name, args), start);
                }
                Tok::Op("!") => {
                    self.pos = t.end;
                    let n = self.peek()?;
                    // FreeMarker takes a default value only if one parses (`x! + -1` is `x!`
                    // plus -1): unary `+`/`-` must be followed by a primary expression.
                    let mut rhs_parses = can_start_expr(&n.tok) && n.tok != Tok::Op("!");
                    if matches!(n.tok, Tok::Op("+") | Tok::Op("-")) {
                        let here = self.pos;
                        self.pos = n.end;
                        let after = self.peek()?;
                        self.pos = here;
                        rhs_parses = !matches!(after.tok, Tok::Op("+" | "-" | "!"));
                    }
                    if rhs_parses {
                        let rhs = Some(Box::new(self.parse_expr()?));
                        return Ok(self.mk(ExprKind::Default(Box::new(e), rhs), start));
                    }
                    // `x!` alone: built-ins may follow (`x!?upper_case`).
                    e = self.mk(ExprKind::Default(Box::new(e), None), start);
                }
                _ => return Ok(e),
            }
        }
    }

    fn parse_primary(&mut self) -> PResult<Expr> {
        let t = self.next()?;
        let start = t.start;
        match t.tok {
            Tok::Num(n) => match Number::parse(n).ok() {
                Some(v) => Ok(self.mk(ExprKind::Num(v), start)),
                None => self.err(start, "invalid number"),
            },
            Tok::Str { value, raw } => {
                let content = &self.src[t.start + 1..t.end - 1];
                if !raw && (content.contains("${") || content.contains("#{")) {
                    let quote = self.src[t.start..].chars().next().unwrap_or('"');
                    let parts = self.parse_interpolated(content, quote, start)?;
                    Ok(self.mk(ExprKind::Interp(parts), start))
                } else {
                    Ok(self.mk(ExprKind::Str(value), start))
                }
            }
            Tok::Ident("true") => Ok(self.mk(ExprKind::Bool(true), start)),
            Tok::Ident("false") => Ok(self.mk(ExprKind::Bool(false), start)),
            Tok::Ident(n) => Ok(self.mk(ExprKind::Var(n.to_string()), start)),
            Tok::Op("(") => {
                self.depth += 1;
                let e = self.parse_expr()?;
                self.expect_op(")")?;
                self.depth -= 1;
                Ok(self.mk(ExprKind::Parens(Box::new(e)), start))
            }
            Tok::Op("[") => {
                let items = self.parse_args("]")?;
                Ok(self.mk(ExprKind::Seq(items), start))
            }
            Tok::Op("{") => {
                self.depth += 1;
                let mut pairs = Vec::new();
                if !self.eat_op("}")? {
                    loop {
                        let k = self.parse_expr()?;
                        self.expect_op(":")?;
                        let v = self.parse_expr()?;
                        pairs.push((k, v));
                        if self.eat_op("}")? {
                            break;
                        }
                        self.expect_op(",")?;
                    }
                }
                self.depth -= 1;
                Ok(self.mk(ExprKind::Hash(pairs), start))
            }
            Tok::Op(".") => {
                let (n, _) = self.expect_ident()?;
                Ok(self.mk(ExprKind::Special(n.to_string()), start))
            }
            _ => Err(self.unexpected(&t, "an expression")),
        }
    }

    /// Splits the raw content of a string literal into text and `${...}` parts (an escaped
    /// `\${` is text), unescaping the text parts.
    fn parse_interpolated(
        &self,
        content: &str,
        quote: char,
        lit_start: usize,
    ) -> PResult<Vec<StrPart>> {
        let mut parts = Vec::new();
        let bytes = content.as_bytes();
        let mut rest = 0;
        let mut i = 0;
        let lit_err = |e: LexError| ParseError {
            message: e.message,
            at: lit_start,
        };
        while i < bytes.len() {
            if bytes[i] == b'\\' {
                i += 2;
                continue;
            }
            if i + 1 < bytes.len() && (bytes[i] == b'$' || bytes[i] == b'#') && bytes[i + 1] == b'{'
            {
                if i > rest {
                    parts.push(StrPart::Lit(
                        super::lexer::unescape(&content[rest..i], quote).map_err(lit_err)?,
                    ));
                }
                let mut sub = Parser::new(content);
                sub.pos = i + 2;
                let e = sub.parse_expr().map_err(|e| ParseError {
                    message: e.message,
                    at: lit_start,
                })?;
                let close = sub.next().map_err(|e| ParseError {
                    message: e.message,
                    at: lit_start,
                })?;
                if close.tok != Tok::Op("}") {
                    return self.err(lit_start, "unclosed ${ in string literal");
                }
                let mut e = e;
                relocate(&mut e, self.pos_of(lit_start));
                parts.push(StrPart::Expr(e));
                i = sub.pos;
                rest = i;
                continue;
            }
            i += 1;
        }
        if rest < content.len() {
            parts.push(StrPart::Lit(
                super::lexer::unescape(&content[rest..], quote).map_err(lit_err)?,
            ));
        }
        Ok(parts)
    }
}

/// Whether a `#list` body holds its `#items` (not counting nested lists).
fn has_items(children: &[Node]) -> bool {
    children.iter().any(|c| match c.kind {
        NodeKind::Items(_) => true,
        NodeKind::List { .. } | NodeKind::ListWithElse => false,
        _ => has_items(&c.children),
    })
}

fn relocate(e: &mut Expr, pos: Pos) {
    e.pos = pos;
}

fn op_static(op: &str) -> &'static str {
    const ALL: &[&str] = &[
        "..<", "..!", "..*", "...", "->", "==", "!=", "<=", ">=", "&&", "||", "??", "..", "++",
        "--", "+=", "-=", "*=", "/=", "%=", "/>", "/]", "(", ")", "[", "]", "{", "}", ",", ".",
        "?", "!", "=", "<", ">", "+", "-", "*", "/", "%", ":", ";", "&", "|",
    ];
    ALL.iter().copied().find(|o| *o == op).unwrap_or("")
}
