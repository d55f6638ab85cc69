//! The syntax tree the parser builds. Its shape mirrors FreeMarker's own element tree (an `#if`
//! holds branches, a `#list` with `#else` is wrapped in a container, macros and capture assigns
//! are leaves for white-space purposes) because FreeMarker's white-space stripping walks that tree.

use crate::template::format::Number;

/// A source position: 1-based line and column plus the byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
    /// Byte offset in the source.
    pub offset: u32,
}

/// An expression with the position and source span it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Expr {
    /// What the expression is.
    pub kind: ExprKind,
    /// Where it starts.
    pub pos: Pos,
    /// Byte offset just past its end.
    pub end: u32,
}

/// Binary operators that take two evaluated operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`: numeric addition, string or sequence or hash concatenation.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/` (BigDecimal division).
    Div,
    /// `%` (long remainder).
    Mod,
    /// `==` / `=`.
    Eq,
    /// `!=`.
    Ne,
    /// `<` / `lt`.
    Lt,
    /// `<=` / `lte`.
    Le,
    /// `>` / `gt`.
    Gt,
    /// `>=` / `gte`.
    Ge,
}

/// Range forms: `a..b`, `a..<b` / `a..!b`, `a..*n`, `a..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeKind {
    /// `a..b`, both ends included.
    Inclusive,
    /// `a..<b`, end excluded.
    Exclusive,
    /// `a..*n`, n items.
    Length,
    /// `a..`, no end.
    Unbounded,
}

/// A piece of a string literal with `${...}` inside.
#[derive(Debug, Clone)]
pub enum StrPart {
    /// Literal characters.
    Lit(String),
    /// An interpolated expression.
    Expr(Expr),
}

/// Expression kinds.
#[derive(Debug, Clone)]
pub enum ExprKind {
    /// A string literal without interpolation.
    Str(String),
    /// A string literal with `${...}` parts.
    Interp(Vec<StrPart>),
    /// A number literal.
    Num(Number),
    /// `true` / `false`.
    Bool(bool),
    /// A variable reference.
    Var(String),
    /// `.name` special variable (`.now`, `.vars`...): unsupported ones fail at compile time.
    Special(String),
    /// `x.name`.
    Dot(Box<Expr>, String),
    /// `x[key]` (or a slice when the key is a range).
    Index(Box<Expr>, Box<Expr>),
    /// `f(args)`.
    Call(Box<Expr>, Vec<Expr>),
    /// `x?name` or `x?name(args)`.
    Builtin(Box<Expr>, String, Option<Vec<Expr>>),
    /// `x??`.
    Exists(Box<Expr>),
    /// `x!` or `x!default`.
    Default(Box<Expr>, Option<Box<Expr>>),
    /// `(x)`: matters for `(a.b)!` and `(a.b)??`, which tolerate a missing step anywhere.
    Parens(Box<Expr>),
    /// `!x`.
    Not(Box<Expr>),
    /// `-x`.
    Neg(Box<Expr>),
    /// `+x`.
    Plus(Box<Expr>),
    /// Arithmetic and comparison.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `&&`.
    And(Box<Expr>, Box<Expr>),
    /// `||`.
    Or(Box<Expr>, Box<Expr>),
    /// Ranges.
    Range(Box<Expr>, Option<Box<Expr>>, RangeKind),
    /// `[a, b]`.
    Seq(Vec<Expr>),
    /// `{k: v}`.
    Hash(Vec<(Expr, Expr)>),
    /// `x -> body` (only as an argument of `?filter`, `?map`...).
    Lambda(String, Box<Expr>),
}

/// One macro or function parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its default value, if any.
    pub default: Option<Expr>,
}

/// Assignment operators of `#assign` / `#local` / `#global`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignOp {
    /// `=`.
    Set,
    /// `+=`, `-=`, ... (the binary operator applied to the old value).
    Op(BinOp),
    /// `++`.
    Inc,
    /// `--`.
    Dec,
}

/// Which namespace an assignment writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `#assign` (the template namespace) and `#global`.
    Global,
    /// `#local` (the current macro or function call).
    Local,
}

/// One `name op value` of an assignment directive.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The variable.
    pub name: String,
    /// The operator.
    pub op: AssignOp,
    /// The value (absent for `++`/`--`).
    pub value: Option<Expr>,
    /// Where the name is.
    pub pos: Pos,
}

/// Element kinds of the template tree.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// Static text (after stripping). `unparsed` marks `#noparse` content.
    Text(String),
    /// `${expr}`.
    Interp(Expr),
    /// `<#-- -->`.
    Comment,
    /// `#if`: children are `IfBranch` nodes.
    If,
    /// One branch of an `#if` (condition absent for `#else`); children are its body.
    IfBranch(Option<Expr>),
    /// `#list` (children: the body). `vars` are the loop variables (none with `#items`).
    List {
        /// The listed value.
        source: Expr,
        /// Loop variable names: one, two for hash listing, none when `#items` is used.
        vars: Vec<String>,
    },
    /// `#list ... #else ... /#list`: children are the `List` and a `ListElse`.
    ListWithElse,
    /// The `#else` part of a `#list`.
    ListElse,
    /// `#items as x` (children: its body).
    Items(Vec<String>),
    /// `#sep` (children: its body).
    Sep,
    /// `#break`.
    Break,
    /// `#continue`.
    Continue,
    /// `#assign` / `#local` / `#global` with one or more assignments.
    Assign(Scope, Vec<Assignment>),
    /// `<#assign x>...</#assign>`: children are the captured body.
    Capture(Scope, String),
    /// `#macro` or `#function` definition; children are the body.
    Macro {
        /// Its name.
        name: String,
        /// Its parameters.
        params: Vec<Param>,
        /// `true` for `#function`.
        function: bool,
    },
    /// `<@name args/>` or with a body (children) and `; loop vars`.
    Call {
        /// The callee expression (usually a name).
        callee: Expr,
        /// Positional arguments.
        positional: Vec<Expr>,
        /// Named arguments.
        named: Vec<(String, Expr)>,
        /// Loop variables the body receives from `#nested`.
        loop_vars: Vec<String>,
        /// `true` when written with a body (`<@m>...</@m>`).
        has_body: bool,
    },
    /// `#nested args`.
    Nested(Vec<Expr>),
    /// `#return` (value for functions).
    Return(Option<Expr>),
    /// `#switch`: children are `Case` nodes.
    Switch(Expr),
    /// `#case v` (None for `#default`); children are its body.
    Case(Option<Expr>),
    /// `#setting name=value`.
    Setting(String, Expr),
    /// `#compress`: children are the body.
    Compress,
    /// `#t`, `#lt`, `#rt`, `#nt`: (left, right).
    Trim(bool, bool),
    /// `#stop`, `#flush` and other no-output leaves.
    Nop,
    /// `#include` / `#import`: fails when run (no template loader in the profile).
    Include,
    /// `#outputformat`, `#autoesc`, `#noautoesc` and other transparent containers.
    Block,
    /// The template root.
    Root,
}

/// An element of the template tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Where it starts.
    pub begin: Pos,
    /// Line of its last character (end tag included).
    pub end_line: u32,
    /// Children (bodies, branches).
    pub children: Vec<Node>,
}
