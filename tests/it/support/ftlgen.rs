//! A seeded random generator of FreeMarker templates and JSON inputs, for the differential test.
//!
//! It produces templates from the FTL subset hookpipe supports (issue 2): interpolations,
//! defaults and existence tests, `#if`/`#list`/`#switch`, assignments, macros and functions,
//! operators, built-ins, literals, dates, Amplitude's Java calls, white-space shapes and line
//! ends. Generation is type-directed: the generator knows the input it generated, so most
//! expressions are well typed and render, while a small share is deliberately wrong (missing
//! values, type errors) so error agreement is tested too. Every production belongs to a named
//! [`FEATURES`] entry that can be switched off, and each [`Case`] records the features it used,
//! so a run can say which areas of the engine agree with FreeMarker.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Every feature the generator can exercise, with what it covers.
pub const FEATURES: &[(&str, &str)] = &[
    ("interp", "${...} of paths and literals"),
    ("defaults", "`!` defaults, `??` existence, parenthesised paths, ?has_content"),
    ("if", "#if / #elseif / #else"),
    ("list", "#list with #sep, #else, #items, #break, loop variables, hash listing"),
    ("assign", "#assign (plain, operators, capture form), #local"),
    ("macro", "#macro with defaults and calls, #function / #return"),
    ("switch", "#switch / #case / #default / #break"),
    ("arith", "arithmetic, comparisons, logical operators"),
    ("strings", "string literals and escapes, concatenation, slicing, string built-ins"),
    ("numbers", "number literals of every kind, number built-ins and formats"),
    ("seqs", "sequence and hash literals, ranges, sequence built-ins"),
    ("dates", "?datetime / ?date / ?time parsing, SimpleDateFormat patterns, ?iso_utc, ?number_to_datetime"),
    ("java", "Amplitude's Java calls: .iterator(), .size(), .isEmpty(), UtilClass.toJsonString"),
    ("settings", "#setting number_format / boolean_format / datetime_format / locale"),
    ("directives", "#compress, #noparse, comments, #t / #lt / #rt / #nt"),
    ("whitespace", "directives on their own indented lines, CRLF and CR line ends"),
    ("errors", "deliberate mistakes: missing values, wrong types, bad syntax"),
    ("locale", "#setting locale to de_DE (a documented difference: hookpipe formats for en_US)"),
    ("bignum", "numbers beyond 128 bits, like 1.5e300 (a documented difference: hookpipe's limit)"),
    ("payloads", "whole JSON webhook payloads as customers write them (fields, optional fields, user lists)"),
];

/// Features that exercise differences docs/templates.md documents (not bugs): off by default.
pub const KNOWN_DIFFERENCES: &[&str] = &["locale", "bignum"];

/// The set of enabled features.
#[derive(Debug, Clone)]
pub struct Features(BTreeSet<&'static str>);

impl Features {
    /// All features.
    pub fn all() -> Features {
        Features(FEATURES.iter().map(|(n, _)| *n).collect())
    }

    /// All features except those exercising hookpipe's documented differences from FreeMarker
    /// ([`KNOWN_DIFFERENCES`]), so the default run fails only on bugs.
    pub fn default_set() -> Features {
        let mut f = Features::all();
        for name in KNOWN_DIFFERENCES {
            f.0.remove(name);
        }
        f
    }

    /// Parses a selection: empty means [`Features::default_set`]; `all` means every feature;
    /// `a,b` means only those; `-a,-b` means the default set but those.
    pub fn parse(spec: &str) -> Result<Features, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(Features::default_set());
        }
        if spec == "all" {
            return Ok(Features::all());
        }
        let items: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let negative = items.iter().all(|s| s.starts_with('-'));
        if !negative && items.iter().any(|s| s.starts_with('-')) {
            return Err(format!(
                "feature list {spec:?} mixes `name` and `-name`; use one form"
            ));
        }
        let mut set = if negative {
            Features::default_set().0
        } else {
            BTreeSet::new()
        };
        for item in items {
            let name = item.trim_start_matches('-');
            let Some((known, _)) = FEATURES.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = FEATURES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown feature {name:?}; known: {}",
                    names.join(", ")
                ));
            };
            if negative {
                set.remove(known);
            } else {
                set.insert(known);
            }
        }
        Ok(Features(set))
    }

    /// Whether `name` is enabled.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// The enabled feature names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().copied()
    }
}

/// A JSON value whose numbers keep their exact text, so the input both engines read is exactly
/// what was generated (big integers, `-0.0`, exponents).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as JSON text.
    Num(String),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Compact JSON text on one line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => write_json_string(s, out),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    fn ty(&self) -> Option<Ty> {
        match self {
            Json::Null => None,
            Json::Bool(_) => Some(Ty::Bool),
            Json::Num(_) => Some(Ty::Num),
            Json::Str(_) => Some(Ty::Str),
            Json::Arr(_) => Some(Ty::Seq),
            Json::Obj(_) => Some(Ty::Hash),
        }
    }

    /// Smaller variants of this value (one entry or element removed, or a child shrunk), for
    /// minimising a failing case.
    pub fn shrink_candidates(&self) -> Vec<Json> {
        let mut out = Vec::new();
        match self {
            Json::Obj(entries) => {
                for i in 0..entries.len() {
                    let mut e = entries.clone();
                    e.remove(i);
                    out.push(Json::Obj(e));
                }
                for i in 0..entries.len() {
                    for smaller in entries[i].1.shrink_candidates() {
                        let mut e = entries.clone();
                        e[i].1 = smaller;
                        out.push(Json::Obj(e));
                    }
                }
            }
            Json::Arr(items) => {
                for i in 0..items.len() {
                    let mut e = items.clone();
                    e.remove(i);
                    out.push(Json::Arr(e));
                }
            }
            _ => {}
        }
        out
    }
}

/// Writes `s` as a JSON string literal (escaping what JSON requires, nothing else).
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One generated test case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The FTL template text.
    pub template: String,
    /// The data exposed as `input`.
    pub input: Json,
    /// The features this case exercised.
    pub features: BTreeSet<&'static str>,
}

/// The static type the generator wants an expression to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Str,
    Num,
    Bool,
    Seq,
    Hash,
}

/// What the generator knows about a variable in scope.
#[derive(Debug, Clone)]
enum Shape {
    /// Its value is (shaped like) this JSON value.
    Json(Json),
    /// Only its type is known.
    Ty(Ty),
}

#[derive(Debug, Clone)]
struct Var {
    name: String,
    shape: Shape,
    /// A `#list` loop variable (answers `?index`, `?has_next`, ...).
    loop_var: bool,
}

#[derive(Debug, Clone)]
struct Callable {
    name: String,
    /// Parameter names and whether they have a default.
    params: Vec<(String, bool)>,
}

