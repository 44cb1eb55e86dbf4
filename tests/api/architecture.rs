//! The architecture checks itself: reads every `.rs` file under `src/`, builds the graph of
//! top-level modules (and the few external crates that mark a layer: actix, rusqlite, …), and
//! fails on an arrow that `RULES` forbids or on any import cycle between top-level modules.
//! Why the layers are what they are: `docs/architecture.md`.
//!
//! Run it alone with `cargo test --test api architecture -- --nocapture` to see the observed
//! map. The analysis is plain std (no parser crate): comments, string and char literals are
//! blanked out, `#[cfg(test)]` items are dropped (unit tests may use what they need), then `use`
//! trees are expanded and inline paths are read where they start. It is a lint, not a compiler:
//! a name reached only through a re-export or a glob is not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// Forbidden arrows `from → to`, with the reason printed next to each violation. A top-level
/// module is the first path component under `src/` (`src/http/routes/flows.rs` → `http`);
/// external crates are named as in Rust paths (`actix_web`, `rusqlite`). Kept on one line per
/// arrow so it reads as a table (hence `rustfmt::skip`).
#[rustfmt::skip]
const RULES: &[(&str, &str, &str)] = &[
    ("http", "store", "handlers reach data only through services"),
    ("http", "rusqlite", "handlers reach data only through services"),
    ("service", "actix_web", "services speak neither HTTP nor SQL"),
    ("service", "actix_multipart", "services speak neither HTTP nor SQL"),
    ("service", "http", "services speak neither HTTP nor SQL"),
    ("service", "rusqlite", "services speak neither HTTP nor SQL; they get transactions from store functions"),
    ("domain", "actix_web", "domain is the bottom layer"),
    ("domain", "rusqlite", "domain is the bottom layer"),
    ("domain", "http", "domain is the bottom layer"),
    ("domain", "service", "domain is the bottom layer"),
    ("domain", "store", "domain is the bottom layer"),
    ("domain", "crypto", "domain is the bottom layer"),
    ("domain", "cli", "domain is the bottom layer"),
    ("domain", "startup", "domain is the bottom layer"),
    ("domain", "jobs", "domain is the bottom layer"),
    ("store", "http", "store holds SQL and is called by services, never the reverse"),
    ("store", "service", "store holds SQL and is called by services, never the reverse"),
    ("store", "actix_web", "store holds SQL and is called by services, never the reverse"),
    ("crypto", "http", "crypto is key operations only, below services and stores"),
    ("crypto", "service", "crypto is key operations only, below services and stores"),
    ("crypto", "store", "crypto is key operations only, below services and stores"),
    ("crypto", "actix_web", "crypto is key operations only, below services and stores"),
    ("error", "http", "the error vocabulary is HTTP-free; http maps it"),
    ("error", "actix_web", "the error vocabulary is HTTP-free; http maps it"),
    ("agent", "store", "the agent talks to the server over its API only"),
    ("agent", "service", "the agent talks to the server over its API only"),
    ("cli", "store", "the CLI goes through services"),
    ("runner", "store", "the embedded runner hands results to services, like the agent API routes"),
    ("runner", "rusqlite", "the embedded runner hands results to services, like the agent API routes"),
    ("runner", "http", "the embedded runner calls services directly, not the HTTP layer"),
    ("runner", "actix_web", "the embedded runner calls services directly, not the HTTP layer"),
];

/// External crates that appear in the graph when a path starts with them (`actix_web::…`,
/// `use rusqlite::…`, `::reqwest::…`). Other crates (serde, tokio, …) are not layer markers.
const EXTERNAL: &[&str] = &[
    "actix_web",
    "actix_multipart",
    "rusqlite",
    "rusqlite_migration",
    "utoipa",
    "utoipa_actix_web",
    "reqwest",
    "chromiumoxide",
];

