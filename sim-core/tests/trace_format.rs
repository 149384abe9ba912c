//! The trace format against its shipped examples (`traces/format/`), every other shipped trace,
//! the malformed corpus (`traces/malformed/`), and a seeded fuzz test.

use std::collections::BTreeSet;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim_core::trace::*;

fn traces_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../traces"))
}

/// `*.trace` files below `dir`, sorted; recursive, skipping `traces/malformed/`.
fn trace_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path != traces_dir().join("malformed") {
                out.extend(trace_files(&path));
            }
        } else if path.extension().is_some_and(|x| x == "trace") {
            out.push(path);
        }
    }
    out
}

fn malformed_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(traces_dir().join("malformed"))
        .expect("traces/malformed")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_ok(path: &Path) -> Trace {
    let name = path.display().to_string();
    parse_bytes(&read(path), &name, &ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn format_trace(name: &str) -> Trace {
    parse_ok(&traces_dir().join("format").join(name))
}

/// `parse(print(t)) == t`, printing is idempotent, and the reprint's statements sit on the lines
/// their positions say. Returns a description of the first failure.
fn round_trip(t: &Trace) -> Result<(), String> {
    let text = print(t);
    let back = parse(&text, "<printed>", &ParseOptions::default())
        .map_err(|e| format!("reprint does not parse: {e}\n{text}"))?;
    if &back != t {
        return Err(format!(
            "reprint parses differently:\n{text}\n{t:#?}\n{back:#?}"
        ));
    }
    if print(&back) != text {
        return Err(format!("printing is not idempotent:\n{text}"));
    }
    let lines: Vec<&str> = text.lines().collect();
    for s in back.all_statements() {
        let line = lines.get(s.pos.line as usize - 1).copied().unwrap_or("");
        if line != s.to_string() || s.pos.col != 1 {
            return Err(format!(
                "statement `{s}` at {:?}, but there: `{line}`",
                s.pos
            ));
        }
    }
    Ok(())
}

#[test]
fn format_examples_parse() {
    let files = trace_files(&traces_dir().join("format"));
    let names: BTreeSet<String> = files
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    for expected in [
        "header.trace",
        "pmd_missed_wakeup.trace",
        "after_crash.trace",
        "lexical.trace",
    ] {
        assert!(names.contains(expected), "{expected} missing: {names:?}");
    }
    for f in &files {
        parse_ok(f);
    }
}

#[test]
fn every_shipped_trace_parses_and_round_trips() {
    let files = trace_files(&traces_dir());
    assert!(files.len() >= 13, "{files:?}");
    for f in &files {
        let t = parse_ok(f);
        if let Err(e) = round_trip(&t) {
            panic!("{}: {e}", f.display());
        }
    }
}

/// The fenced blocks of the spec copy that are whole traces are shipped verbatim.
#[test]
fn spec_examples_are_shipped_verbatim() {
    let spec = fs::read_to_string(traces_dir().join("format/TRACE_FORMAT.md")).expect("spec");
    let shipped: Vec<String> = trace_files(&traces_dir().join("format"))
        .iter()
        .map(|p| String::from_utf8(read(p)).expect("UTF-8"))
        .collect();
    let blocks: Vec<&str> = spec.split("```").skip(1).step_by(2).collect();
    let traces: Vec<&str> = blocks
        .iter()
        .map(|b| b.trim_start_matches('\n'))
        .filter(|b| b.starts_with("pmsim-trace 1\n"))
        .collect();
    assert!(!traces.is_empty());
    for block in traces {
        assert!(shipped.iter().any(|s| s == block), "not shipped:\n{block}");
    }
    // The header block has placeholders; header.trace has every one of its lines, filled in.
    let header = String::from_utf8(read(&traces_dir().join("format/header.trace"))).expect("");
    for kw in [
        "pmsim-trace 1 ",
        "machine ",
        "fs daxfs",
        "bug ",
        "proc ",
        "file ",
    ] {
        assert!(header.lines().any(|l| l.starts_with(kw)), "{kw}");
    }
}

fn expect_label(e: &Expect) -> String {
    match e {
        Expect::Ok => "ok".into(),
        Expect::Any => "any".into(),
        Expect::Errno(_) => "err".into(),
        Expect::Sigbus(None) => "sigbus".into(),
        Expect::Sigbus(Some(code)) => format!("sigbus({code})"),
        Expect::Bytes(alts) if alts.len() > 1 => "A|B".into(),
        Expect::Bytes(_) => "PATTERN".into(),
        Expect::Page(size) => size.to_string(),
        Expect::Size(alts) if alts.len() > 1 => "size=A|B".into(),
        Expect::Size(_) => "size=".into(),
        Expect::Alt(_) => "A|B mixed".into(),
    }
}

fn pattern_label(p: &Pattern) -> &'static str {
    match p {
        Pattern::Byte(_) => "0xAB",
        Pattern::Zero => "zero",
        Pattern::U64(_) => "u64",
        Pattern::Text(s) if s.contains('"') && s.contains('\\') => "text-escapes",
        Pattern::Text(_) => "text",
        Pattern::Rand(_) => "rand",
    }
}

/// Labels of the op forms a statement uses: the keyword plus its optional parts.
fn op_labels(op: &Op) -> Vec<String> {
    let kw = op.keyword();
    let mut labels = vec![kw.to_string()];
    let mut add = |on: bool, label: &str| {
        if on {
            labels.push(format!("{kw} {label}"));
        }
    };
    match op {
        Op::Fallocate { mode, .. } => add(true, mode.keyword()),
        Op::Reflink { range, .. } => add(range.is_some(), "range"),
        Op::Mmap {
            sharing,
            sync,
            ro,
            nohuge,
            ..
        } => {
            add(true, sharing.keyword());
            add(*sync, "sync");
            add(*ro, "ro");
            add(*nohuge, "nohuge");
        }
        Op::Clwb { len, .. } => add(*len != 64, "len"),
        Op::Msync { range, .. } => add(range.is_some(), "range"),
        Op::Madvise { advice, range, .. } => {
            add(true, advice.keyword());
            add(range.is_some(), "range");
        }
        Op::Fault { access, size, .. } => {
            add(true, access.keyword());
            add(size.is_some(), "size");
        }
        Op::Poison {
            target,
            len,
            notify,
        } => {
            add(matches!(target, PoisonTarget::Pmem { .. }), "pmem");
            add(len.is_some(), "len");
            add(*notify, "notify");
        }
        _ => {}
    }
    labels
}

#[test]
fn format_examples_cover_every_op_expectation_and_pattern() {
    let (mut ops, mut expects, mut patterns) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut after_crash = false;
    for f in trace_files(&traces_dir().join("format")) {
        let t = format_trace(f.file_name().and_then(|n| n.to_str()).expect("name"));
        after_crash |= t.after_crash.is_some();
        patterns.extend(
            t.header
                .files
                .iter()
                .filter_map(|f| f.fill.as_ref())
                .map(pattern_label),
        );
        for s in t.all_statements() {
            ops.extend(op_labels(&s.op));
            if let Op::Write { pattern, .. }
            | Op::Store { pattern, .. }
            | Op::Ntstore { pattern, .. } = &s.op
            {
                patterns.insert(pattern_label(pattern));
            }
            if let Some(e) = &s.expect {
                expects.insert(expect_label(&e.expect));
                if let Expect::Bytes(alts) = &e.expect {
                    patterns.extend(alts.iter().map(pattern_label));
                }
                if let Expect::Alt(alts) = &e.expect {
                    expects.extend(alts.iter().map(expect_label));
                }
            }
        }
    }
    assert!(after_crash);
    let mut want: BTreeSet<String> = OP_KEYWORDS.iter().map(|k| k.to_string()).collect();
    want.extend(FallocMode::ALL.iter().map(|m| format!("fallocate {m}")));
    want.extend(Advice::ALL.iter().map(|a| format!("madvise {a}")));
    for extra in [
        "reflink range",
        "mmap shared",
        "mmap private",
        "mmap sync",
        "mmap ro",
        "mmap nohuge",
        "clwb len",
        "msync range",
        "madvise range",
        "fault read",
        "fault write",
        "fault size",
        "poison pmem",
        "poison len",
        "poison notify",
    ] {
        want.insert(extra.to_string());
    }
    let missing: Vec<&String> = want.difference(&ops).collect();
    assert!(missing.is_empty(), "ops not shown: {missing:?}");
    let want_expects = [
        "ok",
        "any",
        "err",
        "sigbus",
        "sigbus(ar)",
        "sigbus(ao)",
        "PATTERN",
        "A|B",
        "pte",
        "pmd",
        "size=",
        "size=A|B",
        "A|B mixed",
    ];
    let want_expects: BTreeSet<String> = want_expects.iter().map(|s| s.to_string()).collect();
    assert_eq!(expects, want_expects);
    let want_patterns = ["0xAB", "zero", "u64", "text", "text-escapes", "rand"];
    assert_eq!(patterns, want_patterns.into_iter().collect());
}

#[test]
fn pmd_example_values_and_positions() {
    let t = format_trace("pmd_missed_wakeup.trace");
    let m = t.header.machine();
    assert_eq!(m.cpus, Some(2));
    assert_eq!(
        (m.cpus(), m.pmem(), m.media(), m.persist(), m.seed()),
        (2, 256 << 20, Media::OptaneLike, Persist::Adr, 0)
    );
    assert_eq!(t.header.fs, None);
    assert_eq!(t.header.fs().blocksize(), 4096);
    assert_eq!(t.header.bugs[0].name, "pmd-missed-wakeup");
    let file = &t.header.files[0];
    assert_eq!(
        (file.size, file.fill(), file.prealloc),
        (4 << 20, &Pattern::Byte(0x11), true)
    );
    assert_eq!(t.statements.len(), 4);
    let load = &t.statements[3];
    assert_eq!(
        (load.thread.as_str(), load.pos.line, load.pos.col),
        ("t2", 8, 1)
    );
    let expect = load.expect.as_ref().expect("=> 0x11");
    assert_eq!((expect.pos.line, expect.pos.col), (8, 18));
    assert_eq!(expect.expect, Expect::Bytes(vec![Pattern::Byte(0x11)]));
    assert_eq!(
        load.op,
        Op::Load {
            at: MapOff {
                map: "b".into(),
                off: 0
            },
            len: 8
        }
    );
    assert!(matches!(
        t.statements[0].op,
        Op::Mmap {
            nohuge: true,
            sync: false,
            ..
        }
    ));
    assert!(matches!(&t.statements[2].op, Op::Store { at, .. } if at.off == 0x5000));
    assert_eq!(t.statements[2].pos.line, 7);
    assert_eq!(t.header.process_of("t1"), "t1");
}

#[test]
fn header_example_values() {
    let t = format_trace("header.trace");
    let m = t.header.machine();
    assert_eq!(
        (m.cpus, m.pmem, m.media, m.persist, m.seed),
        (
            Some(4),
            Some(256 << 20),
            Some(Media::OptaneLike),
            Some(Persist::Adr),
            Some(0)
        )
    );
    assert_eq!(t.header.fs().blocksize, Some(4096));
    assert_eq!(t.header.process_of("T2"), "P");
    assert_eq!(t.header.process_of("T3"), "T3");
    let hole = &t.header.files[1];
    assert!(hole.hole && !hole.prealloc && hole.fill.is_none());
    assert_eq!(hole.fill(), &Pattern::Zero);
    let defaults = format_trace("header_defaults.trace");
    let d = defaults.header.machine();
    assert_eq!(
        (d.cpus, d.pmem, d.media, d.persist, d.seed),
        (None, None, None, None, None)
    );
    assert!(defaults.header.machine.is_some() && d.extra.is_empty());
    assert_eq!(
        (d.cpus(), d.pmem(), d.media(), d.persist(), d.seed()),
        (4, 256 << 20, Media::OptaneLike, Persist::Adr, 0)
    );
    assert_eq!(print(&defaults), "pmsim-trace 1\nmachine\nt1 yield\n");
    let lexical = format_trace("lexical.trace");
    assert_eq!(lexical.header.machine().seed(), 0xdead_beef);
    assert_eq!(lexical.header.machine().pmem(), 1 << 30);
    let sleeps: Vec<u64> = lexical
        .statements
        .iter()
        .filter_map(|s| match s.op {
            Op::Sleep { ns } => Some(ns),
            _ => None,
        })
        .collect();
    assert_eq!(sleeps, [16, 1_000, 2_000_000, 3_000_000_000]);
    assert_eq!(
        lexical.header.files[0].fill,
        Some(Pattern::Text("#1 \"two\" \\three\\".into()))
    );
}

#[test]
fn machine_and_fs_keep_unknown_keys_in_order() {
    let src = "pmsim-trace 1\nmachine read-latency=300ns media=dram wc=\"a b\" cpus=3\n\
               fs daxfs journal=64K blocksize=0x1000\n";
    let t = parse(src, "x.trace", &ParseOptions::default()).expect("parses");
    let m = t.header.machine();
    assert_eq!((m.cpus(), m.media()), (3, Media::Dram));
    let extra: Vec<(&str, &str, u32)> = m
        .extra
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str(), p.pos.col))
        .collect();
    assert_eq!(extra, [("read-latency", "300ns", 9), ("wc", "\"a b\"", 39)]);
    assert_eq!(t.header.fs().extra[0].value, "64K");
    assert_eq!(t.header.fs().blocksize(), 4096);
    round_trip(&t).expect("round trip");
}

