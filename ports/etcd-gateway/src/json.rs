//! A small JSON reader and the string writer etcd's JSON API needs.
//!
//! The reader takes bytes from a client, so it is bounded: the caller caps
//! the input's length and the reader caps nesting at `DEPTH_MAX`, so no
//! input can exhaust the stack. Numbers are kept as their text, since
//! etcd's 64-bit integers must not pass through a float.
//!
//! The writer escapes strings as Go's `encoding/json` does (which etcd's
//! gateway uses), so the bytes a client receives are the bytes etcd sends.

/// Deepest nesting of arrays and objects a request may have. etcd's deepest
/// messages (a txn inside a txn) need a handful of levels per txn; 64 allows
/// nested txns far beyond what a member accepts.
pub const DEPTH_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number as written: `-12`, `3.5e2`.
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Members in their order; a key written twice keeps its last value.
    Object(Vec<(String, Value)>),
}

#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// The input ends inside a value: more bytes may complete it.
    Incomplete,
    Invalid(String),
}

/// Reads one value from the start of `input` (after any whitespace) and
/// returns it with the number of bytes it took.
pub fn parse_one(input: &[u8]) -> Result<(Value, usize), ParseError> {
    let mut reader = Reader { input, at: 0 };
    let value = reader.value(0)?;
    Ok((value, reader.at))
}

/// The number of leading whitespace bytes in `input`.
pub fn whitespace_len(input: &[u8]) -> usize {
    input.iter().take_while(|byte| byte.is_ascii_whitespace()).count()
}

struct Reader<'a> {
    input: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.skip_whitespace();
        let Some(&first) = self.input.get(self.at) else { return Err(ParseError::Incomplete) };
        match first {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Value::String),
            b't' => self.literal("true", Value::Bool(true)),
            b'f' => self.literal("false", Value::Bool(false)),
            b'n' => self.literal("null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            other => Err(self.unexpected(other, "looking for beginning of value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.check_depth(depth)?;
        self.at += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        if self.next_non_space()? == b'}' {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            match self.next_non_space()? {
                b'"' => {}
                other => return Err(self.unexpected(other, "looking for beginning of object key")),
            }
            let key = self.string()?;
            match self.next_non_space()? {
                b':' => self.at += 1,
                other => return Err(self.unexpected(other, "after object key")),
            }
            let value = self.value(depth)?;
            members.retain(|(existing, _)| *existing != key);
            members.push((key, value));
            match self.next_non_space()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Ok(Value::Object(members));
                }
                other => return Err(self.unexpected(other, "after object key:value pair")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.check_depth(depth)?;
        self.at += 1;
        let mut items = Vec::new();
        if self.next_non_space()? == b']' {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            match self.next_non_space()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                other => return Err(self.unexpected(other, "after array element")),
            }
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), ParseError> {
        if depth > DEPTH_MAX {
            return Err(ParseError::Invalid(format!("exceeded max depth of {DEPTH_MAX}")));
        }
        Ok(())
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, ParseError> {
        for expected in word.bytes() {
            match self.input.get(self.at) {
                None => return Err(ParseError::Incomplete),
                Some(&byte) if byte == expected => self.at += 1,
                Some(&byte) => {
                    let context = format!("in literal {word} (expecting {:?})", expected as char);
                    return Err(self.unexpected(byte, &context));
                }
            }
        }
        Ok(value)
    }

    /// A number in JSON's grammar; its text is kept, its meaning is the
    /// caller's.
    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.at;
        self.eat(b'-');
        match self.input.get(self.at) {
            None => return Err(ParseError::Incomplete),
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            Some(&other) => return Err(self.unexpected(other, "in numeric literal")),
        }
        if self.eat(b'.') {
            self.required_digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            self.required_digits()?;
        }
        // A number that ends the input may go on in the next bytes.
        if self.at == self.input.len() {
            return Err(ParseError::Incomplete);
        }
        let text = &self.input[start..self.at];
        Ok(Value::Number(String::from_utf8_lossy(text).into_owned()))
    }

    fn required_digits(&mut self) -> Result<(), ParseError> {
        match self.input.get(self.at) {
            None => Err(ParseError::Incomplete),
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            Some(&other) => Err(self.unexpected(other, "in numeric literal")),
        }
    }

    fn digits(&mut self) {
        while self.input.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.input.get(self.at) == Some(&byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.at += 1;
        let mut text = Vec::new();
        loop {
            let Some(&byte) = self.input.get(self.at) else { return Err(ParseError::Incomplete) };
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => self.escape(&mut text)?,
                0..0x20 => return Err(self.unexpected(byte, "in string literal")),
                _ => text.push(byte),
            }
        }
        // Go replaces invalid UTF-8 with U+FFFD rather than refusing it.
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    fn escape(&mut self, text: &mut Vec<u8>) -> Result<(), ParseError> {
        let Some(&kind) = self.input.get(self.at) else { return Err(ParseError::Incomplete) };
        self.at += 1;
        let simple = match kind {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let c = self.unicode_escape()?;
                text.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                return Ok(());
            }
            other => return Err(self.unexpected(other, "in string escape code")),
        };
        text.push(simple);
        Ok(())
    }

    /// `\uXXXX`, with a following low surrogate when the first is a high
    /// one; a lone surrogate reads as U+FFFD, as in Go.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        if !(0xD800..0xDC00).contains(&first) {
            return Ok(char::from_u32(first).unwrap_or(char::REPLACEMENT_CHARACTER));
        }
        let rest = &self.input[self.at..];
        if rest.len() < 6 {
            return Err(ParseError::Incomplete);
        }
        if !rest.starts_with(b"\\u") {
            return Ok(char::REPLACEMENT_CHARACTER);
        }
        let save = self.at;
        self.at += 2;
        let second = self.hex4()?;
        if !(0xDC00..0xE000).contains(&second) {
            self.at = save;
            return Ok(char::REPLACEMENT_CHARACTER);
        }
        let combined = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
        Ok(char::from_u32(combined).unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut value = 0;
        for _ in 0..4 {
            let Some(&byte) = self.input.get(self.at) else { return Err(ParseError::Incomplete) };
            let Some(digit) = (byte as char).to_digit(16) else {
                return Err(self.unexpected(byte, "in \\u hexadecimal character escape"));
            };
            value = value * 16 + digit;
            self.at += 1;
        }
        Ok(value)
    }

    fn skip_whitespace(&mut self) {
        self.at += whitespace_len(&self.input[self.at..]);
    }

    fn next_non_space(&mut self) -> Result<u8, ParseError> {
        self.skip_whitespace();
        self.input.get(self.at).copied().ok_or(ParseError::Incomplete)
    }

    fn unexpected(&self, byte: u8, context: &str) -> ParseError {
        let shown = if byte.is_ascii_graphic() || byte == b' ' {
            format!("'{}'", byte as char)
        } else {
            format!("byte 0x{byte:02x}")
        };
        ParseError::Invalid(format!("invalid character {shown} {context}"))
    }
}

