//! The syntax tree of a trace. Every type derives serde's `Serialize`/`Deserialize`, `Debug`,
//! `Clone`, `PartialEq` and `Eq`; equality ignores source positions (see [`Pos`]).

use serde::{Deserialize, Serialize};

/// A closed set of keywords: the enums below whose values are written as one word.
pub trait Keyword: Copy + Sized + 'static {
    /// Every value, in the order error messages list them.
    const ALL: &'static [Self];

    /// The word as written in a trace.
    fn keyword(self) -> &'static str;

    fn from_keyword(word: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.keyword() == word)
    }

    /// The words for an error message: `` `a`, `b` or `c` ``.
    fn choices() -> String {
        let words: Vec<String> = Self::ALL
            .iter()
            .map(|k| format!("`{}`", k.keyword()))
            .collect();
        match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => words.concat(),
        }
    }
}

macro_rules! keywords {
    ($ty:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl Keyword for $ty {
            const ALL: &'static [$ty] = &[$($ty::$variant),+];
            fn keyword(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.keyword())
            }
        }
    };
}

/// The only trace-format version this parser reads and the printer writes.
pub const TRACE_VERSION: u64 = 1;

/// Effective machine values when the `machine` statement (or one of its keys) is absent.
pub const DEFAULT_CPUS: u32 = 4;
/// The most CPUs a `machine cpus=N` may ask for (the machine model's limit; the CLI's tests
/// check that both agree).
pub const MAX_CPUS: u32 = 4096;
/// 256 MiB of simulated pmem.
pub const DEFAULT_PMEM: u64 = 256 << 20;
/// Default media preset.
pub const DEFAULT_MEDIA: Media = Media::OptaneLike;
/// Default persistence domain.
pub const DEFAULT_PERSIST: Persist = Persist::Adr;
/// Default machine seed.
pub const DEFAULT_SEED: u64 = 0;
/// Default file-system block size (bytes).
pub const DEFAULT_BLOCKSIZE: u64 = 4096;
/// Default length of `clwb`, `clflushopt` and `clflush` (one cache line).
pub const DEFAULT_FLUSH_LEN: u64 = 64;

/// A source position: 1-based line and 1-based column, counted in characters (a tab is one
/// column).
///
/// Positions are metadata, not meaning: **two `Pos` values always compare equal**, so the
/// derived equality of every AST type is structural and `parse(print(t)) == t` holds although
/// the canonical reprint moves statements to other lines (as syn's syntax trees ignore spans).
/// Compare `line`/`col` explicitly when positions matter. Serde keeps them.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const fn new(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }
}

impl PartialEq for Pos {
    fn eq(&self, _other: &Pos) -> bool {
        true
    }
}

impl Eq for Pos {}

/// A whole trace: header, the thread statements in file order, and the optional `after-crash`
/// section.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Always [`TRACE_VERSION`] for a parsed trace.
    pub version: u64,
    pub header: Header,
    /// The statements of all threads before `after-crash`, in file order.
    pub statements: Vec<Statement>,
    pub after_crash: Option<AfterCrash>,
}

impl Trace {
    /// Every thread statement in file order: before `after-crash`, then after it.
    pub fn all_statements(&self) -> impl Iterator<Item = &Statement> {
        let after = self.after_crash.iter().flat_map(|s| &s.statements);
        self.statements.iter().chain(after)
    }
}

/// The `after-crash` line and the statements after it, in file order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AfterCrash {
    pub pos: Pos,
    pub statements: Vec<Statement>,
}

/// Everything before the first thread statement except `pmsim-trace 1`. The printer writes the
/// parts in this order (machine, fs, bugs, procs, files); `bugs`, `procs` and `files` keep
/// file order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// `None` when the trace has no `machine` line.
    pub machine: Option<Machine>,
    /// `None` when the trace has no `fs` line (then `fs daxfs` with defaults).
    pub fs: Option<Fs>,
    pub bugs: Vec<Bug>,
    pub procs: Vec<Proc>,
    pub files: Vec<FileDecl>,
}