#[test]
fn known_bugs_option() {
    let src = "pmsim-trace 1\nbug pmd-missed-wakeup\n";
    let opts = |known: Option<&[&str]>| ParseOptions {
        known_bugs: known.map(|k| k.iter().map(|s| s.to_string()).collect()),
    };
    assert!(parse(src, "b", &opts(None)).is_ok());
    assert!(parse(src, "b", &opts(Some(&["x", "pmd-missed-wakeup"]))).is_ok());
    let none = parse(src, "b", &opts(Some(&[]))).expect_err("no bugs known");
    assert_eq!(
        none.to_string(),
        "b:2:5: error: expected a known bug name (none yet), found `pmd-missed-wakeup`"
    );
    let other = parse(src, "b", &opts(Some(&["a", "b-c"]))).expect_err("unknown");
    assert!(other.message.contains("(one of: a, b-c)"), "{other}");
}

#[test]
fn madvise_advice_parses_prints_and_round_trips() {
    let src = "pmsim-trace 1\nt1 mmap /f 0 64K shared as m\nt1 madvise m pageout\n\
               t1 madvise m pageout 4K 8K\nt1 madvise m dontneed\n";
    let t = parse(src, "t.trace", &ParseOptions::default()).expect("parses");
    let ops: Vec<&Op> = t.all_statements().map(|s| &s.op).collect();
    let madvise = |advice, range| Op::Madvise {
        map: "m".into(),
        advice,
        range,
    };
    assert_eq!(ops[1], &madvise(Advice::PageOut, None));
    let r = Range {
        off: 4096,
        len: 8192,
    };
    assert_eq!(ops[2], &madvise(Advice::PageOut, Some(r)));
    assert_eq!(ops[3], &madvise(Advice::DontNeed, None));
    let printed = t.to_string();
    assert!(printed.contains("t1 madvise m pageout\n"), "{printed}");
    assert!(
        printed.contains("t1 madvise m pageout 4KiB 8KiB\n"),
        "{printed}"
    );
    round_trip(&t).unwrap();
    // An unknown advice lists both.
    let bad = "pmsim-trace 1\nt1 mmap /f 0 64K shared as m\nt1 madvise m cold\n";
    let e = parse(bad, "b.trace", &ParseOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "b.trace:3:14: error: expected `dontneed` or `pageout`, found `cold`"
    );
}

