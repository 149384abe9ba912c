//! Lexical rules: lines, tokens, comments, quoted strings, numbers, sizes and durations.

/// A diagnostic without a file name; `mod.rs` turns it into a `TraceError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diag {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl Diag {
    pub fn new(line: u32, col: u32, message: impl Into<String>) -> Diag {
        Diag {
            line,
            col,
            message: message.into(),
        }
    }
}

/// Column count of a string: characters.
pub(crate) fn width(s: &str) -> u32 {
    u32::try_from(s.chars().count()).unwrap_or(u32::MAX)
}

/// A token: a maximal run of characters other than space, tab and `#`, where a double-quoted
/// string (which may hold spaces, tabs and `#`) is part of the token it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tok<'a> {
    pub text: &'a str,
    pub line: u32,
    pub col: u32,
}

impl<'a> Tok<'a> {
    /// The column just after the token.
    pub fn end_col(&self) -> u32 {
        self.col.saturating_add(width(self.text))
    }

    /// The part of the token from byte `start` to byte `end`, with its own column. Out-of-range
    /// or non-boundary indices give an empty token at the end instead of panicking.
    pub fn slice(&self, start: usize, end: usize) -> Tok<'a> {
        let prefix = self.text.get(..start).unwrap_or(self.text);
        Tok {
            text: self.text.get(start..end).unwrap_or(""),
            line: self.line,
            col: self.col.saturating_add(width(prefix)),
        }
    }

    /// The part from byte `start` to the end.
    pub fn rest(&self, start: usize) -> Tok<'a> {
        self.slice(start, self.text.len())
    }

    /// Splits at the first `sep` (ASCII) outside quotes: (before, after).
    pub fn split_once(&self, sep: u8) -> Option<(Tok<'a>, Tok<'a>)> {
        let at = self.split_points(sep).next()?;
        Some((self.slice(0, at), self.rest(at + 1)))
    }

    /// Splits at every `sep` (ASCII) outside quotes.
    pub fn split_all(&self, sep: u8) -> Vec<Tok<'a>> {
        let mut parts = Vec::new();
        let mut start = 0;
        for at in self.split_points(sep) {
            parts.push(self.slice(start, at));
            start = at + 1;
        }
        parts.push(self.rest(start));
        parts
    }

    /// The byte offsets of `sep` outside quotes, in order (lazily: `split_once` stops at the
    /// first). A scan over bytes: `sep`, `"` and `\\` are ASCII, never inside a multi-byte
    /// character.
    fn split_points(&self, sep: u8) -> impl Iterator<Item = usize> + 'a {
        debug_assert!(sep.is_ascii());
        let mut in_string = false;
        let mut escaped = false;
        self.text.bytes().enumerate().filter_map(move |(i, c)| {
            if in_string {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                None
            } else if c == b'"' {
                in_string = true;
                None
            } else {
                (c == sep).then_some(i)
            }
        })
    }

    /// The token as shown in a message: `` `text` ``, or `nothing` when empty.
    pub fn shown(&self) -> String {
        if self.text.is_empty() {
            "nothing".to_string()
        } else {
            format!("`{}`", self.text)
        }
    }

    /// An error at this token.
    pub fn error(&self, message: impl Into<String>) -> Diag {
        Diag::new(self.line, self.col, message)
    }

    /// The error "expected WHAT, found `TOKEN`" at this token.
    pub fn expected(&self, what: impl std::fmt::Display) -> Diag {
        self.expected_with(what, "")
    }

    /// The error "expected WHAT, found `TOKEN`NOTE" at this token.
    pub fn expected_with(
        &self,
        what: impl std::fmt::Display,
        note: impl std::fmt::Display,
    ) -> Diag {
        self.error(format!("expected {what}, found {}{note}", self.shown()))
    }
}

