//! containerd's filter syntax (`labels."example.com/x"==y,name~=/^a/`): parsing and matching.
//!
//! Follows containerd's `filters` package: a request's strings are OR-ed, each string is a
//! comma-separated AND of selectors `fieldpath [op value]`, with `op` one of `==`, `!=`, `~=`.
//! Bare field components are `[A-Za-z0-9_-]+`; anything else (dots, slashes) must be
//! double-quoted with Go escapes. `~=` values may also be quoted with `/…/` or `|…|`. An absent
//! field reads as `""` for `!=` and `~=` (so `labels.x!=y` matches items without label `x`),
//! exactly as containerd's `selector.Match` does. Departures, all more lenient or earlier:
//! whitespace is allowed between any two tokens, bare values may start with `.`, `=`, `!` or
//! `~`, and a bad regular expression is a parse error rather than a silent non-match.

use regex::Regex;
use std::collections::HashMap;

/// Field lookup for one item: `path` is the parsed field path
/// (e.g. `["labels", "example.com/x"]`); returns the field's value, or None when the item has no
/// such field.
pub trait Adaptor {
    /// The value of the field at `path`, or `None` when the item has no such field.
    fn field(&self, path: &[String]) -> Option<String>;
}

/// Looks a label up for an adaptor, like containerd's `checkMap`: the key is `rest` (the path
/// after e.g. `labels`) joined with `.`; `None` if `rest` is empty or the key is absent.
pub fn map_field(rest: &[String], map: &HashMap<String, String>) -> Option<String> {
    map.get(&rest.join("."))
        .filter(|_| !rest.is_empty())
        .cloned()
}

/// A parsed filter: an OR of filter strings, each an AND of selectors.
#[derive(Debug, Clone)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

/// A field path and what its value must satisfy.
type Selector = (Vec<String>, Op);

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

/// Why a filter string was rejected (syntax, or a `~=` value that is not a regular expression).
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Filter string number `index` (from 0) of the request is invalid at byte `pos`.
    #[error(
        "filter[{index}] {input:?}: parse error at byte {pos} [{}]: {message}",
        marked(.input, *.pos)
    )]
    Syntax {
        /// Position of the filter string in the request.
        index: usize,
        /// The filter string.
        input: String,
        /// Byte offset of the problem in `input`.
        pos: usize,
        /// What is wrong.
        message: String,
    },
}

/// containerd's error context: `before >|c|< after`.
fn marked(input: &str, pos: usize) -> String {
    match input.get(pos..).and_then(|s| s.chars().next()) {
        Some(c) => format!("{} >|{c}|< {}", &input[..pos], &input[pos + c.len_utf8()..]),
        None => format!("{input} >|<end>"),
    }
}

impl Filter {
    /// Parses the strings of one request (OR of the strings). Empty slice → matches all.
    /// An empty string also matches everything, as in containerd.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Filter, FilterError> {
        let mut any = Vec::with_capacity(filters.len());
        for (index, s) in filters.iter().enumerate() {
            let (input, pos) = (s.as_ref(), 0);
            any.push(Parser { input, pos, index }.selectors()?);
        }
        Ok(Filter { any })
    }

    /// Whether `item` satisfies any of the filter strings (always, if there are none).
    pub fn matches(&self, item: &dyn Adaptor) -> bool {
        let all_match = |all: &Vec<Selector>| all.iter().all(|(path, op)| op.test(item, path));
        self.any.is_empty() || self.any.iter().any(all_match)
    }
}

impl Op {
    fn test(&self, item: &dyn Adaptor, path: &[String]) -> bool {
        let value = item.field(path);
        match self {
            Op::Present => value.is_some(),
            Op::Equal(v) => value.as_deref() == Some(v.as_str()),
            Op::NotEqual(v) => value.as_deref().unwrap_or("") != v,
            Op::Matches(re) => re.is_match(value.as_deref().unwrap_or("")),
        }
    }
}

