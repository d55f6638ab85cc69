//! FreeMarker's white-space stripping, applied to the element tree after parsing, exactly as
//! FreeMarker 2.3.31 does it in `TextBlock.postParseCleanup`: a text block loses its opening line
//! break (and the white-space before it) when only tags sit before it on that line, and its
//! trailing indentation when only tags follow on the line; white-space-only blocks between
//! non-outputting elements (`#assign`, `#macro`, `#setting`, comments) vanish; `#t`, `#lt`, `#rt`
//! and `#nt` trim deliberately; the very first top-level text block is never stripped.

use super::ast::{Node, NodeKind};

type Path = Vec<usize>;

fn get<'a>(root: &'a Node, path: &[usize]) -> &'a Node {
    let mut n = root;
    for &i in path {
        n = &n.children[i];
    }
    n
}

fn get_mut<'a>(root: &'a mut Node, path: &[usize]) -> &'a mut Node {
    let mut n = root;
    for &i in path {
        n = &mut n.children[i];
    }
    n
}

fn is_leaf(n: &Node) -> bool {
    n.children.is_empty() || matches!(n.kind, NodeKind::Macro { .. } | NodeKind::Capture(..))
}

fn last_leaf(root: &Node, mut p: Path) -> Path {
    loop {
        let n = get(root, &p);
        if is_leaf(n) {
            return p;
        }
        p.push(n.children.len() - 1);
    }
}

fn first_leaf(root: &Node, mut p: Path) -> Path {
    loop {
        let n = get(root, &p);
        if is_leaf(n) {
            return p;
        }
        p.push(0);
    }
}

fn prev_terminal(root: &Node, path: &[usize]) -> Option<Path> {
    let mut p = path.to_vec();
    loop {
        let i = p.pop()?;
        if i > 0 {
            p.push(i - 1);
            return Some(last_leaf(root, p));
        }
    }
}

fn next_terminal(root: &Node, path: &[usize]) -> Option<Path> {
    let mut p = path.to_vec();
    loop {
        let i = p.pop()?;
        let parent = get(root, &p);
        if i + 1 < parent.children.len() {
            p.push(i + 1);
            return Some(first_leaf(root, p));
        }
    }
}

fn java_ws(c: char) -> bool {
    c.is_whitespace() && c != '\u{a0}' && c != '\u{2007}' && c != '\u{202f}'
}

fn trimmable(s: &str) -> bool {
    s.chars().all(|c| c <= ' ')
}

fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

fn text_of(n: &Node) -> Option<&str> {
    match &n.kind {
        NodeKind::Text(t) => Some(t),
        _ => None,
    }
}

fn non_outputting(n: &Node) -> bool {
    matches!(
        n.kind,
        NodeKind::Macro { .. }
            | NodeKind::Assign(..)
            | NodeKind::Setting(..)
            | NodeKind::Comment
            | NodeKind::Include
    )
}

fn is_ignorable(root: &Node, path: &[usize]) -> bool {
    let n = get(root, path);
    let Some(text) = text_of(n) else {
        return false;
    };
    if text.is_empty() {
        return true;
    }
    if !trimmable(text) {
        return false;
    }
    let (i, parent_path) = match path.split_last() {
        Some((i, p)) => (*i, p),
        None => return false,
    };
    let parent = get(root, parent_path);
    let top = matches!(parent.kind, NodeKind::Root);
    let prev = if i > 0 {
        Some(&parent.children[i - 1])
    } else {
        None
    };
    let next = parent.children.get(i + 1);
    let prev_ok = match prev {
        None => top,
        Some(p) => non_outputting(p),
    };
    let next_ok = match next {
        None => top,
        Some(p) => non_outputting(p),
    };
    prev_ok && next_ok
}

/// FreeMarker's `heedsOpeningWhitespace`: does this element, sitting before a text block on the
/// same line, keep that block's opening line break? (Scans a text block from its end.)
fn heeds_opening(root: &Node, path: &[usize]) -> bool {
    let n = get(root, path);
    match &n.kind {
        NodeKind::Interp(_) => true,
        NodeKind::Text(t) => {
            if is_ignorable(root, path) {
                return false;
            }
            for c in t.chars().rev() {
                if c == '\n' || c == '\r' {
                    return false;
                }
                if !java_ws(c) {
                    return true;
                }
            }
            true
        }
        _ => false,
    }
}

