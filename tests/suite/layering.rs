//! The modules of `src/` import one way, bottom to top (`lib.rs` lists them so): a module uses
//! only modules of a lower level, never one of its own level or above, so no import cycle can
//! form. Read from the source text: every `crate::<module>` path outside comments, grouped
//! `use crate::{a, b}` included.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::repo_root;

/// Levels from the bottom: a module may use the modules of the levels before its own.
const LEVELS: &[&[&str]] = &[
    &["rng", "platform", "precision", "portable", "interrupt"],
    &["config"],
    &["data", "model"],
    &["prune"],
    &["train"],
    &["record"],
    &["progress"],
    &["experiment"],
    &["report", "export"],
    &["analysis", "sweep"],
];

fn level(module: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.contains(&module))
}

/// The top-level modules `text` names through `crate::`, comments left out.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a::x, b}`: the names at the group's top level.
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        used.insert(name);
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

/// Every `.rs` file under `path` (or `path` itself), with its text.
fn sources(path: &Path, out: &mut Vec<(String, String)>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            sources(&p, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push((
            path.display().to_string(),
            std::fs::read_to_string(path).unwrap(),
        ));
    }
}

/// The top-level modules `lib.rs` declares.
fn declared_modules(src: &Path) -> Vec<String> {
    std::fs::read_to_string(src.join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

#[test]
fn the_reader_of_paths_sees_plain_grouped_and_commented_uses() {
    let text = "use crate::config::X;\nuse crate::{data::Y, model};\n// crate::report::Z\nlet t = crate::train::f();\n";
    let used: Vec<String> = used_modules(text).into_iter().collect();
    assert_eq!(used, ["config", "data", "model", "train"]);
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let src = repo_root().join("src");
    let modules = declared_modules(&src);
    assert!(
        modules.len() >= 10,
        "lib.rs declares the modules: {modules:?}"
    );
    let unplaced: Vec<&String> = modules.iter().filter(|m| level(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules without a level in LEVELS (place each new module): {unplaced:?}"
    );
    let mut violations = Vec::new();
    for module in &modules {
        let own = level(module).expect("placed");
        let mut files = Vec::new();
        let folder = src.join(module);
        if folder.is_dir() {
            sources(&folder, &mut files);
        } else {
            sources(&src.join(format!("{module}.rs")), &mut files);
        }
        assert!(!files.is_empty(), "module {module} has source files");
        for (file, text) in &files {
            for used in used_modules(text) {
                if used == *module {
                    continue;
                }
                match level(&used) {
                    Some(l) if l < own => {}
                    _ => violations.push(format!("{file} uses crate::{used}")),
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the module order (bottom first: {LEVELS:?}):\n{}",
        violations.join("\n")
    );
}