/// Where an arrow was seen: the file as given to `analyze` (`src/http/routes/flows.rs`) and
/// the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    file: String,
    line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    site: Site,
    from: String,
    to: String,
    why: &'static str,
}

/// A strongly connected component of more than one top-level module, with one concrete cycle
/// through it (`path[0] → path[1] → … → path[0]`, one example site per arrow) and every arrow
/// inside the component (each one is a place where the cycle could be cut).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cycle {
    modules: Vec<String>,
    path: Vec<(String, String, Site)>,
    inner_edges: Vec<(String, String, Site)>,
}

#[derive(Debug, Default)]
struct Report {
    /// `from → to → every site`, for internal modules and the crates in `EXTERNAL`.
    edges: BTreeMap<String, BTreeMap<String, Vec<Site>>>,
    /// Top-level modules seen (from file paths and `crate::NAME` targets).
    modules: BTreeSet<String>,
    violations: Vec<Violation>,
    cycles: Vec<Cycle>,
}

impl Report {
    fn is_clean(&self) -> bool {
        self.violations.is_empty() && self.cycles.is_empty()
    }

    /// `from → to1, to2, …`, one line per module with outgoing arrows.
    fn graph_text(&self) -> String {
        let mut out = String::new();
        for (from, tos) in &self.edges {
            let names: Vec<&str> = tos.keys().map(String::as_str).collect();
            let _ = writeln!(out, "  {from} → {}", names.join(", "));
        }
        out
    }

    fn problems_text(&self) -> String {
        let mut out = String::new();
        for v in &self.violations {
            let _ = writeln!(
                out,
                "  {}:{}: {} → {} (rule: {})",
                v.site.file, v.site.line, v.from, v.to, v.why
            );
        }
        for c in &self.cycles {
            let mut ring: Vec<&str> = c.path.iter().map(|(f, _, _)| f.as_str()).collect();
            ring.push(c.path[0].0.as_str());
            let _ = writeln!(
                out,
                "  cycle between {{{}}}: {}",
                c.modules.join(", "),
                ring.join(" → ")
            );
            for (f, t, s) in &c.path {
                let _ = writeln!(out, "    {}:{}: {f} → {t}", s.file, s.line);
            }
            let others: Vec<_> = c
                .inner_edges
                .iter()
                .filter(|(f, t, _)| !c.path.iter().any(|(pf, pt, _)| pf == f && pt == t))
                .collect();
            if !others.is_empty() {
                let _ = writeln!(out, "    other arrows inside this cycle:");
                for (f, t, s) in others {
                    let _ = writeln!(out, "    {}:{}: {f} → {t}", s.file, s.line);
                }
            }
        }
        out
    }
}