/// Builds a case from a seed, deterministically.
pub fn generate(seed: u64, features: &Features) -> Case {
    let mut g = Gen {
        rng: fastrand::Rng::with_seed(seed),
        f: features,
        used: BTreeSet::new(),
        scopes: Vec::new(),
        nl: "\n",
        depth: 0,
        fresh: 0,
        in_callable: false,
        macros: Vec::new(),
        functions: Vec::new(),
        break_ok: false,
    };
    let input = g.input();
    g.scopes.push(Var {
        name: "input".into(),
        shape: Shape::Json(input.clone()),
        loop_var: false,
    });
    if g.f.has("whitespace") && g.rng.u8(..10) < 4 {
        g.use_f("whitespace");
        g.nl = if g.rng.u8(..4) == 0 { "\r" } else { "\r\n" };
    }
    let mut template = String::new();
    if g.on("settings", 15) {
        template.push_str(&g.setting());
    }
    if g.on("locale", 20) {
        let l = g.line();
        template.push_str(&format!("<#setting locale=\"de_DE\">{l}"));
    }
    if g.on("macro", 25) {
        template.push_str(&g.callable_def());
    }
    if g.on("payloads", 30) {
        let p = g.payload();
        template.push_str(&p);
    } else {
        let blocks = 1 + g.rng.usize(..5);
        for _ in 0..blocks {
            let b = g.block();
            template.push_str(&b);
        }
    }
    if g.on("errors", 4) {
        template = g.break_syntax(template);
    }
    Case {
        template,
        input,
        features: g.used,
    }
}

struct Gen<'f> {
    rng: fastrand::Rng,
    f: &'f Features,
    used: BTreeSet<&'static str>,
    scopes: Vec<Var>,
    nl: &'static str,
    depth: u32,
    fresh: u32,
    in_callable: bool,
    macros: Vec<Callable>,
    functions: Vec<Callable>,
    /// Inside a `#list` body (or a `#switch` case), where `#break` is legal.
    break_ok: bool,
}

const IDENT_KEYS: &[&str] = &[
    "event_type",
    "user_id",
    "device_id",
    "name",
    "plan",
    "count",
    "price",
    "score",
    "city",
    "email",
    "active",
    "ok",
    "id",
    "value",
    "tags",
    "amount",
    "ratio",
    "level",
];
const ODD_KEYS: &[&str] = &["dash-key", "with space", "$dollar", "ünï", "a.b", "1st"];
const WORDS: &[&str] = &[
    "",
    " ",
    "a",
    "click event",
    "user_one@example.com",
    "John Doe",
    "San Francisco",
    "pro",
    "free",
    "42",
    "-7",
    "3.50",
    "1e3",
    "true",
    "false",
    "  padded  ",
    "UPPER lower",
    "ß straße",
    "İstanbul",
    "ǆemal",
    "élan",
    "日本語テキスト",
    "emoji 😀 ok",
    "quote \" back \\ slash",
    "<b>&amp;'x'</b>",
    "line1\nline2\ttab",
    "ctrl \u{1} \u{1f}",
    "a,b,,c",
    "2022-02-28 20:07:01.795",
    "2022-10-24 20:07:32.123456",
    "https://example.com/a?b=c&d=é",
    "${not_interpolated}",
    "</script>",
    "\u{2028}sep",
];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "7",
    "10",
    "-1",
    "-42",
    "100",
    "1000",
    "1234567",
    "2147483647",
    "2147483648",
    "-2147483649",
    "9007199254740993",
    "9223372036854775807",
    "12345678901234567890",
    "-0.0",
    "0.0",
    "0.5",
    "1.5",
    "2.5",
    "-2.5",
    "0.1",
    "3.14159",
    "100.0",
    "1e3",
    "1E-7",
    "123456789.123",
    "0.000123",
    "1646078821795",
    "1692206763",
];

