//! Schedule strings: the seed of a run plus each choice made where more than one task could
//! move, printable on one line and replayed bit-exactly.
//!
//! Two versions; both parse, and a schedule prints in the shorter of the two (v1 when equal).
//!
//! Version 1: `1:SEED:CHOICES` where SEED is hex and CHOICES is a sequence of task ids, each a
//! base-36 digit (`0-9a-z`) or `{N}` for ids of 36 and more, optionally followed by `(COUNT)`
//! for a run of the same choice: `1:2a:0(3)1{40}0` is seed 0x2a, choices 0 0 0 1 40 0.
//!
//! Version 2 packs the choices: `2:SEED:N:W:DATA` where N (decimal) is the number of choices,
//! W (decimal, 1 to 32) the bits of each, and DATA the bit stream (choice `i` at bits
//! `i*W ..`, least significant bit first, zero padded) in the URL-safe base64 alphabet
//! (`A-Za-z0-9-_`, 6 bits a character, least significant first), a character optionally
//! followed by `(COUNT)` for a run of it. Runs of few tasks pack 6, 3 or 2 choices into a
//! character, where version 1 needs one each: `2:2a:6:6:AAAB` (W = 6) is choices 0 0 0 1 but
//! shorter forms exist.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Schedule {
    pub seed: u64,
    pub choices: Vec<u32>,
}

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Append `c` repeated `n` times, as `c(n)` from three on.
fn push_run(out: &mut String, c: char, n: usize) {
    if n >= 3 {
        out.push(c);
        out.push_str(&format!("({n})"));
    } else {
        for _ in 0..n {
            out.push(c);
        }
    }
}

impl Schedule {
    /// The version-1 text.
    pub fn to_v1(&self) -> String {
        V1(self).to_string()
    }

    /// The version-2 text (packed choices).
    pub fn to_v2(&self) -> String {
        let max = self.choices.iter().copied().max().unwrap_or(0);
        let w = (32 - max.leading_zeros()).max(1) as usize;
        let mut chars = Vec::with_capacity((self.choices.len() * w).div_ceil(6));
        let (mut acc, mut nbits) = (0u64, 0usize);
        for &c in &self.choices {
            acc |= (c as u64) << nbits;
            nbits += w;
            while nbits >= 6 {
                chars.push(B64[(acc & 63) as usize] as char);
                acc >>= 6;
                nbits -= 6;
            }
        }
        if nbits > 0 {
            chars.push(B64[(acc & 63) as usize] as char);
        }
        let mut out = format!("2:{:x}:{}:{w}:", self.seed, self.choices.len());
        let mut i = 0;
        while i < chars.len() {
            let n = chars[i..].iter().take_while(|&&x| x == chars[i]).count();
            push_run(&mut out, chars[i], n);
            i += n;
        }
        out
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (v1, v2) = (self.to_v1(), self.to_v2());
        f.write_str(if v2.len() < v1.len() { &v2 } else { &v1 })
    }
}

struct V1<'a>(&'a Schedule);

impl fmt::Display for V1<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, "1:{:x}:", s.seed)?;
        let mut i = 0;
        while i < s.choices.len() {
            let c = s.choices[i];
            let mut n = 1;
            while i + n < s.choices.len() && s.choices[i + n] == c {
                n += 1;
            }
            if (c as usize) < DIGITS.len() {
                write!(f, "{}", DIGITS[c as usize] as char)?;
            } else {
                write!(f, "{{{c}}}")?;
            }
            // A run of two costs the same either way; compress from three on.
            if n >= 3 {
                write!(f, "({n})")?;
                i += n;
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

/// Why a schedule string did not parse: the column (1-based) and what was expected.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ScheduleError {
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "schedule string, column {}: {}", self.col, self.message)
    }
}

impl std::error::Error for ScheduleError {}

