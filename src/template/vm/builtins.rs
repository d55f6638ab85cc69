//! Built-ins (`?upper_case`, `?join`, `?datetime`...): the [`Bi`] identifiers the compiler emits
//! and their implementation over VM values. Java-specific formatting (numbers, dates, escapes) is
//! delegated to [`crate::template::format`].

use bytes::BytesMut;
use simd_json::prelude::*;

use super::value::{Method, Value};
use super::{article, fail, VResult, Vm};
use crate::template::format::{
    self, escape, DateFormat, DateKind, DateValue, Number, NumberFormat,
};

macro_rules! builtins {
    ($($id:ident = $name:literal),* $(,)?) => {
        /// A built-in, resolved by name at compile time.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Bi {
            $(
                #[doc = concat!("`?", $name, "`")]
                $id,
            )*
        }

        impl Bi {
            /// Looks a built-in up by its FTL name.
            pub fn from_name(name: &str) -> Option<Bi> {
                match name {
                    $($name => Some(Bi::$id),)*
                    _ => None,
                }
            }

            /// The FTL name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Bi::$id => $name,)*
                }
            }
        }
    };
}

builtins! {
    C = "c", CLower = "c_lower_case", CUpper = "c_upper_case",
    String = "string", StringShort = "string.short", StringMedium = "string.medium",
    StringLong = "string.long", StringFull = "string.full", StringIso = "string.iso",
    StringXs = "string.xs", StringIsoMNz = "string.iso_m_nz", StringNumber = "string.number",
    StringComputer = "string.computer", StringCurrency = "string.currency",
    StringPercent = "string.percent",
    Number = "number", Boolean = "boolean", Int = "int", Long = "long", Short = "short",
    Double = "double", Float = "float", Byte = "byte",
    Round = "round", Floor = "floor", Ceiling = "ceiling", Abs = "abs",
    UpperCase = "upper_case", LowerCase = "lower_case", CapFirst = "cap_first",
    UncapFirst = "uncap_first", Capitalize = "capitalize", Trim = "trim", Length = "length",
    Size = "size", Substring = "substring", Replace = "replace", Contains = "contains",
    StartsWith = "starts_with", EndsWith = "ends_with", IndexOf = "index_of",
    LastIndexOf = "last_index_of", Split = "split", Join = "join", Keys = "keys",
    Values = "values", First = "first", Last = "last", Reverse = "reverse", Sort = "sort",
    SortBy = "sort_by", SeqContains = "seq_contains", SeqIndexOf = "seq_index_of",
    SeqLastIndexOf = "seq_last_index_of", JsonString = "json_string", JsString = "js_string",
    Html = "html", Xhtml = "xhtml", Xml = "xml", Url = "url", UrlPath = "url_path",
    LeftPad = "left_pad", RightPad = "right_pad", HasContent = "has_content",
    IsString = "is_string", IsNumber = "is_number", IsBoolean = "is_boolean",
    IsSequence = "is_sequence", IsHash = "is_hash", IsHashEx = "is_hash_ex",
    IsCollection = "is_collection", IsCollectionEx = "is_collection_ex",
    IsEnumerable = "is_enumerable", IsIndexable = "is_indexable", IsDate = "is_date",
    IsDateLike = "is_date_like", IsMacro = "is_macro", IsMethod = "is_method",
    IsDirective = "is_directive", IsFunction = "is_function", IsMarkupOutput = "is_markup_output",
    Switch = "switch", Datetime = "datetime", Date = "date", Time = "time",
    DatetimeIso = "datetime.iso", DateIso = "date.iso", TimeIso = "time.iso",
    IsoUtc = "iso_utc", IsoUtcMs = "iso_utc_ms", IsoLocal = "iso_local",
    IsoUtcNz = "iso_utc_nz", IsoUtcMsNz = "iso_utc_ms_nz", IsoUtcM = "iso_utc_m",
    IsoUtcMNz = "iso_utc_m_nz", IsoUtcH = "iso_utc_h", IsoUtcHNz = "iso_utc_h_nz",
    IsoUtcFz = "iso_utc_fz", IsoLocalMs = "iso_local_ms", IsoLocalNz = "iso_local_nz",
    IsoLocalMsNz = "iso_local_ms_nz",
    NumberToDatetime = "number_to_datetime", NumberToDate = "number_to_date",
    NumberToTime = "number_to_time", KeepBefore = "keep_before", KeepAfter = "keep_after",
    KeepBeforeLast = "keep_before_last", KeepAfterLast = "keep_after_last",
    RemoveBeginning = "remove_beginning", RemoveEnding = "remove_ending",
    EnsureStartsWith = "ensure_starts_with", EnsureEndsWith = "ensure_ends_with",
    Filter = "filter", Map = "map", NoEsc = "no_esc", Esc = "esc", Default = "default",
    IfExists = "if_exists", Min = "min", Max = "max", WordList = "word_list",
    Chunk = "chunk", TrimLeft = "ltrim", TrimRight = "rtrim", Boolean2 = "is_true",
}

impl Bi {
    /// String built-ins: FreeMarker converts a number, date or boolean operand to text first.
    pub fn takes_string(self) -> bool {
        use Bi::*;
        matches!(
            self,
            UpperCase
                | LowerCase
                | CapFirst
                | UncapFirst
                | Capitalize
                | Trim
                | TrimLeft
                | TrimRight
                | Length
                | Substring
                | Replace
                | Contains
                | StartsWith
                | EndsWith
                | IndexOf
                | LastIndexOf
                | Split
                | JsonString
                | JsString
                | Html
                | Xhtml
                | Xml
                | Url
                | UrlPath
                | KeepBefore
                | KeepAfter
                | KeepBeforeLast
                | KeepAfterLast
                | RemoveBeginning
                | RemoveEnding
                | EnsureStartsWith
                | EnsureEndsWith
                | WordList
                | NoEsc
                | Esc
        )
    }

    /// Built-ins that accept a missing left-hand operand.
    pub fn tolerates_missing(self) -> bool {
        matches!(self, Bi::HasContent | Bi::Default | Bi::IfExists)
    }
}