const QUOTE_HINT: &str = "field names with other characters than [A-Za-z0-9_-] must be quoted, \
                          as in labels.\"example.com/x\"";

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    index: usize,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, pos: usize, message: impl Into<String>) -> Result<T, FilterError> {
        let (index, input, message) = (self.index, self.input.to_owned(), message.into());
        Err(FilterError::Syntax {
            index,
            input,
            pos,
            message,
        })
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) -> Option<char> {
        self.take_while(char::is_whitespace);
        self.peek()
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.input[start..self.pos]
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, FilterError> {
        let mut all = Vec::new();
        while !self.input.is_empty() {
            // containerd: "" matches everything
            all.push(self.selector()?);
            match self.skip_ws() {
                None => break,
                Some(',') => self.bump(),
                Some(c) => return self.err(self.pos, format!("unexpected {c:?}, expected ','")),
            };
        }
        Ok(all)
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let mut path = vec![self.field()?];
        while self.skip_ws() == Some('.') {
            self.bump();
            path.push(self.field()?);
        }
        let op = match self.skip_ws() {
            None | Some(',') => Op::Present,
            Some('/' | '|') => return self.err(self.pos, QUOTE_HINT),
            Some(c) if !matches!(c, '=' | '!' | '~') => {
                return self.err(self.pos, format!("expected an operator, found {c:?}"));
            }
            Some(_) => self.operation()?,
        };
        Ok((path, op))
    }

    /// An operator and its value.
    fn operation(&mut self) -> Result<Op, FilterError> {
        let start = self.pos;
        let op = self.take_while(|c| matches!(c, '=' | '!' | '~'));
        if !matches!(op, "==" | "!=" | "~=") {
            let message = format!("unsupported operator {op:?} (use ==, != or ~=)");
            return self.err(start, message);
        }
        self.skip_ws();
        let at = self.pos;
        let value = self.value(op == "~=")?;
        Ok(match op {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            _ => match Regex::new(&value) {
                Ok(re) => Op::Matches(re),
                Err(e) => return self.err(at, format!("invalid regular expression: {e}")),
            },
        })
    }

    fn field(&mut self) -> Result<String, FilterError> {
        match self.skip_ws() {
            Some('"') => self.quoted('"'),
            Some('/' | '|') => self.err(self.pos, QUOTE_HINT),
            Some(c) if is_field_char(c) => Ok(self.take_while(is_field_char).to_owned()),
            _ => self.err(self.pos, "expected field or quoted"),
        }
    }

    fn value(&mut self, alt_quotes: bool) -> Result<String, FilterError> {
        match self.skip_ws() {
            None | Some(',') => self.err(self.pos, "expected value or quoted after operator"),
            Some('"') => self.quoted('"'),
            Some(q @ ('/' | '|')) if alt_quotes => self.quoted(q),
            Some('/' | '|') => self.err(self.pos, "only ~= values may be quoted with / or |"),
            Some(_) => Ok(self
                .take_while(|c| c != ',' && !c.is_whitespace())
                .to_owned()),
        }
    }

    /// A Go-style quoted string whose delimiter is `quote` (at `self.pos`); only `quote`
    /// itself may be backslash-escaped, and `\x`/octal escapes are raw bytes, as in Go.
    fn quoted(&mut self, quote: char) -> Result<String, FilterError> {
        let start = self.pos;
        self.bump();
        let mut out = Vec::new();
        let push = |out: &mut Vec<u8>, c: char| out.extend(c.encode_utf8(&mut [0; 4]).bytes());
        loop {
            let at = self.pos;
            match self.bump() {
                None | Some('\n') => return self.err(start, "quoted literal not terminated"),
                Some(c) if c == quote => break,
                Some('\\') => {}
                Some(c) => {
                    push(&mut out, c);
                    continue;
                }
            }
            let c = self.bump().unwrap_or('\0');
            let simple = "abfnrtv\\"
                .find(c)
                .map(|i| b"\x07\x08\x0c\n\r\t\x0b\\"[i] as char);
            if let Some(c) = simple.or((c == quote).then_some(c)) {
                push(&mut out, c);
                continue;
            }
            let (radix, digits) = match c {
                'x' => (16, 2),
                'u' => (16, 4),
                'U' => (16, 8),
                '0'..='7' => (8, 2),
                _ => return self.err(at, "illegal escape sequence"),
            };
            let mut v = c.to_digit(8).filter(|_| radix == 8).unwrap_or(0);
            for _ in 0..digits {
                match self.bump().and_then(|d| d.to_digit(radix)) {
                    Some(d) => v = v * radix + d,
                    None => return self.err(at, "illegal numeric escape sequence"),
                }
            }
            if matches!(c, 'u' | 'U') {
                let Some(c) = char::from_u32(v) else {
                    return self.err(at, "escape is not a Unicode scalar value");
                };
                push(&mut out, c);
            } else if v <= 255 {
                out.push(v as u8);
            } else {
                return self.err(at, "octal escape value > 255");
            }
        }
        String::from_utf8(out).or_else(|_| self.err(start, "quoted string is not valid UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(&'static str, &'static [(&'static str, &'static str)]);

    impl Adaptor for Item {
        fn field(&self, path: &[String]) -> Option<String> {
            let labels = self.1.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            match path[0].as_str() {
                "name" => Some(self.0.to_owned()),
                "labels" => map_field(&path[1..], &labels.collect()),
                _ => None,
            }
        }
    }

    const CORPUS: [Item; 5] = [
        Item("foo", &[("foo", "true")]),
        Item("bar", &[]),
        Item("foo", &[("foo", "present"), ("a label", "present")]),
        Item("bar", &[("bar", "true"), ("example.com/x", "a b \"c\"")]),
        Item("baz", &[("\\ and \"", "present"), ("foo", "omg_a.b-c")]),
    ];

    #[test]
    fn matching() {
        let all = [0, 1, 2, 3, 4];
        let cases: &[(&[&str], &[usize])] = &[
            // presence; empty list and empty string match everything
            (&[], &all),
            (&[""], &all),
            (&["name"], &all),
            (&["labels.foo"], &[0, 2, 4]),
            (&["labels"], &[]),
            (&["nope"], &[]),
            // == and !=; an absent field reads as "" for != and ~=, as in containerd
            (&["name==bar"], &[1, 3]),
            (&["labels.foo==true"], &[0]),
            (&["labels.foo==omg_a.b-c"], &[4]),
            (&["name!=bar"], &[0, 2, 4]),
            (&["labels.foo!=true"], &[1, 2, 3, 4]),
            (&["labels.foo!=\"\""], &[0, 2, 4]),
            (&["labels.foo~=^$"], &[1, 3]),
            // ~= is unanchored; values may be quoted with "", // or ||
            (&["name~=a"], &[1, 3, 4]),
            (&["name~=/^f/"], &[0, 2]),
            (&["name~=|o{2}|"], &[0, 2]),
            (&["labels.foo~=\"^omg.*c$\""], &[4]),
            (&[r"name~=/\/|z/"], &[4]),
            (&["name~=.*z"], &[4]),
            // quoted field names and values, Go escapes
            (&[r#"labels."example.com/x""#], &[3]),
            (&[r#"labels."example.com/x"=="a b \"c\"""#], &[3]),
            (&[r#"labels.example."com/x"~="^a b""#], &[3]),
            (&[r#"name==foo,labels."a label""#], &[2]),
            (&[r#"labels."\\ and \""==present"#], &[4]),
            (&[r#"labels."\x66o\157"=="\u0074rue""#], &[0]),
            (&[r#"name=="b\x61\U0000007a""#], &[4]),
            // commas AND, strings OR, whitespace between tokens
            (&["name~=^ba[rz]$,labels.foo"], &[4]),
            (&["name==foo,labels.foo==true"], &[0]),
            (&["name==bar", "labels.foo==true"], &[0, 1, 3]),
            (&["name==bar", ""], &all),
            (&["  name == bar ,  labels . bar  "], &[3]),
            (&["name ~= /^b/ , labels.\"example.com/x\""], &[3]),
        ];
        for (filters, want) in cases {
            let f = Filter::parse(filters).unwrap_or_else(|e| panic!("{filters:?}: {e}"));
            let got: Vec<usize> = (0..5).filter(|&i| f.matches(&CORPUS[i])).collect();
            assert_eq!(&got, want, "{filters:?}");
        }
    }

    #[test]
    fn parse_errors() {
        let cases = [
            (r#"l."x==y"#, "byte 2 [l. >|\"|< x==y]"),
            (r#"l."x==y"#, "quoted literal not terminated"),
            ("name==", "[name== >|<end>]: expected value"),
            ("name== ,x", "expected value"),
            ("n~=[a-", "byte 3 [n~= >|[|< a-]: invalid regular"),
            ("name==foo,", "expected field"),
            ("a,,b", "at byte 2"),
            ("   ", "expected field"),
            ("labels.", "expected field"),
            ("labels.ns/key==v", "[labels.ns >|/|< key==v]: field names"),
            ("labels.|foo|==v", "must be quoted"),
            ("name==/foo/", "only ~= values"),
            ("name=foo", "unsupported operator \"=\""),
            ("name===foo", "unsupported operator \"===\""),
            ("name foo", "byte 5 [name  >|f|< oo]: expected an operator"),
            ("name==a b", "expected ','"),
            (r#"name=="\d""#, "illegal escape"),
            (r#"name~=/a\"/"#, "illegal escape"),
            (r#"name=="\xff""#, "not valid UTF-8"),
            (r#"name=="\400""#, "> 255"),
            (r#"name=="\uD800""#, "Unicode scalar"),
            (r#"name=="\x4""#, "illegal numeric escape"),
        ];
        for (input, needle) in cases {
            let e = Filter::parse(&[input]).expect_err(input).to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
        }
        let e = Filter::parse(&["name", "x=="]).unwrap_err().to_string();
        let want = "filter[1] \"x==\": parse error at byte 3 [x== >|<end>]: expected value";
        assert!(e.starts_with(want), "{e}");
    }
}