impl Gen<'_> {
    // ---- helpers ----

    fn use_f(&mut self, name: &'static str) {
        self.used.insert(name);
    }

    /// With feature `name` enabled, true with `percent`% probability (and records the use).
    fn on(&mut self, name: &'static str, percent: u8) -> bool {
        if self.f.has(name) && self.rng.u8(..100) < percent {
            self.use_f(name);
            true
        } else {
            false
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.usize(..items.len())]
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.fresh += 1;
        format!("{prefix}{}", self.fresh)
    }

    // ---- input ----

    /// A number for the input; values beyond 128 bits only with the `bignum` feature.
    fn number(&mut self) -> String {
        if self.on("bignum", 5) {
            return self
                .pick(&[
                    "1.5e300",
                    "-1.5e300",
                    "123456789012345678901234567890123456789012",
                ])
                .to_string();
        }
        self.pick(NUMBERS).to_string()
    }

    fn input(&mut self) -> Json {
        let mut entries = vec![
            ("event_type".to_string(), Json::Str(self.word())),
            (
                "user_id".to_string(),
                if self.rng.u8(..5) == 0 {
                    Json::Null
                } else {
                    Json::Str(self.word())
                },
            ),
            (
                "event_time".to_string(),
                Json::Str(
                    self.pick(&[
                        "2022-02-28 20:07:01.795",
                        "2022-10-24 20:07:32.123456",
                        "2023-01-01 00:00:00.000",
                        "2024-02-29 23:59:59.999",
                    ])
                    .to_string(),
                ),
            ),
            ("n".to_string(), Json::Num(self.int_text())),
            ("f".to_string(), Json::Num(self.number())),
            ("flag".to_string(), Json::Bool(self.rng.bool())),
            ("empty".to_string(), Json::Str(String::new())),
        ];
        let tags = (0..self.rng.usize(..5))
            .map(|_| Json::Str(self.word()))
            .collect();
        entries.push(("tags".into(), Json::Arr(tags)));
        let nums = (0..self.rng.usize(..5))
            .map(|_| Json::Num(self.number()))
            .collect();
        entries.push(("nums".into(), Json::Arr(nums)));
        let users = (0..self.rng.usize(..4)).map(|_| self.user()).collect();
        entries.push(("users".into(), Json::Arr(users)));
        let props = self.props(2);
        entries.push(("props".into(), props));
        if self.rng.bool() {
            let k = self.pick(ODD_KEYS).to_string();
            entries.push((k, self.scalar()));
        }
        if self.rng.u8(..4) == 0 {
            entries.push(("nothing".into(), Json::Null));
        }
        // Shuffle a little so key order matters to ?keys and hash listing.
        if self.rng.bool() {
            let len = entries.len();
            entries.swap(self.rng.usize(..len), self.rng.usize(..len));
        }
        Json::Obj(entries)
    }

    fn word(&mut self) -> String {
        self.pick(WORDS).to_string()
    }

    fn int_text(&mut self) -> String {
        let all = NUMBERS;
        loop {
            let n = *self.pick(all);
            if !n.contains(['.', 'e', 'E']) {
                return n.to_string();
            }
        }
    }

    fn scalar(&mut self) -> Json {
        match self.rng.u8(..10) {
            0..=3 => Json::Str(self.word()),
            4..=7 => Json::Num(self.number()),
            8 => Json::Bool(self.rng.bool()),
            _ => Json::Null,
        }
    }

    fn user(&mut self) -> Json {
        let mut e = vec![("user_id".to_string(), Json::Str(self.word()))];
        if self.rng.u8(..5) > 0 {
            let props = Json::Obj(vec![
                ("name".into(), Json::Str(self.word())),
                ("city".into(), Json::Str(self.word())),
                ("score".into(), Json::Num(self.number())),
            ]);
            e.push(("user_properties".into(), props));
        }
        Json::Obj(e)
    }

    fn props(&mut self, depth: u32) -> Json {
        let n = self.rng.usize(..5);
        let mut keys: Vec<&str> = Vec::new();
        let mut e = Vec::new();
        for _ in 0..n {
            let k = *self.pick(IDENT_KEYS);
            if keys.contains(&k) {
                continue;
            }
            keys.push(k);
            let v = if depth > 0 && self.rng.u8(..5) == 0 {
                self.props(depth - 1)
            } else if self.rng.u8(..8) == 0 {
                Json::Arr((0..self.rng.usize(..3)).map(|_| self.scalar()).collect())
            } else {
                self.scalar()
            };
            e.push((k.to_string(), v));
        }
        Json::Obj(e)
    }

    // ---- paths ----

    /// Every path (up to a few steps deep) from variables in scope, with the value's shape.
    fn paths(&self) -> Vec<(String, Shape)> {
        let mut out = Vec::new();
        for var in &self.scopes {
            match &var.shape {
                Shape::Json(j) => walk(&var.name, j, 3, &mut out),
                Shape::Ty(t) => out.push((var.name.clone(), Shape::Ty(*t))),
            }
        }
        out
    }

    fn path_of(&mut self, ty: Ty) -> Option<(String, Shape)> {
        let all: Vec<(String, Shape)> = self
            .paths()
            .into_iter()
            .filter(|(_, s)| shape_ty(s) == Some(ty))
            .collect();
        if all.is_empty() {
            None
        } else {
            let i = self.rng.usize(..all.len());
            Some(all[i].clone())
        }
    }

    fn loop_vars(&self) -> Vec<String> {
        self.scopes
            .iter()
            .filter(|v| v.loop_var)
            .map(|v| v.name.clone())
            .collect()
    }

    /// A path that does not exist (a missing key, a JSON null, or a missing parent).
    fn missing_path(&mut self) -> String {
        match self.rng.u8(..4) {
            0 => "input.no_such_key".into(),
            1 => "input.nothing".into(),
            2 if self.rng.u8(..4) == 0 => "input.props.missing.deeper".into(),
            2 => "input.props.missing".into(),
            _ => "undefined_var".into(),
        }
    }

    // ---- expressions ----

    /// An expression of type `ty`, already safe to use as an operand (parenthesised if needed).
    fn expr(&mut self, ty: Ty) -> String {
        self.depth += 1;
        let e = if self.depth > 4 {
            self.leaf(ty)
        } else {
            match ty {
                Ty::Str => self.str_expr(),
                Ty::Num => self.num_expr(),
                Ty::Bool => self.bool_expr(),
                Ty::Seq => self.seq_expr(),
                Ty::Hash => self.hash_expr(),
            }
        };
        self.depth -= 1;
        e
    }

    fn leaf(&mut self, ty: Ty) -> String {
        if self.rng.u8(..3) > 0 {
            if let Some((p, _)) = self.path_of(ty) {
                return p;
            }
        }
        match ty {
            Ty::Str => self.str_lit(),
            Ty::Num => self.num_lit(),
            Ty::Bool => self.pick(&["true", "false"]).to_string(),
            Ty::Seq => "[1, 2, 3]".into(),
            Ty::Hash => "{\"a\": 1}".into(),
        }
    }

    fn str_lit(&mut self) -> String {
        if self.on("strings", 50) {
            match self.rng.u8(..6) {
                0 => format!("r\"{}\"", self.pick(&["a\\n", "C:\\dir", "${x}", "raw"])),
                1 => format!("'{}'", self.pick(&["single", "it\\'s", "\"dq\""])),
                2 => format!(
                    "\"{}\"",
                    self.pick(&[
                        "tab\\tnew\\nline",
                        "q\\\"uote",
                        "back\\\\slash",
                        "\\x41\\x263A;",
                        "\\xe9\\b\\f",
                        "dollar $\\{x} \\= \\'",
                        "lt \\l gt \\g amp \\a",
                    ])
                ),
                3 => {
                    let mut inner = self.leaf(Ty::Num);
                    if inner.contains('"') {
                        inner = self.num_lit();
                    }
                    format!("\"n=${{{inner}}}\"")
                }
                _ => {
                    let w = self.word();
                    ftl_string(&w)
                }
            }
        } else {
            let w = self.word();
            ftl_string(&w)
        }
    }

    fn num_lit(&mut self) -> String {
        if self.on("numbers", 60) {
            self.pick(&[
                "0",
                "1",
                "2",
                "3",
                "10",
                "0.5",
                "1.5",
                "2.50",
                "0.1",
                "100",
                "1000000",
                "2147483648",
                "9007199254740993",
                "3.14159",
                "0.000001",
                "007",
                "(-3)",
                "(-0.5)",
            ])
            .to_string()
        } else {
            self.pick(&["0", "1", "2", "3", "10"]).to_string()
        }
    }

    fn str_expr(&mut self) -> String {
        let options = 14;
        for _ in 0..8 {
            let choice = self.rng.u8(..options);
            let r = match choice {
                0 | 1 => Some(self.leaf(Ty::Str)),
                2 if self.on("strings", 70) => {
                    let a = self.expr(Ty::Str);
                    let b = if self.rng.bool() {
                        self.expr(Ty::Str)
                    } else {
                        self.expr(Ty::Num)
                    };
                    Some(format!("({a} + {b})"))
                }
                3 if self.on("strings", 80) => {
                    let s = self.expr(Ty::Str);
                    let bi = self.pick(&[
                        "upper_case",
                        "lower_case",
                        "cap_first",
                        "capitalize",
                        "trim",
                        "json_string",
                        "js_string",
                        "html",
                        "url('UTF-8')",
                        "left_pad(12)",
                        "left_pad(8, '*')",
                        "right_pad(10, '.')",
                        "replace('a', 'A')",
                        "replace(' ', '')",
                        "substring(1)",
                        "string",
                    ]);
                    Some(format!("{s}?{bi}"))
                }
                4 if self.on("strings", 50) => {
                    let s = self.expr(Ty::Str);
                    let (a, b) = (self.rng.u8(..3), self.rng.u8(..3));
                    Some(match self.rng.u8(..3) {
                        0 => format!("{s}[{a}..]"),
                        1 => format!("{s}[0..<{b}]"),
                        _ => format!("{s}[{a}..*{b}]"),
                    })
                }
                5 if self.on("numbers", 80) => {
                    let n = self.expr(Ty::Num);
                    let bi = self.pick(&[
                        "c",
                        "string",
                        "string('0.00')",
                        "string('#,##0.##')",
                        "string('000')",
                        "string('0.#E0')",
                        "string.percent",
                        "string.number",
                    ]);
                    Some(format!("{n}?{bi}"))
                }
                6 if self.f.has("interp") => {
                    let b = self.expr(Ty::Bool);
                    let bi =
                        self.pick(&["c", "string('yes', 'no')", "then('on', 'off')", "string"]);
                    Some(format!("{b}?{bi}"))
                }
                7 if self.on("seqs", 70) => {
                    let s = self.scalar_seq();
                    let sep = self.pick(&["', '", "'|'", "''", "', ', '-'", "', ', '-', '.'"]);
                    Some(format!("{s}?join({sep})"))
                }
                8 if self.on("defaults", 80) => {
                    let p = self.missing_or_real(Ty::Str);
                    Some(match self.rng.u8(..3) {
                        0 => format!("{p}!"),
                        1 => format!("{p}!\"dflt\""),
                        _ => format!("({p})!\"d\""),
                    })
                }
                9 if self.on("dates", 70) => Some(self.date_str()),
                10 if self.on("java", 70) => {
                    let v = match self.rng.u8(..4) {
                        0 => self.expr(Ty::Hash),
                        1 => self.expr(Ty::Seq),
                        2 => self.expr(Ty::Num),
                        _ => self.expr(Ty::Str),
                    };
                    Some(if self.rng.u8(..4) == 0 {
                        format!("statics['com.amplitude.integrations.connector.utils.FtlUtils'].toJsonString({v})")
                    } else {
                        format!("UtilClass.toJsonString({v})")
                    })
                }
                11 if self.on("arith", 50) => {
                    let c = self.expr(Ty::Bool);
                    let a = self.expr(Ty::Str);
                    let b = self.expr(Ty::Str);
                    Some(format!("{c}?then({a}, {b})"))
                }
                12 if self.on("macro", 40) && !self.functions.is_empty() => {
                    Some(self.function_call())
                }
                13 if self.on("errors", 15) => Some(self.bad_expr()),
                _ => None,
            };
            if let Some(r) = r {
                return r;
            }
        }
        self.leaf(Ty::Str)
    }

    fn missing_or_real(&mut self, ty: Ty) -> String {
        if self.rng.u8(..3) > 0 {
            self.missing_path()
        } else {
            self.path_of(ty)
                .map(|(p, _)| p)
                .unwrap_or_else(|| self.missing_path())
        }
    }

    fn num_expr(&mut self) -> String {
        for _ in 0..8 {
            let r = match self.rng.u8(..12) {
                0 | 1 => Some(self.leaf(Ty::Num)),
                2 | 3 if self.on("arith", 80) => {
                    let a = self.expr(Ty::Num);
                    let op = *self.pick(&["+", "-", "*", "/", "%", "+", "*"]);
                    let b = if matches!(op, "/" | "%") && self.rng.u8(..4) > 0 {
                        self.pick(&["2", "3", "7", "0.5", "(-4)", "1.5"])
                            .to_string()
                    } else {
                        self.expr(Ty::Num)
                    };
                    Some(format!("({a} {op} {b})"))
                }
                4 if self.on("arith", 50) => {
                    let a = self.expr(Ty::Num);
                    Some(format!("-{a}"))
                }
                5 if self.on("numbers", 80) => {
                    let a = self.expr(Ty::Num);
                    let bi = self.pick(&["abs", "round", "floor", "ceiling", "int", "long"]);
                    Some(format!("{a}?{bi}"))
                }
                6 if self.on("strings", 60) => {
                    let s = self.expr(Ty::Str);
                    Some(match self.rng.u8(..3) {
                        0 => format!("{s}?length"),
                        1 => format!("{s}?index_of('a')"),
                        _ => format!("{s}?number"),
                    })
                }
                7 if self.on("seqs", 60) => {
                    let s = self.expr(Ty::Seq);
                    Some(match self.rng.u8(..3) {
                        0 => format!("{s}?size"),
                        1 => format!("{s}?seq_index_of(1)"),
                        _ => format!("{s}?size * 2"),
                    })
                }
                8 if self.on("java", 60) => self.json_array().map(|p| format!("{p}.size()")),
                9 if self.on("defaults", 70) => {
                    let p = self.missing_or_real(Ty::Num);
                    Some(format!("{p}!{}", self.num_lit()))
                }
                10 if self.on("list", 80) => {
                    let vars = self.loop_vars();
                    if vars.is_empty() {
                        None
                    } else {
                        let v = self.pick(&vars).clone();
                        Some(if self.rng.u8(..4) == 0 {
                            format!("{v}_index")
                        } else {
                            format!("{v}?{}", self.pick(&["index", "counter"]))
                        })
                    }
                }
                11 if self.on("dates", 40) => {
                    let d = self.date_value();
                    Some(format!("{d}?long"))
                }
                _ => None,
            };
            if let Some(r) = r {
                return r;
            }
        }
        self.leaf(Ty::Num)
    }

    fn bool_expr(&mut self) -> String {
        for _ in 0..8 {
            let r = match self.rng.u8(..12) {
                0 => Some(self.leaf(Ty::Bool)),
                1 | 2 if self.on("arith", 80) => {
                    let ty = *self.pick(&[Ty::Num, Ty::Num, Ty::Str]);
                    let a = self.expr(ty);
                    let b = self.expr(ty);
                    let op = if ty == Ty::Num {
                        *self.pick(&["==", "!=", "<", ">", "<=", ">=", "lt", "gt", "lte", "gte"])
                    } else {
                        *self.pick(&["==", "!=", "=="])
                    };
                    let e = format!("{a} {op} {b}");
                    // `>` inside a tag ends it unless parenthesised.
                    Some(format!("({e})"))
                }
                3 if self.on("arith", 60) => {
                    let a = self.expr(Ty::Bool);
                    let b = self.expr(Ty::Bool);
                    let op = self.pick(&["&&", "||"]);
                    Some(format!("({a} {op} {b})"))
                }
                4 if self.on("arith", 40) => {
                    let a = self.expr(Ty::Bool);
                    Some(format!("!{a}"))
                }
                5 | 6 if self.on("defaults", 80) => {
                    let ty = *self.pick(&[Ty::Str, Ty::Num, Ty::Hash]);
                    let p = self.missing_or_real(ty);
                    Some(match self.rng.u8(..4) {
                        0 => format!("{p}??"),
                        1 => format!("({p})??"),
                        2 => format!("{p}?has_content"),
                        _ => format!("({p})?has_content"),
                    })
                }
                7 if self.on("strings", 60) => {
                    let s = self.expr(Ty::Str);
                    let bi = self.pick(&["contains", "starts_with", "ends_with"]);
                    let arg = self.pick(&["'a'", "''", "' '", "'user'", "'é'"]);
                    Some(format!("{s}?{bi}({arg})"))
                }
                8 if self.on("seqs", 60) => {
                    let s = self.scalar_seq();
                    let ty = *self.pick(&[Ty::Str, Ty::Num]);
                    let v = self.expr(ty);
                    Some(format!("{s}?seq_contains({v})"))
                }
                9 if self.on("interp", 60) => {
                    let ty = *self.pick(&[Ty::Str, Ty::Num, Ty::Bool, Ty::Seq, Ty::Hash]);
                    let v = self.expr(ty);
                    let bi = self.pick(&[
                        "is_string",
                        "is_number",
                        "is_boolean",
                        "is_sequence",
                        "is_hash",
                        "is_hash_ex",
                        "is_collection",
                        "is_enumerable",
                        "is_macro",
                    ]);
                    Some(format!("{v}?{bi}"))
                }
                10 if self.on("list", 80) => {
                    let vars = self.loop_vars();
                    if vars.is_empty() {
                        None
                    } else {
                        let v = self.pick(&vars).clone();
                        Some(if self.rng.u8(..4) == 0 {
                            format!("{v}_has_next")
                        } else {
                            format!(
                                "{v}?{}",
                                self.pick(&[
                                    "has_next",
                                    "is_first",
                                    "is_last",
                                    "is_odd_item",
                                    "is_even_item"
                                ])
                            )
                        })
                    }
                }
                11 if self.on("java", 40) => self.json_array().map(|p| format!("{p}.isEmpty()")),
                _ => None,
            };
            if let Some(r) = r {
                return r;
            }
        }
        self.leaf(Ty::Bool)
    }

    fn seq_expr(&mut self) -> String {
        for _ in 0..8 {
            let r = match self.rng.u8(..10) {
                0 | 1 => Some(self.leaf(Ty::Seq)),
                2 if self.on("seqs", 80) => {
                    let n = 1 + self.rng.usize(..4);
                    let items: Vec<String> = (0..n)
                        .map(|_| {
                            let ty = *self.pick(&[Ty::Str, Ty::Num]);
                            self.expr(ty)
                        })
                        .collect();
                    Some(format!("[{}]", items.join(", ")))
                }
                3 if self.on("seqs", 80) => {
                    let (a, b) = (self.rng.u8(..4), self.rng.u8(..5));
                    Some(match self.rng.u8(..4) {
                        0 => format!("({a}..{b})"),
                        1 => format!("({a}..<{b})"),
                        2 => format!("({a}..*{b})"),
                        _ => format!("({b}..{a})"),
                    })
                }
                4 if self.on("seqs", 60) => {
                    let a = self.expr(Ty::Seq);
                    let b = self.expr(Ty::Seq);
                    Some(format!("({a} + {b})"))
                }
                5 if self.on("seqs", 80) => {
                    if self.rng.bool() {
                        let s = self.expr(Ty::Seq);
                        Some(format!("{s}?reverse"))
                    } else {
                        let s = self.scalar_seq();
                        Some(format!("{s}?sort"))
                    }
                }
                6 if self.on("seqs", 60) => {
                    let s = self.expr(Ty::Seq);
                    let (a, b) = (self.rng.u8(..3), self.rng.u8(..3));
                    Some(match self.rng.u8(..2) {
                        0 => format!("{s}[{a}..]"),
                        _ => format!("{s}[{a}..*{b}]"),
                    })
                }
                7 if self.on("strings", 60) => {
                    let s = self.expr(Ty::Str);
                    let sep = self.pick(&["','", "' '", "'a'"]);
                    Some(format!("{s}?split({sep})"))
                }
                8 if self.on("seqs", 60) => {
                    let h = self.expr(Ty::Hash);
                    Some(format!("{h}?{}", self.pick(&["keys", "values"])))
                }
                9 if self.on("java", 60) => self.json_array().map(|p| format!("{p}.iterator()")),
                _ => None,
            };
            if let Some(r) = r {
                return r;
            }
        }
        self.leaf(Ty::Seq)
    }

    /// A JSON array from the input (the only sequences answering Java's `List` calls).
    fn json_array(&mut self) -> Option<String> {
        let all: Vec<String> = self
            .paths()
            .into_iter()
            .filter(|(_, s)| matches!(s, Shape::Json(Json::Arr(_))))
            .map(|(p, _)| p)
            .collect();
        (!all.is_empty()).then(|| self.pick(&all).clone())
    }

    /// A sequence of strings or of numbers (what `?join`, `?sort` and `?seq_contains` accept).
    fn scalar_seq(&mut self) -> String {
        let all: Vec<String> = self
            .paths()
            .into_iter()
            .filter(|(_, s)| match s {
                Shape::Json(Json::Arr(items)) => items
                    .iter()
                    .all(|v| matches!(v, Json::Str(_) | Json::Num(_))),
                _ => false,
            })
            .map(|(p, _)| p)
            .collect();
        match self.rng.u8(..4) {
            0 | 1 if !all.is_empty() => self.pick(&all).clone(),
            0 | 1 | 2 => {
                let ty = *self.pick(&[Ty::Str, Ty::Num]);
                let items: Vec<String> = (0..self.rng.usize(..4)).map(|_| self.leaf(ty)).collect();
                format!("[{}]", items.join(", "))
            }
            _ => {
                let s = self.expr(Ty::Str);
                format!("{s}?split(',')")
            }
        }
    }

    fn hash_expr(&mut self) -> String {
        if self.on("seqs", 40) {
            let n = self.rng.usize(..4);
            let mut items = Vec::new();
            for i in 0..n {
                let ty = *self.pick(&[Ty::Str, Ty::Num, Ty::Bool]);
                let v = self.expr(ty);
                items.push(format!("\"k{i}\": {v}"));
            }
            let lit = format!("{{{}}}", items.join(", "));
            if self.rng.u8(..3) == 0 {
                let other = self.leaf(Ty::Hash);
                return format!("({lit} + {other})");
            }
            return lit;
        }
        self.leaf(Ty::Hash)
    }

    fn bad_expr(&mut self) -> String {
        match self.rng.u8(..5) {
            0 => self.missing_path(),
            1 => format!("{}?upper_case", self.expr(Ty::Num)),
            2 => format!("({} + {})", self.expr(Ty::Bool), self.expr(Ty::Num)),
            3 => format!("{}?string", self.expr(Ty::Hash)),
            _ => format!("{}.nope", self.expr(Ty::Str)),
        }
    }

    fn date_value(&mut self) -> String {
        let src = match self.rng.u8(..5) {
            0 => "input.event_time?datetime(\"yyyy-MM-dd HH:mm:ss.SSS\")".to_string(),
            1 => "input.event_time?datetime(\"yyyy-MM-dd HH:mm:ss\")".to_string(),
            2 => "\"2022-02-28\"?date(\"yyyy-MM-dd\")".to_string(),
            3 => "1646078821795?number_to_datetime".to_string(),
            _ => "\"2022-02-28T20:07:01.795Z\"?datetime.iso".to_string(),
        };
        src
    }

    fn date_str(&mut self) -> String {
        let d = self.date_value();
        let fmt = self.pick(&[
            "?string(\"dd.MM.yyyy, HH:mm\")",
            "?string[\"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\"]",
            "?string(\"EEE, d MMM yyyy HH:mm:ss Z\")",
            "?string(\"h:mm a\")",
            "?iso_utc",
            "?iso_utc_ms",
            "?string.iso",
            "?string.short",
            "?string.medium",
            "?date?string",
            "?time?string",
            "?string",
        ]);
        format!("{d}{fmt}")
    }

    fn function_call(&mut self) -> String {
        let f = self.pick(&self.functions.clone()).clone();
        let mut args = Vec::new();
        for (_, has_default) in &f.params {
            if !has_default || self.rng.bool() {
                args.push(self.expr(Ty::Num));
            }
        }
        format!("{}({})", f.name, args.join(", "))
    }

    // ---- directives ----

    fn text(&mut self) -> String {
        let pieces = [
            "{",
            "}",
            "[",
            "]",
            "\"key\": ",
            ", ",
            ":",
            " ",
            "  ",
            "\t",
            "x",
            "héllo",
            "😀",
            "#",
            "$",
            "<",
            ">",
            "&",
            "'",
            "\\",
            "-",
            "abc",
            "\"",
        ];
        let n = 1 + self.rng.usize(..5);
        let mut s = String::new();
        for _ in 0..n {
            if self.rng.u8(..5) == 0 {
                s.push_str(self.nl);
            } else {
                s.push_str(*self.pick(&pieces));
            }
        }
        // Never end where the next block could complete a `${`, `#{` or `<#`.
        if s.ends_with(['$', '#', '<', '[']) {
            s.push('x');
        }
        // Never start a tag, an interpolation or a legacy `#{` by accident.
        s.replace("${", "$ {")
            .replace("#{", "# {")
            .replace("<#", "< #")
            .replace("</", "< /")
            .replace("<@", "< @")
            .replace("[#", "[ #")
            .replace("[@", "[ @")
            .replace("[/", "[ /")
            .replace("[=", "[ =")
    }

    /// Line break plus indentation, used when placing directives on their own lines.
    fn line(&mut self) -> String {
        if self.f.has("whitespace") && self.rng.u8(..3) > 0 {
            self.use_f("whitespace");
            let indent = self.pick(&["", "  ", "    ", "\t", " \t "]);
            format!("{}{indent}", self.nl)
        } else {
            String::new()
        }
    }

    /// A nested body: variables it assigns are forgotten afterwards, since the branch or loop
    /// that defines them may not run.
    fn body(&mut self, max: usize) -> String {
        let scope = self.scopes.len();
        let n = 1 + self.rng.usize(..max);
        let mut s = String::new();
        for _ in 0..n {
            let b = self.block();
            s.push_str(&b);
        }
        self.scopes.truncate(scope);
        s
    }

    fn block(&mut self) -> String {
        if self.depth > 2 {
            return self.simple_block();
        }
        self.depth += 1;
        let mut out = String::new();
        for _ in 0..8 {
            let r = match self.rng.u8(..12) {
                0..=2 => Some(self.simple_block()),
                3 if self.on("if", 80) => Some(self.if_block()),
                4 | 5 if self.on("list", 80) => Some(self.list_block()),
                6 if self.on("assign", 80) => Some(self.assign_block()),
                7 if self.on("switch", 60) => Some(self.switch_block()),
                8 if self.on("macro", 60) && !self.macros.is_empty() => Some(self.macro_call()),
                9 if self.on("directives", 60) => Some(self.misc_directive()),
                10 if self.on("settings", 20) => Some(self.setting()),
                11 if self.break_ok && self.on("list", 30) => {
                    let c = self.expr(Ty::Bool);
                    Some(format!("<#if {c}><#break></#if>"))
                }
                _ => None,
            };
            if let Some(r) = r {
                out = r;
                break;
            }
        }
        if out.is_empty() {
            out = self.simple_block();
        }
        self.depth -= 1;
        let pre = self.line();
        format!("{pre}{out}")
    }

    /// A JSON payload template in the style of Amplitude's examples: quoted string fields, bare
    /// numbers and booleans, optional fields under `#if x??`, and a list of users with `#sep`.
    fn payload(&mut self) -> String {
        let nl = self.nl;
        let indent = *self.pick(&["  ", "    ", "\t", "      "]);
        let mut fields: Vec<String> = Vec::new();
        for _ in 0..1 + self.rng.usize(..5) {
            let key = *self.pick(IDENT_KEYS);
            let field = match self.rng.u8(..6) {
                0 | 1 => {
                    let e = self.expr(Ty::Str);
                    let esc = self.pick(&["", "?json_string", "?json_string", "?js_string"]);
                    format!("\"{key}\": \"${{{e}{esc}}}\"")
                }
                2 => {
                    let e = self.expr(Ty::Num);
                    let c = self.pick(&["?c", "", "?c"]);
                    format!("\"{key}\": ${{{e}{c}}}")
                }
                4 if self.on("if", 100) => {
                    let p = self.missing_or_real(Ty::Str);
                    format!("<#if {p}??>{nl}{indent}\"{key}\": \"${{{p}}}\",{nl}{indent}</#if>\"{key}_seen\": true")
                }
                3 | 4 => {
                    let e = self.expr(Ty::Bool);
                    format!("\"{key}\": ${{{e}?c}}")
                }
                _ => {
                    let v = self.expr(Ty::Hash);
                    format!("\"{key}\": ${{UtilClass.toJsonString({v})}}")
                }
            };
            fields.push(field);
        }
        let users = if self.f.has("list") && self.rng.bool() {
            self.use_f("list");
            let iter = if self.rng.bool() { ".iterator()" } else { "" };
            let body = if self.rng.bool() {
                format!("{nl}{indent}{indent}{{\"user_id\": \"${{u.user_id}}\", \"city\": \"${{(u.user_properties.city)!\"\"}}\"}}<#sep>,</#sep>{nl}{indent}")
            } else {
                format!(" {{\"user_id\": \"${{u.user_id?json_string}}\"}} <#if u_has_next>,</#if>")
            };
            format!(",{nl}{indent}\"users\": [{nl}{indent}<#list input.users{iter} as u>{body}</#list>{nl}{indent}]")
        } else {
            String::new()
        };
        format!(
            "{{{nl}{indent}{}{users}{nl}}}{nl}",
            fields.join(&format!(",{nl}{indent}"))
        )
    }

    fn simple_block(&mut self) -> String {
        if self.rng.u8(..3) == 0 {
            return self.text();
        }
        self.use_f("interp");
        let ty = *self.pick(&[Ty::Str, Ty::Str, Ty::Num]);
        let e = self.expr(ty);
        let t = self.text();
        format!("{t}${{{e}}}")
    }

    fn if_block(&mut self) -> String {
        let c = self.expr(Ty::Bool);
        let mut s = format!("<#if {c}>{}", self.body(2));
        for _ in 0..self.rng.usize(..3) {
            let c = self.expr(Ty::Bool);
            let l = self.line();
            let _ = write!(s, "{l}<#elseif {c}>{}", self.body(2));
        }
        if self.rng.bool() {
            let l = self.line();
            let _ = write!(s, "{l}<#else>{}", self.body(2));
        }
        let l = self.line();
        let _ = write!(s, "{l}</#if>");
        s
    }

    fn list_block(&mut self) -> String {
        let var = self.fresh("x");
        // Hash listing.
        if self.rng.u8(..5) == 0 {
            let (h, shape) = match self.path_of(Ty::Hash) {
                Some((p, s)) => (p, s),
                None => ("{\"a\": 1, \"b\": 2}".to_string(), Shape::Ty(Ty::Hash)),
            };
            let k = self.fresh("k");
            let scope = self.scopes.len();
            let vshape = match &shape {
                Shape::Json(Json::Obj(e)) => e
                    .iter()
                    .find(|(_, v)| *v != Json::Null)
                    .map(|(_, v)| Shape::Json(v.clone()))
                    .unwrap_or(Shape::Ty(Ty::Str)),
                _ => Shape::Ty(Ty::Num),
            };
            self.scopes.push(Var {
                name: k.clone(),
                shape: Shape::Ty(Ty::Str),
                loop_var: true,
            });
            self.scopes.push(Var {
                name: var.clone(),
                shape: vshape,
                loop_var: false,
            });
            let body = self.loop_body();
            self.scopes.truncate(scope);
            return format!("<#list {h} as {k}, {var}>{body}</#list>");
        }
        let (seq, elem) = self.seq_with_elem();
        let items_form = self.rng.u8(..4) == 0;
        let scope = self.scopes.len();
        self.scopes.push(Var {
            name: var.clone(),
            shape: elem,
            loop_var: true,
        });
        let body = self.loop_body();
        self.scopes.truncate(scope);
        let else_part = if self.rng.u8(..3) == 0 {
            let l = self.line();
            format!("{l}<#else>{}", self.body(1))
        } else {
            String::new()
        };
        let l = self.line();
        if items_form {
            let pre = self.text();
            let l2 = self.line();
            format!("<#list {seq}>{pre}{l2}<#items as {var}>{body}</#items>{else_part}{l}</#list>")
        } else {
            format!("<#list {seq} as {var}>{body}{else_part}{l}</#list>")
        }
    }

    fn seq_with_elem(&mut self) -> (String, Shape) {
        match self.rng.u8(..6) {
            0..=2 => {
                if let Some((p, shape)) = self.path_of(Ty::Seq) {
                    let elem = match &shape {
                        Shape::Json(Json::Arr(items)) => items
                            .iter()
                            .find(|v| **v != Json::Null)
                            .map(|v| Shape::Json(v.clone()))
                            .unwrap_or(Shape::Ty(Ty::Str)),
                        _ => Shape::Ty(Ty::Num),
                    };
                    let p = if matches!(shape, Shape::Json(_)) && self.on("java", 30) {
                        format!("{p}.iterator()")
                    } else {
                        p
                    };
                    return (p, elem);
                }
                ("[1, 2, 3]".into(), Shape::Ty(Ty::Num))
            }
            3 if self.f.has("seqs") => {
                self.use_f("seqs");
                let (a, b) = (self.rng.u8(..3), self.rng.u8(..5));
                let op = self.pick(&["..", "..<", "..*"]);
                (format!("{a}{op}{b}"), Shape::Ty(Ty::Num))
            }
            4 if self.f.has("strings") => {
                self.use_f("strings");
                let s = self.expr(Ty::Str);
                (format!("{s}?split(',')"), Shape::Ty(Ty::Str))
            }
            _ => {
                let s = self.expr(Ty::Seq);
                (s, Shape::Ty(Ty::Str))
            }
        }
    }

    fn loop_body(&mut self) -> String {
        let saved = self.break_ok;
        self.break_ok = true;
        let mut body = self.body(2);
        if self.rng.bool() {
            let sep = self.pick(&[",", ", ", ",\n", " | "]).replace('\n', self.nl);
            if self.rng.bool() {
                body.push_str(&format!("<#sep>{sep}"));
            } else {
                let l = self.line();
                body.push_str(&format!("{l}<#sep>{sep}</#sep>"));
            }
        } else if self.rng.u8(..3) == 0 {
            let vars = self.loop_vars();
            if let Some(v) = vars.last() {
                body.push_str(&format!("<#if {v}_has_next>,</#if>"));
            }
        }
        self.break_ok = saved;
        body
    }

    fn assign_block(&mut self) -> String {
        let local = self.in_callable && self.rng.bool();
        let kw = if local { "local" } else { "assign" };
        let name = self.fresh("v");
        let r = match self.rng.u8(..5) {
            0 => {
                let body = self.body(2);
                self.scopes.push(Var {
                    name: name.clone(),
                    shape: Shape::Ty(Ty::Str),
                    loop_var: false,
                });
                format!("<#{kw} {name}>{body}</#{kw}>")
            }
            1 => {
                let a = self.expr(Ty::Num);
                let b = self.expr(Ty::Num);
                let op = self.pick(&["+=", "-=", "*=", "/=", "%="]);
                self.scopes.push(Var {
                    name: name.clone(),
                    shape: Shape::Ty(Ty::Num),
                    loop_var: false,
                });
                let inc = if self.rng.bool() {
                    format!(" {name}++")
                } else {
                    String::new()
                };
                format!("<#{kw} {name} = {a}><#{kw} {name} {op} {b}{inc}>")
            }
            _ => {
                let ty = *self.pick(&[Ty::Str, Ty::Num, Ty::Bool, Ty::Seq, Ty::Hash]);
                let e = self.expr(ty);
                let second = if self.rng.u8(..4) == 0 {
                    let n2 = self.fresh("w");
                    let e2 = self.expr(Ty::Str);
                    self.scopes.push(Var {
                        name: n2.clone(),
                        shape: Shape::Ty(Ty::Str),
                        loop_var: false,
                    });
                    format!(" {n2}={e2}")
                } else {
                    String::new()
                };
                self.scopes.push(Var {
                    name: name.clone(),
                    shape: Shape::Ty(ty),
                    loop_var: false,
                });
                format!("<#{kw} {name} = {e}{second}>")
            }
        };
        // Show the variable afterwards sometimes (when it is printable).
        let ty = self.scopes.last().map(|v| shape_ty(&v.shape));
        if matches!(ty, Some(Some(Ty::Str | Ty::Num))) && self.rng.bool() {
            format!("{r}[${{{name}}}]")
        } else {
            r
        }
    }

    fn switch_block(&mut self) -> String {
        let ty = *self.pick(&[Ty::Str, Ty::Num]);
        let subject = self.expr(ty);
        let mut s = format!("<#switch {subject}>");
        let saved = self.break_ok;
        self.break_ok = true;
        for _ in 0..1 + self.rng.usize(..3) {
            let v = match ty {
                Ty::Num => self.num_lit(),
                _ => self.str_lit(),
            };
            let l = self.line();
            let brk = if self.rng.u8(..3) > 0 { "<#break>" } else { "" };
            let _ = write!(s, "{l}<#case {v}>{}{brk}", self.body(1));
        }
        if self.rng.bool() {
            let l = self.line();
            let _ = write!(s, "{l}<#default>{}", self.body(1));
        }
        self.break_ok = saved;
        let l = self.line();
        let _ = write!(s, "{l}</#switch>");
        s
    }

    fn callable_def(&mut self) -> String {
        let is_fn = self.rng.bool();
        let name = self.fresh(if is_fn { "fn" } else { "m" });
        let nparams = self.rng.usize(..3);
        let mut params = Vec::new();
        let mut sig = Vec::new();
        for i in 0..nparams {
            let p = format!("p{i}");
            let default = i > 0 && self.rng.bool();
            if default {
                sig.push(format!("{p}={}", self.num_lit()));
            } else {
                sig.push(p.clone());
            }
            params.push((p, default));
        }
        let saved_scopes = self.scopes.clone();
        self.scopes.truncate(1);
        for (p, _) in &params {
            self.scopes.push(Var {
                name: p.clone(),
                shape: Shape::Ty(Ty::Num),
                loop_var: false,
            });
        }
        self.in_callable = true;
        let text = if is_fn {
            let early = if self.rng.bool() {
                let c = self.expr(Ty::Bool);
                let v = self.expr(Ty::Num);
                format!("<#if {c}><#return {v}></#if>")
            } else {
                String::new()
            };
            let local = if self.rng.bool() {
                let v = self.expr(Ty::Num);
                self.scopes.push(Var {
                    name: "tmp".into(),
                    shape: Shape::Ty(Ty::Num),
                    loop_var: false,
                });
                format!("<#local tmp = {v}>")
            } else {
                String::new()
            };
            let ret = self.expr(Ty::Num);
            let l = self.line();
            format!(
                "<#function {name} {}>{local}{early}{l}<#return {ret}></#function>",
                sig.join(" ")
            )
        } else {
            let body = self.body(3);
            let l = self.line();
            format!("<#macro {name} {}>{body}{l}</#macro>", sig.join(" "))
        };
        self.in_callable = false;
        self.scopes = saved_scopes;
        let c = Callable { name, params };
        if is_fn {
            self.functions.push(c);
        } else {
            self.macros.push(c);
        }
        format!("{text}{}", self.line())
    }

    fn macro_call(&mut self) -> String {
        let m = self.pick(&self.macros.clone()).clone();
        let mut args = Vec::new();
        for (p, has_default) in &m.params {
            if !has_default || self.rng.bool() {
                args.push(format!("{p}={}", self.expr(Ty::Num)));
            }
        }
        if args.is_empty() {
            format!("<@{}/>", m.name)
        } else {
            format!("<@{} {}/>", m.name, args.join(" "))
        }
    }

    fn misc_directive(&mut self) -> String {
        match self.rng.u8(..7) {
            0 => format!("<#compress>{}</#compress>", self.body(2)),
            1 => "<#noparse>${literal} <#if x></#noparse>".into(),
            2 => "<#-- a comment ${x} <#if> -->".into(),
            3 => format!("{}<#t>{}", self.text(), self.nl),
            4 => format!("  {}<#lt>{}", self.text(), self.nl),
            5 => format!("{}<#rt>  {}", self.text(), self.nl),
            _ => format!("  <#nt>{}{}", self.text(), self.nl),
        }
    }

    fn setting(&mut self) -> String {
        let s = self.pick(&[
            "number_format=\"0.##\"",
            "number_format=\"0.00\"",
            "number_format=\"#,##0.###\"",
            "number_format=\"computer\"",
            "number_format=\"0\"",
            "boolean_format=\"yes,no\"",
            "boolean_format=\"c\"",
            "datetime_format=\"yyyy-MM-dd HH:mm:ss\"",
            "datetime_format=\"iso\"",
            "locale=\"en_US\"",
        ]);
        let s = if self.on("locale", 15) {
            "locale=\"de_DE\""
        } else {
            s
        };
        format!("<#setting {s}>{}", self.line())
    }

    /// Damages a template's syntax in one place.
    fn break_syntax(&mut self, t: String) -> String {
        match self.rng.u8(..5) {
            0 => format!("{t}<#if true>"),
            1 => format!("{t}</#list>"),
            2 => format!("{t}${{input.}}"),
            3 => format!("{t}<#unknown_directive>"),
            _ => format!("{t}${{\"unclosed}}"),
        }
    }
}

