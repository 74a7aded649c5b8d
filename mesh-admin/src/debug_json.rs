//! JSON from a value's `Debug` output, for config dumps of model types that do not
//! implement `serde::Serialize` (mesh-core's config model keeps protobuf and serde out of
//! its API). Structs become objects (with `"@type"` naming the struct or enum variant),
//! lists arrays, maps objects, `None` null, `Some(x)` x, unit variants strings, and tokens
//! such as addresses or durations (`127.0.0.1:9080`, `1.5s`) strings. Everything the
//! `Debug` output shows is kept: what cannot be parsed is returned as the `Debug` string.
//!
//! ```
//! #[derive(Debug)]
//! struct Cluster { name: String, timeout: Option<std::time::Duration>, tags: Vec<u32> }
//! let c = Cluster { name: "a".into(), timeout: Some(std::time::Duration::from_millis(250)), tags: vec![1, 2] };
//! let v = mesh_admin::debug_json::to_json(&c);
//! assert_eq!(v, serde_json::json!({"@type": "Cluster", "name": "a", "timeout": "250ms", "tags": [1, 2]}));
//! ```

use std::fmt::Debug;

use serde_json::{Map, Value};

/// `value`'s `Debug` output as JSON (the string itself when it cannot be parsed).
pub fn to_json(value: &impl Debug) -> Value {
    let text = format!("{value:?}");
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    match p.value() {
        Some(v) if p.at_end() => v,
        _ => Value::String(text),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.s.len()
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        match self.peek()? {
            b'"' => self.string().map(Value::String),
            b'\'' => self.char_lit().map(Value::String),
            b'[' => {
                self.i += 1;
                self.seq(b']').map(Value::Array)
            }
            b'(' => {
                self.i += 1;
                let items = self.seq(b')')?;
                Some(Value::Array(items))
            }
            b'{' => {
                self.i += 1;
                self.map()
            }
            _ => self.token_value(),
        }
    }

    /// Comma-separated values up to `close` (consumed).
    fn seq(&mut self, close: u8) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        if self.eat(close) {
            return Some(out);
        }
        loop {
            out.push(self.value()?);
            if self.eat(close) {
                return Some(out);
            }
            if !self.eat(b',') {
                return None;
            }
            if self.eat(close) {
                return Some(out);
            }
        }
    }

    /// `{k: v, ...}` after the brace, keys any value.
    fn map(&mut self) -> Option<Value> {
        let mut out = Map::new();
        if self.eat(b'}') {
            return Some(Value::Object(out));
        }
        loop {
            let k = self.value()?;
            if !self.eat(b':') {
                return None;
            }
            let v = self.value()?;
            let k = match k {
                Value::String(s) => s,
                other => other.to_string(),
            };
            out.insert(k, v);
            if self.eat(b'}') {
                return Some(Value::Object(out));
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// `Name { field: value, .. }` after the brace.
    fn fields(&mut self, name: &str) -> Option<Value> {
        let mut out = Map::new();
        out.insert("@type".into(), Value::String(name.into()));
        if self.eat(b'}') {
            return Some(Value::Object(out));
        }
        loop {
            if self.peek() == Some(b'.') {
                // `..` of finish_non_exhaustive
                self.i += 2;
                return self.eat(b'}').then_some(Value::Object(out));
            }
            let field = self.ident()?;
            if !self.eat(b':') {
                return None;
            }
            let v = self.value()?;
            out.insert(field, v);
            if self.eat(b'}') {
                return Some(Value::Object(out));
            }
            if !self.eat(b',') {
                return None;
            }
            if self.eat(b'}') {
                return Some(Value::Object(out));
            }
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'_' | b'#'))
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A bare token: identifier (maybe followed by a struct or tuple body), number, or
    /// anything else up to a delimiter (addresses, durations).
    fn token_value(&mut self) -> Option<Value> {
        self.ws();
        let start = self.i;
        let mut depth = 0usize;
        while self.i < self.s.len() {
            let c = self.s[self.i];
            let next = self.s.get(self.i + 1).copied();
            let stop = match c {
                b',' | b')' | b'}' | b'(' | b'{' => depth == 0,
                b']' if depth == 0 => true,
                b'[' => {
                    depth += 1;
                    false
                }
                b']' => {
                    depth -= 1;
                    false
                }
                // `field: value` (a colon followed by a space) ends a key.
                b':' => next == Some(b' ') && depth == 0,
                b' ' => depth == 0,
                _ => false,
            };
            if stop {
                break;
            }
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        let tok = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        let is_ident = tok
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
            && tok.as_bytes()[0].is_ascii_alphabetic();
        if is_ident {
            match self.peek() {
                Some(b'{') => {
                    self.i += 1;
                    return self.fields(&tok);
                }
                Some(b'(') => {
                    self.i += 1;
                    let mut items = self.seq(b')')?;
                    return Some(match (tok.as_str(), items.len()) {
                        ("Some", 1) => items.remove(0),
                        (_, 1) => {
                            let mut m = Map::new();
                            m.insert("@type".into(), Value::String(tok));
                            m.insert("value".into(), items.remove(0));
                            Value::Object(m)
                        }
                        _ => {
                            let mut m = Map::new();
                            m.insert("@type".into(), Value::String(tok));
                            m.insert("values".into(), Value::Array(items));
                            Value::Object(m)
                        }
                    });
                }
                _ => {}
            }
            return Some(match tok.as_str() {
                "None" => Value::Null,
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(tok),
            });
        }
        if let Ok(n) = tok.parse::<i64>() {
            return Some(Value::from(n));
        }
        if let Ok(n) = tok.parse::<u64>() {
            return Some(Value::from(n));
        }
        if let Some(n) = tok
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Some(Value::Number(n));
        }
        Some(Value::String(tok))
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        let mut raw = Vec::new();
        while self.i < self.s.len() {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => {
                    out.push_str(&String::from_utf8_lossy(&raw));
                    return Some(out);
                }
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'n' => raw.push(b'\n'),
                        b't' => raw.push(b'\t'),
                        b'r' => raw.push(b'\r'),
                        b'0' => raw.push(0),
                        b'u' => {
                            // \u{XXXX}
                            let close = self.s[self.i..].iter().position(|b| *b == b'}')?;
                            let hex =
                                std::str::from_utf8(&self.s[self.i + 1..self.i + close]).ok()?;
                            let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                            let mut buf = [0u8; 4];
                            raw.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            self.i += close + 1;
                        }
                        other => raw.push(other),
                    }
                }
                other => raw.push(other),
            }
        }
        None
    }

    fn char_lit(&mut self) -> Option<String> {
        self.i += 1;
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != b'\'' {
            if self.s[self.i] == b'\\' {
                self.i += 1;
            }
            self.i += 1;
        }
        let v = String::from_utf8_lossy(self.s.get(start..self.i)?).into_owned();
        self.i += 1;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)]
    enum Addr {
        Socket(SocketAddr),
        Dns { host: Arc<str>, port: u16 },
        Unset,
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Ep {
        address: Addr,
        weight: u32,
        ratio: f64,
        hostname: Option<Arc<str>>,
        meta: BTreeMap<String, Vec<(u8, bool)>>,
        quote: String,
    }

    #[test]
    fn structs_enums_maps_and_tokens() {
        let e = vec![
            Ep {
                address: Addr::Socket("127.0.0.1:9080".parse().unwrap()),
                weight: 3,
                ratio: 0.5,
                hostname: None,
                meta: BTreeMap::from([("k".into(), vec![(1, true)])]),
                quote: "a \"b\"\n".into(),
            },
            Ep {
                address: Addr::Dns {
                    host: "x.y".into(),
                    port: 80,
                },
                weight: 1,
                ratio: -1.0,
                hostname: Some("h".into()),
                meta: BTreeMap::new(),
                quote: String::new(),
            },
        ];
        let v = to_json(&(e, Addr::Unset));
        assert_eq!(
            v,
            json!([[
                {"@type": "Ep", "address": {"@type": "Socket", "value": "127.0.0.1:9080"},
                 "weight": 3, "ratio": 0.5, "hostname": null,
                 "meta": {"k": [[1, true]]}, "quote": "a \"b\"\n"},
                {"@type": "Ep", "address": {"@type": "Dns", "host": "x.y", "port": 80},
                 "weight": 1, "ratio": -1.0, "hostname": "h", "meta": {}, "quote": ""}
            ], "Unset"])
        );
    }

    #[test]
    fn unparsable_output_is_kept_as_a_string() {
        struct Odd;
        impl Debug for Odd {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{{{ not debug")
            }
        }
        assert_eq!(to_json(&Odd), json!("{{{ not debug"));
    }
}
