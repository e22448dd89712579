//! No import cycles between flowd's top-level modules: each stage depends
//! on the ones before it (export on the flow table, never back).
//!
//! Reads every source file under `flowd/src`, takes the paths that leave
//! a top-level module (`crate::x::…`, `crate::{x, y::…}`, and `super::`
//! chains that climb out of it), and fails on any strongly connected set
//! of modules that is not in [`KNOWN_CYCLES`]. Plain text, no root needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Cycles that exist and are being removed, each with what removes it.
/// Sorted module names. A cycle listed here that no longer exists fails
/// the test too, so the list only shrinks.
const KNOWN_CYCLES: &[(&[&str], &str)] = &[];

/// One edge: module `from` uses module `to`, first seen at `file:line`.
type Edges = BTreeMap<(String, String), String>;

#[test]
fn no_import_cycles_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tops = top_level_modules(&src);
    assert!(tops.len() > 10, "found only {tops:?} in {}", src.display());
    let mut edges = Edges::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).unwrap();
        let Some(module) = module_path(rel) else {
            continue; // main.rs: the binary, which uses the library as `flowd::`
        };
        let code = code_text(&std::fs::read_to_string(&file).unwrap());
        for (at, target) in targets(&code, &module) {
            let (Some(from), Some(to)) = (module.first(), target.first()) else {
                continue;
            };
            if from != to && tops.contains(to) {
                let line = code[..at].matches('\n').count() + 1;
                edges
                    .entry((from.clone(), to.clone()))
                    .or_insert_with(|| format!("{}:{line}", rel.display()));
            }
        }
    }
    assert!(
        edges.len() > 10,
        "the parser found almost no imports: {edges:?}"
    );
    let cycles = strongly_connected(&tops, &edges);
    let known: BTreeSet<Vec<String>> = KNOWN_CYCLES
        .iter()
        .map(|(m, _)| m.iter().map(|s| (*s).to_owned()).collect())
        .collect();
    let mut failures = Vec::new();
    for c in &cycles {
        if !known.contains(c) {
            let why: Vec<String> = edges
                .iter()
                .filter(|((a, b), _)| c.contains(a) && c.contains(b))
                .map(|((a, b), at)| format!("  {a} -> {b} ({at})"))
                .collect();
            failures.push(format!("cycle {c:?}:\n{}", why.join("\n")));
        }
    }
    for k in &known {
        if !cycles.contains(k) {
            failures.push(format!(
                "KNOWN_CYCLES lists {k:?}, which is gone: remove it from the list"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The modules `lib.rs` declares.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let lib = code_text(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The module a file defines: `export/metrics.rs` -> [export, metrics],
/// `drain/mod.rs` -> [drain], `lib.rs` -> []; None for `main.rs`.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    match (parts.is_empty(), stem) {
        (true, "main") => return None,
        (true, "lib") | (false, "mod") => {}
        _ => parts.push(stem.to_owned()),
    }
    Some(parts)
}

/// The text without comments and string literals (enough for `use` and
/// paths), line for line.
fn code_text(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let mut out = String::new();
        let mut in_str = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_str => {
                    chars.next();
                }
                '"' => in_str = !in_str,
                '/' if !in_str && chars.peek() == Some(&'/') => break,
                _ if !in_str => out.push(c),
                _ => {}
            }
        }
        code.push_str(&out);
        code.push('\n');
    }
    code
}

/// The absolute module paths `code` refers to, from the file of
/// `module`, each with the byte offset where it is named.
fn targets(code: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let line = code;
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let starts_word = i == 0 || !is_ident(bytes[i - 1] as char) && bytes[i - 1] != b':';
        if starts_word && rest.starts_with("crate::") {
            out.extend(
                paths_after(&rest["crate::".len()..], Vec::new())
                    .into_iter()
                    .map(|p| (i, p)),
            );
            i += "crate::".len();
        } else if starts_word && rest.starts_with("super::") {
            let mut base = module.to_vec();
            let mut r = rest;
            while let Some(after) = r.strip_prefix("super::") {
                base.pop();
                r = after;
            }
            out.extend(paths_after(r, base).into_iter().map(|p| (i, p)));
            i += rest.len() - r.len();
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// `a::b` -> [base + a]; `{a, b::c, d::{e}}` -> [base + a], [base + b], [base + d].
/// Only the first segment after `base` matters for top-level edges.
fn paths_after(rest: &str, base: Vec<String>) -> Vec<Vec<String>> {
    let with = |name: &str| {
        let mut p = base.clone();
        p.push(name.to_owned());
        p
    };
    if let Some(group) = rest.strip_prefix('{') {
        // The first name of each item of the group, at its top level.
        let mut names = Vec::new();
        let mut depth = 0;
        let mut word = String::new();
        let mut at_item_start = true;
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => at_item_start = true,
                c if is_ident(c) && depth == 0 && at_item_start => word.push(c),
                _ => {
                    if !word.is_empty() {
                        names.push(std::mem::take(&mut word));
                        at_item_start = false;
                    }
                }
            }
        }
        if !word.is_empty() {
            names.push(word);
        }
        return names
            .iter()
            .filter(|n| n.as_str() != "self")
            .map(|n| with(n))
            .collect();
    }
    let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
    if name.is_empty() {
        Vec::new()
    } else {
        vec![with(&name)]
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Strongly connected sets of more than one module (Tarjan), each sorted.
fn strongly_connected(nodes: &BTreeSet<String>, edges: &Edges) -> BTreeSet<Vec<String>> {
    struct State<'a> {
        adj: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: BTreeSet<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.adj.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.insert(comp);
            }
        }
    }
    let mut s = State {
        adj: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: BTreeSet::new(),
    };
    for (a, b) in edges.keys() {
        s.adj.entry(a.as_str()).or_default().push(b.as_str());
    }
    for n in nodes {
        if !s.index.contains_key(n.as_str()) {
            visit(&mut s, n);
        }
    }
    s.out
}

#[test]
fn the_parser_reads_the_forms_flowd_uses() {
    let m = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let here = m(&["drain", "absorb"]);
    let firsts = |line: &str| -> Vec<String> {
        targets(line, &here)
            .into_iter()
            .map(|(_, p)| p[0].clone())
            .collect()
    };
    assert_eq!(firsts("use crate::state::{Shared, lock};"), m(&["state"]));
    assert_eq!(
        firsts("use crate::{clock::{self, TimeBase}, flowtable::Ended, loader::LoadError};"),
        m(&["clock", "flowtable", "loader"])
    );
    assert_eq!(
        firsts("    let t = crate::clock::realtime_ns();"),
        m(&["clock"])
    );
    assert_eq!(firsts("use super::batch::drain_hash;"), m(&["drain"]));
    assert_eq!(
        firsts("use super::super::loader::Datapath;"),
        m(&["loader"])
    );
    assert_eq!(
        firsts("use crate::{\n    config::Config,\n    export::{a::B, c},\n    interfaces,\n};"),
        m(&["config", "export", "interfaces"])
    );
    assert_eq!(
        firsts(&code_text("let s = \"crate::x\"; // crate::y")),
        Vec::<String>::new()
    );
    assert_eq!(module_path(Path::new("drain/mod.rs")), Some(m(&["drain"])));
    assert_eq!(module_path(Path::new("bench.rs")), Some(m(&["bench"])));
    assert_eq!(module_path(Path::new("main.rs")), None);
}