static NO_MACHINE: Machine = Machine {
    pos: Pos::new(0, 0),
    cpus: None,
    pmem: None,
    media: None,
    persist: None,
    seed: None,
    extra: Vec::new(),
};

static NO_FS: Fs = Fs {
    pos: Pos::new(0, 0),
    kind: FsKind::Daxfs,
    blocksize: None,
    extra: Vec::new(),
};

impl Header {
    /// The `machine` statement, or an empty one (all defaults) when there is none.
    pub fn machine(&self) -> &Machine {
        self.machine.as_ref().unwrap_or(&NO_MACHINE)
    }

    /// The `fs` statement, or `fs daxfs` with defaults when there is none.
    pub fn fs(&self) -> &Fs {
        self.fs.as_ref().unwrap_or(&NO_FS)
    }

    /// The `proc` statement naming `thread`, if any.
    pub fn proc_of(&self, thread: &str) -> Option<&Proc> {
        self.procs
            .iter()
            .find(|p| p.threads.iter().any(|t| t == thread))
    }

    /// The process `thread` runs in: its `proc`, or a process of its own named like the thread.
    pub fn process_of<'a>(&'a self, thread: &'a str) -> &'a str {
        self.proc_of(thread).map_or(thread, |p| p.name.as_str())
    }
}

/// `machine cpus=4 pmem=256MiB media=optane-like persist=adr seed=0 [KEY=VALUE...]`. Each key is
/// `None` when the line does not write it; the accessors give the effective values.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Machine {
    pub pos: Pos,
    pub cpus: Option<u32>,
    /// Bytes.
    pub pmem: Option<u64>,
    pub media: Option<Media>,
    pub persist: Option<Persist>,
    pub seed: Option<u64>,
    /// Keys this parser does not know (media parameters defined later), in file order, with the
    /// raw value text, for later validation.
    pub extra: Vec<Param>,
}

impl Machine {
    pub fn cpus(&self) -> u32 {
        self.cpus.unwrap_or(DEFAULT_CPUS)
    }
    pub fn pmem(&self) -> u64 {
        self.pmem.unwrap_or(DEFAULT_PMEM)
    }
    pub fn media(&self) -> Media {
        self.media.unwrap_or(DEFAULT_MEDIA)
    }
    pub fn persist(&self) -> Persist {
        self.persist.unwrap_or(DEFAULT_PERSIST)
    }
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(DEFAULT_SEED)
    }
}

/// A `KEY=VALUE` the parser keeps without interpreting it. `pos` is the position of the key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    /// The value exactly as written (a quoted value keeps its quotes).
    pub value: String,
    pub pos: Pos,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Media {
    OptaneLike,
    CxlLike,
    Dram,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Persist {
    Adr,
    Eadr,
}

/// `fs daxfs [blocksize=SIZE] [KEY=VALUE...]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Fs {
    pub pos: Pos,
    pub kind: FsKind,
    /// Bytes; a non-zero power of two.
    pub blocksize: Option<u64>,
    /// Keys this parser does not know, in file order.
    pub extra: Vec<Param>,
}

impl Fs {
    pub fn blocksize(&self) -> u64 {
        self.blocksize.unwrap_or(DEFAULT_BLOCKSIZE)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsKind {
    Daxfs,
}

/// `bug NAME`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Bug {
    pub name: String,
    pub pos: Pos,
}

/// `proc NAME threads=T1,T2,...`: threads sharing one address space (and mapping names).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub name: String,
    pub threads: Vec<String>,
    pub pos: Pos,
}

/// `file PATH size=SIZE [fill=PATTERN] [prealloc] [hole]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FileDecl {
    pub path: String,
    pub size: u64,
    /// `None` when not written; the effective fill is then [`Pattern::Zero`].
    pub fill: Option<Pattern>,
    pub prealloc: bool,
    pub hole: bool,
    pub pos: Pos,
}

