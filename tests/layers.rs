//! The crate's structure, checked: every folder of `src/` is one layer that
//! imports only the layers below it (ARCHITECTURE.md), so the only import
//! cycles allowed are inside the runtime (`src/runtime/`) and between the
//! tensor handle and the tape (`src/tensor.rs`, `src/autograd/`); and no
//! source file is longer than 700 lines.
//!
//! Imports are read from the source text: `use` trees and paths starting
//! with `crate::`, `super::`, `self::` or a child module's name, resolved
//! through `pub use` re-exports to the file that defines the item (unit
//! tests, comments and string literals are left out). The strongly
//! connected components of the file graph are printed (`cargo test --test
//! layers -- --nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file allowed, in lines.
const MAX_LINES: usize = 700;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.map(|e| e.expect("readable directory").path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/` (`crate::a::b`), as segments.
fn module_of(rel: &Path) -> Vec<String> {
    let mut segs: Vec<String> = vec!["crate".into()];
    let parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if !last {
            segs.push(p.clone());
        } else {
            let stem = p.trim_end_matches(".rs");
            if stem != "mod" && stem != "lib" {
                segs.push(stem.to_string());
            }
        }
    }
    segs
}

/// The code of a Rust file without comments, string and char literals (each
/// replaced by a space) and without `#[cfg(test)]` modules.
fn code(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if text[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if text[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") || rest.starts_with("br\"") {
            let start = rest.find('r').expect("raw string") + 1;
            let hashes = rest[start..].chars().take_while(|&c| c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + start + hashes + 1;
            i = text[body..].find(&close).map_or(b.len(), |e| body + e + close.len());
            out.push(' ');
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if b[i] == b'\'' && (rest.len() > 2 && (b[i + 2] == b'\'' || b[i + 1] == b'\\')) {
            // a char literal (lifetimes have no closing quote)
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            i += c.len_utf8();
        }
    }
    // unit tests may import anything
    while let Some(at) = out.find("#[cfg(test)]") {
        let after = &out[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        if !trimmed.starts_with("mod ") {
            out.replace_range(at..at + "#[cfg(test)]".len(), " ");
            continue;
        }
        let open = at + out[at..].find('{').expect("a test module body");
        let mut depth = 0;
        let mut end = out.len();
        for (k, ch) in out[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(at..end, " ");
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Tokens: identifiers, `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let mut t = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if is_ident(c) {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if !is_ident(d) {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            t.push(code[i..end].to_string());
        } else if c == ':' && chars.peek().is_some_and(|&(_, d)| d == ':') {
            chars.next();
            t.push("::".into());
        } else if !c.is_whitespace() {
            t.push(c.to_string());
        }
    }
    t
}

/// The paths of a `use` tree starting at token `i` (after `use`), each with
/// the name it is imported as. Returns the index after the tree.
fn use_tree(t: &[String], mut i: usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, String)>) -> usize {
    let mut path = prefix;
    loop {
        match t.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                loop {
                    if t.get(i).map(String::as_str) == Some("}") {
                        return i + 1;
                    }
                    i = use_tree(t, i, path.clone(), out);
                    if t.get(i).map(String::as_str) == Some(",") {
                        i += 1;
                    }
                }
            }
            Some("*") => return i + 1,
            Some("::") => i += 1,
            Some(s) if s.chars().all(is_ident) => {
                path.push(s.to_string());
                i += 1;
                if t.get(i).map(String::as_str) != Some("::") {
                    let mut name = s.to_string();
                    if t.get(i).map(String::as_str) == Some("as") {
                        name = t[i + 1].clone();
                        i += 2;
                    }
                    if name != "self" {
                        out.push((path.clone(), name));
                    } else {
                        path.pop();
                        let name = path.last().cloned().unwrap_or_default();
                        out.push((path.clone(), name));
                    }
                    return i;
                }
            }
            _ => return i,
        }
    }
}

struct Module {
    file: PathBuf,
    path: Vec<String>,
    /// Paths this file refers to, relative forms already made absolute.
    refs: Vec<Vec<String>>,
    /// Names re-exported by `pub use`, and what they name.
    exports: BTreeMap<String, Vec<String>>,
}

/// `segs` made absolute from inside module `here`, if it is a crate path.
fn absolute(here: &[String], segs: &[String], children: &BTreeSet<String>) -> Option<Vec<String>> {
    let first = segs.first()?;
    match first.as_str() {
        "crate" => Some(segs.to_vec()),
        "self" => Some(here.iter().chain(&segs[1..]).cloned().collect()),
        "super" => {
            let mut base = here.to_vec();
            let mut k = 0;
            while segs.get(k).map(String::as_str) == Some("super") {
                base.pop();
                k += 1;
            }
            Some(base.into_iter().chain(segs[k..].iter().cloned()).collect())
        }
        name if children.contains(name) => Some(here.iter().chain(segs).cloned().collect()),
        _ => None,
    }
}

fn parse(src: &Path, file: &Path, all: &BTreeSet<Vec<String>>) -> Module {
    let path = module_of(file.strip_prefix(src).expect("under src"));
    let text = std::fs::read_to_string(file).expect("readable source");
    let t = tokens(&code(&text));
    let children: BTreeSet<String> = all
        .iter()
        .filter(|m| m.len() == path.len() + 1 && m.starts_with(&path))
        .map(|m| m.last().expect("a child").clone())
        .collect();
    let mut refs = Vec::new();
    let mut exports = BTreeMap::new();
    // inline modules (`mod name { … }`): (name, brace depth inside it)
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < t.len() {
        let here: Vec<String> = path.iter().chain(inline.iter().map(|(n, _)| n)).cloned().collect();
        let children = if inline.is_empty() { children.clone() } else { BTreeSet::new() };
        match t[i].as_str() {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            "mod" if t.get(i + 2).map(String::as_str) == Some("{") => {
                inline.push((t[i + 1].clone(), depth + 1));
                depth += 1;
                i += 3;
                continue;
            }
            _ => {}
        }
        if t[i] == "use" {
            let public = i > 0 && (t[i - 1] == "pub" || t[i - 1] == ")");
            let mut found = Vec::new();
            i = use_tree(&t, i + 1, Vec::new(), &mut found);
            for (segs, name) in found {
                if let Some(abs) = absolute(&here, &segs, &children) {
                    if public && inline.is_empty() {
                        exports.insert(name, abs.clone());
                    }
                    refs.push(abs);
                }
            }
            continue;
        }
        // a path in code: `a::b::c` not preceded by `::`
        let starts = t.get(i + 1).map(String::as_str) == Some("::") && (i == 0 || t[i - 1] != "::");
        if starts && t[i].chars().all(is_ident) {
            let mut segs = vec![t[i].clone()];
            let mut j = i + 1;
            while t.get(j).map(String::as_str) == Some("::") && t.get(j + 1).is_some_and(|s| s.chars().all(is_ident)) {
                segs.push(t[j + 1].clone());
                j += 2;
            }
            if let Some(abs) = absolute(&here, &segs, &children) {
                refs.push(abs);
            }
            i = j;
            continue;
        }
        i += 1;
    }
    Module { file: file.to_path_buf(), path, refs, exports }
}

/// The file defining what `segs` names: the deepest module on the path,
/// followed through re-exports.
fn resolve(modules: &[Module], segs: &[String], depth: usize) -> Option<usize> {
    let (k, m) =
        modules.iter().enumerate().filter(|(_, m)| segs.starts_with(&m.path)).max_by_key(|(_, m)| m.path.len())?;
    if depth < 8 {
        if let Some(name) = segs.get(m.path.len()) {
            if let Some(target) = m.exports.get(name) {
                let mut next = target.clone();
                next.extend(segs[m.path.len() + 1..].iter().cloned());
                if next.first().map(String::as_str) == Some("crate") && next != segs {
                    return resolve(modules, &next, depth + 1);
                }
                return None; // re-exported from another crate
            }
        }
    }
    Some(k)
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in s.edges[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut c = Vec::new();
            loop {
                let w = s.stack.pop().expect("on the stack");
                s.on[w] = false;
                c.push(w);
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort_unstable();
                s.out.push(c);
            }
        }
    }
    let n = edges.len();
    let mut s =
        State { edges, index: vec![None; n], low: vec![0; n], on: vec![false; n], stack: vec![], next: 0, out: vec![] };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn layers_import_only_downward() {
    let src = root().join("src");
    let mut paths = Vec::new();
    files(&src, "rs", &mut paths);
    let all: BTreeSet<Vec<String>> =
        paths.iter().map(|p| module_of(p.strip_prefix(&src).expect("under src"))).collect();
    let modules: Vec<Module> = paths.iter().map(|p| parse(&src, p, &all)).collect();
    let mut edges = vec![BTreeSet::new(); modules.len()];
    for (k, m) in modules.iter().enumerate() {
        for r in &m.refs {
            if let Some(to) = resolve(&modules, r, 0) {
                if to != k {
                    edges[k].insert(to);
                }
            }
        }
    }
    let name = |k: usize| modules[k].file.strip_prefix(&src).expect("under src").display().to_string();
    let allowed = |c: &[usize]| {
        let runtime = c.iter().all(|&k| name(k).starts_with("runtime/"));
        let tape = c.iter().all(|&k| name(k) == "tensor.rs" || name(k).starts_with("autograd/"));
        runtime || tape
    };
    let sccs = cycles(&edges);
    println!("import cycles in src/ ({} strongly connected components):", sccs.len());
    let mut wrong = Vec::new();
    for c in &sccs {
        let names: Vec<String> = c.iter().map(|&k| name(k)).collect();
        let ok = allowed(c);
        println!("  {} {}", if ok { "allowed:" } else { "NOT ALLOWED:" }, names.join(", "));
        if !ok {
            wrong.push(names);
        }
    }
    assert!(wrong.is_empty(), "import cycles outside the runtime and the tensor/tape pair: {wrong:?}");
}

#[test]
fn source_files_are_short() {
    let mut paths = Vec::new();
    for dir in ["src", "tests", "benches", "examples", "wgrad-derive/src"] {
        files(&root().join(dir), "rs", &mut paths);
    }
    files(&root().join("shaders"), "wgsl", &mut paths);
    let long: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).expect("readable source").lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", p.strip_prefix(root()).expect("in the repo").display()))
        })
        .collect();
    assert!(long.is_empty(), "source files over {MAX_LINES} lines: {long:?}");
}