/// Splits one line (without its newline) into tokens, replacing the contents of `toks` (a
/// buffer the caller reuses from line to line); stops at a `#` outside quotes.
///
/// The scan is over bytes: every byte the rules look at (space, tab, `#`, `"`, `\\`) is ASCII,
/// and so never part of a multi-byte character; a column counts characters, so it advances on
/// every byte but the continuation bytes (`10xxxxxx`) of a UTF-8 character.
pub(crate) fn tokenize<'a>(text: &'a str, line: u32, toks: &mut Vec<Tok<'a>>) -> Result<(), Diag> {
    toks.clear();
    let bytes = text.as_bytes();
    let starts_char = |b: u8| b & 0xc0 != 0x80;
    let unclosed = |col| {
        Diag::new(
            line,
            col,
            "expected `\"` to close the string that starts here, found end of line",
        )
    };
    let mut i = 0;
    let mut col: u32 = 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b' ' | b'\t' => {
                i += 1;
                col = col.saturating_add(1);
                continue;
            }
            b'#' => break,
            _ => {}
        }
        let (start, start_col) = (i, col);
        while let Some(&b) = bytes.get(i) {
            if matches!(b, b' ' | b'\t' | b'#') {
                break;
            }
            let quote_col = col;
            i += 1;
            if starts_char(b) {
                col = col.saturating_add(1);
            }
            if b != b'"' {
                continue;
            }
            loop {
                let Some(&b) = bytes.get(i) else {
                    return Err(unclosed(quote_col));
                };
                let char_col = col;
                i += 1;
                if starts_char(b) {
                    col = col.saturating_add(1);
                }
                match b {
                    b'"' => break,
                    b'\\' => match bytes.get(i) {
                        Some(b'"' | b'\\') => {
                            i += 1;
                            col = col.saturating_add(1);
                        }
                        Some(_) => {
                            let other = text.get(i..).and_then(|t| t.chars().next());
                            let other = other.unwrap_or_default();
                            return Err(Diag::new(
                                line,
                                char_col,
                                format!("expected `\\\"` or `\\\\` in a string, found `\\{other}`"),
                            ));
                        }
                        None => return Err(unclosed(quote_col)),
                    },
                    _ => {}
                }
            }
        }
        toks.push(Tok {
            text: text.get(start..i).unwrap_or_default(),
            line,
            col: start_col,
        });
    }
    Ok(())
}

/// Why a number, size or duration did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumError {
    /// Not a number at all (no digits, bad digits).
    Syntax,
    /// Digits, then an unknown suffix starting at this byte.
    Suffix(usize),
    /// Does not fit in 64 bits.
    Overflow,
}

/// Leading `0x` hex or decimal digits: (value, byte index of the rest).
fn leading_number(s: &str) -> Result<(u64, usize), NumError> {
    let (digits_at, radix) = if s.starts_with("0x") {
        (2, 16)
    } else {
        (0, 10)
    };
    let digits = &s[digits_at..];
    let len = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if len == 0 {
        return Err(NumError::Syntax);
    }
    let mut value: u64 = 0;
    for c in digits[..len].chars() {
        let d = u64::from(c.to_digit(radix).ok_or(NumError::Syntax)?);
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(d))
            .ok_or(NumError::Overflow)?;
    }
    Ok((value, digits_at + len))
}

/// A number: decimal or `0x` hex.
pub(crate) fn parse_number(s: &str) -> Result<u64, NumError> {
    match leading_number(s)? {
        (value, rest) if rest == s.len() => Ok(value),
        _ => Err(NumError::Syntax),
    }
}

fn with_unit(s: &str, units: &[(&str, u64)]) -> Result<u64, NumError> {
    let (value, rest) = leading_number(s)?;
    let suffix = &s[rest..];
    let (_, scale) = units
        .iter()
        .find(|(unit, _)| *unit == suffix)
        .ok_or(NumError::Suffix(rest))?;
    value.checked_mul(*scale).ok_or(NumError::Overflow)
}

/// Size suffixes (powers of two).
pub(crate) const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("K", 1 << 10),
    ("KiB", 1 << 10),
    ("M", 1 << 20),
    ("MiB", 1 << 20),
    ("G", 1 << 30),
    ("GiB", 1 << 30),
];

/// Duration units, in nanoseconds. A bare number is not a duration.
pub(crate) const DURATION_UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
];

/// A size or offset: a number with an optional `K`/`KiB`/`M`/`MiB`/`G`/`GiB` suffix.
pub(crate) fn parse_size(s: &str) -> Result<u64, NumError> {
    with_unit(s, SIZE_UNITS)
}

/// A duration in nanoseconds: a number with a `ns`/`us`/`ms`/`s` unit.
pub(crate) fn parse_duration(s: &str) -> Result<u64, NumError> {
    with_unit(s, DURATION_UNITS)
}

/// Canonical size text: the largest binary suffix that divides exactly, else decimal below
/// 4096 and hex above.
pub(crate) fn format_size(v: u64) -> String {
    if v != 0 {
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if v.is_multiple_of(1 << shift) {
                return format!("{}{unit}", v >> shift);
            }
        }
    }
    if v < 4096 {
        v.to_string()
    } else {
        format!("{v:#x}")
    }
}