#[test]
fn invalid_utf8_is_an_error_at_its_position() {
    let mut src = b"pmsim-trace 1\nt1 write /f 0 8 \"\xc3\xa9".to_vec();
    src.extend_from_slice(b"\xff\"\n");
    let e = parse_bytes(&src, "u.trace", &ParseOptions::default()).expect_err("bad UTF-8");
    assert_eq!((e.line, e.col), (2, 19), "{e}");
    assert_eq!(e.message, "expected UTF-8 text, found byte 0xff");
    // An earlier error wins over invalid UTF-8 further down.
    let e = parse_bytes(b"t1 yield\n\xff", "u", &ParseOptions::default()).expect_err("");
    assert_eq!((e.line, e.col), (1, 1));
    // Invalid UTF-8 inside a comment is still an error.
    let e = parse_bytes(b"pmsim-trace 1 # \xe9t\xe9", "u", &ParseOptions::default());
    assert_eq!(e.map_err(|e| (e.line, e.col)), Err((1, 17)));
}

#[test]
fn line_endings_and_end_of_file() {
    let crlf = "pmsim-trace 1\r\nt1 sleep 1s\r\nt1 yield";
    let t = parse(crlf, "c", &ParseOptions::default()).expect("CRLF and no final newline");
    assert_eq!(t.statements.len(), 2);
    assert_eq!(t.statements[1].pos.line, 3);
    let e = parse("", "e.trace", &ParseOptions::default()).expect_err("empty");
    assert_eq!(
        e.to_string(),
        "e.trace:1:1: error: expected `pmsim-trace 1` as the first statement, found end of file"
    );
    let e = parse("# c\n\n  # d", "e", &ParseOptions::default()).expect_err("comments only");
    assert_eq!((e.line, e.col), (3, 6));
}