fn rules_text() -> String {
    let mut out = String::new();
    for (from, to, why) in RULES {
        let _ = writeln!(out, "  {from} ↛ {to}  ({why})");
    }
    out.push_str("  and no cycle between top-level modules\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Analysis
// ---------------------------------------------------------------------------------------------

/// Analyse `(path, source)` pairs; paths look like `src/http/a.rs` (the `src/` prefix is
/// optional). `src/lib.rs` and `src/main.rs` are the crate root and are skipped.
fn analyze(files: &[(String, String)]) -> Report {
    let mut report = Report::default();
    for (path, source) in files {
        let Some(module_path) = module_path(path) else {
            continue;
        };
        let from = module_path[0].clone();
        report.modules.insert(from.clone());
        let tokens = drop_cfg_test(lex(&strip(source)));
        for (to, line, internal) in dependencies(&tokens, &module_path) {
            if internal {
                report.modules.insert(to.clone());
            }
            if to == from {
                continue;
            }
            let sites = report
                .edges
                .entry(from.clone())
                .or_default()
                .entry(to)
                .or_default();
            let site = Site {
                file: path.clone(),
                line,
            };
            if !sites.contains(&site) {
                sites.push(site);
            }
        }
    }
    for (from, tos) in &report.edges {
        for (to, sites) in tos {
            for (rf, rt, why) in RULES {
                if rf == from && rt == to {
                    for site in sites {
                        report.violations.push(Violation {
                            site: site.clone(),
                            from: from.clone(),
                            to: to.clone(),
                            why,
                        });
                    }
                }
            }
        }
    }
    report
        .violations
        .sort_by(|a, b| (&a.site, &a.to).cmp(&(&b.site, &b.to)));
    report.cycles = cycles(&report);
    report
}

/// `src/http/routes/flows.rs` → `[http, routes, flows]`; `src/store/mod.rs` → `[store]`;
/// `None` for the crate root and for non-Rust files.
fn module_path(path: &str) -> Option<Vec<String>> {
    let rel = path.replace('\\', "/");
    let rel = rel.strip_prefix("src/").unwrap_or(&rel);
    let rel = rel.strip_suffix(".rs")?;
    if rel == "lib" || rel == "main" {
        return None;
    }
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

/// Blank out comments (line, block — nested — and doc), string literals (plain, byte, C, raw)
/// and char literals, keeping every newline so line numbers survive.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, s: &[char]| {
        for &ch in s {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
    };
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        // line comment (also `///` and `//!`)
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            let end = (i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len());
            blank(&mut out, &c[i..end]);
            i = end;
            continue;
        }
        // block comment, nested
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0usize;
            let mut j = i;
            while j < c.len() {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            let end = j.min(c.len());
            blank(&mut out, &c[i..end]);
            i = end;
            continue;
        }
        // identifiers, which may be a literal prefix: r"…", r#"…"#, b"…", br"…", c"…", b'…'
        if is_ident(c[i]) && (i == 0 || !is_ident(c[i - 1])) {
            let mut j = i;
            while j < c.len() && is_ident(c[j]) {
                j += 1;
            }
            let word: String = c[i..j].iter().collect();
            let raw = matches!(word.as_str(), "r" | "br" | "cr");
            if raw && matches!(c.get(j), Some('"') | Some('#')) {
                let mut k = j;
                while c.get(k) == Some(&'#') {
                    k += 1;
                }
                if c.get(k) == Some(&'"') {
                    let hashes = k - j;
                    let mut m = k + 1;
                    while m < c.len() {
                        if c[m] == '"' && (1..=hashes).all(|h| c.get(m + h) == Some(&'#')) {
                            m += 1 + hashes;
                            break;
                        }
                        m += 1;
                    }
                    let end = m.min(c.len());
                    blank(&mut out, &c[i..end]);
                    i = end;
                    continue;
                }
                // `r#ident`: a raw identifier, keep the identifier
            }
            if matches!(word.as_str(), "b" | "c") && matches!(c.get(j), Some('"') | Some('\'')) {
                blank(&mut out, &c[i..j]);
                i = j; // the literal itself is handled below
                continue;
            }
            out.extend(&c[i..j]);
            i = j;
            continue;
        }
        if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(c.len());
            blank(&mut out, &c[i..end]);
            i = end;
            continue;
        }
        // char literal vs lifetime / label: 'x', '\n', '\u{1F600}' but not 'a or 'static
        if c[i] == '\'' {
            let end = if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                j += 1; // the escaped char itself (may be a quote)
                while j < c.len() && c[j] != '\'' && c[j] != '\n' {
                    j += 1;
                }
                Some(j + 1)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            if let Some(end) = end {
                let end = end.min(c.len());
                blank(&mut out, &c[i..end]);
                i = end;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// identifier or keyword; `$crate` is lexed as `crate`
    Ident(String),
    /// `::`
    PathSep,
    /// any other punctuation character
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn lex(clean: &str) -> Vec<Token> {
    let c: Vec<char> = clean.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' {
            let mut j = i;
            while j < c.len() && (c[j].is_alphanumeric() || c[j] == '_') {
                j += 1;
            }
            let mut word: String = c[i..j].iter().collect();
            if let Some(rest) = word.strip_prefix("r#") {
                word = rest.to_string();
            }
            out.push(Token {
                tok: Tok::Ident(word),
                line,
            });
            i = j;
        } else if ch == '$' && c[i + 1..].starts_with(&['c', 'r', 'a', 't', 'e']) {
            // `$crate::…` in macro bodies; the identifier itself is lexed next
            i += 1;
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

fn is_punct(t: Option<&Token>, p: char) -> bool {
    matches!(t, Some(Token { tok: Tok::Punct(q), .. }) if *q == p)
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token {
            tok: Tok::Ident(s), ..
        }) => Some(s.as_str()),
        _ => None,
    }
}

/// If an attribute `#[…]` / `#![…]` starts at `i`, its end (exclusive) and whether it is
/// exactly `cfg(test)`.
fn attribute_at(t: &[Token], i: usize) -> Option<(usize, bool)> {
    if !is_punct(t.get(i), '#') {
        return None;
    }
    let mut j = i + 1;
    if is_punct(t.get(j), '!') {
        j += 1;
    }
    if !is_punct(t.get(j), '[') {
        return None;
    }
    let open = j;
    let mut depth = 0usize;
    while j < t.len() {
        match t[j].tok {
            Tok::Punct('[') => depth += 1,
            Tok::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    let inner: Vec<&Tok> = t[open + 1..j.min(t.len())].iter().map(|x| &x.tok).collect();
    let cfg_test = inner.len() == 4
        && matches!(inner[0], Tok::Ident(s) if s == "cfg")
        && matches!(inner[1], Tok::Punct('('))
        && matches!(inner[2], Tok::Ident(s) if s == "test")
        && matches!(inner[3], Tok::Punct(')'));
    Some(((j + 1).min(t.len()), cfg_test))
}

/// Drop every item (or statement, field, arm) carrying `#[cfg(test)]`, and the whole file
/// under an inner `#![cfg(test)]`.
fn drop_cfg_test(t: Vec<Token>) -> Vec<Token> {
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        let Some((end, cfg_test)) = attribute_at(&t, i) else {
            out.push(t[i].clone());
            i += 1;
            continue;
        };
        if !cfg_test {
            out.extend_from_slice(&t[i..end]);
            i = end;
            continue;
        }
        if is_punct(t.get(i + 1), '!') {
            return Vec::new(); // `#![cfg(test)]`: the whole module is test-only
        }
        // further attributes on the same item
        let mut j = end;
        while let Some((e, _)) = attribute_at(&t, j) {
            j = e;
        }
        i = item_end(&t, j);
    }
    out
}

/// End (exclusive) of the item, statement, field or arm starting at `start`.
fn item_end(t: &[Token], start: usize) -> usize {
    const ITEM: &[&str] = &[
        "mod",
        "fn",
        "struct",
        "enum",
        "union",
        "impl",
        "trait",
        "use",
        "const",
        "static",
        "type",
        "extern",
        "unsafe",
        "async",
        "macro_rules",
    ];
    let mut k = start;
    // skip visibility `pub`, `pub(crate)`, `pub(in path)`
    if ident(t.get(k)) == Some("pub") {
        k += 1;
        if is_punct(t.get(k), '(') {
            while k < t.len() && !is_punct(t.get(k), ')') {
                k += 1;
            }
            k += 1;
        }
    }
    let first = ident(t.get(k));
    let is_item = first.is_some_and(|w| ITEM.contains(&w));
    let is_use = first == Some("use");
    let mut depth: isize = 0;
    let mut j = start;
    while j < t.len() {
        match t[j].tok {
            Tok::Punct('(') | Tok::Punct('[') | Tok::Punct('{') => depth += 1,
            Tok::Punct(')') | Tok::Punct(']') | Tok::Punct('}') => {
                depth -= 1;
                if depth < 0 {
                    return j; // closer of the enclosing block: not ours
                }
                if depth == 0 && !is_use && matches!(t[j].tok, Tok::Punct('}')) {
                    return j + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return j + 1,
            Tok::Punct(',') if depth == 0 && !is_item => return j + 1,
            _ => {}
        }
        j += 1;
    }
    t.len()
}

/// Every dependency in a file: `(target, line, internal)`. `internal` targets are top-level
/// modules of this crate (through `crate::`, `$crate::` or `super::` past the top), the others are
/// crates from `EXTERNAL`.
fn dependencies(t: &[Token], module_path: &[String]) -> Vec<(String, usize, bool)> {
    let mut deps = Vec::new();
    // inline `mod name { … }` blocks open at brace depth d: (name, d)
    let mut inline_mods: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let here = |inline_mods: &[(String, usize)]| -> Vec<String> {
        let inline = inline_mods.iter().map(|(n, _)| n.clone());
        module_path.iter().cloned().chain(inline).collect()
    };
    while i < t.len() {
        match &t[i].tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline_mods.last().is_some_and(|(_, d)| *d == depth) {
                    inline_mods.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some(name), true) = (ident(t.get(i + 1)), is_punct(t.get(i + 2), '{')) {
                    inline_mods.push((name.to_string(), depth));
                }
            }
            Tok::Ident(w) if w == "use" && !is_punct(t.get(i + 1), '<') => {
                let mut paths = Vec::new();
                let end = use_tree(t, i + 1, Vec::new(), &mut paths);
                let here = here(&inline_mods);
                for p in paths {
                    if let Some(d) = classify(&p, &here) {
                        deps.push(d);
                    }
                }
                i = end;
                continue;
            }
            Tok::Ident(_)
                if t.get(i + 1).is_some_and(|n| n.tok == Tok::PathSep) && path_starts_at(t, i) =>
            {
                let mut p = Vec::new();
                let mut k = i;
                while let Some(w) = ident(t.get(k)) {
                    p.push((w.to_string(), t[k].line));
                    if t.get(k + 1).is_some_and(|n| n.tok == Tok::PathSep) {
                        k += 2;
                    } else {
                        break;
                    }
                }
                if let Some(d) = classify(&p, &here(&inline_mods)) {
                    deps.push(d);
                }
            }
            _ => {}
        }
        i += 1;
    }
    deps
}

/// True when the identifier at `i` is the first segment of a path: not after `::`, or after a
/// leading `::` (`::reqwest::Client`) that does not itself continue a path or `<T as X>::`.
fn path_starts_at(t: &[Token], i: usize) -> bool {
    if i == 0 || t[i - 1].tok != Tok::PathSep {
        return true;
    }
    if i < 2 {
        return true;
    }
    !matches!(t[i - 2].tok, Tok::Ident(_) | Tok::Punct('>'))
}

/// Expand the use tree starting at `i` (after `use`) into full paths of `(segment, line)`.
/// Returns the index after the tree (and after a closing `;`).
fn use_tree(
    t: &[Token],
    mut i: usize,
    mut prefix: Vec<(String, usize)>,
    out: &mut Vec<Vec<(String, usize)>>,
) -> usize {
    if i < t.len() && t[i].tok == Tok::PathSep {
        // leading `::` (2015-style absolute path): the next segment is a crate
        i += 1;
    }
    while i < t.len() {
        match &t[i].tok {
            Tok::Ident(w) if w == "as" => {
                i += 2; // `as alias`
            }
            Tok::Ident(w) => {
                prefix.push((w.clone(), t[i].line));
                i += 1;
                if t.get(i).is_some_and(|n| n.tok == Tok::PathSep) {
                    i += 1;
                }
            }
            Tok::Punct('{') => {
                i += 1;
                loop {
                    if is_punct(t.get(i), '}') {
                        i += 1;
                        break;
                    }
                    if i >= t.len() {
                        break;
                    }
                    i = use_tree(t, i, prefix.clone(), out);
                    if is_punct(t.get(i), ',') {
                        i += 1;
                    }
                }
                return finish(t, i);
            }
            Tok::Punct('*') => {
                i += 1;
            }
            _ => break,
        }
    }
    if !prefix.is_empty() {
        out.push(prefix);
    }
    finish(t, i)
}

fn finish(t: &[Token], i: usize) -> usize {
    if is_punct(t.get(i), ';') {
        i + 1
    } else {
        i
    }
}

/// What a path depends on: `crate::store::…` → `store`; `super::super::x` from `[a, b]` → `x`;
/// `actix_web::…` → `actix_web`. `None` for paths inside the same module tree or to other crates.
fn classify(path: &[(String, usize)], here: &[String]) -> Option<(String, usize, bool)> {
    // the line reported is that of the segment naming the target (in a multi-line grouped
    // `use crate::{…}` that is the group member's line, not the `use` line)
    let (first, line) = path.first()?;
    match first.as_str() {
        "crate" => {
            let (name, line) = path.get(1)?;
            Some((name.clone(), *line, true))
        }
        "super" | "self" => {
            let mut cur = here.to_vec();
            let mut k = 0;
            while let Some((seg, _)) = path.get(k) {
                match seg.as_str() {
                    "super" => {
                        cur.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                k += 1;
            }
            match (cur.first(), path.get(k)) {
                (Some(top), named) => Some((top.clone(), named.map_or(*line, |n| n.1), true)),
                (None, Some((name, line))) => Some((name.clone(), *line, true)),
                (None, None) => None, // `use super::super;` naming the crate root itself
            }
        }
        name if EXTERNAL.contains(&name) => Some((name.to_string(), *line, false)),
        _ => None,
    }
}

/// Strongly connected components of the internal module graph (Tarjan), keeping those with
/// more than one module, each with one concrete cycle.
fn cycles(report: &Report) -> Vec<Cycle> {
    let nodes: Vec<&String> = report.modules.iter().collect();
    let index_of = |name: &str| nodes.iter().position(|n| n.as_str() == name);
    let adj: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            report
                .edges
                .get(n.as_str())
                .map(|tos| tos.keys().filter_map(|t| index_of(t)).collect())
                .unwrap_or_default()
        })
        .collect();

    struct Tarjan<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        sccs: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.adj[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                self.sccs.push(scc);
            }
        }
    }
    let n = nodes.len();
    let mut tarjan = Tarjan {
        adj: &adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for v in 0..n {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }

    let site = |f: usize, t: usize| -> Site {
        report.edges[nodes[f].as_str()][nodes[t].as_str()][0].clone()
    };
    let mut out = Vec::new();
    for mut scc in tarjan.sccs.into_iter().filter(|s| s.len() > 1) {
        scc.sort_unstable();
        let members: BTreeSet<usize> = scc.iter().copied().collect();
        // shortest cycle through the first module (BFS inside the component)
        let start = scc[0];
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = None;
        'bfs: while let Some(v) = queue.pop_front() {
            for &w in &adj[v] {
                if !members.contains(&w) {
                    continue;
                }
                if w == start {
                    last = Some(v);
                    break 'bfs;
                }
                if parent[w].is_none() && w != start {
                    parent[w] = Some(v);
                    queue.push_back(w);
                }
            }
        }
        let mut ring = vec![start];
        let mut v = last.unwrap_or(start);
        let mut back = Vec::new();
        while v != start {
            back.push(v);
            v = parent[v].unwrap_or(start);
        }
        ring.extend(back.into_iter().rev());
        let path = (0..ring.len())
            .map(|k| {
                let (f, t) = (ring[k], ring[(k + 1) % ring.len()]);
                (nodes[f].clone(), nodes[t].clone(), site(f, t))
            })
            .collect();
        let mut inner_edges = Vec::new();
        for &f in &scc {
            for &t in &adj[f] {
                if members.contains(&t) {
                    inner_edges.push((nodes[f].clone(), nodes[t].clone(), site(f, t)));
                }
            }
        }
        out.push(Cycle {
            modules: scc.iter().map(|&k| nodes[k].clone()).collect(),
            path,
            inner_edges,
        });
    }
    out.sort_by(|a, b| a.modules.cmp(&b.modules));
    out
}

// ---------------------------------------------------------------------------------------------
// The real tree
// ---------------------------------------------------------------------------------------------

fn read_tree(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            read_tree(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root).expect("under the crate root");
            let rel = rel.to_string_lossy().replace('\\', "/");
            let src = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {rel}: {e}"));
            out.push((rel, src));
        }
    }
}