/// FreeMarker's `heedsTrailingWhitespace` (scans a text block from its start).
fn heeds_trailing(root: &Node, path: &[usize]) -> bool {
    let n = get(root, path);
    match &n.kind {
        NodeKind::Interp(_) => true,
        NodeKind::Text(t) => {
            if is_ignorable(root, path) {
                return false;
            }
            for c in t.chars() {
                if c == '\n' || c == '\r' {
                    return false;
                }
                if !java_ws(c) {
                    return true;
                }
            }
            true
        }
        _ => false,
    }
}

fn first_nl(t: &str) -> Option<usize> {
    t.find(['\n', '\r'])
}

fn last_nl(t: &str) -> Option<usize> {
    t.rfind(['\n', '\r'])
}

/// Applies stripping to the whole tree (the deliberate `#t`-family trims always apply).
pub fn strip(root: &mut Node, strip_whitespace: bool) {
    // A template that is one text block has that block as FreeMarker's root: nothing to clean.
    if root.children.len() == 1 && text_of(&root.children[0]).is_some() {
        return;
    }
    cleanup(root, &mut Vec::new(), strip_whitespace);
}

fn cleanup(root: &mut Node, path: &mut Path, strip_ws: bool) {
    let count = get(root, path).children.len();
    for i in 0..count {
        path.push(i);
        if text_of(get(root, path)).is_some() {
            clean_text(root, path, strip_ws);
        } else {
            cleanup(root, path, strip_ws);
        }
        path.pop();
    }
    let mut i = 0;
    while i < get(root, path).children.len() {
        path.push(i);
        // #t/#lt/#rt/#nt have done their work; like FreeMarker, drop them before the siblings
        // after them are checked.
        let ignorable = if matches!(get(root, path).kind, NodeKind::Trim(..)) {
            true
        } else if strip_ws {
            is_ignorable(root, path)
        } else {
            text_of(get(root, path)).is_some_and(|t| t.is_empty())
        };
        path.pop();
        if ignorable {
            get_mut(root, path).children.remove(i);
        } else {
            i += 1;
        }
    }
}

fn set_text(root: &mut Node, path: &[usize], t: String) {
    if let NodeKind::Text(s) = &mut get_mut(root, path).kind {
        *s = t;
    }
}

fn cur_text(root: &Node, path: &[usize]) -> String {
    text_of(get(root, path)).unwrap_or("").to_string()
}

fn clean_text(root: &mut Node, path: &[usize], strip_ws: bool) {
    if cur_text(root, path).is_empty() {
        return;
    }
    let left = deliberate_left_trim(root, path);
    let right = deliberate_right_trim(root, path);
    let text = cur_text(root, path);
    if !strip_ws || text.is_empty() {
        return;
    }
    let top = path.len() == 1;
    if top && path[0] == 0 {
        return;
    }
    let trailing = if !left {
        trailing_to_strip(root, path)
    } else {
        0
    };
    let opening = if !right {
        opening_to_strip(root, path)
    } else {
        0
    };
    if opening == 0 && trailing == 0 {
        return;
    }
    let end = text.len().saturating_sub(trailing).max(opening);
    let new = text[opening..end].to_string();
    set_text(root, path, new);
    if opening > 0 {
        let n = get_mut(root, path);
        n.begin.line += 1;
        n.begin.col = 1;
    }
}

