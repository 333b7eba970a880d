//! The text of a record as the parser sees it: a reader that follows the
//! JSON tokens as they stream by and holds every one to a bound, whatever
//! field it belongs to (stage 0 of [`crate::validate`]).
//!
//! - a string value keeps at most [`MAX_STRING_BYTES`], and all string
//!   values together at most [`MAX_TEXT_BYTES`]: the rest of a longer one
//!   is dropped and [`CUT_MARK`] ends it (cut at a character boundary,
//!   never inside an escape), and the cuts are counted ([`CappedStrings::cut`]);
//! - an object key keeps at most [`MAX_STRING_BYTES`] too (no field name
//!   is that long: a cut key is an unknown field);
//! - a number of more than [`MAX_NUMBER_BYTES`] characters, or nesting
//!   deeper than [`MAX_DEPTH`], is a read error.
//!
//! So the parser's buffers never hold more than one bounded token, and the
//! strings of a record never more than [`MAX_TEXT_BYTES`] in all.

use std::io::Read;

/// Longest string kept, bytes.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// All string values of a record together, bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024 * 1024;
/// Longest number, characters.
pub const MAX_NUMBER_BYTES: usize = 1024;
/// Deepest nesting of lists and objects.
pub const MAX_DEPTH: usize = 512;
/// What ends a string that was cut.
pub const CUT_MARK: &str = "...[cut]";

/// Where the reader is in the JSON text.
#[derive(Clone, Copy, PartialEq)]
enum State {
    /// Between tokens (or in `true`/`false`/`null`).
    Between,
    /// In a string: its bytes so far, whether it is a key, whether the rest
    /// is being dropped.
    Str {
        len: usize,
        key: bool,
        cutting: bool,
    },
    /// In a number: its characters so far.
    Number(usize),
}

/// A reader of JSON text that holds every token to a bound (see the module).
pub struct CappedStrings<R> {
    inner: R,
    state: State,
    /// In a string: 0 outside an escape, 1 after `\`, 2 to 5: hex digits
    /// of `\uXXXX` still to come, plus one.
    escape: u8,
    /// The open lists (`false`) and objects (`true`).
    nesting: Vec<bool>,
    /// The next string is an object key.
    expect_key: bool,
    /// Bytes of string values kept so far.
    text_bytes: usize,
    /// Strings cut.
    cut: u64,
    /// Read from `inner`, not processed yet.
    input: Vec<u8>,
    /// Processed, not handed out yet, from `out_at`.
    output: Vec<u8>,
    out_at: usize,
}

impl<R: Read> CappedStrings<R> {
    /// Reads JSON text from `inner`.
    pub fn new(inner: R) -> CappedStrings<R> {
        CappedStrings {
            inner,
            state: State::Between,
            escape: 0,
            nesting: Vec::new(),
            expect_key: false,
            text_bytes: 0,
            cut: 0,
            input: vec![0; 64 * 1024],
            output: Vec::with_capacity(64 * 1024 + CUT_MARK.len()),
            out_at: 0,
        }
    }

    /// Strings cut so far.
    pub fn cut(&self) -> u64 {
        self.cut
    }