#[test]
fn serde_keeps_trees_and_positions() {
    let t = format_trace("after_crash.trace");
    let bytes = sim_core::events::codec::encode(&t).expect("encode");
    let back: Trace = sim_core::events::codec::decode(&bytes).expect("decode");
    assert_eq!(back, t);
    let lines = |t: &Trace| -> Vec<u32> { t.all_statements().map(|s| s.pos.line).collect() };
    assert_eq!(lines(&back), lines(&t));
    assert_eq!(back.after_crash.map(|s| s.pos.line), Some(11));
}

#[test]
fn positions_do_not_take_part_in_equality() {
    assert_eq!(Pos::new(1, 2), Pos::new(7, 3));
    let a = parse("pmsim-trace 1\nt1 yield\n", "a", &ParseOptions::default()).expect("a");
    let b = parse(
        "# moved\npmsim-trace 1\n\n  t1   yield",
        "b",
        &ParseOptions::default(),
    );
    let b = b.expect("b");
    assert_eq!(a, b);
    assert_ne!((a.statements[0].pos.line, a.statements[0].pos.col), (4, 3));
    assert_eq!((b.statements[0].pos.line, b.statements[0].pos.col), (4, 3));
}

/// The malformed corpus: line 1 is `# expect-error: LINE:COL substring`.
#[test]
fn malformed_traces_are_rejected_where_they_say() {
    let files = malformed_files();
    assert!(files.len() >= 30, "only {} malformed traces", files.len());
    let opts = ParseOptions {
        known_bugs: Some(vec!["pmd-missed-wakeup".to_string()]),
    };
    let mut failures = Vec::new();
    let mut messages = BTreeSet::new();
    for f in &files {
        let src = String::from_utf8(read(f)).expect("UTF-8");
        let first = src.lines().next().unwrap_or("");
        let spec = first
            .strip_prefix("# expect-error: ")
            .unwrap_or_else(|| panic!("{}: no expect-error line", f.display()));
        let (pos, substring) = spec.split_once(' ').expect("LINE:COL substring");
        let name = f.display().to_string();
        match parse(&src, &name, &opts) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) => {
                let shown = e.to_string();
                let prefix = format!("{name}:{pos}: error: expected ");
                if !shown.starts_with(&prefix) || !e.message.contains(substring) {
                    failures.push(format!("{shown}\n    wanted {pos} `{substring}`"));
                }
                messages.insert(e.message);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        messages.len(),
        files.len(),
        "two malformed traces give the same error"
    );
}

