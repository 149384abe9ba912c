//! `pmsim`: the process around [`pmsim::run`].
//!
//! Output that cannot be written is never a panic: a closed pipe (`pmsim ... | head -1`) ends
//! the output quietly, as Unix tools do, with the run's own exit code; any other write error
//! (`> /dev/full`) is reported on stderr and, for an otherwise clean run, exits 2.

use std::io::{ErrorKind, IsTerminal, Write};
use std::process::ExitCode;

/// A writer that keeps the first error and swallows the rest, so the report code can write
/// without unwrapping.
struct Sink<W: Write> {
    inner: W,
    error: Option<std::io::Error>,
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            // Already failed: drop further output, quietly.
            return Ok(buf.len());
        }
        match self.inner.write_all(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                self.error = Some(e);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.error.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.error = Some(e);
        }
        Ok(())
    }
}

/// glibc's malloc gives the top of the heap back to the kernel once 128 KiB of it is free, and
/// serves blocks from its adaptive threshold up (a few hundred KiB once blocks of that size were
/// freed) with fresh mappings; a search builds and drops one simulated world per run (metadata
/// buffers, file contents, the cache's way table), so every run paid ~67 page faults of fresh
/// zeroed pages (a third of its time on the seed traces). Keep up to 64 MiB of freed memory
/// and map only blocks of 4 MiB or more.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    let progress = std::io::stderr().is_terminal();
    let mut out = Sink {
        inner: std::io::stdout().lock(),
        error: None,
    };
    let mut err = Sink {
        inner: std::io::stderr().lock(),
        error: None,
    };
    let mut code = pmsim::run(
        std::env::args_os(),
        &mut pmsim::Io {
            out: &mut out,
            err: &mut err,
            progress,
        },
    );
    let _ = out.flush();
    if let Some(e) = out.error
        && e.kind() != ErrorKind::BrokenPipe
    {
        let _ = writeln!(err, "pmsim: error: cannot write the output: {e}");
        if code == 0 {
            code = 2;
        }
    }
    ExitCode::from(code)
}
