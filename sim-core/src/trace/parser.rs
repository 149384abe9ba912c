//! Statements, arguments, expectations and the checks the parser can make alone.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::ParseOptions;
use super::ast::*;
use super::lexer::{
    Diag, NumError, Tok, is_name, is_word, parse_duration, parse_number, parse_size, tokenize,
    unquote, width,
};

type Res<T> = Result<T, Diag>;

/// First words of header statements; they cannot name threads.
pub(crate) const HEADER_KEYWORDS: &[&str] = &["machine", "fs", "bug", "proc", "file"];

const SIZE_HINT: &str = "e.g. 4096, 0x1000, 4K, 2MiB";
const PATTERN_FORMS: &str = "0xAB, zero, u64:VALUE, \"text\" or rand:SEED";
const EXPECT_FORMS: &str =
    "ok, any, err(ENAME), sigbus, sigbus(ar), sigbus(ao), PATTERN, pte, pmd or size=SIZE";

/// Parses a whole trace; the first error stops it.
pub(crate) fn parse_bytes(src: &[u8], opts: &ParseOptions) -> Res<Trace> {
    let mut parser = Parser::new(opts);
    let mut line: u32 = 0;
    let mut eof_col = 1;
    let mut toks = Vec::new();
    for raw in src.split(|&b| b == b'\n') {
        line = line.saturating_add(1);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| {
            let valid = raw.get(..e.valid_up_to()).unwrap_or_default();
            let col = width(std::str::from_utf8(valid).unwrap_or_default()).saturating_add(1);
            let byte = raw.get(e.valid_up_to()).copied().unwrap_or_default();
            Diag::new(
                line,
                col,
                format!("expected UTF-8 text, found byte 0x{byte:02x}"),
            )
        })?;
        eof_col = width(text).saturating_add(1);
        tokenize(text, line, &mut toks)?;
        if let Some((first, rest)) = toks.split_first() {
            parser.statement(*first, rest)?;
        }
    }
    parser.finish(line.max(1), eof_col)
}

/// The arguments of one statement: the tokens up to `=>` (or the end of the line).
struct Args<'t, 'a> {
    toks: &'t [Tok<'a>],
    next: usize,
    /// The `=>` that ends a thread statement's arguments.
    arrow: Option<Tok<'a>>,
    /// The tokens after `=>`.
    after: &'t [Tok<'a>],
    /// Whether `=>` may follow (thread statements).
    thread: bool,
    line: u32,
    end_col: u32,
}