// ---------------------------------------------------------------------------------------------
// Fuzzing: random bytes, token soup, mutations of the shipped traces, and random syntax trees.

/// Header words and odd tokens; with [`ARG_VOCAB`] and [`OP_KEYWORDS`] the fuzz vocabulary.
#[rustfmt::skip]
const HEADER_VOCAB: &[&str] = &[
    "pmsim-trace", "1", "2", "machine", "fs", "daxfs", "bug", "proc", "file", "after-crash",
    "cpus=2", "pmem=64MiB", "media=dram", "persist=eadr", "seed=0x10", "blocksize=4K",
    "threads=t1,t2", "size=4K", "fill=0x11", "prealloc", "hole", "x-y=3", "pmd-missed-wakeup",
    "t1", "t2", "p", "18446744073709551615", "99999999999999999999", "keep-size", "collapse",
    "#", "\"", "\\", "|", "+", "=", "\t", "é", "\u{0}",
];

/// A word of the whole vocabulary.
fn any_word(rng: &mut ChaCha8Rng) -> &'static str {
    let vocab = *pick(rng, &[HEADER_VOCAB, ARG_VOCAB, OP_KEYWORDS]);
    let word: &&'static str = pick(rng, vocab);
    word
}

/// Parses `input`; a panic or a broken invariant is an error naming the input. `Ok(true)` when
/// the input was accepted with at least one thread statement.
fn check(input: &[u8]) -> Result<bool, String> {
    let show = || String::from_utf8_lossy(input).into_owned();
    let result = catch_unwind(AssertUnwindSafe(|| {
        parse_bytes(input, "fuzz", &ParseOptions::default())
    }))
    .map_err(|_| format!("parser panicked on {:?}", show()))?;
    match result {
        Ok(t) => round_trip(&t)
            .map(|()| !t.statements.is_empty())
            .map_err(|e| format!("{e}\ninput: {:?}", show())),
        Err(e) => {
            let lines = input.split(|&b| b == b'\n').count() as u32;
            if e.line == 0 || e.line > lines || e.col == 0 || !e.message.starts_with("expected ") {
                return Err(format!("bad error {e:?} for {:?}", show()));
            }
            Ok(false)
        }
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn random_bytes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    const TEXTY: &[u8] = b"pmsit-race 01xK\"\\#=+|() \t\nabcdefgz/";
    let len = rng.random_range(0..120);
    let mut out: Vec<u8> = if rng.random_bool(0.5) {
        b"pmsim-trace 1\n".to_vec()
    } else {
        Vec::new()
    };
    out.extend((0..len).map(|_| {
        if rng.random_bool(0.7) {
            *pick(rng, TEXTY)
        } else {
            rng.random()
        }
    }));
    out
}

/// Arguments, patterns and expectations: what may follow an op keyword.
#[rustfmt::skip]
const ARG_VOCAB: &[&str] = &[
    "/f", "/g", "0", "8", "64", "0x1000", "4K", "2MiB", "m", "m+0", "m+4K", "g", "g+0", "shared",
    "private", "sync", "ro", "nohuge", "as", "into", "dontneed", "pageout", "read", "write", "pte",
    "pmd",
    "alloc", "punch", "notify", "pmem:0x1000", "10us", "0xab", "zero", "\"a b\"", "rand:7",
    "u64:0x1122", "=>", "ok", "any", "err(EIO)", "sigbus(ar)", "0x11|zero", "size=4K|8K",
];

/// A header, a mapping `m` and a pin `g` for thread t1, then lines of an op keyword and a few
/// tokens of the vocabulary.
fn token_soup(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut text = String::from("pmsim-trace 1\nt1 mmap /f 0 4K shared as m\nt1 pin m+0 8 as g\n");
    for _ in 0..rng.random_range(1..4) {
        let mut words: Vec<&str> = Vec::new();
        if rng.random_bool(0.9) {
            words.push(if rng.random_bool(0.8) { "t1" } else { "t2" });
            words.push(*pick(rng, OP_KEYWORDS));
        }
        for _ in 0..rng.random_range(0..5) {
            let word = match rng.random_bool(0.8) {
                true => *pick(rng, ARG_VOCAB),
                false => any_word(rng),
            };
            words.push(word);
        }
        text.push_str(&words.join(" "));
        text.push('\n');
    }
    text.into_bytes()
}

fn mutate(rng: &mut ChaCha8Rng, source: &[u8]) -> Vec<u8> {
    let mut bytes = source.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        let li = rng.random_range(0..lines.len());
        let mut words: Vec<String> = lines[li].split(' ').map(str::to_string).collect();
        let wi = rng.random_range(0..words.len());
        let wj = rng.random_range(0..words.len());
        match rng.random_range(0..10) {
            0 => drop(words.remove(wi)),
            1 => words.insert(wi, words[wi].clone()),
            2 => words.swap(wi, wj),
            3 => words[wi] = any_word(rng).to_string(),
            4 => words.insert(wi, any_word(rng).to_string()),
            5 => drop(lines.remove(li)),
            6 => lines.insert(li, lines[li].clone()),
            7 => {
                let lj = rng.random_range(0..lines.len());
                lines.swap(li, lj);
            }
            _ => {}
        }
        if li < lines.len() && rng.random_bool(0.5) {
            lines[li] = words.join(" ");
        }
        bytes = lines.join("\n").into_bytes();
        if bytes.is_empty() {
            continue;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..6) {
            0 => bytes[at] ^= 1 << rng.random_range(0..8),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, rng.random()),
            _ => {}
        }
    }
    bytes
}