/// Choices are bounded so that a hostile string cannot ask for gigabytes.
const MAX_CHOICES: usize = 100_000_000;

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |col: usize, m: &str| ScheduleError {
            col,
            message: m.to_string(),
        };
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("2:") {
            return parse_v2(rest);
        }
        let rest = s
            .strip_prefix("1:")
            .ok_or_else(|| err(1, "expected the version prefix `1:` or `2:`"))?;
        let (seed_str, choices_str) = rest
            .split_once(':')
            .ok_or_else(|| err(3, "expected `SEED:` (hex seed followed by a colon)"))?;
        let seed = u64::from_str_radix(seed_str, 16)
            .map_err(|_| err(3, "expected a hexadecimal seed of at most 16 digits"))?;
        let base = 3 + seed_str.len() + 1;
        let b = choices_str.as_bytes();
        let mut choices = Vec::new();
        let mut i = 0;
        let number = |i: &mut usize, close: u8| -> Result<u64, ScheduleError> {
            let start = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            if *i == start || *i >= b.len() || b[*i] != close {
                return Err(err(
                    base + start,
                    &format!("expected decimal digits closed by `{}`", close as char),
                ));
            }
            let n = choices_str[start..*i]
                .parse::<u64>()
                .map_err(|_| err(base + start, "number too large"))?;
            *i += 1;
            Ok(n)
        };
        while i < b.len() {
            let c = b[i];
            let id = if c == b'{' {
                i += 1;
                let n = number(&mut i, b'}')?;
                u32::try_from(n).map_err(|_| err(base + i, "task id too large"))?
            } else if let Some(d) = DIGITS.iter().position(|&x| x == c) {
                i += 1;
                d as u32
            } else {
                return Err(err(base + i, "expected a task id (`0-9a-z` or `{N}`)"));
            };
            let mut count = 1u64;
            if i < b.len() && b[i] == b'(' {
                i += 1;
                count = number(&mut i, b')')?;
            }
            if choices.len() as u64 + count > MAX_CHOICES as u64 {
                return Err(err(base + i, "too many choices"));
            }
            choices.extend(std::iter::repeat_n(id, count as usize));
        }
        Ok(Schedule { seed, choices })
    }
}

