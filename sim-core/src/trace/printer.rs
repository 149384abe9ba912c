//! Canonical trace text: `Display` for the AST. One statement a line, single spaces, no
//! comments; header parts in the order `pmsim-trace`, machine, fs, bug, proc, file; sizes with
//! the largest binary suffix that divides them (`4KiB`, `2MiB`), other values in decimal below
//! 4096 and hex above; durations with the largest exact unit; defaults that the format lets one
//! omit (fallocate `alloc`, flush length 64) are omitted, optional header keys are written only
//! when the trace wrote them.

use std::fmt::{self, Display, Formatter};

use super::ast::*;
use super::lexer::{format_duration, format_size, quote};

struct Size(u64);

impl Display for Size {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

fn join<T: Display>(items: &[T], sep: &str) -> String {
    let parts: Vec<String> = items.iter().map(T::to_string).collect();
    parts.join(sep)
}

impl Display for Trace {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "pmsim-trace {}", self.version)?;
        write!(f, "{}", self.header)?;
        for s in &self.statements {
            writeln!(f, "{s}")?;
        }
        if let Some(section) = &self.after_crash {
            writeln!(f, "after-crash")?;
            for s in &section.statements {
                writeln!(f, "{s}")?;
            }
        }
        Ok(())
    }
}

/// The header lines, each ended by a newline.
impl Display for Header {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.machine {
            writeln!(f, "{m}")?;
        }
        if let Some(fs) = &self.fs {
            writeln!(f, "{fs}")?;
        }
        for bug in &self.bugs {
            writeln!(f, "bug {}", bug.name)?;
        }
        for p in &self.procs {
            writeln!(f, "{p}")?;
        }
        for file in &self.files {
            writeln!(f, "{file}")?;
        }
        Ok(())
    }
}

impl Display for Param {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl Display for Machine {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("machine")?;
        if let Some(cpus) = self.cpus {
            write!(f, " cpus={cpus}")?;
        }
        if let Some(pmem) = self.pmem {
            write!(f, " pmem={}", Size(pmem))?;
        }
        if let Some(media) = self.media {
            write!(f, " media={media}")?;
        }
        if let Some(persist) = self.persist {
            write!(f, " persist={persist}")?;
        }
        if let Some(seed) = self.seed {
            write!(f, " seed={seed}")?;
        }
        self.extra.iter().try_for_each(|p| write!(f, " {p}"))
    }
}

impl Display for Fs {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "fs {}", self.kind)?;
        if let Some(bs) = self.blocksize {
            write!(f, " blocksize={}", Size(bs))?;
        }
        self.extra.iter().try_for_each(|p| write!(f, " {p}"))
    }
}

impl Display for Proc {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "proc {} threads={}", self.name, self.threads.join(","))
    }
}

impl Display for FileDecl {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "file {} size={}", self.path, Size(self.size))?;
        if let Some(fill) = &self.fill {
            write!(f, " fill={fill}")?;
        }
        if self.prealloc {
            f.write_str(" prealloc")?;
        }
        if self.hole {
            f.write_str(" hole")?;
        }
        Ok(())
    }
}

impl Display for Statement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.thread, self.op)?;
        if let Some(e) = &self.expect {
            write!(f, " => {}", e.expect)?;
        }
        Ok(())
    }
}

impl Display for MapOff {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.map, Size(self.off))
    }
}

impl Display for Range {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", Size(self.off), Size(self.len))
    }
}