#[test]
fn layers_and_no_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    read_tree(&root.join("src"), root, &mut files);
    assert!(
        files.len() > 10,
        "found only {} files under src/",
        files.len()
    );
    let report = analyze(&files);

    println!("observed module graph ({} files):", files.len());
    print!("{}", report.graph_text());
    println!("forbidden arrows (tests/api/architecture.rs RULES; see docs/architecture.md):");
    print!("{}", rules_text());

    assert!(
        report.is_clean(),
        "architecture check: {} forbidden arrow(s), {} cycle(s) between top-level modules — see \
         docs/architecture.md for the layers and where the code should go instead:\n{}",
        report.violations.len(),
        report.cycles.len(),
        report.problems_text()
    );
}

// ---------------------------------------------------------------------------------------------
// The checker can fail: synthetic trees
// ---------------------------------------------------------------------------------------------

fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

fn arrows(r: &Report) -> Vec<String> {
    r.violations
        .iter()
        .map(|v| format!("{}:{}: {} → {}", v.site.file, v.site.line, v.from, v.to))
        .collect()
}

#[test]
fn checker_reports_http_using_store() {
    let r = analyze(&tree(&[
        ("src/http/a.rs", "use crate::store::x;\nfn f() { x(); }\n"),
        ("src/store/x.rs", "pub fn x() {}\n"),
    ]));
    assert_eq!(arrows(&r), ["src/http/a.rs:1: http → store"]);
    assert!(r
        .problems_text()
        .contains("handlers reach data only through services"));
}