/// A random, valid syntax tree: names defined before use, every op and expectation form.
struct TreeGen<'r> {
    rng: &'r mut ChaCha8Rng,
    procs: Vec<Proc>,
    maps: Vec<(String, String)>,
    pins: Vec<(String, String)>,
}

impl TreeGen<'_> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn num(&mut self) -> u64 {
        match self.rng.random_range(0..4) {
            0 => self.rng.random_range(0..4096),
            1 => self.rng.random_range(0..64) << 12,
            2 => self.rng.random_range(1..8) << 21,
            // Below 2^63, so that an offset plus a length stays within the 2^64 the parser
            // allows for a range.
            _ => self.rng.random::<u64>() >> 1,
        }
    }

    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.chance(0.5) {
            Some(f(self))
        } else {
            None
        }
    }

    fn word(&mut self, alphabet: &[u8], len: std::ops::Range<usize>) -> String {
        let n = self.rng.random_range(len);
        (0..n).map(|_| *pick(self.rng, alphabet) as char).collect()
    }

    fn path(&mut self) -> String {
        format!("/{}", self.word(b"abz019_.-/", 0..6))
    }

    fn text(&mut self) -> String {
        let chars = ['a', ' ', '\t', '"', '\\', '#', '=', '|', 'é', '+'];
        let n = self.rng.random_range(1..8);
        (0..n).map(|_| *pick(self.rng, &chars)).collect()
    }

    fn pattern(&mut self) -> Pattern {
        match self.rng.random_range(0..5) {
            0 => Pattern::Byte(self.rng.random()),
            1 => Pattern::Zero,
            2 => Pattern::U64(self.rng.random()),
            3 => Pattern::Text(self.text()),
            _ => Pattern::Rand(self.num()),
        }
    }

    fn param(&mut self, known: &[&str], taken: &[Param]) -> Option<Param> {
        let key = self.word(b"abc-_", 1..5);
        let key = format!("k{key}");
        if known.contains(&key.as_str()) || taken.iter().any(|p| p.key == key) {
            return None;
        }
        let value = if self.chance(0.3) {
            format!(
                "\"{}\"",
                self.text().replace('\\', "\\\\").replace('"', "\\\"")
            )
        } else {
            self.word(b"0123456789abcdefnsuKMiB.-=", 1..7)
        };
        Some(Param {
            key,
            value,
            pos: Pos::default(),
        })
    }

    fn header(&mut self) -> Header {
        let machine = self.opt(|g| {
            let mut extra = Vec::new();
            for _ in 0..g.rng.random_range(0..3) {
                let known = ["cpus", "pmem", "media", "persist", "seed"];
                extra.extend(g.param(&known, &extra));
            }
            Machine {
                pos: Pos::default(),
                cpus: g.opt(|g| g.rng.random_range(1..=sim_core::trace::MAX_CPUS)),
                pmem: g.opt(|g| (g.num() >> 6).max(1) << 6),
                media: g.opt(|g| *pick(g.rng, Media::ALL)),
                persist: g.opt(|g| *pick(g.rng, Persist::ALL)),
                seed: g.opt(|g| g.num()),
                extra,
            }
        });
        let fs = self.opt(|g| {
            let mut extra = Vec::new();
            for _ in 0..g.rng.random_range(0..3) {
                extra.extend(g.param(&["blocksize"], &extra));
            }
            Fs {
                pos: Pos::default(),
                kind: FsKind::Daxfs,
                blocksize: g.opt(|g| 1 << g.rng.random_range(0..40)),
                extra,
            }
        });
        let bugs = (0..self.rng.random_range(0..3))
            .map(|_| Bug {
                name: format!("b{}", self.word(b"az-_09", 0..8)),
                pos: Pos::default(),
            })
            .collect();
        let mut threads: Vec<&str> = vec!["t0", "t1", "t2", "t3", "t4", "_T"];
        let mut procs = Vec::new();
        for i in 0..self.rng.random_range(0..3) {
            let n = self.rng.random_range(1..3).min(threads.len());
            procs.push(Proc {
                name: format!("p{i}"),
                threads: threads.drain(..n).map(str::to_string).collect(),
                pos: Pos::default(),
            });
        }
        self.procs = procs.clone();
        let mut files: Vec<FileDecl> = Vec::new();
        for _ in 0..self.rng.random_range(0..3) {
            let path = self.path();
            if files.iter().any(|f| f.path == path) {
                continue;
            }
            let prealloc = self.chance(0.3);
            files.push(FileDecl {
                path,
                size: self.num(),
                fill: self.opt(Self::pattern),
                prealloc,
                hole: !prealloc && self.chance(0.3),
                pos: Pos::default(),
            });
        }
        Header {
            machine,
            fs,
            bugs,
            procs,
            files,
        }
    }

    fn process(&self, thread: &str) -> String {
        let p = self
            .procs
            .iter()
            .find(|p| p.threads.iter().any(|t| t == thread));
        p.map_or(thread, |p| p.name.as_str()).to_string()
    }

    /// A name defined in `thread`'s process, if any.
    fn defined(&mut self, thread: &str, pins: bool) -> Option<String> {
        let process = self.process(thread);
        let names: Vec<String> = (if pins { &self.pins } else { &self.maps })
            .iter()
            .filter(|(p, _)| *p == process)
            .map(|(_, n)| n.clone())
            .collect();
        (!names.is_empty()).then(|| pick(self.rng, &names).clone())
    }

    fn new_name(&mut self, thread: &str, pins: bool) -> String {
        let name = format!(
            "{}{}",
            if pins { "g" } else { "m" },
            self.rng.random_range(0..4)
        );
        let entry = (self.process(thread), name.clone());
        if pins { &mut self.pins } else { &mut self.maps }.push(entry);
        name
    }

    fn range(&mut self) -> Option<Range> {
        self.opt(|g| Range {
            off: g.num(),
            len: g.num(),
        })
    }

    fn op(&mut self, thread: &str) -> Op {
        let map = self.defined(thread, false);
        let pin = self.defined(thread, true);
        let kw = *pick(self.rng, OP_KEYWORDS);
        let Some(map) = map else {
            return self.mmap(thread);
        };
        let at = MapOff {
            map: map.clone(),
            off: self.num(),
        };
        let (path, off, len) = (self.path(), self.num(), self.num());
        match kw {
            "create" => Op::Create { path },
            "write" => Op::Write {
                path,
                off,
                len,
                pattern: self.pattern(),
            },
            "read" => Op::Read { path, off, len },
            "stat" => Op::Stat { path },
            "truncate" => Op::Truncate { path, size: len },
            "fallocate" => Op::Fallocate {
                path,
                off,
                len,
                mode: *pick(self.rng, FallocMode::ALL),
            },
            "fsync" => Op::Fsync { path },
            "fdatasync" => Op::Fdatasync { path },
            "unlink" => Op::Unlink { path },
            "reflink" => Op::Reflink {
                src: path,
                dst: self.path(),
                range: self.opt(|g| ReflinkRange {
                    src_off: g.num(),
                    len: g.num(),
                    dst_off: g.num(),
                }),
            },
            "munmap" => Op::Munmap { map },
            "load" => Op::Load { at, len },
            "store" => Op::Store {
                at,
                len,
                pattern: self.pattern(),
            },
            "ntstore" => Op::Ntstore {
                at,
                len,
                pattern: self.pattern(),
            },
            "clwb" => Op::Clwb { at, len },
            "clflushopt" => Op::Clflushopt { at, len },
            "clflush" => Op::Clflush { at, len },
            "sfence" => Op::Sfence,
            "mfence" => Op::Mfence,
            "msync" => Op::Msync {
                map,
                range: self.range(),
            },
            "madvise" => Op::Madvise {
                map,
                advice: *pick(self.rng, Advice::ALL),
                range: self.range(),
            },
            "fault" => Op::Fault {
                at,
                access: *pick(self.rng, Access::ALL),
                size: self.opt(|g| *pick(g.rng, PageSize::ALL)),
            },
            "unpin" if pin.is_some() => Op::Unpin {
                pin: pin.unwrap_or_default(),
            },
            "pin" | "unpin" => Op::Pin {
                at,
                len,
                longterm: self.chance(0.5),
                name: self.new_name(thread, true),
            },
            "dio-read" => Op::DioRead {
                path,
                off,
                len,
                into: at,
            },
            "poison" => Op::Poison {
                target: if self.chance(0.5) {
                    PoisonTarget::File { path, off }
                } else {
                    PoisonTarget::Pmem { addr: off }
                },
                len: self.opt(|g| g.num()),
                notify: self.chance(0.5),
            },
            "sleep" => Op::Sleep { ns: self.num() },
            "yield" => Op::Yield,
            _ => self.mmap(thread),
        }
    }

    fn mmap(&mut self, thread: &str) -> Op {
        Op::Mmap {
            path: self.path(),
            off: self.num(),
            len: self.num(),
            sharing: *pick(self.rng, Sharing::ALL),
            sync: self.chance(0.5),
            ro: self.chance(0.5),
            nohuge: self.chance(0.5),
            name: self.new_name(thread, false),
        }
    }

    fn expect(&mut self, op: &Op) -> Option<Expectation> {
        let candidates = [
            Expect::Ok,
            Expect::Any,
            Expect::Errno(pick(self.rng, &["EIO", "ENOSPC", "EBUSY"]).to_string()),
            Expect::Sigbus(self.opt(|g| *pick(g.rng, SigbusCode::ALL))),
            Expect::Bytes(
                (0..self.rng.random_range(1..4))
                    .map(|_| self.pattern())
                    .collect(),
            ),
            Expect::Page(*pick(self.rng, PageSize::ALL)),
            Expect::Size(
                (0..self.rng.random_range(1..4))
                    .map(|_| self.num())
                    .collect(),
            ),
        ];
        let mut fitting: Vec<Expect> = candidates
            .into_iter()
            .filter(|e| op.fits().allows(e))
            .collect();
        // Mixed alternatives: two fitting kinds in their canonical order.
        let kinds: Vec<Expect> = fitting
            .iter()
            .filter(|e| !matches!(e, Expect::Any))
            .cloned()
            .collect();
        if kinds.len() >= 2 {
            let a = self.rng.random_range(0..kinds.len());
            let b = (a + 1 + self.rng.random_range(0..kinds.len() - 1)) % kinds.len();
            let mut alt = vec![kinds[a].clone(), kinds[b].clone()];
            if alt[0].alt_rank() != alt[1].alt_rank() {
                alt.sort_by_key(Expect::alt_rank);
                fitting.push(Expect::Alt(alt));
            }
        }
        self.opt(|g| Expectation {
            expect: pick(g.rng, &fitting).clone(),
            pos: Pos::default(),
        })
    }

    fn statements(&mut self) -> Vec<Statement> {
        let threads = ["t0", "t1", "t2", "t3", "t4", "_T", "solo"];
        (0..self.rng.random_range(0..8))
            .map(|_| {
                let thread = pick(self.rng, &threads).to_string();
                let op = self.op(&thread);
                Statement {
                    pos: Pos::default(),
                    expect: self.expect(&op),
                    thread,
                    op,
                }
            })
            .collect()
    }

    fn trace(rng: &mut ChaCha8Rng) -> Trace {
        let mut g = TreeGen {
            rng,
            procs: Vec::new(),
            maps: Vec::new(),
            pins: Vec::new(),
        };
        let header = g.header();
        let statements = g.statements();
        let after_crash = g.opt(|g| {
            g.maps.clear();
            g.pins.clear();
            AfterCrash {
                pos: Pos::default(),
                statements: g.statements(),
            }
        });
        Trace {
            version: 1,
            header,
            statements,
            after_crash,
        }
    }
}