impl Display for Op {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())?;
        match self {
            Op::Create { path }
            | Op::Stat { path }
            | Op::Fsync { path }
            | Op::Fdatasync { path }
            | Op::Unlink { path } => write!(f, " {path}"),
            Op::Write {
                path,
                off,
                len,
                pattern,
            } => write!(f, " {path} {} {} {pattern}", Size(*off), Size(*len)),
            Op::Read { path, off, len } => write!(f, " {path} {} {}", Size(*off), Size(*len)),
            Op::Truncate { path, size } => write!(f, " {path} {}", Size(*size)),
            Op::Fallocate {
                path,
                off,
                len,
                mode,
            } => {
                write!(f, " {path} {} {}", Size(*off), Size(*len))?;
                match mode {
                    FallocMode::Alloc => Ok(()),
                    mode => write!(f, " {mode}"),
                }
            }
            Op::Reflink { src, dst, range } => {
                write!(f, " {src} {dst}")?;
                match range {
                    Some(r) => write!(
                        f,
                        " {} {} {}",
                        Size(r.src_off),
                        Size(r.len),
                        Size(r.dst_off)
                    ),
                    None => Ok(()),
                }
            }
            Op::Mmap {
                path,
                off,
                len,
                sharing,
                sync,
                ro,
                nohuge,
                name,
            } => {
                write!(f, " {path} {} {} {sharing}", Size(*off), Size(*len))?;
                for (on, flag) in [(sync, "sync"), (ro, "ro"), (nohuge, "nohuge")] {
                    if *on {
                        write!(f, " {flag}")?;
                    }
                }
                write!(f, " as {name}")
            }
            Op::Munmap { map } => write!(f, " {map}"),
            Op::Load { at, len } => write!(f, " {at} {}", Size(*len)),
            Op::Store { at, len, pattern } | Op::Ntstore { at, len, pattern } => {
                write!(f, " {at} {} {pattern}", Size(*len))
            }
            Op::Clwb { at, len } | Op::Clflushopt { at, len } | Op::Clflush { at, len } => {
                write!(f, " {at}")?;
                if *len != DEFAULT_FLUSH_LEN {
                    write!(f, " {}", Size(*len))?;
                }
                Ok(())
            }
            Op::Sfence | Op::Mfence | Op::Yield => Ok(()),
            Op::Msync { map, range } => {
                write!(f, " {map}")?;
                range.iter().try_for_each(|r| write!(f, " {r}"))
            }
            Op::Madvise { map, advice, range } => {
                write!(f, " {map} {advice}")?;
                range.iter().try_for_each(|r| write!(f, " {r}"))
            }
            Op::Fault { at, access, size } => {
                write!(f, " {at} {access}")?;
                size.iter().try_for_each(|s| write!(f, " {s}"))
            }
            Op::Pin {
                at,
                len,
                longterm,
                name,
            } => {
                write!(f, " {at} {}", Size(*len))?;
                if *longterm {
                    f.write_str(" longterm")?;
                }
                write!(f, " as {name}")
            }
            Op::Unpin { pin } => write!(f, " {pin}"),
            Op::DioRead {
                path,
                off,
                len,
                into,
            } => write!(f, " {path} {} {} into {into}", Size(*off), Size(*len)),
            Op::Poison {
                target,
                len,
                notify,
            } => {
                match target {
                    PoisonTarget::File { path, off } => write!(f, " {path} {}", Size(*off))?,
                    PoisonTarget::Pmem { addr } => write!(f, " pmem:{addr:#x}")?,
                }
                len.iter().try_for_each(|l| write!(f, " {}", Size(*l)))?;
                if *notify {
                    f.write_str(" notify")?;
                }
                Ok(())
            }
            Op::Sleep { ns } => write!(f, " {}", format_duration(*ns)),
        }
    }
}

impl Display for Pattern {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Byte(b) => write!(f, "{b:#04x}"),
            Pattern::Zero => f.write_str("zero"),
            Pattern::U64(v) => write!(f, "u64:{v:#018x}"),
            Pattern::Text(s) => f.write_str(&quote(s)),
            Pattern::Rand(seed) => write!(f, "rand:{seed}"),
        }
    }
}

impl Display for Expect {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Ok => f.write_str("ok"),
            Expect::Any => f.write_str("any"),
            Expect::Errno(name) => write!(f, "err({name})"),
            Expect::Sigbus(None) => f.write_str("sigbus"),
            Expect::Sigbus(Some(code)) => write!(f, "sigbus({code})"),
            Expect::Bytes(alts) => f.write_str(&join(alts, "|")),
            Expect::Page(size) => write!(f, "{size}"),
            Expect::Size(alts) => {
                let sizes: Vec<Size> = alts.iter().map(|&s| Size(s)).collect();
                write!(f, "size={}", join(&sizes, "|"))
            }
            Expect::Alt(alts) => f.write_str(&join(alts, "|")),
        }
    }
}