#[test]
fn checker_reports_grouped_multiline_use() {
    let r = analyze(&tree(&[(
        "src/store/flows.rs",
        "use std::fmt;\nuse crate::{\n    error::Error,\n    service::y,\n};\n",
    )]));
    assert_eq!(arrows(&r), ["src/store/flows.rs:4: store → service"]);
    assert!(r.edges["store"].contains_key("error"), "{:?}", r.edges);
}

#[test]
fn checker_reports_inline_external_path() {
    let r = analyze(&tree(&[(
        "src/service/runs.rs",
        "pub fn f() -> actix_web::HttpResponse {\n    todo!()\n}\n\
         fn g(c: &::rusqlite::Connection) {}\n",
    )]));
    assert_eq!(
        arrows(&r),
        [
            "src/service/runs.rs:1: service → actix_web",
            "src/service/runs.rs:4: service → rusqlite"
        ]
    );
}

#[test]
fn checker_reports_inline_crate_path_and_super_escape() {
    let r = analyze(&tree(&[
        (
            "src/http/routes/flows.rs",
            "async fn h() { let f = crate::store::flows::insert_flow(1); }\n",
        ),
        ("src/cli/mod.rs", "use super::store::Pool;\n"),
        (
            "src/crypto/seal.rs",
            "fn k() { super::super::store::x(); }\n",
        ),
    ]));
    // `super::super` from crypto::seal is the crate root, so `store`
    assert_eq!(
        arrows(&r),
        [
            "src/cli/mod.rs:1: cli → store",
            "src/crypto/seal.rs:1: crypto → store",
            "src/http/routes/flows.rs:1: http → store"
        ]
    );
}