fn num_err(dbg: u32) -> impl Fn(format::FormatError) -> super::VmError {
    move |e| fail(dbg, e.to_string())
}

/// Applies `bi` to the receiver and `argc` arguments on top of the VM stack.
pub(crate) fn apply<'a>(
    vm: &mut Vm<'a, '_>,
    bi: Bi,
    argc: usize,
    dbg: u32,
    base: usize,
    loop_base: usize,
) -> VResult<()> {
    if argc > 16 {
        return Err(fail(dbg, format!("?{} got too many arguments", bi.name())));
    }
    let from = vm.stack.len() - argc - 1;
    let mut recv = vm.stack[from];
    if bi.takes_string() && matches!(recv, Value::Num(_) | Value::Date(_) | Value::Bool(_)) {
        vm.scratch.clear();
        vm.scalar_to_scratch(recv, dbg)?;
        recv = vm.scratch_to_arena()?;
    }
    let mut args = [Value::Missing; 16];
    args[..argc].copy_from_slice(&vm.stack[from + 1..]);
    vm.stack.truncate(from);
    let args = &args[..argc];
    let v = eval(vm, bi, recv, args, dbg, base, loop_base)?;
    vm.stack.push(v);
    Ok(())
}

fn want_args(bi: Bi, args: &[Value<'_>], min: usize, max: usize, dbg: u32) -> VResult<()> {
    if args.len() < min || args.len() > max {
        let expect = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(fail(
            dbg,
            format!(
                "?{} expects {expect} argument(s), but got {}",
                bi.name(),
                args.len()
            ),
        ));
    }
    Ok(())
}

fn is_seq(v: &Value<'_>) -> bool {
    match v {
        Value::Empty => true,
        Value::Json(j) => j.is_array(),
        Value::Seq(..) | Value::Coll(..) | Value::Range(_) => true,
        _ => false,
    }
}

fn is_hash_ex(v: &Value<'_>) -> bool {
    match v {
        Value::Empty => true,
        Value::Json(j) => j.is_object(),
        Value::Hash(..) => true,
        _ => false,
    }
}

/// The string of a value, or a type error.
macro_rules! text {
    ($vm:expr, $v:expr, $bi:expr, $dbg:expr) => {
        match $vm.str_of(&$v) {
            Some(s) => s,
            None => {
                return Err($vm.type_error(
                    $dbg,
                    &format!("?{}\" left-hand operand", $bi.name()),
                    "a string",
                    &$v,
                ))
            }
        }
    };
}

fn number_of<'a>(vm: &Vm<'a, '_>, v: &Value<'a>, bi: Bi, dbg: u32) -> VResult<Number> {
    match v {
        Value::Num(n) => Ok(*n),
        other => Err(vm.type_error(
            dbg,
            &format!("?{}\" left-hand operand", bi.name()),
            "a number",
            other,
        )),
    }
}

fn int_arg(vm: &Vm<'_, '_>, v: &Value<'_>, bi: Bi, dbg: u32) -> VResult<i64> {
    match v {
        Value::Num(n) => Ok(n.long_value()),
        other => Err(vm.type_error(
            dbg,
            &format!("?{}\" argument", bi.name()),
            "a number",
            other,
        )),
    }
}

/// Runs `f` on the text of `v` into the scratch buffer and returns the result as a string.
fn map_str<'a>(
    vm: &mut Vm<'a, '_>,
    v: Value<'a>,
    bi: Bi,
    dbg: u32,
    f: impl FnOnce(&str, &mut BytesMut),
) -> VResult<Value<'a>> {
    vm.scratch.clear();
    match v {
        Value::Str(s) => f(s, &mut vm.scratch),
        Value::Empty => f("", &mut vm.scratch),
        Value::Arena(a, b) | Value::Markup(a, b) => {
            f(&vm.arena[a as usize..b as usize], &mut vm.scratch)
        }
        other => {
            return Err(vm.type_error(
                dbg,
                &format!("?{}\" left-hand operand", bi.name()),
                "a string",
                &other,
            ))
        }
    }
    vm.scratch_to_arena()
}

fn utf16_index(s: &str, byte: usize) -> i32 {
    s[..byte].encode_utf16().count() as i32
}

fn byte_of_utf16(s: &str, idx: i64) -> Option<usize> {
    if idx <= 0 {
        return Some(0);
    }
    let mut n = 0i64;
    for (b, c) in s.char_indices() {
        if n >= idx {
            return Some(b);
        }
        n += c.len_utf16() as i64;
    }
    if n >= idx {
        Some(s.len())
    } else {
        None
    }
}

