//! The pmsim trace format, version 1: parser, syntax tree and printer.
//!
//! The user contract is `traces/format/TRACE_FORMAT.md`; `traces/format/*.trace` holds its
//! examples and one trace per op family, `traces/malformed/` one trace per error kind.
//!
//! # API
//! - [`parse`]`(src: &str, file: &str, opts: &ParseOptions) -> Result<Trace, TraceError>`
//! - [`parse_bytes`]`(src: &[u8], file: &str, opts: &ParseOptions) -> Result<Trace, TraceError>`:
//!   the same for raw bytes; invalid UTF-8 is an error at its line and column.
//! - [`print()`]`(trace: &Trace) -> String`: canonical text (also `Display for Trace`, and for
//!   every statement, op, expectation and pattern). `parse(&print(&t), ..) == Ok(t)` for every
//!   trace `parse` returns.
//! - [`ParseOptions`] `{ known_bugs: Option<Vec<String>> }`: with `Some(list)`, a `bug NAME` not in
//!   the list is an error that lists the known names (`(none yet)` for an empty list).
//! - [`TraceError`] `{ file, line, col, message }`, displayed as
//!   `FILE:LINE:COL: error: expected ..., found ...`. Parsing stops at the first error and never
//!   panics.
//! - The syntax tree: [`Trace`] = [`Header`] ([`Machine`], [`Fs`], [`Bug`], [`Proc`],
//!   [`FileDecl`]) + the thread [`Statement`]s of all threads in file order + the optional
//!   [`AfterCrash`] section. A statement is a thread name, an [`Op`] (one variant per operation)
//!   and an optional [`Expectation`] ([`Expect`]); data is described by [`Pattern`]s.
//!
//! # Positions
//! Every header item, statement and expectation keeps its [`Pos`] (1-based line, and column in
//! characters). `Pos` values always compare equal, so equality of the tree is structural: a
//! canonical reprint puts statements on other lines yet parses back equal. Compare
//! `pos.line`/`pos.col` explicitly when positions matter.
//!
//! # Checks beyond syntax
//! `pmsim-trace 1` first and only once; header statements only before the first thread
//! statement (and never after `after-crash`); at most one `machine`, `fs` and `after-crash`;
//! known `machine` keys typed (`cpus` 1..=u32::MAX, `pmem` > 0, `media`, `persist`, `seed`),
//! unknown ones kept in [`Machine::extra`]; no duplicate keys, procs, files or proc members;
//! a thread in no proc must not share a proc's name; mapping and pin names defined (by an
//! earlier `mmap ... as M` / `pin ... as G` in file order) in the using thread's process before
//! use, with fresh names after `after-crash`; each op's arguments; expectations that fit the op
//! ([`Op::fits`]); errno names from [`ERRNO_NAMES`]; bug names when [`ParseOptions::known_bugs`]
//! is given.
//!
//! # Where the spec leaves room, this parser decides
//! - `#` outside a quoted string starts a comment even inside a token (`t1 yield#x`); `\r\n`
//!   line ends are accepted; `=>` is a token of its own.
//! - Size suffixes are case-sensitive and may follow hex (`0x2K`); a duration needs its unit.
//! - A byte pattern is `0x` with a value up to 0xff (decimal is no pattern); strings are non-empty.
//! - Bug names and `machine`/`fs` keys may contain `-`: `[A-Za-z_][A-Za-z0-9_-]*`.
//! - `mmap` flags come in any order before `as`; `file` options in any order after the path.
//! - `poison` without LEN keeps `len: None`: the machine model picks the unit.
//! - `err(E)` fits system-call ops; `sigbus` fits memory accesses, `fault`, `poison` and the ops
//!   a thread may be asleep in (`sleep`, `yield`) when an action-optional signal arrives.
//! - `munmap` does not undefine a name, and a name may be redefined: only use-before-any-
//!   definition is static; the rest is the run's business.

mod ast;
mod lexer;
mod parser;
mod printer;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use ast::*;

/// What the caller knows that the format does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// The bug names `bug NAME` may enable; `None` accepts any well-formed name.
    pub known_bugs: Option<Vec<String>>,
}

/// A positioned parse error. `Display`: `FILE:LINE:COL: error: MESSAGE`, where the message says
/// what was expected and what was found.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    pub file: String,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub col: u32,
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl std::error::Error for TraceError {}

/// Parses trace text. `file` is only used in errors.
pub fn parse(src: &str, file: &str, opts: &ParseOptions) -> Result<Trace, TraceError> {
    parse_bytes(src.as_bytes(), file, opts)
}

/// Parses trace bytes, which must be UTF-8.
pub fn parse_bytes(src: &[u8], file: &str, opts: &ParseOptions) -> Result<Trace, TraceError> {
    parser::parse_bytes(src, opts).map_err(|d| TraceError {
        file: file.to_string(),
        line: d.line,
        col: d.col,
        message: d.message,
    })
}

/// Canonical text of a trace; see the printer's rules in [`Trace`]'s `Display`.
pub fn print(trace: &Trace) -> String {
    trace.to_string()
}