#[test]
fn checker_reports_cycle() {
    let r = analyze(&tree(&[
        ("src/alpha/mod.rs", "use crate::beta::B;\n"),
        ("src/beta.rs", "\n\npub fn b() { crate::alpha::a(); }\n"),
        ("src/gamma.rs", "use crate::alpha::A;\n"),
    ]));
    assert!(r.violations.is_empty());
    assert_eq!(r.cycles.len(), 1, "{:?}", r.cycles);
    let c = &r.cycles[0];
    assert_eq!(c.modules, ["alpha", "beta"]);
    let text = r.problems_text();
    assert!(text.contains("alpha → beta → alpha"), "{text}");
    assert!(text.contains("src/alpha/mod.rs:1: alpha → beta"), "{text}");
    assert!(text.contains("src/beta.rs:3: beta → alpha"), "{text}");
    assert!(!r.is_clean());
}

#[test]
fn checker_reports_three_module_cycle() {
    let r = analyze(&tree(&[
        ("src/http/mod.rs", "use crate::service::S;\n"),
        ("src/service/mod.rs", "use crate::error::E;\n"),
        ("src/error.rs", "use crate::http::problem;\n"),
    ]));
    assert_eq!(r.cycles.len(), 1);
    assert_eq!(r.cycles[0].path.len(), 3);
    assert!(r.problems_text().contains("error → http → service → error"));
}

