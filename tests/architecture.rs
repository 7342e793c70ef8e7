//! The layering rules of `docs/architecture.md`, checked on the sources:
//!
//! * no import cycle between the modules of any crate of the workspace (a
//!   module is a file under `src/`; `use crate::x`, `crate::x::...` paths,
//!   `super::x` and names the crate root re-exports from `x` count as uses
//!   of `x`; a folder module using its own children, or a child its parent,
//!   does not);
//! * no library crate prints (`println!`/`eprintln!`/`print!`/`eprint!`/
//!   `dbg!`) outside its tests: progress and warnings go through
//!   `diffad_nn::progress::Progress` and the `log` facade;
//! * no source cites a file outside the repository ("REFERENCE.md").
//!
//! `scripts/module_cycles.py` is the same cycle check as a script.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `src/` folder of the workspace (the facade's and each crate's).
fn source_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("src")];
    let mut crates: Vec<PathBuf> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    dirs.extend(crates);
    dirs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` -> `a::b`; `a/mod.rs` -> `a`; `lib.rs`/`main.rs` -> `` (the root).
fn module_name(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The source without comments and without `#[cfg(test)] mod ... { ... }` blocks.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        result.push_str(&rest[..i]);
        let after = &rest[i..];
        let block = after
            .find('{')
            .filter(|&b| after[..b].contains("mod "))
            .map(|b| {
                let mut depth = 0usize;
                let mut end = after.len();
                for (k, ch) in after[b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            });
        match block {
            Some(end) => rest = &after[end..],
            None => {
                result.push_str("#[cfg(test)]");
                rest = &after["#[cfg(test)]".len()..];
            }
        }
    }
    result.push_str(rest);
    result
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `::`-separated paths that follow `prefix` in `code`, with `{a, b::c}`
/// groups expanded one level.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = code[start..].find(prefix) {
        let at = start + i;
        start = at + prefix.len();
        if at > 0 && is_ident(code[..at].chars().next_back().unwrap()) {
            continue;
        }
        let rest = &code[start..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let segs: Vec<String> = item
                    .trim()
                    .split("::")
                    .map(|s| s.trim().chars().take_while(|&c| is_ident(c)).collect())
                    .take_while(|s: &String| !s.is_empty())
                    .collect();
                if !segs.is_empty() {
                    out.push(segs);
                }
            }
            continue;
        }
        let mut segs = Vec::new();
        let mut cursor = rest;
        loop {
            let ident: String = cursor.chars().take_while(|&c| is_ident(c)).collect();
            if ident.is_empty() {
                break;
            }
            cursor = &cursor[ident.len()..];
            segs.push(ident);
            match cursor.strip_prefix("::") {
                Some(next) if next.starts_with(|c: char| is_ident(c)) => cursor = next,
                _ => break,
            }
        }
        if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

/// Names the crate root re-exports with `pub use module::...`, mapped to that module.
fn root_reexports(src: &Path, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for file in ["lib.rs", "main.rs"] {
        let Ok(text) = fs::read_to_string(src.join(file)) else {
            continue;
        };
        let code = code_of(&text);
        for stmt in code.split(';') {
            let Some(i) = stmt.find("pub use ") else {
                continue;
            };
            let path = stmt[i + "pub use ".len()..].trim();
            let path = path
                .strip_prefix("crate::")
                .or_else(|| path.strip_prefix("self::"))
                .unwrap_or(path);
            let Some((module, rest)) = path.split_once("::") else {
                continue;
            };
            if !modules.contains(module) {
                continue;
            }
            for ident in rest
                .split(|c: char| !is_ident(c))
                .filter(|s| !s.is_empty() && *s != "self" && *s != "as")
            {
                if !modules.contains(ident) {
                    found
                        .entry(ident.to_string())
                        .or_insert_with(|| module.to_string());
                }
            }
        }
    }
    found
}

/// The module graph of one crate: module -> modules it uses.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_name(src, f), f.clone()))
        .collect();
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let reexports = root_reexports(src, &names);
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_of(&fs::read_to_string(file).unwrap());
        let parent = module.rsplit_once("::").map(|(p, _)| p).unwrap_or("");
        let mut paths = paths_after(&code, "crate::");
        for segs in paths_after(&code, "super::") {
            let mut full: Vec<String> = parent
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            full.extend(segs);
            paths.push(full);
        }
        let mut uses = BTreeSet::new();
        for segs in paths {
            let target = (1..=segs.len())
                .rev()
                .map(|k| segs[..k].join("::"))
                .find(|cand| names.contains(cand))
                .or_else(|| reexports.get(&segs[0]).cloned());
            let Some(target) = target else { continue };
            if target.is_empty()
                || &target == module
                || target.starts_with(&format!("{module}::"))
                || module.starts_with(&format!("{target}::"))
            {
                continue;
            }
            uses.insert(target);
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        v: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(v.to_string(), 1);
        stack.push(v.to_string());
        for w in graph.get(v).into_iter().flatten() {
            match state.get(w.as_str()) {
                Some(1) => {
                    let i = stack.iter().position(|s| s == w).unwrap();
                    let mut cycle = stack[i..].to_vec();
                    cycle.push(w.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(w, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(v.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for v in graph.keys() {
        if !state.contains_key(v.as_str()) {
            if let Some(c) = visit(v, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_module_import_cycles_in_any_crate() {
    let mut cycles = Vec::new();
    for src in source_dirs() {
        if let Some(cycle) = find_cycle(&module_graph(&src)) {
            cycles.push(format!("{}: {}", src.display(), cycle.join(" -> ")));
        }
    }
    assert!(
        cycles.is_empty(),
        "module import cycles:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    fs::write(src.join("lib.rs"), "mod a;\nmod b;\npub use b::Thing;\n").unwrap();
    fs::write(src.join("a.rs"), "use crate::Thing;\npub struct A;\n").unwrap();
    fs::write(src.join("b.rs"), "pub struct Thing(crate::a::A);\n").unwrap();
    let cycle = find_cycle(&module_graph(src)).expect("a -> b -> a");
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.contains(&"a".to_string()) && cycle.contains(&"b".to_string()));
    // Test-only uses do not count.
    fs::write(
        src.join("a.rs"),
        "pub struct A;\n#[cfg(test)]\nmod tests {\n    use crate::Thing;\n}\n",
    )
    .unwrap();
    assert_eq!(find_cycle(&module_graph(src)), None);
}

#[test]
fn library_crates_do_not_print() {
    let mut offenders = Vec::new();
    for src in source_dirs() {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            if file.ends_with("main.rs") {
                continue;
            }
            let code = code_of(&fs::read_to_string(&file).unwrap());
            for mac in ["println!", "eprintln!", "print!", "eprint!", "dbg!"] {
                let hit = code
                    .match_indices(mac)
                    .any(|(i, _)| i == 0 || !is_ident(code[..i].chars().next_back().unwrap()));
                if hit {
                    offenders.push(format!("{}: {mac}", file.display()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "libraries print:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn sources_cite_only_files_in_the_repository() {
    let mut offenders = Vec::new();
    let mut files = Vec::new();
    for src in source_dirs() {
        rust_files(&src, &mut files);
    }
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        if text.contains("REFERENCE.md") || text.contains("REFERENCE §") {
            offenders.push(file.display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "cite docs/reference.md instead:\n{}",
        offenders.join("\n")
    );
}