fn eval<'a>(
    vm: &mut Vm<'a, '_>,
    bi: Bi,
    recv: Value<'a>,
    args: &[Value<'a>],
    dbg: u32,
    base: usize,
    loop_base: usize,
) -> VResult<Value<'a>> {
    use Bi::*;
    Ok(match bi {
        C | CLower | CUpper => {
            want_args(bi, args, 0, 0, dbg)?;
            match recv {
                Value::Num(n) => {
                    vm.scratch.clear();
                    n.write_c(&mut vm.scratch);
                    vm.scratch_to_arena()?
                }
                Value::Bool(b) => Value::Str(match (bi, b) {
                    (CUpper, true) => "TRUE",
                    (CUpper, false) => "FALSE",
                    (_, true) => "true",
                    (_, false) => "false",
                }),
                Value::Str(_) | Value::Arena(..) if bi != C => {
                    let f = if bi == CLower {
                        escape::lower_case
                    } else {
                        escape::upper_case
                    };
                    map_str(vm, recv, bi, dbg, f)?
                }
                other => {
                    return Err(vm.type_error(
                        dbg,
                        "?c\" left-hand operand",
                        "a number or boolean",
                        &other,
                    ))
                }
            }
        }
        String | StringShort | StringMedium | StringLong | StringFull | StringIso | StringXs
        | StringIsoMNz | StringNumber | StringComputer | StringCurrency | StringPercent => {
            string_builtin(vm, bi, recv, args, dbg)?
        }
        Number => match recv {
            Value::Num(_) => recv,
            _ => {
                let s = text!(vm, recv, bi, dbg);
                match format::Number::parse(s) {
                    Ok(n) => Value::Num(n),
                    Err(_) => {
                        return Err(fail(
                            dbg,
                            format!("Can't convert this string to number: \"{s}\"\nThe blamed expression:\n==> {}", vm.dbg_text(dbg)),
                        ))
                    }
                }
            }
        },
        Boolean | Boolean2 => match recv {
            Value::Bool(_) => recv,
            _ => {
                let s = text!(vm, recv, bi, dbg);
                match s {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    // FreeMarker also accepts the boolean_format words.
                    _ if s == vm.bool_text(true) => Value::Bool(true),
                    _ if s == vm.bool_text(false) => Value::Bool(false),
                    _ => {
                        return Err(fail(
                            dbg,
                            format!("Can't convert this string to boolean: {s:?}"),
                        ))
                    }
                }
            }
        },
        Int | Short | Byte => Value::Num(number_of(vm, &recv, bi, dbg)?.to_int()),
        Long => match recv {
            Value::Date(d) => Value::Num(format::Number::Long(d.millis)),
            _ => Value::Num(number_of(vm, &recv, bi, dbg)?.to_long()),
        },
        Double | Float => Value::Num(format::Number::Double(
            number_of(vm, &recv, bi, dbg)?.to_f64(),
        )),
        Round => Value::Num(
            number_of(vm, &recv, bi, dbg)?
                .round()
                .map_err(num_err(dbg))?,
        ),
        Floor => Value::Num(
            number_of(vm, &recv, bi, dbg)?
                .floor()
                .map_err(num_err(dbg))?,
        ),
        Ceiling => Value::Num(
            number_of(vm, &recv, bi, dbg)?
                .ceiling()
                .map_err(num_err(dbg))?,
        ),
        Abs => Value::Num(number_of(vm, &recv, bi, dbg)?.abs().map_err(num_err(dbg))?),
        UpperCase => map_str(vm, recv, bi, dbg, escape::upper_case)?,
        LowerCase => map_str(vm, recv, bi, dbg, escape::lower_case)?,
        CapFirst => map_str(vm, recv, bi, dbg, escape::cap_first)?,
        UncapFirst => map_str(vm, recv, bi, dbg, escape::uncap_first)?,
        Capitalize => map_str(vm, recv, bi, dbg, escape::capitalize)?,
        Trim => map_str(vm, recv, bi, dbg, |s, out| {
            out.extend_from_slice(escape::java_trim(s).as_bytes())
        })?,
        TrimLeft => map_str(vm, recv, bi, dbg, |s, out| {
            out.extend_from_slice(s.trim_start_matches(|c: char| c <= ' ').as_bytes())
        })?,
        TrimRight => map_str(vm, recv, bi, dbg, |s, out| {
            out.extend_from_slice(s.trim_end_matches(|c: char| c <= ' ').as_bytes())
        })?,
        Length => {
            let s = text!(vm, recv, bi, dbg);
            Value::Num(format::Number::Int(escape::utf16_len(s) as i32))
        }
        Size => {
            if let Some(n) = vm.seq_len(&recv) {
                Value::Num(format::Number::Int(n as i32))
            } else {
                match recv {
                    Value::Json(j) => Value::Num(format::Number::Int(
                        j.as_object().map_or(0, |o| o.len()) as i32,
                    )),
                    Value::Hash(_, n) => Value::Num(format::Number::Int(n as i32)),
                    other => {
                        return Err(vm.type_error(
                            dbg,
                            "?size\" left-hand operand",
                            "a sequence or extended hash",
                            &other,
                        ))
                    }
                }
            }
        }
        Substring => {
            want_args(bi, args, 1, 2, dbg)?;
            let a = int_arg(vm, &args[0], bi, dbg)?;
            let b = if args.len() > 1 {
                Some(int_arg(vm, &args[1], bi, dbg)?)
            } else {
                None
            };
            let s = text!(vm, recv, bi, dbg);
            let start = byte_of_utf16(s, a);
            let end = match b {
                Some(b) => byte_of_utf16(s, b),
                None => Some(s.len()),
            };
            match (start, end) {
                (Some(x), Some(y)) if x <= y && a >= 0 => {
                    let sub = s[x..y].to_string();
                    vm.arena_str(&sub)
                }
                _ => return Err(fail(dbg, "?substring index out of bounds")),
            }
        }
        Replace => {
            want_args(bi, args, 2, 3, dbg)?;
            let from = text!(vm, args[0], bi, dbg).to_string();
            let to = text!(vm, args[1], bi, dbg).to_string();
            map_str(vm, recv, bi, dbg, |s, out| {
                if from.is_empty() {
                    // Java's replace("", x) inserts x between every character and at both ends.
                    out.extend_from_slice(to.as_bytes());
                    for c in s.chars() {
                        let mut b = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                        out.extend_from_slice(to.as_bytes());
                    }
                } else {
                    out.extend_from_slice(s.replace(from.as_str(), &to).as_bytes())
                }
            })?
        }
        Contains | StartsWith | EndsWith => {
            want_args(bi, args, 1, 1, dbg)?;
            let needle = text!(vm, args[0], bi, dbg);
            let s = text!(vm, recv, bi, dbg);
            Value::Bool(match bi {
                Contains => s.contains(needle),
                StartsWith => s.starts_with(needle),
                _ => s.ends_with(needle),
            })
        }
        IndexOf | LastIndexOf => {
            want_args(bi, args, 1, 2, dbg)?;
            let needle = text!(vm, args[0], bi, dbg);
            let s = text!(vm, recv, bi, dbg);
            let from = if args.len() > 1 {
                Some(int_arg(vm, &args[1], bi, dbg)?)
            } else {
                None
            };
            let r = if bi == IndexOf {
                let start = from.map_or(Some(0), |f| byte_of_utf16(s, f));
                start.and_then(|st| s[st..].find(needle).map(|i| i + st))
            } else {
                let end = match from {
                    Some(f) if f < 0 => None,
                    Some(f) => Some(
                        byte_of_utf16(s, f).map_or(s.len(), |e| (e + needle.len()).min(s.len())),
                    ),
                    None => Some(s.len()),
                };
                end.and_then(|e| s[..e].rfind(needle))
            };
            Value::Num(format::Number::Int(r.map_or(-1, |b| utf16_index(s, b))))
        }
        Split => {
            want_args(bi, args, 1, 2, dbg)?;
            let sep = text!(vm, args[0], bi, dbg).to_string();
            let s = text!(vm, recv, bi, dbg).to_string();
            let mut n = 0;
            let parts: Vec<&str> = if sep.is_empty() {
                s.split_inclusive(|_| true).collect()
            } else {
                s.split(sep.as_str()).collect()
            };
            for part in parts {
                let v = vm.arena_str(part);
                vm.stack.push(v);
                n += 1;
            }
            vm.make_seq(n)
        }
        Join => {
            want_args(bi, args, 1, 3, dbg)?;
            let sep = text!(vm, args[0], bi, dbg).to_string();
            let base_sp = vm.stack.len();
            let n = vm.push_items(recv, dbg, "?join\" left-hand operand")?;
            let mut buf = std::mem::take(&mut vm.scratch);
            buf.clear();
            let mut written = 0;
            let mut result = Ok(());
            for i in 0..n {
                let item = vm.stack[base_sp + i];
                if item.is_missing() {
                    continue;
                }
                if written > 0 {
                    buf.extend_from_slice(sep.as_bytes());
                }
                std::mem::swap(&mut vm.scratch, &mut buf);
                let r = vm.scalar_to_scratch(item, dbg);
                std::mem::swap(&mut vm.scratch, &mut buf);
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
                written += 1;
            }
            vm.stack.truncate(base_sp);
            vm.scratch = buf;
            result?;
            if written == 0 {
                if args.len() > 1 {
                    vm.scratch.clear();
                    return Ok(args[1]);
                }
            } else if args.len() > 2 {
                let end = text!(vm, args[2], bi, dbg).to_string();
                vm.scratch.extend_from_slice(end.as_bytes());
            }
            vm.scratch_to_arena()?
        }
        Keys | Values => {
            let mut n = 0;
            match recv {
                Value::Empty => {}
                Value::Json(j) if j.is_object() => {
                    if let Some(o) = j.as_object() {
                        for (k, v) in o.iter() {
                            vm.stack.push(if bi == Keys {
                                Value::Str(k)
                            } else {
                                Value::from_tape(v)
                            });
                            n += 1;
                        }
                    }
                }
                Value::Hash(s, len) => {
                    for i in s..s + len {
                        let (k, v) = vm.hashes[i as usize];
                        vm.stack.push(if bi == Keys { k } else { v });
                        n += 1;
                    }
                }
                other => {
                    return Err(vm.type_error(
                        dbg,
                        &format!("?{}\" left-hand operand", bi.name()),
                        "an extended hash",
                        &other,
                    ))
                }
            }
            match vm.make_seq(n) {
                Value::Seq(a, b) => Value::Coll(a, b),
                v => v,
            }
        }
        First | Last => {
            let base_sp = vm.stack.len();
            let n = vm.push_items(recv, dbg, "?first\" left-hand operand")?;
            let v = if n == 0 {
                Value::Missing
            } else if bi == First {
                vm.stack[base_sp]
            } else {
                vm.stack[base_sp + n - 1]
            };
            vm.stack.truncate(base_sp);
            v
        }
        Reverse => {
            let base_sp = vm.stack.len();
            let n = vm.push_items(recv, dbg, "?reverse\" left-hand operand")?;
            vm.stack[base_sp..].reverse();
            vm.make_seq(n)
        }
        Sort | SortBy => sort(vm, bi, recv, args, dbg)?,
        SeqContains | SeqIndexOf | SeqLastIndexOf => {
            want_args(bi, args, 1, 2, dbg)?;
            let needle = args[0];
            let base_sp = vm.stack.len();
            let n = vm.push_items(recv, dbg, "?seq_contains\" left-hand operand")?;
            let mut found: Option<usize> = None;
            for i in 0..n {
                let idx = if bi == SeqLastIndexOf { n - 1 - i } else { i };
                let item = vm.stack[base_sp + idx];
                if loose_eq(vm, &item, &needle) {
                    found = Some(idx);
                    break;
                }
            }
            vm.stack.truncate(base_sp);
            match bi {
                SeqContains => Value::Bool(found.is_some()),
                _ => Value::Num(format::Number::Int(found.map_or(-1, |i| i as i32))),
            }
        }
        JsonString => map_str(vm, recv, bi, dbg, escape::json_string)?,
        JsString => map_str(vm, recv, bi, dbg, escape::js_string)?,
        Html => map_str(vm, recv, bi, dbg, escape::html)?,
        Xhtml => map_str(vm, recv, bi, dbg, escape::xhtml)?,
        Xml => map_str(vm, recv, bi, dbg, escape::xml)?,
        Url | UrlPath => {
            want_args(bi, args, 0, 1, dbg)?;
            let cs = if let Some(a) = args.first() {
                text!(vm, *a, bi, dbg).to_string()
            } else {
                match &vm.settings.url_charset {
                    Some(c) => c.to_string(),
                    None => {
                        return Err(fail(
                            dbg,
                            "To do URL encoding, the framework that encloses FreeMarker must specify the \"output_encoding\" setting or the \"url_escaping_charset\" setting, so ask the programmers to set them. Or, as a last chance, you can set the url_encoding_charset setting in the template, e.g. <#setting url_escaping_charset='ISO-8859-1'>, or give the charset explicitly to the built-in, e.g. foo?url('ISO-8859-1').",
                        ))
                    }
                }
            };
            let charset = format::UrlCharset::from_name(&cs).map_err(num_err(dbg))?;
            if bi == Url {
                map_str(vm, recv, bi, dbg, |s, out| escape::url(s, charset, out))?
            } else {
                map_str(vm, recv, bi, dbg, |s, out| {
                    escape::url_path(s, charset, out)
                })?
            }
        }
        LeftPad | RightPad => {
            want_args(bi, args, 1, 2, dbg)?;
            let width = int_arg(vm, &args[0], bi, dbg)?.max(0) as usize;
            if width > vm.limits.max_output {
                return Err(fail(
                    dbg,
                    "?left_pad/?right_pad width exceeds the output limit",
                ));
            }
            let pad = if args.len() > 1 {
                text!(vm, args[1], bi, dbg).to_string()
            } else {
                " ".to_string()
            };
            if pad.is_empty() {
                return Err(fail(
                    dbg,
                    "The \"filling\" argument can't be an empty string",
                ));
            }
            let s = match recv {
                Value::Num(_) => {
                    vm.scratch.clear();
                    vm.scalar_to_scratch(recv, dbg)?;
                    std::str::from_utf8(&vm.scratch).unwrap_or("").to_string()
                }
                _ => text!(vm, recv, bi, dbg).to_string(),
            };
            let len = s.encode_utf16().count();
            let mut out = std::string::String::new();
            if len >= width {
                out.push_str(&s);
            } else {
                let need = width - len;
                let padc: Vec<char> = pad.chars().collect();
                let filler: std::string::String = if bi == LeftPad {
                    (0..need).map(|i| padc[i % padc.len()]).collect()
                } else {
                    (len..width).map(|i| padc[i % padc.len()]).collect()
                };
                if bi == LeftPad {
                    out.push_str(&filler);
                    out.push_str(&s);
                } else {
                    out.push_str(&s);
                    out.push_str(&filler);
                }
            }
            vm.arena_str(&out)
        }
        HasContent => Value::Bool(match recv {
            Value::Missing => false,
            Value::Str(s) => !s.is_empty(),
            Value::Empty => false,
            Value::Arena(a, b) => a != b,
            Value::Json(j) => match (j.as_array(), j.as_object()) {
                (Some(a), _) => !a.is_empty(),
                (_, Some(o)) => !o.is_empty(),
                _ => true,
            },
            Value::Seq(_, n) | Value::Coll(_, n) | Value::Hash(_, n) => n > 0,
            Value::Range(r) => r.len != Some(0),
            _ => true,
        }),
        IsString => Value::Bool(vm.str_of(&recv).is_some()),
        IsNumber => Value::Bool(matches!(recv, Value::Num(_))),
        IsBoolean => Value::Bool(matches!(recv, Value::Bool(_))),
        IsSequence | IsIndexable => Value::Bool(is_seq(&recv)),
        IsHash => Value::Bool(matches!(
            recv,
            Value::Json(_) | Value::Hash(..) | Value::Util | Value::Statics | Value::Empty
        )),
        IsHashEx => Value::Bool(is_hash_ex(&recv)),
        IsCollection | IsCollectionEx => Value::Bool(matches!(recv, Value::Coll(..))),
        IsEnumerable => Value::Bool(is_seq(&recv)),
        IsDate | IsDateLike => Value::Bool(matches!(recv, Value::Date(_))),
        IsMacro | IsDirective => {
            Value::Bool(matches!(recv, Value::Macro(m) if !vm.p.macros[m as usize].function))
        }
        IsFunction => {
            Value::Bool(matches!(recv, Value::Macro(m) if vm.p.macros[m as usize].function))
        }
        IsMethod => Value::Bool(matches!(recv, Value::Method(..))),
        IsMarkupOutput => Value::Bool(matches!(recv, Value::Markup(..))),
        Switch => {
            if args.len() < 2 {
                return Err(fail(dbg, "?switch needs at least 2 arguments"));
            }
            let mut i = 0;
            while i + 1 < args.len() {
                if vm.values_equal(&recv, &args[i], dbg)? {
                    return Ok(args[i + 1]);
                }
                i += 2;
            }
            if args.len() % 2 == 1 {
                args[args.len() - 1]
            } else {
                return Err(fail(
                    dbg,
                    "The value before ?switch didn't match any of the case parameters, and there was no default value parameter",
                ));
            }
        }
        Datetime | Date | Time | DatetimeIso | DateIso | TimeIso => {
            let kind = match bi {
                Date | DateIso => DateKind::Date,
                Time | TimeIso => DateKind::Time,
                _ => DateKind::DateTime,
            };
            match recv {
                Value::Date(d) => {
                    if d.kind == kind || matches!(d.kind, DateKind::Unknown | DateKind::DateTime) {
                        Value::Date(d.with_kind(kind))
                    } else {
                        let name = |k: DateKind| match k {
                            DateKind::Date => "DATE",
                            DateKind::Time => "TIME",
                            DateKind::DateTime => "DATETIME",
                            DateKind::Unknown => "UNKNOWN",
                        };
                        return Err(fail(
                            dbg,
                            format!("Cannot convert {} to {}", name(d.kind), name(kind)),
                        ));
                    }
                }
                _ => {
                    want_args(bi, args, 0, 1, dbg)?;
                    let s = text!(vm, recv, bi, dbg);
                    let spec: &str = if matches!(bi, DatetimeIso | DateIso | TimeIso) {
                        "iso"
                    } else if let Some(a) = args.first() {
                        match a {
                            Value::Str(p) => p,
                            _ => return Err(fail(dbg, "The date format must be a string")),
                        }
                    } else {
                        vm.date_spec(kind)
                    };
                    let f = DateFormat::new(spec, kind).map_err(num_err(dbg))?;
                    let d = f.parse(s, kind).map_err(|e| {
                        fail(
                            dbg,
                            format!("{e}\nThe blamed expression:\n==> {}", vm.dbg_text(dbg)),
                        )
                    })?;
                    Value::Date(d)
                }
            }
        }
        IsoUtc | IsoUtcMs | IsoLocal | IsoUtcNz | IsoUtcMsNz | IsoUtcM | IsoUtcMNz | IsoUtcH
        | IsoUtcHNz | IsoUtcFz | IsoLocalMs | IsoLocalNz | IsoLocalMsNz => {
            let Value::Date(d) = recv else {
                return Err(vm.type_error(
                    dbg,
                    &format!("?{}\" left-hand operand", bi.name()),
                    "a date",
                    &recv,
                ));
            };
            let Some(f) = format::date::IsoFormat::builtin(bi.name()) else {
                return Err(fail(dbg, format!("?{} is not supported", bi.name())));
            };
            vm.scratch.clear();
            f.write(&d, &mut vm.scratch).map_err(num_err(dbg))?;
            vm.scratch_to_arena()?
        }
        NumberToDatetime | NumberToDate | NumberToTime => {
            let n = number_of(vm, &recv, bi, dbg)?;
            let kind = match bi {
                NumberToDate => DateKind::Date,
                NumberToTime => DateKind::Time,
                _ => DateKind::DateTime,
            };
            Value::Date(format::date::from_epoch_millis(n.long_value(), kind))
        }
        KeepBefore | KeepAfter | KeepBeforeLast | KeepAfterLast | RemoveBeginning
        | RemoveEnding | EnsureStartsWith | EnsureEndsWith => {
            want_args(bi, args, 1, 2, dbg)?;
            let needle = text!(vm, args[0], bi, dbg).to_string();
            let s = text!(vm, recv, bi, dbg).to_string();
            let r: std::string::String = match bi {
                KeepBefore => s.find(&needle).map_or(s.clone(), |i| s[..i].to_string()),
                KeepAfter => s.find(&needle).map_or(std::string::String::new(), |i| {
                    s[i + needle.len()..].to_string()
                }),
                KeepBeforeLast => s.rfind(&needle).map_or(s.clone(), |i| s[..i].to_string()),
                KeepAfterLast => s.rfind(&needle).map_or(std::string::String::new(), |i| {
                    s[i + needle.len()..].to_string()
                }),
                RemoveBeginning => s.strip_prefix(&needle).unwrap_or(&s).to_string(),
                RemoveEnding => s.strip_suffix(&needle).unwrap_or(&s).to_string(),
                EnsureStartsWith => {
                    if s.starts_with(&needle) {
                        s.clone()
                    } else {
                        format!("{needle}{s}")
                    }
                }
                _ => {
                    if s.ends_with(&needle) {
                        s.clone()
                    } else {
                        format!("{s}{needle}")
                    }
                }
            };
            vm.arena_str(&r)
        }
        Filter | Map => {
            want_args(bi, args, 1, 1, dbg)?;
            let f = args[0];
            let base_sp = vm.stack.len();
            let n = vm.push_items(recv, dbg, &format!("?{}\" left-hand operand", bi.name()))?;
            let mut kept = 0;
            for i in 0..n {
                let item = vm.stack[base_sp + i];
                let r = match f {
                    Value::Lambda(l) => vm.call_lambda(l, item, base, loop_base)?,
                    other => {
                        vm.stack.truncate(base_sp);
                        return Err(vm.type_error(
                            dbg,
                            &format!("?{}\" parameter", bi.name()),
                            "a lambda",
                            &other,
                        ));
                    }
                };
                if bi == Filter {
                    match r {
                        Value::Bool(true) => {
                            vm.stack[base_sp + kept] = item;
                            kept += 1;
                        }
                        Value::Bool(false) => {}
                        other => {
                            vm.stack.truncate(base_sp);
                            return Err(vm.type_error(
                                dbg,
                                "?filter\" lambda result",
                                "a boolean",
                                &other,
                            ));
                        }
                    }
                } else {
                    vm.stack[base_sp + kept] = r;
                    kept += 1;
                }
            }
            vm.stack.truncate(base_sp + kept);
            vm.make_seq(kept)
        }
        NoEsc => {
            let s = text!(vm, recv, bi, dbg).to_string();
            match vm.arena_str(&s) {
                Value::Arena(a, b) => Value::Markup(a, b),
                v => v,
            }
        }
        Esc => {
            let v = map_str(vm, recv, bi, dbg, escape::html)?;
            match v {
                Value::Arena(a, b) => Value::Markup(a, b),
                v => v,
            }
        }
        Default | IfExists => {
            if recv.is_missing() {
                args.first().copied().unwrap_or(Value::Str(""))
            } else {
                recv
            }
        }
        Min | Max => {
            let base_sp = vm.stack.len();
            let n = vm.push_items(recv, dbg, "?min\" left-hand operand")?;
            let mut best: Option<Value<'a>> = None;
            for i in 0..n {
                let item = vm.stack[base_sp + i];
                if item.is_missing() {
                    continue;
                }
                best = Some(match best {
                    None => item,
                    Some(b) => {
                        let (Value::Num(x), Value::Num(y)) = (b, item) else {
                            vm.stack.truncate(base_sp);
                            return Err(fail(dbg, "?min/?max only support numbers"));
                        };
                        let ord = x.compare(&y).map_err(num_err(dbg))?;
                        if (bi == Min && ord.is_gt()) || (bi == Max && ord.is_lt()) {
                            item
                        } else {
                            b
                        }
                    }
                });
            }
            vm.stack.truncate(base_sp);
            best.unwrap_or(Value::Missing)
        }
        WordList => {
            let s = text!(vm, recv, bi, dbg).to_string();
            let mut n = 0;
            for w in s.split_whitespace() {
                let v = vm.arena_str(w);
                vm.stack.push(v);
                n += 1;
            }
            vm.make_seq(n)
        }
        Chunk => return Err(fail(dbg, "?chunk is not supported")),
    })
}

