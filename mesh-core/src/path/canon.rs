//! The three path transformations, each on the path alone (no query).
//!
//! `canonicalize` follows the rules of the URL canonicalizer Envoy runs for `normalize_path`
//! (checked against Envoy 1.40 by `interop-tests/tests/envoy_path_normalization.rs`).

use std::borrow::Cow;

/// Characters a canonical path may not hold raw: percent-encoded on output.
fn must_escape(c: u8) -> bool {
    !(0x20..0x7f).contains(&c)
        || matches!(
            c,
            b' ' | b'"' | b'#' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// RFC 3986 unreserved characters: their percent-encodings are decoded.
fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte a valid `%XX` at `i` encodes.
fn escaped(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    Some(hex(*b.get(i + 1)?)? << 4 | hex(*b.get(i + 2)?)?)
}

/// Length of a dot at `i`: 1 for `.`, 3 for `%2E`/`%2e`, 0 otherwise.
fn dot_len(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'.') => 1,
        Some(b'%') if b.get(i + 1) == Some(&b'2') && matches!(b.get(i + 2), Some(b'e' | b'E')) => 3,
        _ => 0,
    }
}

fn is_slash(c: u8) -> bool {
    c == b'/' || c == b'\\'
}

/// What a segment starting with a dot means.
enum Dots {
    /// Not a dot segment: the dot is an ordinary character.
    Name,
    /// `.`: drop it; `usize` input bytes consumed.
    Current(usize),
    /// `..`: drop it and the previous segment; `usize` input bytes consumed.
    Parent(usize),
}

/// Classifies the segment at `i` (which starts with a dot).
fn classify(b: &[u8], i: usize) -> Dots {
    // `.;x` and `..;x` (literal dots only) are dot segments up to the next `/`: servers such as
    // Tomcat strip path parameters, so `/..;/admin` would otherwise climb behind RBAC's back.
    let through_slash = |from: usize| {
        b[from..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(b.len(), |p| from + p + 1)
            - i
    };
    if b[i..].starts_with(b".;") {
        return Dots::Current(through_slash(i + 2));
    }
    if b[i..].starts_with(b"..;") {
        return Dots::Parent(through_slash(i + 3));
    }
    let first = dot_len(b, i);
    let after = i + first;
    match b.get(after) {
        None => return Dots::Current(first),
        Some(&c) if is_slash(c) => return Dots::Current(first + 1),
        _ => {}
    }
    let second = dot_len(b, after);
    if second == 0 {
        return Dots::Name;
    }
    match b.get(after + second) {
        None => Dots::Parent(first + second),
        Some(&c) if is_slash(c) => Dots::Parent(first + second + 1),
        _ => Dots::Name,
    }
}

/// Drops the last segment of `out` (which ends with `/`), never the leading `/`.
fn pop_segment(out: &mut Vec<u8>) {
    if out.len() > 1 {
        let keep = out[..out.len() - 1]
            .iter()
            .rposition(|&c| c == b'/')
            .map_or(1, |p| p + 1);
        out.truncate(keep);
    }
}

/// After a decoded character was pushed: when the lone `%` at `p` now starts a valid
/// escape (with the decoded character and the one after it, in `out` or `next` in the
/// input), it becomes `%25`, as Envoy's canonicalizer does.
fn escape_nested(out: &mut Vec<u8>, p: usize, next: Option<u8>) {
    let (first, second) = match out.len() - p {
        2 => (out[p + 1], next),
        3 => (out[p + 1], Some(out[p + 2])),
        _ => return,
    };
    if hex(first).is_some() && second.and_then(hex).is_some() {
        out.splice(p + 1..p + 1, *b"25");
    }
}

/// RFC 3986 normalization of a path; `None` when it holds a NUL (raw or `%00`).
pub(super) fn canonicalize(path: &str) -> Option<Cow<'_, str>> {
    let b = path.as_bytes();
    // Most paths are canonical already (no escape, backslash, character to escape or dot
    // segment): borrowed, as the loop below would copy them unchanged.
    if b.first() == Some(&b'/')
        && !path.contains("/.")
        && !b.iter().any(|&c| c == b'%' || c == b'\\' || must_escape(c))
    {
        return Some(Cow::Borrowed(path));
    }
    let mut out = Vec::with_capacity(b.len() + 1);
    if !b.first().copied().is_some_and(is_slash) {
        out.push(b'/');
    }
    // Where the last lone `%` went in `out`: a decoded character right after it could
    // complete a new escape (`%%61d` -> `%ad`), which must not appear from nowhere.
    let mut lone_percent: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let dot = dot_len(b, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match classify(b, i) {
                    Dots::Name => {}
                    Dots::Current(n) => {
                        i += n;
                        continue;
                    }
                    Dots::Parent(n) => {
                        pop_segment(&mut out);
                        i += n;
                        continue;
                    }
                }
            }
            out.push(b'.');
            i += dot;
        } else if is_slash(c) {
            out.push(b'/');
            i += 1;
        } else if c == b'%' {
            match escaped(b, i) {
                Some(0) => return None,
                Some(v) if unreserved(v) => {
                    out.push(v);
                    if let Some(p) = lone_percent {
                        escape_nested(&mut out, p, b.get(i + 3).copied());
                    }
                }
                // Kept exactly as sent: servers may care about the case of hex digits.
                Some(_) => out.extend_from_slice(&b[i..i + 3]),
                // Not an escape: a lone `%` passes, what follows is read normally.
                None => {
                    lone_percent = Some(out.len());
                    out.push(b'%');
                    i += 1;
                    continue;
                }
            }
            i += 3;
        } else if c == 0 {
            return None;
        } else if must_escape(c) {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    // Only ASCII was pushed: raw bytes >= 0x80 were percent-encoded.
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Decodes `%2F` to `/` and `%5C` to `\` (any case); `None` when there is none.
pub(super) fn unescape_slashes(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut found = false;
    let mut i = 0;
    while i < b.len() {
        match escaped(b, i) {
            Some(v @ (b'/' | b'\\')) => {
                out.push(v);
                found = true;
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    // Only ASCII bytes were replaced, so the result is as valid UTF-8 as the input.
    found.then(|| String::from_utf8(out).ok()).flatten()
}

/// Merges runs of `/`, as Envoy does: the segments joined by one `/`, with a leading and a
/// trailing `/` kept when the path had them. `None` when there is no `//`.
pub(super) fn merge_slashes(path: &str) -> Option<String> {
    if !path.contains("//") {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push('/');
    }
    let mut first = true;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if !first {
            out.push('/');
        }
        out.push_str(seg);
        first = false;
    }
    if path.ends_with('/') {
        out.push('/');
    }
    Some(out)
}