#[test]
fn checker_ignores_tests_comments_and_strings() {
    let src = r##"//! Uses crate::store::x in docs only.
use crate::service::flows;

/// `use crate::store::flows;` in a doc comment
// use crate::store::x;
/* use crate::store::x; /* nested */ crate::store::y(); */
fn f() -> &'static str {
    let _c = 'x';
    let _q = '"';
    let _s = "use crate::store::x; actix_web::HttpResponse";
    let _r = r#"crate::store::"quoted"::x"#;
    let _b = b"rusqlite::Connection";
    "crate::store"
}

#[cfg(test)]
mod tests {
    use crate::store::x;
    use rusqlite::Connection;
    #[test]
    fn t() {
        let _ = crate::store::y();
        if true { actix_web::test::init_service(); }
    }
}

#[cfg(test)]
use crate::store::fixtures;

fn after_tests() { crate::service::flows::create(); }
"##;
    let r = analyze(&tree(&[("src/http/routes/flows.rs", src)]));
    assert!(r.is_clean(), "{}", r.problems_text());
    assert_eq!(
        r.edges["http"].keys().collect::<Vec<_>>(),
        ["service"],
        "{:?}",
        r.edges
    );
    // line numbers survive stripping: the last line's inline path is on line 30
    assert_eq!(r.edges["http"]["service"].last().map(|s| s.line), Some(30));
}

#[test]
fn checker_ignores_test_only_file_and_crate_root() {
    let r = analyze(&tree(&[
        (
            "src/http/fixtures.rs",
            "#![cfg(test)]\nuse crate::store::x;\n",
        ),
        ("src/lib.rs", "pub mod http;\nuse crate::store::x;\n"),
        ("src/main.rs", "use flowguard::store;\n"),
    ]));
    assert!(r.is_clean(), "{}", r.problems_text());
    assert!(r.edges.is_empty(), "{:?}", r.edges);
}

#[test]
fn checker_keeps_not_test_and_feature_cfg() {
    let r = analyze(&tree(&[(
        "src/http/a.rs",
        "#[cfg(not(test))]\nuse crate::store::x;\n#[cfg(feature = \"f\")]\nfn g() { rusqlite::x(); }\n",
    )]));
    assert_eq!(
        arrows(&r),
        [
            "src/http/a.rs:2: http → store",
            "src/http/a.rs:4: http → rusqlite"
        ]
    );
}