/// 100,000 seeded cases; none may panic, every accepted input must round-trip, every error
/// must be positioned inside the input and say what was expected.
#[test]
fn fuzz_parser_and_printer() {
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(0x7ace_f0e2);
    let valid: Vec<Vec<u8>> = trace_files(&traces_dir()).iter().map(|p| read(p)).collect();
    let malformed: Vec<Vec<u8>> = malformed_files().iter().map(|p| read(p)).collect();
    let mut accepted = [0usize; 4];
    let counts = [20_000, 25_000, 45_000, 10_000];
    for (kind, &count) in counts.iter().enumerate() {
        for case in 0..count {
            let input = match kind {
                0 => random_bytes(&mut rng),
                1 => token_soup(&mut rng),
                2 => {
                    let corpus = if rng.random_bool(0.8) {
                        &valid
                    } else {
                        &malformed
                    };
                    let source = pick(&mut rng, corpus).clone();
                    mutate(&mut rng, &source)
                }
                _ => {
                    let t = TreeGen::trace(&mut rng);
                    let text = print(&t);
                    let parsed = parse(&text, "gen", &ParseOptions::default());
                    assert_eq!(
                        parsed.as_ref(),
                        Ok(&t),
                        "generated tree, case {case}:\n{text}"
                    );
                    text.into_bytes()
                }
            };
            match check(&input) {
                Ok(ok) => accepted[kind] += usize::from(ok),
                Err(e) => panic!("fuzz kind {kind}, case {case}: {e}"),
            }
        }
    }
    eprintln!(
        "fuzz: {} cases, accepted {accepted:?}, {:?}",
        counts.iter().sum::<usize>(),
        start.elapsed()
    );
    // The inputs get past the first error-prone statement: some soups and many mutants are
    // accepted (every generated tree is, by the assertion above).
    assert!(accepted[1] > 100 && accepted[2] > 5_000, "{accepted:?}");
}
