//! Tidy checks on the source tree (rust-analyzer's `tidy.rs` habit): the
//! invariants ARCHITECTURE.md states about imports, held by a test that
//! reads the files.
//!
//! - `domain`, `graph`, `score` and `kernel` do no IO and read no clock:
//!   time is an argument. Any mention of a clock, the file system, the
//!   network, processes, the environment, actix, tokio, redb or
//!   PostgreSQL there fails.
//! - `http` asks the engine: it never takes the scoring state itself.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every `.rs` file under `dir`, recursively, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Lines of code (comments left out) of the files under `dirs` that contain
/// one of `forbidden`, as `path:line: text (why)`.
fn offences(root: &Path, dirs: &[&str], forbidden: &[(&str, &str)]) -> Vec<String> {
    let mut found = Vec::new();
    for dir in dirs {
        for file in sources(&root.join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for (pattern, why) in forbidden {
                    if code.contains(pattern) {
                        let rel = file.strip_prefix(root).unwrap().display();
                        found.push(format!("{rel}:{}: {} ({why})", n + 1, line.trim()));
                    }
                }
            }
        }
    }
    found
}

const NO_IO: [(&str, &str); 14] = [
    ("Instant", "a clock"),
    ("SystemTime", "a clock"),
    ("::now(", "a clock"),
    ("std::fs", "the file system"),
    ("File::", "the file system"),
    ("std::net", "the network"),
    ("std::process", "processes"),
    ("std::env", "the environment"),
    ("thread::sleep", "a clock"),
    ("actix", "the HTTP framework"),
    ("tokio", "the async runtime"),
    ("postgres", "the database"),
    ("redb", "the embedded store"),
    ("ureq", "the network"),
];

#[test]
fn domain_graph_score_and_kernel_do_no_io_and_read_no_clock() {
    let found = offences(
        Path::new(ROOT),
        &["src/domain", "src/graph", "src/score", "src/kernel"],
        &NO_IO,
    );
    assert!(
        found.is_empty(),
        "IO or a clock where there must be none:\n{}",
        found.join("\n")
    );
}

#[test]
fn http_asks_the_engine_and_never_takes_the_scoring_state() {
    let why = "the engine's read methods answer what a route needs";
    let forbidden = [(".state()", why), ("ScoreState", why), ("FoldState", why)];
    let found = offences(Path::new(ROOT), &["src/http"], &forbidden);
    assert!(
        found.is_empty(),
        "http reaching into the scoring state:\n{}",
        found.join("\n")
    );
}

/// The check finds a clock where one is, and not in a comment (a test that
/// cannot fail would prove nothing).
#[test]
fn the_tidy_check_finds_a_clock_but_not_in_a_comment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("score")).unwrap();
    std::fs::write(
        dir.path().join("score/x.rs"),
        "// Instant::now() in a comment is fine\nlet t = std::time::Instant::now();\n",
    )
    .unwrap();
    let found = offences(dir.path(), &["score"], &NO_IO);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found.iter().all(|f| f.starts_with("score/x.rs:2:")),
        "{found:?}"
    );
}