    fn invalid(what: String) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what)
    }

    /// Processes one byte into `output`.
    fn byte(&mut self, b: u8) -> std::io::Result<()> {
        match self.state {
            State::Str { len, key, cutting } => {
                let escaped = self.escape != 0;
                let full = len >= MAX_STRING_BYTES || (!key && self.text_bytes >= MAX_TEXT_BYTES);
                // Cut before a byte that starts a character (or an escape),
                // once the string holds all it may.
                let cutting =
                    cutting || (full && !escaped && b != b'"' && !(0x80..0xC0).contains(&b));
                if cutting && !matches!(self.state, State::Str { cutting: true, .. }) {
                    self.output.extend_from_slice(CUT_MARK.as_bytes());
                    self.cut += 1;
                }
                let ends = !escaped && b == b'"';
                self.escape = match (self.escape, b) {
                    (0, b'\\') => 1,
                    (1, b'u') => 5,
                    (0..=2, _) => 0,
                    (n, _) => n - 1,
                };
                if ends {
                    self.output.push(b);
                    self.state = State::Between;
                    self.expect_key = false;
                    return Ok(());
                }
                if !cutting {
                    self.output.push(b);
                    if !key {
                        self.text_bytes += 1;
                    }
                }
                self.state = State::Str {
                    len: len + usize::from(!cutting),
                    key,
                    cutting,
                };
                Ok(())
            }
            State::Number(n) if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') => {
                if n >= MAX_NUMBER_BYTES {
                    return Err(Self::invalid(format!(
                        "a number of more than {MAX_NUMBER_BYTES} characters"
                    )));
                }
                self.output.push(b);
                self.state = State::Number(n + 1);
                Ok(())
            }
            State::Number(_) | State::Between => {
                self.state = State::Between;
                match b {
                    b'"' => {
                        let key = self.expect_key && self.nesting.last() == Some(&true);
                        self.state = State::Str {
                            len: 0,
                            key,
                            cutting: false,
                        };
                        self.escape = 0;
                    }
                    b'0'..=b'9' | b'-' => self.state = State::Number(1),
                    b'{' | b'[' => {
                        if self.nesting.len() >= MAX_DEPTH {
                            return Err(Self::invalid(format!(
                                "lists and objects nested more than {MAX_DEPTH} deep"
                            )));
                        }
                        self.nesting.push(b == b'{');
                        self.expect_key = b == b'{';
                    }
                    b'}' | b']' => {
                        self.nesting.pop();
                        self.expect_key = false;
                    }
                    b',' => self.expect_key = self.nesting.last() == Some(&true),
                    b':' => self.expect_key = false,
                    _ => {}
                }
                self.output.push(b);
                Ok(())
            }
        }
    }
}

impl<R: Read> Read for CappedStrings<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.out_at < self.output.len() {
                let n = buf.len().min(self.output.len() - self.out_at);
                buf[..n].copy_from_slice(&self.output[self.out_at..self.out_at + n]);
                self.out_at += n;
                return Ok(n);
            }
            self.output.clear();
            self.out_at = 0;
            let mut input = std::mem::take(&mut self.input);
            let got = self.inner.read(&mut input);
            let result = got.and_then(|n| {
                for &b in &input[..n] {
                    self.byte(b)?;
                }
                Ok(n)
            });
            self.input = input;
            if result? == 0 {
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(text: &str) -> (String, u64) {
        let mut r = CappedStrings::new(text.as_bytes());
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        (out, r.cut())
    }

    #[test]
    fn short_text_passes_unchanged() {
        let t = r#"{"a":"x\"y\\","b":[1,-2.5e3,"\u00e9"],"c":{"d":null}}"#;
        assert_eq!(through(t), (t.to_string(), 0));
    }

    #[test]
    fn a_long_string_is_cut_and_said() {
        let long = "é".repeat(MAX_STRING_BYTES);
        let (out, cut) = through(&format!(r#"{{"k":"{long}","n":1}}"#));
        assert_eq!(cut, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let s = v["k"].as_str().unwrap();
        assert!(s.ends_with(CUT_MARK) && s.len() <= MAX_STRING_BYTES + CUT_MARK.len());
        assert_eq!(v["n"], 1);
    }

    #[test]
    fn a_cut_never_splits_an_escape() {
        let long = "\\u00e9".repeat(MAX_STRING_BYTES);
        let (out, cut) = through(&format!(r#"["{long}\"",2]"#));
        assert_eq!(cut, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[1], 2);
    }

    #[test]
    fn all_strings_together_are_bounded() {
        let one = "x".repeat(MAX_STRING_BYTES);
        let n = MAX_TEXT_BYTES / MAX_STRING_BYTES + 10;
        let list = vec![format!("\"{one}\""); n].join(",");
        let (out, cut) = through(&format!("[{list}]"));
        assert_eq!(cut, 10);
        assert!(out.len() < MAX_TEXT_BYTES + n * 16);
    }

    #[test]
    fn long_numbers_and_deep_nesting_are_errors() {
        let num = "1".repeat(MAX_NUMBER_BYTES + 1);
        let mut s = String::new();
        assert!(CappedStrings::new(num.as_bytes())
            .read_to_string(&mut s)
            .is_err());
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(CappedStrings::new(deep.as_bytes())
            .read_to_string(&mut s)
            .is_err());
    }
}
