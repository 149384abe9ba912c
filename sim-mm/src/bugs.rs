//! The catalogue of bug modes: historical behaviours of the Linux DAX stack that `bug NAME` in
//! a trace (or `--bug NAME`) switches on at the decision point where the kernel once differed.
//!
//! A name in this catalogue is part of the trace format (an unknown name is an error that lists
//! these). `available` says whether this build implements the behaviour; `run` and `explore`
//! refuse the ones that are not, instead of pretending. An implemented mode's mechanism (where
//! it changes the kernel's decision) is stated once, in `DaxBug::mechanism`, and the built-in
//! model that shows it is `dax::models::model_for`.

/// One historical behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BugMode {
    pub name: &'static str,
    /// The upstream commit that fixed it (or the thread that discussed it).
    pub fixed_by: &'static str,
    pub summary: &'static str,
    /// Implemented in this build.
    pub available: bool,
}

pub const BUG_MODES: &[BugMode] = &[
    BugMode {
        name: "pmd-missed-wakeup",
        fixed_by: "23c84eb78375 (5.3, 2019)",
        summary: "a PMD fault sleeps on the PMD-aligned key while the PTE entry's owner wakes its own index",
        available: true,
    },
    BugMode {
        name: "pmd-conflict-before-null",
        fixed_by: "6370740e5f8e (5.4, 2019)",
        summary: "the order conflict is checked before NULL, so every PMD fault falls back to PTEs",
        available: true,
    },
    BugMode {
        name: "no-mmaplock",
        fixed_by: "XFS MMAPLOCK (4.4, 2015)",
        summary: "page faults are not serialised against truncate/hole punch by the invalidate lock",
        available: true,
    },
    BugMode {
        name: "no-entry-lock",
        fixed_by: "ac401cc78242 (4.7, 2016)",
        summary: "simultaneous faults on one hole race without DAX entry locks (the loser zeroes the winner's data)",
        available: true,
    },
    BugMode {
        name: "shadow-entries",
        fixed_by: "f9fe48bece3a (4.5, 2015)",
        summary: "__remove_mapping leaves a workingset shadow entry in a DAX mapping (no \
                  !dax_mapping check); DAX paths misread it as an entry (its workingset bit reads \
                  as DAX_LOCKED, so they wait forever)",
        available: true,
    },
    BugMode {
        name: "mf-speculative-page-lock",
        fixed_by: "c2a7d2a11552 (4.19, 2018)",
        summary: "dax_lock_folio takes the page lock (the 2018 v1 design) instead of the DAX entry \
                  lock with the page->mapping recheck, so truncate and eviction run under memory \
                  failure, which then follows page->mapping into a freed inode",
        available: true,
    },
    BugMode {
        name: "hole-wake-next",
        fixed_by: "965d004af540 (4.10, 2016)",
        summary: "replacing a locked empty entry with a hole wakes one waiter instead of all",
        available: true,
    },
    BugMode {
        name: "invalidate-wake-next",
        fixed_by: "237388320def (5.13, 2021)",
        summary: "__dax_invalidate_entry wakes with WAKE_NEXT instead of WAKE_ALL: the one woken \
                  waiter finds the entry gone and does not pass the wake-up on (an invalidator \
                  finds NULL; a fault's new PTE entry wakes its own index, not the PMD's key)",
        available: true,
    },
    BugMode {
        name: "busy-scan-skips-locked",
        fixed_by: "\"fs/dax: Don't skip locked entries when scanning entries\" (6.15)",
        summary: "dax_layout_busy_page_range waits with get_unlocked_entry on the iteration's \
                  xa_state, whose xas_find_conflict looks past the locked entry: its DMA-pinned \
                  pages are missed and the blocks freed under DMA",
        available: true,
    },
    BugMode {
        name: "pmd-pte-collide",
        fixed_by: "\"dax: Fix race between colliding PMD & PTE entries\" (4.12)",
        summary: "the page-table level is not rechecked after taking the entry lock",
        available: true,
    },
    BugMode {
        name: "stale-huge-zero-page",
        fixed_by: "cd656375f946 (4.12)",
        summary: "a huge zero page stays mapped after write(2) allocated blocks under it",
        available: true,
    },
    BugMode {
        name: "pmd-writeback-no-wrprotect",
        fixed_by: "f729c8c9b24f (4.10)",
        summary: "dax_writeback_one cleans a PMD without write-protecting it (pmd_mkclean only): \
                  later stores through it neither fault nor dirty the entry, and the next fsync \
                  skips their flush",
        available: true,
    },
    BugMode {
        name: "mixed-mapping-association",
        fixed_by: "1571c029a2ff (5.2)",
        summary: "a PTE fault on a PMD entry disassociates the whole PMD and re-associates one page",
        available: true,
    },
    BugMode {
        name: "lock-entry-exclusive-wait",
        fixed_by: "\"dax: Avoid losing wakeup in dax_lock_mapping_entry\" (4.20, 2018)",
        summary: "dax_lock_folio/dax_lock_mapping_entry wait exclusively; woken, they may find \
                  the entry changed and leave without locking it or passing the wake-up on, so \
                  the next waiter sleeps forever",
        available: true,
    },
    BugMode {
        name: "journal-no-fence",
        fixed_by: "no single commit: a class (jbd2 orders its commit block after the log body with a \
                   cache flush, unless async_commit checksums it)",
        summary: "the journal's commit record is written back without the fence that orders it \
                  before the checkpoint writes in place: a crash leaves half a transaction in \
                  place and recovery discards the copy that would repair it (pmsim crashcheck)",
        available: true,
    },
    BugMode {
        name: "sync-fault-no-fsync",
        fixed_by: "no single commit: the rule MAP_SYNC (4.15) introduced with dax_finish_sync_fault",
        summary: "a MAP_SYNC write fault maps the page writable before the block allocation is \
                  durable: data the user then flushes lands in a block a crash unallocates",
        available: true,
    },
    BugMode {
        name: "torn-inode-size",
        fixed_by: "no single commit: a class (i_size_write/i_size_read use a seqcount where a \
                   64-bit store is not atomic)",
        summary: "the inode size is updated in place with a non-atomic 16-byte store: a crash \
                  may find a size that no operation ever set",
        available: true,
    },
    BugMode {
        name: "reflink-page-mapping",
        fixed_by: "reflink vs page->mapping thread (2018); folio share count (6.x)",
        summary: "a DAX page shared by reflink keeps one page->mapping, so memory_failure misses owners",
        available: true,
    },
];

