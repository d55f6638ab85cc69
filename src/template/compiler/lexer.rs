//! The expression lexer: turns the inside of `${...}` and of directive tags into tokens. Template
//! text itself is scanned by the parser, which calls this lexer at the positions where FTL
//! expressions start.

/// A token and the byte range it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Token<'s> {
    /// What it is.
    pub tok: Tok<'s>,
    /// Byte offset of its first character.
    pub start: usize,
    /// Byte offset just past it.
    pub end: usize,
}

/// Token kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok<'s> {
    /// A name (`input`, `as`, `gte`, `true`...).
    Ident(&'s str),
    /// A string literal, already unescaped; `raw` for `r"..."` (no interpolation).
    Str {
        /// The unescaped value.
        value: String,
        /// `r"..."`.
        raw: bool,
    },
    /// A number literal's text.
    Num(&'s str),
    /// Punctuation and operators, e.g. `"=="`, `"..<"`, `"/>"`.
    Op(&'static str),
    /// End of input.
    Eof,
}

/// A lexical error: message and byte offset.
#[derive(Debug, Clone)]
pub struct LexError {
    /// What is wrong.
    pub message: String,
    /// Where.
    pub at: usize,
}

const OPS: &[&str] = &[
    "..<", "..!", "..*", "...", "->", "==", "!=", "<=", ">=", "&&", "||", "??", "..", "++", "--",
    "+=", "-=", "*=", "/=", "%=", "/>", "/]", "(", ")", "[", "]", "{", "}", ",", ".", "?", "!",
    "=", "<", ">", "+", "-", "*", "/", "%", ":", ";", "&", "|",
];

/// `true` for characters that may start an FTL identifier.
pub fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$' || c == '@'
}

/// `true` for characters that may continue an FTL identifier.
pub fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$' || c == '@'
}

/// Reads one token at `pos` (skipping white-space and `<#-- -->` comments).
pub fn lex(src: &str, mut pos: usize) -> Result<Token<'_>, LexError> {
    let bytes = src.as_bytes();
    loop {
        while pos < bytes.len() && (bytes[pos] as char).is_ascii_whitespace() {
            pos += 1;
        }
        if src[pos..].starts_with("<#--") || src[pos..].starts_with("[#--") {
            let close = if bytes[pos] == b'<' { "-->" } else { "--]" };
            match src[pos + 4..].find(close) {
                Some(i) => {
                    pos = pos + 4 + i + 3;
                    continue;
                }
                None => {
                    return Err(LexError {
                        message: "unclosed comment".into(),
                        at: pos,
                    })
                }
            }
        }
        break;
    }
    let start = pos;
    if pos >= bytes.len() {
        return Ok(Token {
            tok: Tok::Eof,
            start,
            end: start,
        });
    }
    let rest = &src[pos..];
    let c = rest.chars().next().unwrap_or('\0');
    // Raw string r"..." / r'...'
    if (c == 'r') && (rest[1..].starts_with('"') || rest[1..].starts_with('\'')) {
        let q = rest.as_bytes()[1];
        let body = &rest[2..];
        return match body.bytes().position(|b| b == q) {
            Some(i) => Ok(Token {
                tok: Tok::Str {
                    value: body[..i].to_string(),
                    raw: true,
                },
                start,
                end: pos + 2 + i + 1,
            }),
            None => Err(LexError {
                message: "unclosed string literal".into(),
                at: start,
            }),
        };
    }
    if is_ident_start(c) {
        let mut end = pos;
        for ch in rest.chars() {
            if is_ident_char(ch) {
                end += ch.len_utf8();
            } else if ch == '\\' {
                // FTL allows `\-`, `\.`, `\:` escapes in names; treat as end (unsupported).
                break;
            } else {
                break;
            }
        }
        return Ok(Token {
            tok: Tok::Ident(&src[pos..end]),
            start,
            end,
        });
    }
    if c.is_ascii_digit() {
        let mut end = pos;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
            end += 1;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
        }
        return Ok(Token {
            tok: Tok::Num(&src[pos..end]),
            start,
            end,
        });
    }
    if c == '"' || c == '\'' {
        return lex_string(src, pos, c);
    }
    for op in OPS {
        if rest.starts_with(op) {
            return Ok(Token {
                tok: Tok::Op(op),
                start,
                end: pos + op.len(),
            });
        }
    }
    Err(LexError {
        message: format!("unexpected character {c:?}"),
        at: start,
    })
}

/// Unescapes the raw content of a string literal written with `quote` (offsets in errors are
/// relative to `content`).
pub fn unescape(content: &str, quote: char) -> Result<String, LexError> {
    let mut wrapped = String::with_capacity(content.len() + 2);
    wrapped.push(quote);
    wrapped.push_str(content);
    wrapped.push(quote);
    match lex_string(&wrapped, 0, quote)? {
        Token {
            tok: Tok::Str { value, .. },
            end,
            ..
        } if end == wrapped.len() => Ok(value),
        _ => Err(LexError {
            message: "malformed string literal".into(),
            at: 0,
        }),
    }
}

fn lex_string(src: &str, start: usize, quote: char) -> Result<Token<'_>, LexError> {
    let mut value = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((i, ch)) = chars.next() {
        let abs = start + 1 + i;
        if ch == quote {
            return Ok(Token {
                tok: Tok::Str { value, raw: false },
                start,
                end: abs + 1,
            });
        }
        if ch != '\\' {
            value.push(ch);
            continue;
        }
        let Some((_, e)) = chars.next() else {
            break;
        };
        match e {
            'n' => value.push('\n'),
            't' => value.push('\t'),
            'r' => value.push('\r'),
            'f' => value.push('\u{c}'),
            'b' => value.push('\u{8}'),
            'l' => value.push('<'),
            'g' => value.push('>'),
            'a' => value.push('&'),
            '\\' | '"' | '\'' | '{' | '$' | '=' => value.push(e),
            'x' => {
                let mut code = 0u32;
                let mut n = 0;
                let mut look = chars.clone();
                while n < 4 {
                    match look.clone().next() {
                        Some((_, h)) if h.is_ascii_hexdigit() => {
                            code = code * 16 + h.to_digit(16).unwrap_or(0);
                            look.next();
                            n += 1;
                        }
                        _ => break,
                    }
                }
                if n == 0 {
                    return Err(LexError {
                        message: "\\x must be followed by hexadecimal digits".into(),
                        at: abs,
                    });
                }
                chars = look;
                value.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            other => {
                return Err(LexError {
                    message: format!(
                        "Lexical error: encountered {other:?} after \"\\\" in a string literal"
                    ),
                    at: abs + 1,
                })
            }
        }
    }
    Err(LexError {
        message: "unclosed string literal".into(),
        at: start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok<'_>> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let t = lex(s, pos).unwrap();
            if t.tok == Tok::Eof {
                return out;
            }
            pos = t.end;
            out.push(t.tok);
        }
    }

    #[test]
    fn numbers_and_ranges() {
        assert_eq!(
            toks("1..3 1.5"),
            vec![Tok::Num("1"), Tok::Op(".."), Tok::Num("3"), Tok::Num("1.5")]
        );
        assert_eq!(
            toks("0..<n"),
            vec![Tok::Num("0"), Tok::Op("..<"), Tok::Ident("n")]
        );
    }

    #[test]
    fn string_escapes() {
        let t = toks(r#""a\nb\x41\x0042\l\g\a""#);
        assert_eq!(
            t,
            vec![Tok::Str {
                value: "a\nbAB<>&".into(),
                raw: false
            }]
        );
        assert!(lex(r#""\u0041""#, 0).is_err());
    }
}