fn string_builtin<'a>(
    vm: &mut Vm<'a, '_>,
    bi: Bi,
    recv: Value<'a>,
    args: &[Value<'a>],
    dbg: u32,
) -> VResult<Value<'a>> {
    use Bi::*;
    let style = match bi {
        StringShort => Some("short"),
        StringMedium => Some("medium"),
        StringLong => Some("long"),
        StringFull => Some("full"),
        StringIso => Some("iso"),
        StringXs => Some("xs"),
        StringIsoMNz => Some("iso_m_nz"),
        StringNumber => Some("number"),
        StringComputer => Some("computer"),
        StringCurrency => Some("currency"),
        StringPercent => Some("percent"),
        _ => None,
    };
    if let [Value::Range(r)] = args {
        // `x?string[1..2]`: the brackets slice the string rather than give a format.
        let text = string_builtin(vm, bi, recv, &[], dbg)?;
        return vm.slice(text, *r, dbg);
    }
    let max_args = match recv {
        Value::Bool(_) => 2,
        _ => 1,
    };
    if args.len() > max_args || (matches!(recv, Value::Bool(_)) && args.len() == 1) {
        return Err(fail(
            dbg,
            format!(
                "?string(...) expects {} argument but has received {}.",
                if max_args == 2 { "0 or 2" } else { "1" },
                args.len()
            ),
        ));
    }
    match recv {
        Value::Num(n) => {
            vm.scratch.clear();
            let spec: Option<std::string::String> = match (style, args.first()) {
                (Some(s), _) => Some(s.to_string()),
                (None, Some(a)) => Some(text!(vm, *a, bi, dbg).to_string()),
                (None, None) => None,
            };
            match spec {
                None => vm.scalar_to_scratch(recv, dbg)?,
                Some(s) if s == "computer" => n.write_computer(&mut vm.scratch),
                Some(s) => {
                    let f = NumberFormat::new(&s).map_err(num_err(dbg))?;
                    super::format_number(&f, &n, vm.settings.comma_decimal, &mut vm.scratch)
                        .map_err(num_err(dbg))?;
                }
            }
            vm.scratch_to_arena()
        }
        Value::Bool(b) => {
            if args.len() >= 2 {
                Ok(if b { args[0] } else { args[1] })
            } else {
                let s = vm.bool_text(b).to_string();
                Ok(vm.arena_str(&s))
            }
        }
        Value::Date(d) => {
            let spec: std::string::String = match (style, args.first()) {
                (Some(s), _) => s.to_string(),
                (None, Some(a)) => text!(vm, *a, bi, dbg).to_string(),
                (None, None) => vm.date_spec(d.kind).to_string(),
            };
            let f = DateFormat::new(&spec, d.kind).map_err(num_err(dbg))?;
            vm.scratch.clear();
            f.format(&d, &mut vm.scratch).map_err(num_err(dbg))?;
            vm.scratch_to_arena()
        }
        Value::Str(_) | Value::Arena(..) | Value::Markup(..) | Value::Empty if style.is_some() => {
            Err(fail(
                dbg,
                format!(
                    "For \".\" left-hand operand: Expected a hash, but this has evaluated to a string:\n==> {}?string",
                    vm.dbg_text(dbg)
                ),
            ))
        }
        Value::Str(_) | Value::Arena(..) | Value::Markup(..) | Value::Empty if !args.is_empty() => {
            Err(fail(
                dbg,
                format!(
                    "For \"...(...)\" callee: Expected a method or function, but this has evaluated to a string:\n==> {}?string",
                    vm.dbg_text(dbg)
                ),
            ))
        }
        Value::Str(_) | Value::Arena(..) | Value::Markup(..) | Value::Empty => Ok(recv),
        other => Err(vm.type_error(
            dbg,
            "?string\" left-hand operand",
            "a string, number, boolean or date",
            &other,
        )),
    }
}