impl FileDecl {
    pub fn fill(&self) -> &Pattern {
        self.fill.as_ref().unwrap_or(&Pattern::Zero)
    }
}

/// `THREAD OP ARGS... [=> EXPECT]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Position of the thread name (the statement's first column).
    pub pos: Pos,
    pub thread: String,
    pub op: Op,
    /// `None` without `=>`: the operation must succeed.
    pub expect: Option<Expectation>,
}

/// `=> EXPECT`, with the position of the expectation token.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub expect: Expect,
    pub pos: Pos,
}

/// `M+OFF`: a byte offset into mapping `M`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MapOff {
    pub map: String,
    pub off: u64,
}

/// An optional `OFF LEN` pair (of `msync`, `madvise`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub off: u64,
    pub len: u64,
}

/// The optional `SRCOFF LEN DSTOFF` of `reflink` (FICLONERANGE).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflinkRange {
    pub src_off: u64,
    pub len: u64,
    pub dst_off: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallocMode {
    Alloc,
    KeepSize,
    Punch,
    Zero,
    Collapse,
    Insert,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sharing {
    Shared,
    Private,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

/// A page-table mapping size: the request of `fault`, and the `=> pte` / `=> pmd` expectation.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageSize {
    Pte,
    Pmd,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Advice {
    /// `MADV_DONTNEED`: zap the range's page-table entries.
    DontNeed,
    /// `MADV_PAGEOUT`: reclaim the page-cache pages the range maps.
    PageOut,
}

keywords!(Media { OptaneLike => "optane-like", CxlLike => "cxl-like", Dram => "dram" });
keywords!(Persist { Adr => "adr", Eadr => "eadr" });
keywords!(FsKind { Daxfs => "daxfs" });
keywords!(FallocMode {
    Alloc => "alloc",
    KeepSize => "keep-size",
    Punch => "punch",
    Zero => "zero",
    Collapse => "collapse",
    Insert => "insert",
});
keywords!(Sharing { Shared => "shared", Private => "private" });
keywords!(Access { Read => "read", Write => "write" });
keywords!(PageSize { Pte => "pte", Pmd => "pmd" });
keywords!(Advice { DontNeed => "dontneed", PageOut => "pageout" });
keywords!(SigbusCode { Ar => "ar", Ao => "ao" });

/// What `poison` targets.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum PoisonTarget {
    /// `PATH OFF`: the media under a file range.
    File { path: String, off: u64 },
    /// `pmem:ADDR`: a physical address.
    Pmem { addr: u64 },
}

/// One operation of a thread statement; one variant per op of the format.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        path: String,
    },
    Write {
        path: String,
        off: u64,
        len: u64,
        pattern: Pattern,
    },
    Read {
        path: String,
        off: u64,
        len: u64,
    },
    Stat {
        path: String,
    },
    Truncate {
        path: String,
        size: u64,
    },
    /// The mode defaults to [`FallocMode::Alloc`] (the printer then omits it).
    Fallocate {
        path: String,
        off: u64,
        len: u64,
        mode: FallocMode,
    },
    Fsync {
        path: String,
    },
    Fdatasync {
        path: String,
    },
    Unlink {
        path: String,
    },
    /// `range: None` is FICLONE (the whole file).
    Reflink {
        src: String,
        dst: String,
        range: Option<ReflinkRange>,
    },
    Mmap {
        path: String,
        off: u64,
        len: u64,
        sharing: Sharing,
        sync: bool,
        ro: bool,
        nohuge: bool,
        name: String,
    },
    Munmap {
        map: String,
    },
    Load {
        at: MapOff,
        len: u64,
    },
    Store {
        at: MapOff,
        len: u64,
        pattern: Pattern,
    },
    Ntstore {
        at: MapOff,
        len: u64,
        pattern: Pattern,
    },
    /// `len` defaults to [`DEFAULT_FLUSH_LEN`] (the printer then omits it); likewise for the
    /// other flushes.
    Clwb {
        at: MapOff,
        len: u64,
    },
    Clflushopt {
        at: MapOff,
        len: u64,
    },
    Clflush {
        at: MapOff,
        len: u64,
    },
    Sfence,
    Mfence,
    /// `range: None` syncs the whole mapping.
    Msync {
        map: String,
        range: Option<Range>,
    },
    /// `range: None` covers the whole mapping.
    Madvise {
        map: String,
        advice: Advice,
        range: Option<Range>,
    },
    Fault {
        at: MapOff,
        access: Access,
        size: Option<PageSize>,
    },
    Pin {
        at: MapOff,
        len: u64,
        /// `longterm`: FOLL_LONGTERM, which fsdax refuses (EOPNOTSUPP).
        #[serde(default)]
        longterm: bool,
        name: String,
    },
    Unpin {
        pin: String,
    },
    DioRead {
        path: String,
        off: u64,
        len: u64,
        into: MapOff,
    },
    /// `len: None` when not written (the machine model chooses the default unit).
    Poison {
        target: PoisonTarget,
        len: Option<u64>,
        notify: bool,
    },
    /// Simulated nanoseconds.
    Sleep {
        ns: u64,
    },
    Yield,
}