impl<'t, 'a> Args<'t, 'a> {
    fn new(keyword: Tok<'a>, toks: &'t [Tok<'a>], thread: bool) -> Args<'t, 'a> {
        let split = toks.iter().position(|t| thread && t.text == "=>");
        let (toks, arrow, after) = match split {
            Some(i) => (
                toks.get(..i).unwrap_or_default(),
                toks.get(i).copied(),
                toks.get(i + 1..).unwrap_or_default(),
            ),
            None => (toks, None, Default::default()),
        };
        let end_col = toks.last().unwrap_or(&keyword).end_col();
        Args {
            toks,
            next: 0,
            arrow,
            after,
            thread,
            line: keyword.line,
            end_col,
        }
    }

    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.next).copied()
    }

    /// An error "expected WHAT, found ..." at the next token (or the end of the arguments).
    fn expected(&self, what: &str) -> Diag {
        match self.peek().or(self.arrow) {
            Some(t) => t.expected(what),
            None => Diag::new(
                self.line,
                self.end_col,
                format!("expected {what}, found end of line"),
            ),
        }
    }

    fn take(&mut self, what: &str) -> Res<Tok<'a>> {
        let tok = self.peek().ok_or_else(|| self.expected(what))?;
        self.next += 1;
        Ok(tok)
    }

    /// Consumes the next token if it is `word`.
    fn flag(&mut self, word: &str) -> bool {
        let hit = self.peek().is_some_and(|t| t.text == word);
        if hit {
            self.next += 1;
        }
        hit
    }

    /// Consumes the next token if it is a keyword of `T`.
    fn opt_pick<T: Keyword>(&mut self) -> Option<T> {
        let value = T::from_keyword(self.peek()?.text)?;
        self.next += 1;
        Some(value)
    }

    /// Requires a keyword of `T`.
    fn pick<T: Keyword>(&mut self) -> Res<T> {
        self.opt_pick().ok_or_else(|| self.expected(&T::choices()))
    }

    /// Requires the word `word`.
    fn word(&mut self, word: &str) -> Res<()> {
        if self.flag(word) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{word}`")))
        }
    }

    fn more(&self) -> bool {
        self.peek().is_some()
    }

    /// Requires the end of the arguments; `optional` lists what else could have come.
    fn done(&self, optional: &str) -> Res<()> {
        if !self.more() {
            return Ok(());
        }
        let end = if self.thread {
            "`=>` or end of line"
        } else {
            "end of line"
        };
        let what = if optional.is_empty() {
            end.to_string()
        } else {
            format!("{optional}, {end}")
        };
        Err(self.expected(&what))
    }

    fn size(&mut self, what: &str) -> Res<u64> {
        size(self.take(what)?, what)
    }

    fn off(&mut self) -> Res<u64> {
        self.size("an offset OFF")
    }

    /// A length LEN of a range that starts at `off`: the range must end inside the 64-bit
    /// space (`off + len <= 2^64`); otherwise the error is at the length.
    fn len_from(&mut self, off: u64) -> Res<u64> {
        let what = "a length LEN";
        let tok = self.take(what)?;
        let len = size(tok, what)?;
        if u128::from(off) + u128::from(len) > 1u128 << 64 {
            return Err(tok.expected_with(
                format!("a length with OFF + LEN at most 2^64 (OFF is {off:#x})"),
                " (the range would end past the 64-bit space)",
            ));
        }
        Ok(len)
    }

    fn path(&mut self) -> Res<String> {
        path(self.take("a path starting with `/`")?)
    }

    fn pattern(&mut self) -> Res<Pattern> {
        pattern(self.take("a pattern")?, "a pattern")
    }

    fn range(&mut self) -> Res<Option<Range>> {
        if !self.more() {
            return Ok(None);
        }
        let off = self.off()?;
        Ok(Some(Range {
            off,
            len: self.len_from(off)?,
        }))
    }
}

fn num_error(tok: Tok, err: NumError, what: &str, hint: &str, units: &str) -> Diag {
    match err {
        NumError::Syntax => tok.expected(format!("{what} ({hint})")),
        NumError::Suffix(at) => match tok.rest(at) {
            suffix if suffix.text.is_empty() => tok.error(format!(
                "expected {units}, found {} without one",
                tok.shown()
            )),
            suffix => suffix.expected(units),
        },
        NumError::Overflow => tok.expected(format!("{what} below 2^64")),
    }
}

fn number(tok: Tok, what: &str) -> Res<u64> {
    parse_number(tok.text)
        .map_err(|e| num_error(tok, e, what, "decimal or 0x hex", "a plain number"))
}

fn size(tok: Tok, what: &str) -> Res<u64> {
    parse_size(tok.text).map_err(|e| {
        num_error(
            tok,
            e,
            what,
            SIZE_HINT,
            "a size suffix K, KiB, M, MiB, G or GiB",
        )
    })
}

fn duration(tok: Tok) -> Res<u64> {
    parse_duration(tok.text).map_err(|e| {
        num_error(
            tok,
            e,
            "a duration",
            "e.g. 10us",
            "a duration unit ns, us, ms or s",
        )
    })
}

fn path(tok: Tok) -> Res<String> {
    if tok.text.starts_with('/') && !tok.text.contains('"') {
        Ok(tok.text.to_string())
    } else {
        Err(tok.expected("a path starting with `/` (without quotes)"))
    }
}

fn name(tok: Tok, what: &str) -> Res<String> {
    if is_name(tok.text) {
        Ok(tok.text.to_string())
    } else {
        Err(tok.expected(format!("{what} ([A-Za-z_][A-Za-z0-9_]*)")))
    }
}

/// A pattern; `what` names the expected thing when the token is no pattern at all.
fn pattern(tok: Tok, what: &str) -> Res<Pattern> {
    let t = tok.text;
    if t == "zero" {
        Ok(Pattern::Zero)
    } else if t.starts_with('"') {
        match unquote(t) {
            Some(s) if !s.is_empty() => Ok(Pattern::Text(s)),
            Some(_) => Err(tok.expected("a non-empty string")),
            None => Err(tok.expected("a string pattern that is exactly one quoted string")),
        }
    } else if t.starts_with("u64:") {
        number(tok.rest(4), "a 64-bit value").map(Pattern::U64)
    } else if t.starts_with("rand:") {
        number(tok.rest(5), "a seed").map(Pattern::Rand)
    } else if t.starts_with("0x") {
        match number(tok, "a byte pattern")? {
            v @ 0..=0xff => Ok(Pattern::Byte(v as u8)),
            _ => Err(tok.expected("a byte pattern 0x00 to 0xff")),
        }
    } else {
        Err(tok.expected(format!("{what} ({PATTERN_FORMS})")))
    }
}

/// `=> EXPECT`: one expectation, or alternatives `A|B|...` of any kinds (`0x5a|sigbus`,
/// `ok|err(ENOSPC)`, `pte|pmd`). Pattern alternatives merge into one [`Expect::Bytes`] and
/// size alternatives into one [`Expect::Size`] (a bare size after `size=A` continues it, as
/// `size=A|B` always meant), so a trace without mixed kinds keeps the AST it always had; mixed
/// kinds become [`Expect::Alt`], in the canonical order of [`Expect::alt_rank`].
fn expect(tok: Tok) -> Res<Expect> {
    let parts = tok.split_all(b'|');
    if parts.len() == 1 {
        return expect_one(tok, true);
    }
    let mut alts: Vec<Expect> = Vec::new();
    for part in parts {
        // After `size=A`, a part that is empty or starts with a digit continues the sizes.
        if let Some(Expect::Size(v)) = alts.last_mut()
            && part.text.chars().next().is_none_or(|c| c.is_ascii_digit())
        {
            v.push(size(part, "a size SIZE")?);
            continue;
        }
        let e = expect_one(part, false)?;
        match (alts.iter_mut().find(|a| a.alt_rank() == e.alt_rank()), e) {
            (Some(Expect::Bytes(v)), Expect::Bytes(w)) => v.extend(w),
            (Some(Expect::Size(v)), Expect::Size(w)) => v.extend(w),
            (_, e) => alts.push(e),
        }
    }
    alts.sort_by_key(Expect::alt_rank);
    Ok(if alts.len() == 1 {
        alts.pop().expect("one alternative")
    } else {
        Expect::Alt(alts)
    })
}

/// One alternative of an expectation (`whole`: the token is the whole expectation).
fn expect_one(tok: Tok, whole: bool) -> Res<Expect> {
    let t = tok.text;
    let err = |at: Tok, what: &str| at.error(format!("expected {what}, found {}", tok.shown()));
    if let Some(size) = PageSize::from_keyword(t) {
        return Ok(Expect::Page(size));
    }
    Ok(match t {
        "ok" => Expect::Ok,
        "any" => Expect::Any,
        "sigbus" => Expect::Sigbus(None),
        _ if t.starts_with("sigbus(") => {
            let code = t
                .strip_suffix(')')
                .and_then(|c| c.get(7..).and_then(SigbusCode::from_keyword));
            Expect::Sigbus(Some(
                code.ok_or_else(|| err(tok, "sigbus, sigbus(ar) or sigbus(ao)"))?,
            ))
        }
        _ if t.starts_with("err(") => {
            let inner = tok.slice(4, t.len().saturating_sub(1));
            if !t.ends_with(')') || !ERRNO_NAMES.contains(&inner.text) {
                return Err(err(
                    inner,
                    "err(ENAME) with an errno name such as EIO, ENOSPC or EBUSY",
                ));
            }
            Expect::Errno(inner.text.to_string())
        }
        _ if t.starts_with("size=") => Expect::Size(vec![size(tok.rest(5), "a size SIZE")?]),
        _ => {
            let what = if whole {
                format!("an expectation ({EXPECT_FORMS}) or a pattern")
            } else {
                format!("an alternative ({EXPECT_FORMS}) or a pattern")
            };
            Expect::Bytes(vec![pattern(tok, &what)?])
        }
    })
}

/// Splits `KEY=VALUE` arguments, checking the key syntax, a non-empty value and duplicates.
fn params<'a>(a: &mut Args<'_, 'a>) -> Res<Vec<(Tok<'a>, Tok<'a>)>> {
    let mut out: Vec<(Tok<'a>, Tok<'a>)> = Vec::new();
    while let Some(tok) = a.peek() {
        let Some((key, value)) = tok.split_once(b'=') else {
            return Err(a.expected("KEY=VALUE"));
        };
        a.next += 1;
        if !is_word(key.text) {
            return Err(key.expected("a key ([A-Za-z_][A-Za-z0-9_-]*) before `=`"));
        }
        if value.text.is_empty() {
            return Err(value.error(format!(
                "expected a value after `{}=`, found nothing",
                key.text
            )));
        }
        if out.iter().any(|(k, _)| k.text == key.text) {
            return Err(key.expected_with("each key once", " again"));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn param(key: Tok, value: Tok) -> Param {
    Param {
        key: key.text.to_string(),
        value: value.text.to_string(),
        pos: pos(key),
    }
}

fn pos(tok: Tok) -> Pos {
    Pos::new(tok.line, tok.col)
}

/// Names defined so far (in file order) in one process: mappings and pins.
#[derive(Default)]
struct Scope {
    maps: HashSet<String, NameHash>,
    pins: HashSet<String, NameHash>,
}

/// FNV-1a over the bytes of a name: the parser looks up the thread's process and the
/// statement's mapping or pin name in these sets for every statement, and names are short, so
/// SipHash's setup (std's default) dominates the look-ups. Keys are the trace's own names; no
/// output depends on the iteration order of these maps (the one listing sorts).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type NameHash = BuildHasherDefault<Fnv>;

struct Parser<'o> {
    opts: &'o ParseOptions,
    version_seen: bool,
    header: Header,
    statements: Vec<Statement>,
    after_crash: Option<AfterCrash>,
    /// What ended the header: (line, description).
    header_closed: Option<(u32, &'static str)>,
    /// thread -> (proc, line of the proc statement).
    members: HashMap<String, (String, u32), NameHash>,
    /// Per-process names; reset by `after-crash` (a crash drops every mapping and pin).
    scopes: HashMap<String, Scope, NameHash>,
    /// The names defined before `after-crash`, for a hint.
    crashed: HashMap<String, Scope, NameHash>,
}

impl<'o> Parser<'o> {
    fn new(opts: &'o ParseOptions) -> Parser<'o> {
        Parser {
            opts,
            version_seen: false,
            header: Header::default(),
            statements: Vec::new(),
            after_crash: None,
            header_closed: None,
            members: HashMap::default(),
            scopes: HashMap::default(),
            crashed: HashMap::default(),
        }
    }

    fn finish(self, eof_line: u32, eof_col: u32) -> Res<Trace> {
        if !self.version_seen {
            return Err(Diag::new(
                eof_line,
                eof_col,
                "expected `pmsim-trace 1` as the first statement, found end of file",
            ));
        }
        Ok(Trace {
            version: TRACE_VERSION,
            header: self.header,
            statements: self.statements,
            after_crash: self.after_crash,
        })
    }

    fn statement<'a>(&mut self, first: Tok<'a>, rest: &[Tok<'a>]) -> Res<()> {
        let is_header = HEADER_KEYWORDS.contains(&first.text);
        let is_thread = !is_header && !["pmsim-trace", "after-crash"].contains(&first.text);
        let mut a = Args::new(first, rest, is_thread);
        if !self.version_seen {
            if first.text != "pmsim-trace" {
                return Err(first.expected("`pmsim-trace 1` as the first statement"));
            }
            return self.version(&mut a);
        }
        if is_header && let Some((line, what)) = self.header_closed {
            return Err(first.expected(format!(
                "header statements only before {what} (line {line})"
            )));
        }
        match first.text {
            "pmsim-trace" => Err(first.error(
                "expected `pmsim-trace` only once, as the first statement, found a second one",
            )),
            "after-crash" => self.after_crash(first, &a),
            "machine" => self.machine(first, &mut a),
            "fs" => self.fs(first, &mut a),
            "bug" => self.bug(&mut a),
            "proc" => self.proc(first, &mut a),
            "file" => self.file(first, &mut a),
            _ => self.thread_statement(first, &mut a),
        }
    }

    fn version(&mut self, a: &mut Args) -> Res<()> {
        let tok = a.take("the version `1`")?;
        if number(tok, "the version `1`")? != TRACE_VERSION {
            return Err(tok.expected("trace version 1 (the only supported one)"));
        }
        a.done("")?;
        self.version_seen = true;
        Ok(())
    }

    fn after_crash(&mut self, first: Tok, a: &Args) -> Res<()> {
        if let Some(prev) = &self.after_crash {
            return Err(first.error(format!(
                "expected one `after-crash` line, found a second (the first is at line {})",
                prev.pos.line
            )));
        }
        a.done("")?;
        self.after_crash = Some(AfterCrash {
            pos: pos(first),
            statements: Vec::new(),
        });
        self.header_closed
            .get_or_insert((first.line, "`after-crash`"));
        self.crashed = std::mem::take(&mut self.scopes);
        Ok(())
    }

    fn duplicate(first: Tok, prev: Option<Pos>) -> Res<()> {
        match prev {
            Some(prev) => Err(first.error(format!(
                "expected one `{}` statement, found a second (the first is at line {})",
                first.text, prev.line
            ))),
            None => Ok(()),
        }
    }

    fn machine(&mut self, first: Tok, a: &mut Args) -> Res<()> {
        Self::duplicate(first, self.header.machine.as_ref().map(|m| m.pos))?;
        let mut m = Machine {
            pos: pos(first),
            ..Machine::default()
        };
        for (key, value) in params(a)? {
            let bad = |what: String| value.expected(what);
            match key.text {
                "cpus" => {
                    let n = u32::try_from(number(value, "a CPU count")?).ok();
                    let n = n.filter(|n| (1..=MAX_CPUS).contains(n));
                    let what = format!("a CPU count from 1 to {MAX_CPUS}");
                    m.cpus = Some(n.ok_or_else(|| bad(what))?);
                }
                "pmem" => {
                    // Whole cache lines, as the machine model allocates pmem.
                    let bytes = Some(size(value, "a pmem size")?).filter(|&b| b > 0 && b % 64 == 0);
                    let what = "a pmem size that is a positive multiple of 64 bytes";
                    m.pmem = Some(bytes.ok_or_else(|| bad(what.into()))?);
                }
                "media" => {
                    let media = Media::from_keyword(value.text);
                    m.media = Some(media.ok_or_else(|| bad(Media::choices()))?);
                }
                "persist" => {
                    let persist = Persist::from_keyword(value.text);
                    m.persist = Some(persist.ok_or_else(|| bad(Persist::choices()))?);
                }
                "seed" => m.seed = Some(number(value, "a seed")?),
                _ => m.extra.push(param(key, value)),
            }
        }
        self.header.machine = Some(m);
        Ok(())
    }

    fn fs(&mut self, first: Tok, a: &mut Args) -> Res<()> {
        Self::duplicate(first, self.header.fs.as_ref().map(|f| f.pos))?;
        let kind = a
            .opt_pick()
            .ok_or_else(|| a.expected(&format!("a file-system type {}", FsKind::choices())))?;
        let mut fs = Fs {
            pos: pos(first),
            kind,
            blocksize: None,
            extra: Vec::new(),
        };
        for (key, value) in params(a)? {
            match key.text {
                "blocksize" => {
                    let bytes = size(value, "a block size")?;
                    if !bytes.is_power_of_two() {
                        return Err(value.expected("a block size that is a power of two"));
                    }
                    fs.blocksize = Some(bytes);
                }
                _ => fs.extra.push(param(key, value)),
            }
        }
        self.header.fs = Some(fs);
        Ok(())
    }

    fn bug(&mut self, a: &mut Args) -> Res<()> {
        let tok = a.take("a bug name")?;
        if !is_word(tok.text) {
            return Err(tok.expected("a bug name ([A-Za-z_][A-Za-z0-9_-]*)"));
        }
        if let Some(known) = &self.opts.known_bugs
            && !known.iter().any(|k| k == tok.text)
        {
            let list = if known.is_empty() {
                "(none yet)".to_string()
            } else {
                format!("(one of: {})", known.join(", "))
            };
            return Err(tok.expected(format!("a known bug name {list}")));
        }
        a.done("")?;
        self.header.bugs.push(Bug {
            name: tok.text.to_string(),
            pos: pos(tok),
        });
        Ok(())
    }

    fn proc(&mut self, first: Tok, a: &mut Args) -> Res<()> {
        let name_tok = a.take("a process name")?;
        let proc_name = name(name_tok, "a process name")?;
        if let Some(prev) = self.header.procs.iter().find(|p| p.name == proc_name) {
            let note = format!(" (declared at line {})", prev.pos.line);
            return Err(name_tok.expected_with("a new process name", note));
        }
        let list = a.take("threads=T1,T2,...")?;
        let Some(("threads", threads)) = list.split_once(b'=').map(|(k, v)| (k.text, v)) else {
            return Err(list.expected("threads=T1,T2,..."));
        };
        let mut members = Vec::new();
        for t in threads.split_all(b',') {
            if HEADER_KEYWORDS.contains(&t.text) {
                return Err(t.expected("a thread name that is not a header keyword"));
            }
            let thread = name(t, "a thread name")?;
            if let Some((other, line)) = self.members.get(&thread) {
                let note = format!(" again (already in proc `{other}` at line {line})");
                return Err(t.expected_with("each thread in at most one proc", note));
            }
            self.members
                .insert(thread.clone(), (proc_name.clone(), first.line));
            members.push(thread);
        }
        a.done("")?;
        self.header.procs.push(Proc {
            name: proc_name,
            threads: members,
            pos: pos(first),
        });
        Ok(())
    }

    fn file(&mut self, first: Tok, a: &mut Args) -> Res<()> {
        let path_tok = a.peek();
        let path = a.path()?;
        if let Some(prev) = self.header.files.iter().find(|f| f.path == path) {
            let t = path_tok.unwrap_or(first);
            let note = format!(" again (first at line {})", prev.pos.line);
            return Err(t.expected_with("each file declared once", note));
        }
        let mut decl = FileDecl {
            path,
            size: 0,
            fill: None,
            prealloc: false,
            hole: false,
            pos: pos(first),
        };
        let mut size_seen = false;
        while let Some(tok) = a.peek() {
            let dup = |seen: bool| match seen {
                true => Err(tok.expected_with("each option once", " again")),
                false => Ok(()),
            };
            let both = || tok.error("expected at most one of `prealloc` and `hole`, found both");
            a.next += 1;
            match tok.split_once(b'=').map(|(k, v)| (k.text, v)) {
                _ if tok.text == "prealloc" => {
                    dup(decl.prealloc)?;
                    decl.prealloc = true;
                    if decl.hole {
                        return Err(both());
                    }
                }
                _ if tok.text == "hole" => {
                    dup(decl.hole)?;
                    decl.hole = true;
                    if decl.prealloc {
                        return Err(both());
                    }
                }
                Some(("size", v)) => {
                    dup(size_seen)?;
                    decl.size = size(v, "a size SIZE")?;
                    size_seen = true;
                }
                Some(("fill", v)) => {
                    dup(decl.fill.is_some())?;
                    decl.fill = Some(pattern(v, "a pattern")?);
                }
                _ => {
                    return Err(tok.expected("size=SIZE, fill=PATTERN, prealloc or hole"));
                }
            }
        }
        if !size_seen {
            return Err(a.expected("size=SIZE"));
        }
        self.header.files.push(decl);
        Ok(())
    }

    fn process_of<'s>(&'s self, thread: &'s str) -> &'s str {
        self.members.get(thread).map_or(thread, |(p, _)| p.as_str())
    }

    /// Checks that mapping (or pin) `tok` is defined in `thread`'s process.
    fn use_name(&self, thread: &str, tok: Tok, pin: bool) -> Res<String> {
        let kind = if pin { "pin" } else { "mapping" };
        let n = name(tok, if pin { "a pin name" } else { "a mapping name" })?;
        let defined = |s: &Scope| {
            if pin {
                s.pins.contains(&n)
            } else {
                s.maps.contains(&n)
            }
        };
        let process = self.process_of(thread);
        if self.scopes.get(process).is_some_and(defined) {
            return Ok(n);
        }
        let definer = if pin { "pin ... as" } else { "mmap ... as" };
        let mut elsewhere: Vec<&str> = self
            .scopes
            .iter()
            .filter(|(_, s)| defined(s))
            .map(|(p, _)| p.as_str())
            .collect();
        elsewhere.sort_unstable();
        let note = match elsewhere.first() {
            Some(p) => format!(" (it is defined in process `{p}`)"),
            None if self.crashed.get(process).is_some_and(defined) => {
                " (names defined before `after-crash` do not survive the crash)".to_string()
            }
            None => String::new(),
        };
        let what = format!("a {kind} defined by an earlier `{definer} {n}` in process `{process}`");
        Err(tok.expected_with(what, note))
    }

    fn define(&mut self, thread: &str, n: String, pin: bool) {
        let process = self.process_of(thread).to_string();
        let scope = self.scopes.entry(process).or_default();
        if pin {
            scope.pins.insert(n);
        } else {
            scope.maps.insert(n);
        }
    }

    /// `M+OFF`, with `M` defined in `thread`'s process.
    fn map_off(&self, thread: &str, a: &mut Args) -> Res<MapOff> {
        let what = "M+OFF (a mapping name, `+`, an offset)";
        let tok = a.take(what)?;
        let Some((m, off)) = tok.split_once(b'+') else {
            return Err(tok.expected(what));
        };
        Ok(MapOff {
            map: self.use_name(thread, m, false)?,
            off: size(off, "an offset OFF")?,
        })
    }

    fn map(&self, thread: &str, a: &mut Args) -> Res<String> {
        self.use_name(thread, a.take("a mapping name")?, false)
    }

    /// `as NAME` of `mmap` and `pin`.
    fn define_as(&mut self, thread: &str, a: &mut Args, pin: bool) -> Res<String> {
        let what = if pin { "a pin name" } else { "a mapping name" };
        let n = name(a.take(what)?, what)?;
        self.define(thread, n.clone(), pin);
        Ok(n)
    }

    fn thread_statement(&mut self, first: Tok, a: &mut Args) -> Res<()> {
        let thread = name(
            first,
            "a header keyword (machine, fs, bug, proc, file, after-crash) or a thread name",
        )?;
        if !self.members.contains_key(&thread)
            && let Some(p) = self.header.procs.iter().find(|p| p.name == thread)
        {
            let note = format!(
                " (a thread in no proc is a process of its own, and proc `{thread}` is declared at line {})",
                p.pos.line
            );
            return Err(first.expected_with("a thread of a proc or a name that no proc has", note));
        }
        self.header_closed
            .get_or_insert((first.line, "the first thread statement"));
        let op_tok = a.take("an operation")?;
        let op = self.op(&thread, op_tok, a)?;
        let expect = match a.arrow {
            None => None,
            Some(arrow) => {
                let Some(tok) = a.after.first().copied() else {
                    return Err(Diag::new(
                        arrow.line,
                        arrow.end_col(),
                        format!("expected an expectation ({EXPECT_FORMS}), found end of line"),
                    ));
                };
                if let Some(extra) = a.after.get(1) {
                    return Err(extra.expected("end of line after the expectation"));
                }
                let e = expect(tok)?;
                let fits = op.fits();
                if !fits.allows(&e) {
                    let kw = op.keyword();
                    let what = format!("an expectation that fits `{kw}` ({})", fits.describe());
                    return Err(tok.expected(what));
                }
                Some(Expectation {
                    expect: e,
                    pos: pos(tok),
                })
            }
        };
        let statement = Statement {
            pos: pos(first),
            thread,
            op,
            expect,
        };
        match &mut self.after_crash {
            Some(section) => section.statements.push(statement),
            None => self.statements.push(statement),
        }
        Ok(())
    }

    fn op(&mut self, thread: &str, kw: Tok, a: &mut Args) -> Res<Op> {
        let mut optional = "";
        let op = match kw.text {
            "create" => Op::Create { path: a.path()? },
            "write" => {
                let path = a.path()?;
                let off = a.off()?;
                Op::Write {
                    path,
                    off,
                    len: a.len_from(off)?,
                    pattern: a.pattern()?,
                }
            }
            "read" => {
                let path = a.path()?;
                let off = a.off()?;
                Op::Read {
                    path,
                    off,
                    len: a.len_from(off)?,
                }
            }
            "stat" => Op::Stat { path: a.path()? },
            "truncate" => Op::Truncate {
                path: a.path()?,
                size: a.size("a size SIZE")?,
            },
            "fallocate" => {
                let path = a.path()?;
                let off = a.off()?;
                Op::Fallocate {
                    path,
                    off,
                    len: a.len_from(off)?,
                    mode: if a.more() {
                        a.pick()?
                    } else {
                        FallocMode::Alloc
                    },
                }
            }
            "fsync" => Op::Fsync { path: a.path()? },
            "fdatasync" => Op::Fdatasync { path: a.path()? },
            "unlink" => Op::Unlink { path: a.path()? },
            "reflink" => Op::Reflink {
                src: a.path()?,
                dst: a.path()?,
                range: match a.more() {
                    false => None,
                    true => {
                        let src_off = a.size("a source offset SRCOFF")?;
                        let len = a.len_from(src_off)?;
                        let dst_tok = a.peek();
                        let dst_off = a.size("a destination offset DSTOFF")?;
                        if u128::from(dst_off) + u128::from(len) > 1u128 << 64
                            && let Some(t) = dst_tok
                        {
                            return Err(t.expected_with(
                                "a destination offset with DSTOFF + LEN at most 2^64",
                                " (the range would end past the 64-bit space)",
                            ));
                        }
                        Some(ReflinkRange {
                            src_off,
                            len,
                            dst_off,
                        })
                    }
                },
            },
            "mmap" => {
                let path = a.path()?;
                let off = a.off()?;
                let len = a.len_from(off)?;
                let sharing = a.pick()?;
                let mut flags: Vec<&str> = Vec::new();
                while !a.flag("as") {
                    let what = "`sync`, `ro`, `nohuge` or `as NAME`";
                    let tok = a.take(what)?;
                    if !["sync", "ro", "nohuge"].contains(&tok.text) {
                        return Err(tok.expected(what));
                    }
                    if flags.contains(&tok.text) {
                        return Err(tok.expected_with("each flag once", " again"));
                    }
                    flags.push(tok.text);
                }
                Op::Mmap {
                    path,
                    off,
                    len,
                    sharing,
                    sync: flags.contains(&"sync"),
                    ro: flags.contains(&"ro"),
                    nohuge: flags.contains(&"nohuge"),
                    name: self.define_as(thread, a, false)?,
                }
            }
            "munmap" => Op::Munmap {
                map: self.map(thread, a)?,
            },
            "load" => {
                let at = self.map_off(thread, a)?;
                let len = a.len_from(at.off)?;
                Op::Load { at, len }
            }
            "store" | "ntstore" => {
                let at = self.map_off(thread, a)?;
                let len = a.len_from(at.off)?;
                let pattern = a.pattern()?;
                match kw.text {
                    "store" => Op::Store { at, len, pattern },
                    _ => Op::Ntstore { at, len, pattern },
                }
            }
            "clwb" | "clflushopt" | "clflush" => {
                let at = self.map_off(thread, a)?;
                let len = match a.more() {
                    true => a.len_from(at.off)?,
                    false => DEFAULT_FLUSH_LEN,
                };
                match kw.text {
                    "clwb" => Op::Clwb { at, len },
                    "clflushopt" => Op::Clflushopt { at, len },
                    _ => Op::Clflush { at, len },
                }
            }
            "sfence" => Op::Sfence,
            "mfence" => Op::Mfence,
            "msync" => Op::Msync {
                map: self.map(thread, a)?,
                range: a.range()?,
            },
            "madvise" => Op::Madvise {
                map: self.map(thread, a)?,
                advice: a.pick()?,
                range: a.range()?,
            },
            "fault" => {
                let at = self.map_off(thread, a)?;
                let access = a.pick()?;
                let size = a.opt_pick();
                if size.is_none() {
                    optional = "`pte`, `pmd`";
                }
                Op::Fault { at, access, size }
            }
            "pin" => {
                let at = self.map_off(thread, a)?;
                let len = a.len_from(at.off)?;
                let longterm = a.flag("longterm");
                a.word("as")?;
                Op::Pin {
                    at,
                    len,
                    longterm,
                    name: self.define_as(thread, a, true)?,
                }
            }
            "unpin" => Op::Unpin {
                pin: self.use_name(thread, a.take("a pin name")?, true)?,
            },
            "dio-read" => {
                let path = a.path()?;
                let off = a.off()?;
                let len = a.len_from(off)?;
                a.word("into")?;
                Op::DioRead {
                    path,
                    off,
                    len,
                    into: self.map_off(thread, a)?,
                }
            }
            "poison" => {
                let tok = a.take("a path or pmem:ADDR")?;
                let target = if tok.text.starts_with('/') {
                    PoisonTarget::File {
                        path: path(tok)?,
                        off: a.off()?,
                    }
                } else if tok.text.starts_with("pmem:") {
                    PoisonTarget::Pmem {
                        addr: size(tok.rest(5), "a physical address ADDR")?,
                    }
                } else {
                    return Err(tok.expected("a path or pmem:ADDR"));
                };
                let start = match &target {
                    PoisonTarget::File { off, .. } => *off,
                    PoisonTarget::Pmem { addr } => *addr,
                };
                let len = match a.peek() {
                    Some(t) if t.text != "notify" => Some(a.len_from(start)?),
                    _ => None,
                };
                let notify = a.flag("notify");
                if !notify {
                    optional = "`notify`";
                }
                Op::Poison {
                    target,
                    len,
                    notify,
                }
            }
            "sleep" => Op::Sleep {
                ns: duration(a.take("a duration")?)?,
            },
            "yield" => Op::Yield,
            _ => {
                return Err(kw.expected(format!("an operation ({})", OP_KEYWORDS.join(", "))));
            }
        };
        a.done(optional)?;
        Ok(op)
    }
}