/// Equality used by `?seq_contains`: values of different types are simply not equal.
fn loose_eq<'a>(vm: &Vm<'a, '_>, a: &Value<'a>, b: &Value<'a>) -> bool {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => x.num_eq(y).unwrap_or(false),
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Date(x), Value::Date(y)) => x.millis == y.millis,
        _ => match (vm.str_of(a), vm.str_of(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// Base letter of common accented Latin letters (the collator's primary strength ignores accents).
fn base_letter(c: char) -> (char, bool) {
    const TABLE: &[(&str, char)] = &[
        ("ÀÁÂÃÄÅàáâãäåĀāĂăĄą", 'a'),
        ("ÇçĆćČč", 'c'),
        ("ÈÉÊËèéêëĒēĘęĚě", 'e'),
        ("ÌÍÎÏìíîïĪīİı", 'i'),
        ("ÑñŃńŇň", 'n'),
        ("ÒÓÔÕÖØòóôõöøŌō", 'o'),
        ("ÙÚÛÜùúûüŪūŮů", 'u'),
        ("ÝýÿŸ", 'y'),
        ("ŚśŠšŞş", 's'),
        ("ŹźŻżŽž", 'z'),
    ];
    for (set, base) in TABLE {
        if set.contains(c) {
            return (*base, true);
        }
    }
    (c, false)
}

fn collate(a: &str, b: &str) -> std::cmp::Ordering {
    // Approximates Java's en_US Collator: white-space is ignorable; punctuation and symbols sort
    // before digits, digits before letters; letters compare without accents and case first,
    // then unaccented before accented, then lower case before upper case.
    const PUNCT: &str = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$";
    fn primary(s: &str) -> impl Iterator<Item = (u8, u32)> + '_ {
        s.chars().filter(|c| !c.is_whitespace()).map(|c| {
            if c.is_alphabetic() {
                let (b, _) = base_letter(c);
                (2, b.to_lowercase().next().unwrap_or(b) as u32)
            } else if c.is_numeric() {
                (1, c as u32)
            } else {
                (0, PUNCT.find(c).map_or(1000 + c as u32, |i| i as u32))
            }
        })
    }
    fn secondary(s: &str) -> impl Iterator<Item = bool> + '_ {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| base_letter(c).1)
    }
    fn tertiary(s: &str) -> impl Iterator<Item = bool> + '_ {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.is_uppercase())
    }
    primary(a)
        .cmp(primary(b))
        .then_with(|| secondary(a).cmp(secondary(b)))
        .then_with(|| tertiary(a).cmp(tertiary(b)))
        .then_with(|| a.cmp(b))
}