/// Appends `text` as a JSON string, escaped as Go's `encoding/json` does:
/// `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes, other controls as
/// `\n`, `\r`, `\t` or `\u00XX`.
pub fn write_string(out: &mut String, text: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Value, ParseError> {
        parse_one(text.as_bytes()).map(|(value, _)| value)
    }

    #[test]
    fn reads_nested_values_and_keeps_numbers_as_text() {
        let value = parse(r#" {"a":[1,-2.5e3,"x\u00e9\n"],"b":{"c":null,"d":true}} "#).unwrap();
        let expected = Value::Object(vec![
            (
                "a".into(),
                Value::Array(vec![
                    Value::Number("1".into()),
                    Value::Number("-2.5e3".into()),
                    Value::String("xé\n".into()),
                ]),
            ),
            (
                "b".into(),
                Value::Object(vec![("c".into(), Value::Null), ("d".into(), Value::Bool(true))]),
            ),
        ]);
        assert_eq!(value, expected);
    }

    #[test]
    fn says_where_input_stops_short_and_where_it_is_wrong() {
        assert_eq!(parse(r#"{"a":"#), Err(ParseError::Incomplete));
        assert_eq!(parse("12"), Err(ParseError::Incomplete));
        assert_eq!(parse("tr"), Err(ParseError::Incomplete));
        let Err(ParseError::Invalid(why)) = parse("notjson") else { panic!() };
        assert_eq!(why, "invalid character 'o' in literal null (expecting 'u')");
        let Err(ParseError::Invalid(why)) = parse("garbage") else { panic!() };
        assert_eq!(why, "invalid character 'g' looking for beginning of value");
        assert!(matches!(parse(r#"{"a" 1}"#), Err(ParseError::Invalid(_))));
        assert!(matches!(parse("[1,]"), Err(ParseError::Invalid(_))));
    }

    #[test]
    fn consecutive_values_are_read_one_at_a_time() {
        let input = br#"{"a":1} {"b":2}"#;
        let (_, used) = parse_one(input).unwrap();
        assert_eq!(used, 7);
        let rest = &input[used..];
        let (second, _) = parse_one(rest).unwrap();
        assert_eq!(second, Value::Object(vec![("b".into(), Value::Number("2".into()))]));
    }

    #[test]
    fn nesting_past_the_bound_is_refused_not_recursed() {
        let deep = "[".repeat(DEPTH_MAX + 1) + &"]".repeat(DEPTH_MAX + 1);
        assert!(matches!(parse(&deep), Err(ParseError::Invalid(_))));
        let fine = "[".repeat(DEPTH_MAX) + &"]".repeat(DEPTH_MAX);
        assert!(parse(&fine).is_ok());
        let hostile = "[".repeat(1 << 20);
        assert!(matches!(parse(&hostile), Err(ParseError::Invalid(_))));
    }

    #[test]
    fn a_key_written_twice_keeps_its_last_value() {
        let value = parse(r#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(value, Value::Object(vec![("a".into(), Value::Number("2".into()))]));
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        let mut out = String::new();
        write_string(&mut out, "a\"b\\c\n<&>\u{1}é\u{2028}");
        assert_eq!(out, r#""a\"b\\c\n\u003c\u0026\u003e\u0001é\u2028""#);
    }
}
