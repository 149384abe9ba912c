//! Schedule strings: the seed of a run plus each choice made where more than one task could
//! move, printable on one line and replayed bit-exactly.
//!
//! Format: `1:SEED:CHOICES` where SEED is hex and CHOICES is a sequence of task ids, each a
//! base-36 digit (`0-9a-z`) or `{N}` for ids of 36 and more, optionally followed by `(COUNT)`
//! for a run of the same choice: `1:2a:0(3)1{40}0` is seed 0x2a, choices 0 0 0 1 40 0.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Schedule {
    pub seed: u64,
    pub choices: Vec<u32>,
}

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1:{:x}:", self.seed)?;
        let mut i = 0;
        while i < self.choices.len() {
            let c = self.choices[i];
            let mut n = 1;
            while i + n < self.choices.len() && self.choices[i + n] == c {
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
        let rest = s
            .strip_prefix("1:")
            .ok_or_else(|| err(1, "expected the version prefix `1:`"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_runs_and_large_ids() {
        let s = Schedule {
            seed: 0xdead_beef,
            choices: vec![0, 0, 0, 1, 40, 40, 35, 2, 2, 2, 2],
        };
        let text = s.to_string();
        assert_eq!(text, "1:deadbeef:0(3)1{40}{40}z2(4)");
        assert_eq!(text.parse::<Schedule>().unwrap(), s);
    }

    #[test]
    fn errors_name_the_column() {
        let e = "1:zz:01".parse::<Schedule>().unwrap_err();
        assert_eq!(e.col, 3);
        let e = "1:0:01(x)".parse::<Schedule>().unwrap_err();
        assert_eq!(e.col, 8);
        assert!("2:0:0".parse::<Schedule>().is_err());
        assert!("1:0:0(99999999999)".parse::<Schedule>().is_err());
        assert_eq!(
            "1:0:".parse::<Schedule>().unwrap().choices,
            Vec::<u32>::new()
        );
    }
}