fn sort<'a>(
    vm: &mut Vm<'a, '_>,
    bi: Bi,
    recv: Value<'a>,
    args: &[Value<'a>],
    dbg: u32,
) -> VResult<Value<'a>> {
    // `?sort_by` key: one name, or a sequence of names walking into nested hashes.
    let mut path: Vec<std::string::String> = Vec::new();
    if bi == Bi::SortBy {
        want_args(bi, args, 1, 1, dbg)?;
        if let Some(k) = vm.str_of(&args[0]) {
            path.push(k.to_string());
        } else {
            let sp = vm.stack.len();
            let m = vm.push_items(args[0], dbg, "?sort_by\" argument")?;
            for i in 0..m {
                let v = vm.stack[sp + i];
                let Some(k) = vm.str_of(&v) else {
                    vm.stack.truncate(sp);
                    return Err(fail(
                        dbg,
                        format!("The argument to ?sort_by(key), when it's a sequence, must be a sequence of strings, but the item at index {i} is not a string."),
                    ));
                };
                path.push(k.to_string());
            }
            vm.stack.truncate(sp);
        }
    }
    let base_sp = vm.stack.len();
    let n = vm.push_items(recv, dbg, "?sort\" left-hand operand")?;
    if n == 0 {
        // FreeMarker returns an empty sequence itself (a JSON array stays a hash too).
        return Ok(recv);
    }
    // Sort keys: the items themselves, or their `key` sub-variable.
    let mut keys: Vec<(Value<'a>, usize)> = Vec::with_capacity(n);
    for i in 0..n {
        let item = vm.stack[base_sp + i];
        let key = if bi == Bi::SortBy {
            let mut cur = item;
            for k in &path {
                cur = match cur {
                    Value::Json(j) => j
                        .as_object()
                        .and_then(|o| o.get(k.as_str()))
                        .map_or(Value::Missing, Value::from_tape),
                    Value::Hash(s, len) => vm.hash_get(s, len, k),
                    _ => Value::Missing,
                };
            }
            cur
        } else {
            item
        };
        keys.push((key, i));
    }
    let first_is_num = keys
        .first()
        .is_some_and(|(k, _)| matches!(k, Value::Num(_)));
    for (i, (k, _)) in keys.iter().enumerate() {
        let ok = if first_is_num {
            matches!(k, Value::Num(_))
        } else {
            vm.str_of(k).is_some() || matches!(k, Value::Bool(_) | Value::Date(_))
        };
        if !ok {
            vm.stack.truncate(base_sp);
            return Err(fail(
                dbg,
                format!(
                    "?{} failed at sequence index {i} (0-based): All values in the sequence must be {}, because the first value was that. However, the value of the current item isn't {} but {} {}.",
                    bi.name(),
                    if first_is_num { "numbers" } else { "strings" },
                    if first_is_num { "a number" } else { "a string" },
                    article(k.type_name()),
                    k.type_name()
                ),
            ));
        }
    }
    let mut err = None;
    keys.sort_by(|(a, _), (b, _)| match (a, b) {
        (Value::Num(x), Value::Num(y)) => x.compare(y).unwrap_or_else(|e| {
            err.get_or_insert(e);
            std::cmp::Ordering::Equal
        }),
        (Value::Date(x), Value::Date(y)) => x.millis.cmp(&y.millis),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => collate(vm.str_of(a).unwrap_or(""), vm.str_of(b).unwrap_or("")),
    });
    if let Some(e) = err {
        vm.stack.truncate(base_sp);
        return Err(fail(dbg, e.to_string()));
    }
    let start = vm.seqs.len() as u32;
    for (_, i) in &keys {
        let v = vm.stack[base_sp + i];
        vm.seqs.push(v);
    }
    vm.stack.truncate(base_sp);
    Ok(Value::Seq(start, n as u32))
}

