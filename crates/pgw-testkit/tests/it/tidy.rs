//! pgw-testkit stays out of the binary: no crate may list it under `[dependencies]` (only
//! `[dev-dependencies]`), and the demo, which ships in the binary, not at all.

use std::path::{Path, PathBuf};

fn manifests() -> Vec<(String, toml::Table)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out: Vec<(String, toml::Table)> = std::fs::read_dir(&crates)
        .expect("read crates/")
        .flatten()
        .map(|e| e.path().join("Cargo.toml"))
        .filter(|p| p.is_file())
        .map(|p: PathBuf| {
            let text = std::fs::read_to_string(&p).expect("read a Cargo.toml");
            let table: toml::Table = text
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), table)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The normal (shipping) dependency tables of a manifest: `[dependencies]`,
/// `[build-dependencies]` and their `[target.*]` forms.
fn shipping_tables(manifest: &toml::Table) -> Vec<&toml::Table> {
    let mut tables = Vec::new();
    for key in ["dependencies", "build-dependencies"] {
        if let Some(t) = manifest.get(key).and_then(|v| v.as_table()) {
            tables.push(t);
        }
    }
    if let Some(targets) = manifest.get("target").and_then(|v| v.as_table()) {
        for target in targets.values().filter_map(|v| v.as_table()) {
            for key in ["dependencies", "build-dependencies"] {
                if let Some(t) = target.get(key).and_then(|v| v.as_table()) {
                    tables.push(t);
                }
            }
        }
    }
    tables
}

#[test]
fn testkit_is_only_ever_a_dev_dependency() {
    let manifests = manifests();
    assert!(manifests.len() > 5, "found the workspace's crates");
    let mut offenders = Vec::new();
    for (path, manifest) in &manifests {
        if shipping_tables(manifest)
            .iter()
            .any(|t| t.contains_key("pgw-testkit"))
        {
            offenders.push(path.clone());
        }
    }
    assert!(
        offenders.is_empty(),
        "pgw-testkit under [dependencies] (allowed only in [dev-dependencies]): {offenders:?}"
    );
}

#[test]
fn the_demo_does_not_depend_on_testkit() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../pgw-demo/Cargo.toml"),
    )
    .expect("read crates/pgw-demo/Cargo.toml");
    assert!(
        !text.contains("pgw-testkit"),
        "crates/pgw-demo ships in the binary and must not name pgw-testkit"
    );
}

#[test]
fn the_rule_catches_a_shipping_dependency() {
    let bad: toml::Table = "[package]\nname = \"x\"\n[target.'cfg(unix)'.dependencies]\npgw-testkit = { workspace = true }\n"
        .parse()
        .unwrap();
    assert!(shipping_tables(&bad)
        .iter()
        .any(|t| t.contains_key("pgw-testkit")));
    let good: toml::Table = "[dev-dependencies]\npgw-testkit = { workspace = true }\n"
        .parse()
        .unwrap();
    assert!(!shipping_tables(&good)
        .iter()
        .any(|t| t.contains_key("pgw-testkit")));
}