/// The part of a version-2 string after `2:`.
fn parse_v2(rest: &str) -> Result<Schedule, ScheduleError> {
    let err = |col: usize, m: &str| ScheduleError {
        col,
        message: m.to_string(),
    };
    let mut parts = rest.splitn(4, ':');
    let (Some(seed_str), Some(n_str), Some(w_str), Some(data)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err(3, "expected `SEED:N:W:DATA` after `2:`"));
    };
    let seed = u64::from_str_radix(seed_str, 16)
        .map_err(|_| err(3, "expected a hexadecimal seed of at most 16 digits"))?;
    let n_col = 3 + seed_str.len() + 1;
    let n = n_str
        .parse::<usize>()
        .ok()
        .filter(|&n| n <= MAX_CHOICES)
        .ok_or_else(|| {
            err(
                n_col,
                "expected the number of choices (decimal, at most 10^8)",
            )
        })?;
    let w_col = n_col + n_str.len() + 1;
    let w = w_str
        .parse::<usize>()
        .ok()
        .filter(|w| (1..=32).contains(w))
        .ok_or_else(|| err(w_col, "expected the bits per choice, 1 to 32"))?;
    let base = w_col + w_str.len() + 1;
    let need = (n * w).div_ceil(6);
    let b = data.as_bytes();
    let mut chars: Vec<u8> = Vec::with_capacity(need);
    let mut i = 0;
    while i < b.len() {
        let at = base + i;
        let Some(v) = B64.iter().position(|&x| x == b[i]) else {
            return Err(err(
                base + i,
                "expected a base64url character (`A-Za-z0-9-_`)",
            ));
        };
        i += 1;
        let mut count = 1usize;
        if i < b.len() && b[i] == b'(' {
            let start = i + 1;
            let end = data[start..]
                .find(')')
                .map(|k| start + k)
                .ok_or_else(|| err(base + start, "expected decimal digits closed by `)`"))?;
            count = data[start..end]
                .parse::<usize>()
                .ok()
                .filter(|&c| c <= need)
                .ok_or_else(|| err(base + start, "expected a count that fits the choices"))?;
            i = end + 1;
        }
        if chars.len() + count > need {
            return Err(err(at, "more data than N choices of W bits"));
        }
        chars.extend(std::iter::repeat_n(v as u8, count));
    }
    if chars.len() != need {
        return Err(err(
            base + b.len(),
            &format!(
                "{} characters of data for {n} choices of {w} bits, expected {need}",
                chars.len()
            ),
        ));
    }
    let mut choices = Vec::with_capacity(n);
    let (mut acc, mut nbits) = (0u64, 0usize);
    let mask = (1u64 << w) - 1;
    let mut it = chars.iter();
    while choices.len() < n {
        while nbits < w {
            let c = it.next().expect("need characters were counted");
            acc |= (*c as u64) << nbits;
            nbits += 6;
        }
        choices.push((acc & mask) as u32);
        acc >>= w;
        nbits -= w;
    }
    Ok(Schedule { seed, choices })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_2_round_trips_and_packs() {
        let s = Schedule {
            seed: 0x2a,
            choices: vec![0, 0, 0, 1],
        };
        assert_eq!(s.to_v2(), "2:2a:4:1:I");
        for choices in [
            vec![],
            vec![0],
            vec![5, 0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 1],
            vec![u32::MAX, 0, 1 << 31],
            (0..1000).map(|i| (i * 7 % 13) as u32).collect(),
        ] {
            let s = Schedule {
                seed: u64::MAX,
                choices,
            };
            assert_eq!(s.to_v2().parse::<Schedule>().unwrap(), s, "{}", s.to_v2());
            assert_eq!(s.to_v1().parse::<Schedule>().unwrap(), s);
            assert_eq!(s.to_string().parse::<Schedule>().unwrap(), s);
        }
        // Runs of one character are counted.
        let s = Schedule {
            seed: 0,
            choices: vec![0; 600],
        };
        assert_eq!(s.to_v2(), "2:0:600:1:A(100)");
    }

    #[test]
    fn version_2_errors_name_the_column() {
        for (text, col) in [
            ("2:0:4:1", 3),
            ("2:zz:4:1:I", 3),
            ("2:0:x:1:I", 5),
            ("2:0:4:33:I", 7),
            ("2:0:4:1:I!", 10),
            ("2:0:4:1:II", 10),
            ("2:0:13:1:I", 11),
            ("2:0:4:1:I(9", 11),
            ("2:0:4:1:I(99999999999999999999)", 11),
        ] {
            let e = text.parse::<Schedule>().unwrap_err();
            assert_eq!(e.col, col, "{text}: {e}");
        }
    }

    #[test]
    fn round_trip_with_runs_and_large_ids() {
        let s = Schedule {
            seed: 0xdead_beef,
            choices: vec![0, 0, 0, 1, 40, 40, 35, 2, 2, 2, 2],
        };
        let text = s.to_v1();
        assert_eq!(text, "1:deadbeef:0(3)1{40}{40}z2(4)");
        // The shorter form prints.
        assert_eq!(s.to_string(), "2:deadbeef:11:6:A(3)BoojC(4)");
        assert_eq!(text.parse::<Schedule>().unwrap(), s);
    }

    #[test]
    fn errors_name_the_column() {
        let e = "1:zz:01".parse::<Schedule>().unwrap_err();
        assert_eq!(e.col, 3);
        let e = "1:0:01(x)".parse::<Schedule>().unwrap_err();
        assert_eq!(e.col, 8);
        assert!("3:0:0".parse::<Schedule>().is_err());
        assert!("2:0:0".parse::<Schedule>().is_err());
        assert!("1:0:0(99999999999)".parse::<Schedule>().is_err());
        assert_eq!(
            "1:0:".parse::<Schedule>().unwrap().choices,
            Vec::<u32>::new()
        );
    }
}
