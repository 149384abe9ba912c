//! Issue 7, points 12 and 13: properties of the workspace's sources and manifests that a
//! refactoring could silently undo.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `.rs` file of the workspace (not `target/`).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn sim_core_does_not_depend_on_the_peers() {
    let core = read("sim-core/Cargo.toml");
    for peer in ["shuttle", "loom"] {
        let dep = core.lines().any(|l| l.trim_start().starts_with(peer));
        assert!(!dep, "sim-core/Cargo.toml depends on {peer}");
    }
    let bench = read("sim-core/peer-bench/Cargo.toml");
    assert!(bench.contains("shuttle") && bench.contains("loom"));
    assert!(bench.contains("publish = false"));
}

#[test]
fn every_workspace_dependency_is_used_by_a_member() {
    let ws = read("Cargo.toml");
    let deps = ws
        .split("[workspace.dependencies]")
        .nth(1)
        .expect("a [workspace.dependencies] table");
    let deps = deps.split("\n[").next().unwrap_or("");
    let manifests: Vec<String> = [
        "Cargo.toml",
        "sim-core/Cargo.toml",
        "sim-core/peer-bench/Cargo.toml",
        "sim-mm/Cargo.toml",
        "sim-fs/Cargo.toml",
        "sim-gui/Cargo.toml",
    ]
    .iter()
    .map(|m| read(m))
    .collect();
    for line in deps.lines() {
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        // Either `name.workspace = true` or `name = { workspace = true, features = [..] }`.
        let used = [
            format!("{name}.workspace = true"),
            format!("{name} = {{ workspace = true"),
        ];
        assert!(
            manifests
                .iter()
                .any(|m| used.iter().any(|u| m.contains(u.as_str()))),
            "workspace dependency `{name}` is used by no member"
        );
    }
}

#[test]
fn bincode_is_named_in_one_module_only() {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    assert!(files.len() > 20);
    let codec = root().join("sim-core/src/events.rs");
    let bad: Vec<String> = files
        .iter()
        .filter(|f| **f != codec)
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|s| s.contains(concat!("bin", "code::"))))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "bincode used outside events::codec: {bad:?}"
    );
}

#[test]
fn the_cli_has_no_match_of_its_own_over_trace_operations() {
    // The exhaustive match is `Op::info` in sim-core/src/trace/ast.rs; the CLI goes through
    // `Op::class`.
    let model = read("src/trace_model.rs");
    for variant in [
        "Op::Create",
        "Op::Mmap",
        "Op::Load",
        "Op::Clwb",
        "Op::Poison",
    ] {
        assert!(
            !model.contains(variant),
            "src/trace_model.rs matches {variant}"
        );
    }
    let ast = read("sim-core/src/trace/ast.rs");
    assert!(ast.contains("fn info(&self) -> (&'static str, OpClass)"));
}

#[test]
fn the_peer_bench_measures_instead_of_asserting() {
    let bench = read("sim-core/peer-bench/benches/engine.rs");
    assert!(!bench.contains(concat!("does not finish in ", "120 s")));
    // All five toys: the three correct and the two buggy ones.
    assert!(bench.contains("assert_eq!(correct.len() + buggy.len(), toys::TOYS.len())"));
}