/// Canonical duration text: the largest unit that divides exactly.
pub(crate) fn format_duration(ns: u64) -> String {
    let (unit, scale) = DURATION_UNITS
        .iter()
        .rev()
        .find(|(_, scale)| ns.is_multiple_of(*scale))
        .copied()
        .unwrap_or(("ns", 1));
    format!("{}{unit}", ns / scale)
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `[A-Za-z_][A-Za-z0-9_-]*`: bug names and machine/fs keys, which may contain `-`.
pub(crate) fn is_word(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Quotes a string with the `\"` and `\\` escapes.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Decodes a token that is exactly one quoted string; `None` if it is not.
pub(crate) fn unquote(s: &str) -> Option<String> {
    let mut chars = s.strip_prefix('"')?.chars();
    let mut out = String::new();
    loop {
        match chars.next()? {
            '"' => return chars.next().is_none().then_some(out),
            '\\' => out.push(chars.next().filter(|c| matches!(c, '"' | '\\'))?),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tokenizer as it was before the byte scan (over `char_indices`): the reference the
    /// byte scan must agree with, token for token and error for error.
    fn tokenize_by_chars(text: &str, line: u32) -> Result<Vec<Tok<'_>>, Diag> {
        let mut toks = Vec::new();
        let mut chars = text.char_indices().peekable();
        let mut col: u32 = 1;
        while let Some(&(start, c)) = chars.peek() {
            match c {
                ' ' | '\t' => {
                    chars.next();
                    col = col.saturating_add(1);
                    continue;
                }
                '#' => break,
                _ => {}
            }
            let start_col = col;
            let mut end = text.len();
            while let Some(&(i, c)) = chars.peek() {
                if matches!(c, ' ' | '\t' | '#') {
                    end = i;
                    break;
                }
                chars.next();
                let quote_col = col;
                col = col.saturating_add(1);
                if c != '"' {
                    continue;
                }
                loop {
                    let Some((_, c)) = chars.next() else {
                        return Err(Diag::new(
                            line,
                            quote_col,
                            "expected `\"` to close the string that starts here, found end of line",
                        ));
                    };
                    let char_col = col;
                    col = col.saturating_add(1);
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some((_, '"' | '\\')) => col = col.saturating_add(1),
                            Some((_, other)) => {
                                return Err(Diag::new(
                                    line,
                                    char_col,
                                    format!(
                                        "expected `\\\"` or `\\\\` in a string, found `\\{other}`"
                                    ),
                                ));
                            }
                            None => {
                                return Err(Diag::new(
                                    line,
                                    quote_col,
                                    "expected `\"` to close the string that starts here, found end of line",
                                ));
                            }
                        },
                        _ => {}
                    }
                }
            }
            toks.push(Tok {
                text: &text[start..end],
                line,
                col: start_col,
            });
        }
        Ok(toks)
    }

    /// `tokenize` into a fresh buffer.
    fn tokens(line: &str, n: u32) -> Result<Vec<Tok<'_>>, Diag> {
        let mut toks = Vec::new();
        tokenize(line, n, &mut toks).map(|()| toks)
    }

    fn texts(line: &str) -> Vec<&str> {
        match tokens(line, 1) {
            Ok(toks) => toks.iter().map(|t| t.text).collect(),
            Err(e) => panic!("{line}: {e:?}"),
        }
    }

    #[test]
    fn tokens_comments_and_strings() {
        assert_eq!(texts("a  b\tc # d e"), ["a", "b", "c"]);
        assert_eq!(
            texts("x fill=\"a b # c\" y#z"),
            ["x", "fill=\"a b # c\"", "y"]
        );
        assert_eq!(texts(r#""q\"\\" z"#), [r#""q\"\\""#, "z"]);
        let toks = tokens("  ab\t\"é\" cd", 3).unwrap_or_default();
        let cols: Vec<u32> = toks.iter().map(|t| t.col).collect();
        assert_eq!(cols, [3, 6, 10]);
        assert_eq!(toks.iter().map(|t| t.line).max(), Some(3));
    }

    /// Every line of up to 5 characters over an alphabet of the lexer's special characters,
    /// letters and multi-byte characters: the byte scan gives the tokens (text, line, column)
    /// and the errors (column, message) of the reference scan over characters, and `split_once`
    /// and `split_all` split where a scan over characters outside quotes finds the separator.
    #[test]
    fn byte_scan_matches_char_scan() {
        const ALPHABET: [char; 10] = [' ', '\t', '#', '"', '\\', 'a', 'n', '+', 'é', '€'];
        let mut checked = 0u32;
        for len in 0..=5u32 {
            for mut code in 0..ALPHABET.len().pow(len) {
                let mut line = String::new();
                for _ in 0..len {
                    line.push(ALPHABET[code % ALPHABET.len()]);
                    code /= ALPHABET.len();
                }
                // A buffer that holds the tokens of an earlier line: `tokenize` replaces them.
                let mut buf = Vec::new();
                assert!(tokenize("stale tokens", 6, &mut buf).is_ok());
                let got = tokenize(&line, 7, &mut buf).map(|()| buf);
                assert_eq!(got, tokenize_by_chars(&line, 7), "{line:?}");
                let tok = Tok {
                    text: &line,
                    line: 7,
                    col: 4,
                };
                let mut points = Vec::new();
                let (mut in_string, mut escaped) = (false, false);
                for (i, c) in line.char_indices() {
                    if in_string {
                        match (escaped, c) {
                            (true, _) => escaped = false,
                            (false, '\\') => escaped = true,
                            (false, '"') => in_string = false,
                            _ => {}
                        }
                    } else if c == '"' {
                        in_string = true;
                    } else if c == '+' {
                        points.push(i);
                    }
                }
                let first = points
                    .first()
                    .map(|&at| (tok.slice(0, at), tok.rest(at + 1)));
                assert_eq!(tok.split_once(b'+'), first, "{line:?}");
                let parts = tok.split_all(b'+');
                assert_eq!(parts.len(), points.len() + 1, "{line:?}");
                let starts = std::iter::once(0).chain(points.iter().map(|at| at + 1));
                for (part, start) in parts.iter().zip(starts) {
                    assert_eq!(part.col, tok.slice(start, start).col, "{line:?}");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 111_111);
    }

    #[test]
    fn lexical_errors() {
        let err = |s| tokens(s, 2).err().map(|d| (d.col, d.message));
        let (col, msg) = err("a \"bc").unwrap_or_default();
        assert_eq!(col, 3);
        assert!(msg.contains("expected `\"`"), "{msg}");
        let (col, msg) = err("a \"b\\nc\"").unwrap_or_default();
        assert_eq!(col, 5);
        assert!(msg.contains("found `\\n`"), "{msg}");
        assert!(err("a \"b\\").is_some());
    }

    #[test]
    fn numbers_sizes_durations() {
        assert_eq!(parse_number("0"), Ok(0));
        assert_eq!(parse_number("0x1F"), Ok(31));
        assert_eq!(parse_number("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_number("18446744073709551616"),
            Err(NumError::Overflow)
        );
        assert_eq!(parse_number("0x"), Err(NumError::Syntax));
        assert_eq!(parse_number("12a"), Err(NumError::Syntax));
        assert_eq!(parse_number("-1"), Err(NumError::Syntax));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0x200000"), Ok(0x20_0000));
        assert_eq!(parse_size("0x2K"), Ok(0x800));
        assert_eq!(parse_size("4KB"), Err(NumError::Suffix(1)));
        assert_eq!(parse_size("4k"), Err(NumError::Suffix(1)));
        assert_eq!(parse_size("17179869184G"), Err(NumError::Overflow));
        assert_eq!(parse_duration("5ns"), Ok(5));
        assert_eq!(parse_duration("5us"), Ok(5_000));
        assert_eq!(parse_duration("5ms"), Ok(5_000_000));
        assert_eq!(parse_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_duration("5"), Err(NumError::Suffix(1)));
        assert_eq!(parse_duration("99999999999s"), Err(NumError::Overflow));
    }

    #[test]
    fn canonical_formats_reparse() {
        for v in [
            0,
            1,
            64,
            4095,
            4096,
            0x5000,
            0x1234,
            3 << 20,
            5 << 30,
            u64::MAX,
        ] {
            assert_eq!(parse_size(&format_size(v)), Ok(v), "{v}");
        }
        assert_eq!(format_size(0x5000), "20KiB");
        assert_eq!(format_size(0x1234), "0x1234");
        for ns in [0, 7, 3_000, 2_000_000, 4_000_000_000, u64::MAX] {
            assert_eq!(parse_duration(&format_duration(ns)), Ok(ns), "{ns}");
        }
        assert_eq!(format_duration(2_000_000), "2ms");
        for s in ["", "a\"b", "\\", "x y#\t"] {
            assert_eq!(unquote(&quote(s)).as_deref(), Some(s));
        }
        assert_eq!(unquote("\"a\"b"), None);
    }
}