fn deliberate_left_trim(root: &mut Node, path: &[usize]) -> bool {
    let mut result = false;
    let end_line = get(root, path).end_line;
    let mut cur = next_terminal(root, path);
    while let Some(p) = cur {
        let n = get(root, &p);
        if n.begin.line != end_line {
            break;
        }
        if let NodeKind::Trim(l, r) = n.kind {
            if !l && !r {
                result = true;
            }
            if l {
                let text = cur_text(root, path);
                let begin_col = get(root, path).begin.col;
                let lnl = last_nl(&text);
                if lnl.is_some() || begin_col == 1 {
                    let i = lnl.map_or(0, |x| x + 1);
                    let (first, last) = text.split_at(i);
                    let new = if java_trim(last).is_empty() {
                        first.to_string()
                    } else {
                        let skip: usize = last
                            .chars()
                            .take_while(|c| java_ws(*c))
                            .map(|c| c.len_utf8())
                            .sum();
                        format!("{first}{}", &last[skip..])
                    };
                    set_text(root, path, new);
                }
                result = true;
            }
        }
        cur = next_terminal(root, &p);
    }
    result
}

fn deliberate_right_trim(root: &mut Node, path: &[usize]) -> bool {
    let mut result = false;
    let begin_line = get(root, path).begin.line;
    let mut cur = prev_terminal(root, path);
    while let Some(p) = cur {
        let n = get(root, &p);
        if n.end_line != begin_line {
            break;
        }
        if let NodeKind::Trim(l, r) = n.kind {
            if !l && !r {
                result = true;
            }
            if r {
                let text = cur_text(root, path);
                let Some(fnl) = first_nl(&text) else {
                    return false;
                };
                let mut idx = fnl + 1;
                if text.len() > idx
                    && text.as_bytes()[idx - 1] == b'\r'
                    && text.as_bytes()[idx] == b'\n'
                {
                    idx += 1;
                }
                let (opening, trailing) = text.split_at(idx);
                if java_trim(opening).is_empty() {
                    set_text(root, path, trailing.to_string());
                    let n = get_mut(root, path);
                    n.begin.line += 1;
                    n.begin.col = 1;
                } else {
                    let printable = opening.trim_end_matches(java_ws);
                    let mut trailing_part = trailing;
                    if java_trim(trailing).is_empty() {
                        let end_line = get(root, path).end_line;
                        let mut trim_trailing = true;
                        let mut c2 = next_terminal(root, path);
                        while let Some(q) = c2 {
                            let m = get(root, &q);
                            if m.begin.line != end_line {
                                break;
                            }
                            if heeds_opening(root, &q) {
                                trim_trailing = false;
                            }
                            if let NodeKind::Trim(true, _) = m.kind {
                                trim_trailing = true;
                                break;
                            }
                            c2 = next_terminal(root, &q);
                        }
                        if trim_trailing {
                            trailing_part = "";
                        }
                    }
                    let new = format!("{printable}{trailing_part}");
                    set_text(root, path, new);
                }
                result = true;
            }
        }
        cur = prev_terminal(root, &p);
    }
    result
}

fn opening_to_strip(root: &Node, path: &[usize]) -> usize {
    let n = get(root, path);
    let text = text_of(n).unwrap_or("");
    let fnl = first_nl(text);
    if fnl.is_none() && n.begin.col != 1 {
        return 0;
    }
    let mut i = fnl.map_or(0, |x| x + 1);
    let b = text.as_bytes();
    if b.len() > i && i > 0 && b[i - 1] == b'\r' && b[i] == b'\n' {
        i += 1;
    }
    if !java_trim(&text[..i]).is_empty() {
        return 0;
    }
    let mut cur = prev_terminal(root, path);
    while let Some(p) = cur {
        if get(root, &p).end_line != n.begin.line {
            break;
        }
        if heeds_opening(root, &p) {
            return 0;
        }
        cur = prev_terminal(root, &p);
    }
    i
}

fn trailing_to_strip(root: &Node, path: &[usize]) -> usize {
    let n = get(root, path);
    let text = text_of(n).unwrap_or("");
    let lnl = last_nl(text);
    if lnl.is_none() && n.begin.col != 1 {
        return 0;
    }
    let last = &text[lnl.map_or(0, |x| x + 1)..];
    if !java_trim(last).is_empty() {
        return 0;
    }
    let mut cur = next_terminal(root, path);
    while let Some(p) = cur {
        if get(root, &p).begin.line != n.end_line {
            break;
        }
        if heeds_trailing(root, &p) {
            return 0;
        }
        cur = next_terminal(root, &p);
    }
    last.len()
}