/// The trace shipped for each mode (a path from the repository root): it declares `bug NAME`,
/// starts with a comment saying what it models, and names in a `# expect: KIND` comment the
/// violation `pmsim explore` finds with the mode; without its `bug` line it is clean
/// (tests/shipped_races.rs). The crash-consistency modes name theirs with `pmsim crashcheck`.
/// A mode in [`CRASHCHECK_JUDGED`] is a lost-durability mode: explore's after-crash phase
/// follows a clean shutdown, so its trace is judged by `pmsim crashcheck` instead.
const SHIPPED_TRACES: &[(&str, &str)] = &[
    ("pmd-missed-wakeup", "traces/bugs/pmd-missed-wakeup.trace"),
    (
        "pmd-conflict-before-null",
        "traces/bugs/pmd-conflict-before-null.trace",
    ),
    ("no-mmaplock", "traces/bugs/no-mmaplock.trace"),
    ("no-entry-lock", "traces/bugs/no-entry-lock.trace"),
    ("shadow-entries", "traces/bugs/shadow-entries.trace"),
    (
        "mf-speculative-page-lock",
        "traces/bugs/mf-speculative-page-lock.trace",
    ),
    ("hole-wake-next", "traces/bugs/hole-wake-next.trace"),
    (
        "invalidate-wake-next",
        "traces/bugs/invalidate-wake-next.trace",
    ),
    (
        "busy-scan-skips-locked",
        "traces/bugs/busy-scan-skips-locked.trace",
    ),
    ("pmd-pte-collide", "traces/bugs/pmd-pte-collide.trace"),
    (
        "stale-huge-zero-page",
        "traces/bugs/stale-huge-zero-page.trace",
    ),
    (
        "pmd-writeback-no-wrprotect",
        "traces/bugs/pmd-writeback-no-wrprotect.trace",
    ),
    (
        "mixed-mapping-association",
        "traces/bugs/mixed-mapping-association.trace",
    ),
    (
        "lock-entry-exclusive-wait",
        "traces/bugs/lock-entry-exclusive-wait.trace",
    ),
    (
        "reflink-page-mapping",
        "traces/bugs/reflink-page-mapping.trace",
    ),
];

/// The modes whose shipped trace `pmsim crashcheck` judges (the trace says so with a
/// `# check: crashcheck` comment, tests/shipped_races.rs).
const CRASHCHECK_JUDGED: &[&str] = &["pmd-writeback-no-wrprotect"];