/// The op keywords of the format, in the order of the spec's table.
#[rustfmt::skip]
pub const OP_KEYWORDS: &[&str] = &[
    "create", "write", "read", "stat", "truncate", "fallocate", "fsync", "fdatasync", "unlink",
    "reflink", "mmap", "munmap", "load", "store", "ntstore", "clwb", "clflushopt", "clflush",
    "sfence", "mfence", "msync", "madvise", "fault", "pin", "unpin", "dio-read", "poison", "sleep",
    "yield",
];

/// What an operation acts on, which decides what the executor needs to run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpClass {
    /// `sleep`, `yield`: only the scheduler.
    Scheduling,
    /// File-system calls on paths (`create`, `write`, ..., `dio-read`).
    File,
    /// `mmap`, `munmap`, `madvise`, `msync`.
    Mapping,
    /// `load`, `store`, `ntstore`, `fault`.
    Access,
    /// `clwb`, `clflushopt`, `clflush`, `sfence`, `mfence`.
    Flush,
    /// `pin`, `unpin`.
    Pin,
    /// `poison`.
    Poison,
}

impl Op {
    /// The op's keyword and class: the one exhaustive match over `Op` that the rest of pmsim
    /// derives from (a new op must be placed here, and only here).
    fn info(&self) -> (&'static str, OpClass) {
        use OpClass::*;
        match self {
            Op::Create { .. } => ("create", File),
            Op::Write { .. } => ("write", File),
            Op::Read { .. } => ("read", File),
            Op::Stat { .. } => ("stat", File),
            Op::Truncate { .. } => ("truncate", File),
            Op::Fallocate { .. } => ("fallocate", File),
            Op::Fsync { .. } => ("fsync", File),
            Op::Fdatasync { .. } => ("fdatasync", File),
            Op::Unlink { .. } => ("unlink", File),
            Op::Reflink { .. } => ("reflink", File),
            Op::DioRead { .. } => ("dio-read", File),
            Op::Mmap { .. } => ("mmap", Mapping),
            Op::Munmap { .. } => ("munmap", Mapping),
            Op::Msync { .. } => ("msync", Mapping),
            Op::Madvise { .. } => ("madvise", Mapping),
            Op::Load { .. } => ("load", Access),
            Op::Store { .. } => ("store", Access),
            Op::Ntstore { .. } => ("ntstore", Access),
            Op::Fault { .. } => ("fault", Access),
            Op::Clwb { .. } => ("clwb", Flush),
            Op::Clflushopt { .. } => ("clflushopt", Flush),
            Op::Clflush { .. } => ("clflush", Flush),
            Op::Sfence => ("sfence", Flush),
            Op::Mfence => ("mfence", Flush),
            Op::Pin { .. } => ("pin", Pin),
            Op::Unpin { .. } => ("unpin", Pin),
            Op::Poison { .. } => ("poison", Poison),
            Op::Sleep { .. } => ("sleep", Scheduling),
            Op::Yield => ("yield", Scheduling),
        }
    }

