//! Runtime values. All are `Copy`: strings are borrowed from the input tape or the template's
//! constants, or are ranges of the per-render string arena; sequences and hashes built at run time
//! are ranges of per-render pools. Nothing here owns heap memory, so a render allocates only
//! when a pool grows past what earlier renders needed.

use simd_json::prelude::*;
use simd_json::tape::Value as TapeValue;

use crate::template::format::{DateValue, Number};

/// Java list methods a JSON array answers (`.iterator()`, `.size()`, `.isEmpty()`), and
/// `UtilClass.toJsonString` / `toJson`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `list.iterator()`: the list itself.
    Iterator,
    /// `list.size()`.
    Size,
    /// `list.isEmpty()`.
    IsEmpty,
    /// `UtilClass.toJsonString(v)` / `toJson(v)`.
    ToJson,
}

/// A numeric range (`1..3`, `0..<n`, `1..*3`, `1..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First value.
    pub start: i64,
    /// Number of items (`None`: unbounded).
    pub len: Option<u64>,
    /// +1 or -1.
    pub step: i64,
    /// `a..*n`: slicing with it stops at the end of the sliced value instead of failing.
    pub adaptive: bool,
}

/// A value.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Missing or JSON null.
    Missing,
    /// What `x!` gives when `x` is missing and no default is written: an empty string that is
    /// also an empty sequence and an empty hash.
    Empty,
    /// A string borrowed from the input or the template.
    Str(&'a str),
    /// A string in the render's arena (`start..end`).
    Arena(u32, u32),
    /// A number.
    Num(Number),
    /// A boolean.
    Bool(bool),
    /// A date.
    Date(DateValue),
    /// A JSON array or object from the input.
    Json(TapeValue<'a, 'a>),
    /// A sequence built at run time: `start..start+len` of the sequence pool.
    Seq(u32, u32),
    /// A sequence that is also a collection (`?keys`, `?values`): like `Seq`.
    Coll(u32, u32),
    /// A hash built at run time: `start..start+len` of the hash pool.
    Hash(u32, u32),
    /// A numeric range.
    Range(Range),
    /// A method bound to its receiver (the receiver is a JSON array, or unused).
    Method(Method, Option<TapeValue<'a, 'a>>),
    /// `UtilClass`.
    Util,
    /// `statics`.
    Statics,
    /// A macro or function.
    Macro(u32),
    /// A lambda.
    Lambda(u32),
    /// Markup output (`?no_esc` under an HTML output format): arena range, printed as is.
    Markup(u32, u32),
}

impl<'a> Value<'a> {
    /// Converts a tape value: scalars become plain values, null becomes missing, arrays and
    /// objects stay on the tape.
    #[inline(always)]
    pub fn from_tape(v: TapeValue<'a, 'a>) -> Value<'a> {
        // Strings first, inlined into the caller: by far the most common leaf in event
        // payloads.
        if let Some(s) = v.into_string() {
            return Value::Str(s);
        }
        Value::from_tape_other(v)
    }

    /// [`Value::from_tape`] for everything but strings.
    #[inline(never)]
    fn from_tape_other(v: TapeValue<'a, 'a>) -> Value<'a> {
        // Objects and arrays next (list items, nested properties).
        if v.is_object() || v.is_array() {
            return Value::Json(v);
        }
        match v.value_type() {
            ValueType::Null => Value::Missing,
            ValueType::Bool => Value::Bool(v.as_bool().unwrap_or(false)),
            ValueType::String => Value::Str(v.into_string().unwrap_or("")),
            ValueType::I64 => Value::Num(Number::from_json_i64(v.as_i64().unwrap_or(0))),
            ValueType::U64 => Value::Num(Number::from_json_u64(v.as_u64().unwrap_or(0))),
            ValueType::F64 => Value::Num(Number::Double(v.as_f64().unwrap_or(0.0))),
            ValueType::Array | ValueType::Object => Value::Json(v),
            _ => {
                // 128-bit integers: through their JSON text.
                let text = v.encode();
                match Number::from_json_integer_text(&text) {
                    Ok(n) => Value::Num(n),
                    Err(_) => Value::Num(Number::Double(text.parse().unwrap_or(f64::NAN))),
                }
            }
        }
    }

    /// `true` for missing.
    pub fn is_missing(&self) -> bool {
        matches!(self, Value::Missing)
    }

    /// FreeMarker's type description for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Missing => "null or missing",
            Value::Str(_) | Value::Arena(..) | Value::Empty => "string",
            Value::Num(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Date(_) => "date",
            Value::Json(v) => {
                if v.is_array() {
                    "sequence+hash"
                } else {
                    "extended_hash"
                }
            }
            Value::Seq(..) | Value::Range(_) => "sequence",
            Value::Coll(..) => "collection+sequence",
            Value::Hash(..) => "extended_hash",
            Value::Method(..) => "method",
            Value::Util | Value::Statics => "hash",
            Value::Macro(_) => "macro",
            Value::Lambda(_) => "lambda",
            Value::Markup(..) => "markup output",
        }
    }
}