impl BugMode {
    /// The command that judges [`BugMode::trace`]: `crashcheck` for a lost-durability mode,
    /// else `explore`.
    pub fn trace_command(&self) -> &'static str {
        if CRASHCHECK_JUDGED.contains(&self.name) {
            "crashcheck"
        } else {
            "explore"
        }
    }

    /// The shipped trace that shows the mode, for a mode this build implements (a planned
    /// mode's trace ships with its implementation).
    pub fn trace(&self) -> Option<&'static str> {
        if !self.available {
            return None;
        }
        SHIPPED_TRACES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|&(_, t)| t)
    }

    /// The DAX-core mode of this name (`None` for modes that belong to the file system).
    pub fn dax_bug(&self) -> Option<crate::dax::DaxBug> {
        crate::dax::DaxBug::from_name(self.name)
    }

    /// Where the mode changes the kernel's decision (the function and the branch), when this
    /// build implements it. The text lives once, in [`crate::dax::DaxBug::mechanism`].
    pub fn mechanism(&self) -> Option<&'static str> {
        match self.dax_bug() {
            Some(b) => b.mechanism(),
            None => fs_mechanism(self.name),
        }
    }

    /// The built-in model (`pmsim explore --model NAME`) that shows the mode, if one does.
    pub fn model(&self) -> Option<&'static str> {
        self.dax_bug()
            .and_then(crate::dax::models::model_for)
            .map(|m| m.name)
    }

    /// Where an implemented mode can be switched on in this build.
    pub fn reachable(&self) -> &'static str {
        match self.dax_bug() {
            _ if !self.available => "nowhere yet",
            Some(crate::dax::DaxBug::SyncFaultNoFsync) => {
                "traces on daxfs (MAP_SYNC write faults), judged by `pmsim crashcheck TRACE \
                 --bug NAME`"
            }
            Some(b) if crate::dax::models::reaches(b) => {
                "traces (`bug NAME`, through faults on daxfs mappings) and the built-in DAX \
                 models (--model)"
            }
            Some(crate::dax::DaxBug::NoMmaplock) => {
                "traces on daxfs (`bug no-mmaplock`: a fault racing truncate, fallocate or \
                 unlink)"
            }
            Some(_) => {
                "traces on daxfs, through the statements that reach its decision point (fsync, \
                 fdatasync and msync for writeback; truncate, fallocate and unlink for \
                 invalidation and layouts; poison for memory failure), and the DAX core's own \
                 tests"
            }
            None => "traces on daxfs (`pmsim crashcheck TRACE --bug NAME`)",
        }
    }
}

/// Where a file-system mode implemented in daxfs (sim-fs) changes the decision.
fn fs_mechanism(name: &str) -> Option<&'static str> {
    match name {
        "journal-no-fence" => Some(
            "sim_fs::journal::xlog_force: no sfence after the commit record's clwb \
             (Log::no_commit_fence), before the checkpoint writes in place",
        ),
        "torn-inode-size" => Some(
            "sim_fs::fs::Daxfs::setfilesize (the size a write(2) past the end of file sets): \
             the 16-byte size field (size and complement) of an inode record already on media \
             is written in place with one 16-byte store instead of a journal transaction \
             (Log::torn_inode_size); with `crashcheck --torn` a crash keeps one 8-byte word",
        ),
        "reflink-page-mapping" => Some(
            "daxfs iomap_begin does not flag shared blocks IOMAP_F_SHARED on reads, so \
             dax_associate_entry gives a reflinked page one page->mapping/index (the last \
             owner to fault it), and daxfs registers no notify_failure holder, so memory \
             failure takes the generic path through page->mapping (4.19-5.18) and signals and \
             unmaps that owner only",
        ),
        _ => None,
    }
}

/// The bug mode called `name`, if the catalogue has it.
pub fn bug_mode(name: &str) -> Option<&'static BugMode> {
    BUG_MODES.iter().find(|b| b.name == name)
}

/// Every name, for parse options and error messages.
pub fn bug_names() -> Vec<String> {
    BUG_MODES.iter().map(|b| b.name.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_is_implemented_exactly_when_it_has_a_mechanism() {
        for m in BUG_MODES {
            match m.dax_bug() {
                Some(b) => assert_eq!(m.available, b.mechanism().is_some(), "{}", m.name),
                // A file system's mode is implemented when daxfs has its decision point.
                None => assert_eq!(m.available, fs_mechanism(m.name).is_some(), "{}", m.name),
            }
            if m.available {
                assert!(m.mechanism().is_some() && m.reachable() != "nowhere yet");
            }
        }
        // Every mode of the fault half is implemented and shown by a built-in model.
        for b in crate::dax::models::FAULT_MODES {
            let m = bug_mode(b.name()).expect("in the catalogue");
            assert!(m.available, "{}", m.name);
            assert!(m.model().is_some(), "{}", m.name);
        }
    }

    #[test]
    fn shipped_traces_name_catalogue_modes_once() {
        for (i, (name, trace)) in SHIPPED_TRACES.iter().enumerate() {
            assert!(bug_mode(name).is_some(), "{name}");
            assert_eq!(*trace, format!("traces/bugs/{name}.trace"));
            assert!(
                SHIPPED_TRACES[..i].iter().all(|(n, _)| n != name),
                "{name} twice"
            );
        }
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut names = bug_names();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        for name in names {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{name}"
            );
        }
    }
}