    /// The op's keyword as written in a trace, e.g. `"dio-read"`.
    pub fn keyword(&self) -> &'static str {
        self.info().0
    }

    /// What the op acts on.
    pub fn class(&self) -> OpClass {
        self.info().1
    }

    /// Which expectation forms fit this op (`ok` and `any` fit every op).
    pub fn fits(&self) -> Fits {
        let none = Fits::default();
        let syscall = Fits {
            errno: true,
            ..none
        };
        let access = Fits {
            sigbus: true,
            ..none
        };
        match self {
            Op::Read { .. } => Fits {
                bytes: true,
                ..syscall
            },
            Op::Stat { .. } => Fits {
                size: true,
                ..syscall
            },
            Op::Create { .. }
            | Op::Write { .. }
            | Op::Truncate { .. }
            | Op::Fallocate { .. }
            | Op::Fsync { .. }
            | Op::Fdatasync { .. }
            | Op::Unlink { .. }
            | Op::Reflink { .. }
            | Op::Mmap { .. }
            | Op::Munmap { .. }
            | Op::Msync { .. }
            | Op::Madvise { .. }
            | Op::Pin { .. }
            | Op::DioRead { .. } => syscall,
            Op::Poison { .. } => Fits {
                sigbus: true,
                ..syscall
            },
            Op::Load { .. } => Fits {
                bytes: true,
                page: true,
                ..access
            },
            Op::Store { .. } | Op::Fault { .. } => Fits {
                page: true,
                ..access
            },
            Op::Ntstore { .. }
            | Op::Clwb { .. }
            | Op::Clflushopt { .. }
            | Op::Clflush { .. }
            | Op::Sleep { .. }
            | Op::Yield => access,
            Op::Sfence | Op::Mfence | Op::Unpin { .. } => none,
        }
    }
}

/// The expectation forms an op accepts besides `ok` and `any` (see [`Op::fits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fits {
    /// `err(ENAME)`: the op is a system call.
    pub errno: bool,
    /// `sigbus`, `sigbus(ar)`, `sigbus(ao)`: the op touches a mapping, or the thread may take an
    /// asynchronous (action-optional) signal while it runs.
    pub sigbus: bool,
    /// `PATTERN` / `A|B`: the op returns bytes.
    pub bytes: bool,
    /// `pte` / `pmd`.
    pub page: bool,
    /// `size=SIZE`.
    pub size: bool,
}

impl Fits {
    /// Does `expect` fit?
    pub fn allows(&self, expect: &Expect) -> bool {
        match expect {
            Expect::Ok | Expect::Any => true,
            Expect::Errno(_) => self.errno,
            Expect::Sigbus(_) => self.sigbus,
            Expect::Bytes(_) => self.bytes,
            Expect::Page(_) => self.page,
            Expect::Size(_) => self.size,
            Expect::Alt(alts) => alts.iter().all(|a| self.allows(a)),
        }
    }

    /// The fitting forms for an error message, e.g. `ok, any, err(ENAME), PATTERN`.
    pub fn describe(&self) -> String {
        let mut forms = vec!["ok", "any"];
        let optional = [
            (self.errno, "err(ENAME)"),
            (self.sigbus, "sigbus, sigbus(ar), sigbus(ao)"),
            (self.bytes, "PATTERN"),
            (self.page, "pte, pmd"),
            (self.size, "size=SIZE"),
        ];
        forms.extend(optional.iter().filter(|(on, _)| *on).map(|(_, f)| *f));
        forms.join(", ")
    }
}

