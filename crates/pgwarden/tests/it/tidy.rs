//! Hygiene of the whole workspace, as rust-analyzer's tidy test keeps it: every source
//! file says what it is, no stubs ship, every crate is on the architecture map.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("read a source directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace().join("crates"))
        .expect("read crates/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_source_file_opens_with_a_doc_comment() {
    let mut missing = Vec::new();
    for krate in crates() {
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read a source file");
            if !text.starts_with("//!") {
                missing.push(f.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:?}"
    );
}

#[test]
fn no_stubs_in_product_code() {
    let mut found = Vec::new();
    let needles = ["todo!(", "unimplemented!(", "dbg!(", "not yet implemented"];
    for krate in crates() {
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read a source file");
            for (i, line) in text.lines().enumerate() {
                if needles.iter().any(|n| line.contains(n)) {
                    found.push(format!("{}:{}", f.display(), i + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "stubs: {found:?}");
}

#[test]
fn architecture_md_maps_every_crate() {
    let map =
        std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    for krate in crates() {
        let name = krate.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            map.contains(&format!("crates/{name}")),
            "ARCHITECTURE.md has no section for crates/{name}"
        );
    }
}

#[test]
fn exit_codes_are_decided_in_exit_rs_only() {
    let src = workspace().join("crates/pgwarden/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name == "exit.rs" || name == "main.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read a source file");
        for (i, line) in text.lines().enumerate() {
            if line.contains("ExitCode") || line.contains("process::exit") {
                found.push(format!("{}:{}", f.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "exit codes chosen outside exit.rs: {found:?}"
    );
    // No library crate decides a code either.
    for krate in crates() {
        if krate.ends_with("pgwarden") {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read a source file");
            assert!(
                !text.contains("ExitCode") && !text.contains("process::exit("),
                "{} picks an exit code",
                f.display()
            );
        }
    }
}