fn shape_ty(s: &Shape) -> Option<Ty> {
    match s {
        Shape::Json(j) => j.ty(),
        Shape::Ty(t) => Some(*t),
    }
}

fn is_ident(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn walk(prefix: &str, j: &Json, depth: u32, out: &mut Vec<(String, Shape)>) {
    out.push((prefix.to_string(), Shape::Json(j.clone())));
    if depth == 0 {
        return;
    }
    match j {
        Json::Obj(entries) => {
            for (k, v) in entries {
                let p = if is_ident(k) {
                    format!("{prefix}.{k}")
                } else {
                    format!("{prefix}[{}]", ftl_string(k))
                };
                walk(&p, v, depth - 1, out);
            }
        }
        Json::Arr(items) => {
            for (i, v) in items.iter().enumerate().take(2) {
                walk(&format!("{prefix}[{i}]"), v, depth - 1, out);
            }
        }
        _ => {}
    }
}

/// An FTL string literal holding exactly `s`.
pub fn ftl_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '{' if out.ends_with('$') || out.ends_with('#') => out.push_str("\\{"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_case() {
        let f = Features::all();
        let a = generate(7, &f);
        let b = generate(7, &f);
        assert_eq!(a.template, b.template);
        assert_eq!(a.input, b.input);
    }

    #[test]
    fn disabled_features_are_not_used() {
        let f = Features::parse("-list,-macro,-dates").unwrap();
        for seed in 0..300 {
            let c = generate(seed, &f);
            assert!(!c.features.contains("list"), "{}", c.template);
            assert!(!c.template.contains("<#list"), "{}", c.template);
            assert!(!c.template.contains("<#macro"), "{}", c.template);
            assert!(!c.template.contains("?datetime"), "{}", c.template);
        }
    }

    #[test]
    fn feature_spec_errors_name_the_problem() {
        assert!(Features::parse("list,-if").unwrap_err().contains("mixes"));
        assert!(Features::parse("lists").unwrap_err().contains("\"lists\""));
        assert!(Features::parse("if,list").unwrap().has("list"));
    }

    #[test]
    fn json_text_keeps_number_text_and_escapes_strings() {
        let j = Json::Obj(vec![
            ("n".into(), Json::Num("12345678901234567890".into())),
            ("s".into(), Json::Str("a\"\n\u{1}".into())),
        ]);
        assert_eq!(
            j.to_text(),
            r#"{"n":12345678901234567890,"s":"a\"\n\u0001"}"#
        );
    }
}