/// Serialises a value as Jackson does (`UtilClass.toJsonString`).
pub(crate) fn write_json<'a>(
    vm: &Vm<'a, '_>,
    v: Value<'a>,
    out: &mut BytesMut,
    depth: u32,
) -> Result<(), std::string::String> {
    if depth > 200 {
        return Err("value nested too deeply to serialise".into());
    }
    match v {
        Value::Missing => out.extend_from_slice(b"null"),
        Value::Str(s) => escape::jackson_string(s, out),
        Value::Empty => out.extend_from_slice(b"\"\""),
        Value::Arena(a, b) | Value::Markup(a, b) => {
            escape::jackson_string(&vm.arena[a as usize..b as usize], out)
        }
        Value::Num(n) => n.write_jackson(out),
        Value::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Value::Date(DateValue { millis, .. }) => {
            out.extend_from_slice(millis.to_string().as_bytes())
        }
        Value::Json(j) => {
            if let Some(a) = j.as_array() {
                out.extend_from_slice(b"[");
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b",");
                    }
                    write_json(vm, Value::from_tape(item), out, depth + 1)?;
                }
                out.extend_from_slice(b"]");
            } else if let Some(o) = j.as_object() {
                out.extend_from_slice(b"{");
                for (i, (k, item)) in o.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b",");
                    }
                    escape::jackson_string(k, out);
                    out.extend_from_slice(b":");
                    write_json(vm, Value::from_tape(item), out, depth + 1)?;
                }
                out.extend_from_slice(b"}");
            }
        }
        Value::Seq(s, n) | Value::Coll(s, n) => {
            out.extend_from_slice(b"[");
            for i in 0..n {
                if i > 0 {
                    out.extend_from_slice(b",");
                }
                write_json(vm, vm.seqs[(s + i) as usize], out, depth + 1)?;
            }
            out.extend_from_slice(b"]");
        }
        Value::Range(r) => {
            out.extend_from_slice(b"[");
            for i in 0..r.len.unwrap_or(0).min(1_000_000) as i64 {
                if i > 0 {
                    out.extend_from_slice(b",");
                }
                out.extend_from_slice((r.start + i * r.step).to_string().as_bytes());
            }
            out.extend_from_slice(b"]");
        }
        Value::Hash(s, n) => {
            out.extend_from_slice(b"{");
            for i in 0..n {
                if i > 0 {
                    out.extend_from_slice(b",");
                }
                let (k, item) = vm.hashes[(s + i) as usize];
                escape::jackson_string(vm.str_of(&k).unwrap_or(""), out);
                out.extend_from_slice(b":");
                write_json(vm, item, out, depth + 1)?;
            }
            out.extend_from_slice(b"}");
        }
        Value::Method(Method::ToJson, _) | Value::Util | Value::Statics => {
            out.extend_from_slice(b"{}")
        }
        other => {
            return Err(format!(
                "Can't serialise {} {} as JSON",
                article(other.type_name()),
                other.type_name()
            ))
        }
    }
    Ok(())
}