/// The signal code `sigbus(ar)` / `sigbus(ao)` checks.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigbusCode {
    /// BUS_MCEERR_AR: action required (the thread consumed poison).
    Ar,
    /// BUS_MCEERR_AO: action optional (reported early, e.g. by a scrub).
    Ao,
}

/// `=> EXPECT`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Ok,
    Any,
    /// `err(ENAME)`; the name is one of [`ERRNO_NAMES`].
    Errno(String),
    /// `sigbus` (any code) or `sigbus(ar)` / `sigbus(ao)`.
    Sigbus(Option<SigbusCode>),
    /// `PATTERN` or `A|B|...`: the bytes match one of the alternatives (at least one).
    Bytes(Vec<Pattern>),
    /// `pte` / `pmd`.
    Page(PageSize),
    /// `size=SIZE` or `size=A|B|...` (at least one).
    Size(Vec<u64>),
    /// `A|B|...` of different kinds (`0x5a|sigbus`, `ok|err(ENOSPC)`): any one holds. At least
    /// two, none of them an `Alt`, at most one `Bytes` and one `Size`, in [`Expect::alt_rank`]
    /// order (so that the printed form parses back to the same value).
    Alt(Vec<Expect>),
}

impl Expect {
    /// The canonical order of the kinds within [`Expect::Alt`]; sizes come last, because a bare
    /// number after `size=A|` continues the size list.
    pub fn alt_rank(&self) -> u8 {
        match self {
            Expect::Ok => 0,
            Expect::Any => 1,
            Expect::Errno(_) => 2,
            Expect::Sigbus(None) => 3,
            Expect::Sigbus(Some(SigbusCode::Ar)) => 4,
            Expect::Sigbus(Some(SigbusCode::Ao)) => 5,
            Expect::Bytes(_) => 6,
            Expect::Page(PageSize::Pte) => 7,
            Expect::Page(PageSize::Pmd) => 8,
            Expect::Alt(_) => 9,
            Expect::Size(_) => 10,
        }
    }
}

/// A byte pattern.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `0xAB`: every byte this value.
    Byte(u8),
    /// `zero`.
    Zero,
    /// `u64:VALUE`: the 8-byte little-endian value, repeated.
    U64(u64),
    /// `"text"`: the bytes of the (non-empty) string, repeated.
    Text(String),
    /// `rand:SEED`: ChaCha8 stream seeded with SEED, from the operation's first byte.
    Rand(u64),
}

/// The errno names `err(ENAME)` accepts (Linux, asm-generic).
#[rustfmt::skip]
pub const ERRNO_NAMES: &[&str] = &[
    "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "ENOEXEC", "EBADF", "ECHILD",
    "EAGAIN", "ENOMEM", "EACCES", "EFAULT", "ENOTBLK", "EBUSY", "EEXIST", "EXDEV", "ENODEV",
    "ENOTDIR", "EISDIR", "EINVAL", "ENFILE", "EMFILE", "ENOTTY", "ETXTBSY", "EFBIG", "ENOSPC",
    "ESPIPE", "EROFS", "EMLINK", "EPIPE", "EDOM", "ERANGE", "EDEADLK", "ENAMETOOLONG", "ENOLCK",
    "ENOSYS", "ENOTEMPTY", "ELOOP", "EWOULDBLOCK", "ENOMSG", "EIDRM", "ENODATA", "ETIME",
    "ENOLINK", "EPROTO", "EBADMSG", "EOVERFLOW", "EILSEQ", "EUSERS", "ENOTSUP", "EOPNOTSUPP",
    "ETIMEDOUT", "EALREADY", "EINPROGRESS", "ESTALE", "EUCLEAN", "EREMOTEIO", "EDQUOT",
    "ECANCELED", "ENOTRECOVERABLE", "EHWPOISON",
];
