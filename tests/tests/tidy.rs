//! Tidy: the invariants of the code's layout, checked on every `cargo test`. Each check reads
//! the source tree as text and fails with what broke and where:
//!
//! - `cairn-core` depends (transitively) on none of tokio, quinn, rustls, hyper, s3s, redb, and
//!   its code uses no `std::fs`, reads no clock and no random source;
//! - in `cairn-node`, only `clock.rs` reads the time;
//! - no import circle between the modules of any crate, at any level (a module's children may
//!   use each other, and their parent, but not round in a circle);
//! - every `.rs` file opens with a `//!` line saying what it is for;
//! - no `Result<_, String>` or `(ErrorCode, String)` in library code (tests may);
//! - ARCHITECTURE.md names every crate and every top-level module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The library crates: (directory, source root).
const LIBRARY_CRATES: [&str; 4] = ["engine", "core", "client", "node"];

/// Every crate directory of the workspace, and fuzz/ beside it.
const CRATE_DIRS: [&str; 7] = [
    "engine", "core", "client", "node", "tests", "benches", "fuzz",
];

/// Crates `cairn-core` must not depend on, even through another crate.
const CORE_FORBIDDEN_CRATES: [&str; 8] = [
    "tokio",
    "quinn",
    "quinn-proto",
    "rustls",
    "hyper",
    "hyper-util",
    "s3s",
    "redb",
];

/// What a file may not name to stay sans-IO.
const CORE_FORBIDDEN_PATHS: [&str; 9] = [
    "std::fs",
    "tokio::",
    "quinn::",
    "rustls::",
    "hyper::",
    "s3s::",
    "redb::",
    "std::net::UdpSocket",
    "std::net::TcpStream",
];

/// Reading the time.
const CLOCK_READS: [&str; 3] = ["Instant::now", "SystemTime::now", ".elapsed()"];

/// Reading a random source.
const RANDOM_READS: [&str; 4] = ["thread_rng", "SystemRandom", "getrandom", "OsRng"];

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "target" && name != "corpus" && name != "artifacts" {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The file's code: comment lines and everything from the first `#[cfg(test)]` on are left out
/// (tests sit at the end of a file).
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The packages of Cargo.lock and what each depends on.
fn lock_graph() -> BTreeMap<String, Vec<String>> {
    let lock = read(&root().join("Cargo.lock"));
    let mut graph = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let name = package
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .expect("a package has a name")
            .trim_matches('"')
            .to_string();
        let mut deps = Vec::new();
        if let Some(start) = package.find("dependencies = [") {
            let list = &package[start..];
            let end = list.find(']').expect("a closed list");
            for item in list[..end].split('"').skip(1).step_by(2) {
                // "name" or "name version": the name is the first word.
                deps.push(item.split(' ').next().expect("a name").to_string());
            }
        }
        graph.insert(name, deps);
    }
    graph
}

#[test]
fn core_depends_on_no_runtime_network_tls_http_s3_or_database_crate() {
    let graph = lock_graph();
    let mut seen = BTreeSet::new();
    let mut stack = vec!["cairn-core".to_string()];
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        stack.extend(graph.get(&name).cloned().unwrap_or_default());
    }
    assert!(seen.len() > 1, "cairn-core is not in Cargo.lock");
    let forbidden: Vec<&str> = CORE_FORBIDDEN_CRATES
        .iter()
        .copied()
        .filter(|c| seen.contains(*c))
        .collect();
    assert!(
        forbidden.is_empty(),
        "cairn-core depends on {forbidden:?} (through Cargo.lock); it must stay sans-IO"
    );
}

#[test]
fn core_code_does_no_io_and_reads_no_clock_or_randomness() {
    let mut broken = Vec::new();
    let files = rust_files(&root().join("core/src"));
    assert!(files.len() > 10, "core/src holds the core's files");
    for path in files {
        let code = code_of(&read(&path));
        let needles = CORE_FORBIDDEN_PATHS
            .iter()
            .chain(CLOCK_READS.iter())
            .chain(RANDOM_READS.iter());
        for needle in needles {
            if code.contains(needle) {
                broken.push(format!("{}: {needle}", relative(&path)));
            }
        }
    }
    assert!(broken.is_empty(), "sans-IO broken:\n{}", broken.join("\n"));
}

#[test]
fn only_the_clock_module_reads_the_time_in_the_node() {
    let mut broken = Vec::new();
    let clock = root().join("node/src/clock.rs");
    let mut clock_reads = 0;
    for path in rust_files(&root().join("node/src")) {
        let code = code_of(&read(&path));
        for needle in &CLOCK_READS {
            let n = code.matches(needle).count();
            if path == clock {
                clock_reads += n;
            } else if n > 0 {
                broken.push(format!("{}: {needle}", relative(&path)));
            }
        }
    }
    assert!(clock_reads > 0, "node/src/clock.rs reads the clock");
    assert!(
        broken.is_empty(),
        "read the time through crate::clock instead:\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    let mut count = 0;
    for dir in CRATE_DIRS {
        for path in rust_files(&root().join(dir)) {
            count += 1;
            let text = read(&path);
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                missing.push(relative(&path));
            }
        }
    }
    assert!(count > 50, "found only {count} files");
    assert!(
        missing.is_empty(),
        "files without an opening `//!` line:\n{}",
        missing.join("\n")
    );
}

#[test]
fn library_code_returns_no_string_errors() {
    let mut broken = Vec::new();
    for krate in LIBRARY_CRATES {
        for path in rust_files(&root().join(krate).join("src")) {
            if path.ends_with("tests.rs") || path.components().any(|c| c.as_os_str() == "bin") {
                continue;
            }
            let code = code_of(&read(&path));
            let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
            for args in generic_args(&flat, "Result<") {
                if args.len() == 2 && args[1] == "String" {
                    broken.push(format!("{}: Result<{}>", relative(&path), args.join(", ")));
                }
            }
            if flat.contains("(ErrorCode, String)") {
                broken.push(format!("{}: (ErrorCode, String)", relative(&path)));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "string errors in library code (use a typed error):\n{}",
        broken.join("\n")
    );
}

#[test]
fn architecture_names_every_crate_and_top_level_module() {
    let architecture = read(&root().join("ARCHITECTURE.md"));
    let mut missing = Vec::new();
    for dir in CRATE_DIRS {
        if !architecture.contains(&format!("`{dir}/`")) {
            missing.push(format!("crate directory `{dir}/`"));
        }
    }
    for krate in LIBRARY_CRATES {
        for top in ["lib.rs", "main.rs"] {
            let path = root().join(krate).join("src").join(top);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for module in declared_modules(&text) {
                if !architecture.contains(&format!("`{module}")) {
                    missing.push(format!("module `{module}` of {}", relative(&path)));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name:\n{}",
        missing.join("\n")
    );
}

/// The top-level generic arguments of every `name<...>` in `text` (`name` ends in `<`).
fn generic_args<'a>(text: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(name) {
        let start = from + i + name.len();
        let (mut depth, mut last, mut args) = (1, start, Vec::new());
        for (j, c) in text[start..].char_indices() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        args.push(text[last..start + j].trim());
                        break;
                    }
                }
                ',' if depth == 1 => {
                    args.push(text[last..start + j].trim());
                    last = start + j + 1;
                }
                _ => {}
            }
        }
        out.push(args);
        from = start;
    }
    out
}

/// The modules a file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`), tests aside.
fn declared_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code_of(text).lines() {
        let line = line.trim();
        let rest = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "));
        if let Some(name) = rest.and_then(|r| r.strip_suffix(';')) {
            out.push(name.trim().to_string());
        }
    }
    out
}

/// A crate's modules: each file's module path (`[]` for the root).
fn module_paths(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut modules = BTreeMap::new();
    for path in rust_files(src) {
        let rel = path.strip_prefix(src).expect("under src");
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts.first().is_some_and(|p| p == "bin") {
            continue; // binaries are crates of their own
        }
        let file = parts.pop().expect("a file name");
        if file == "tests.rs" {
            continue; // test code, compiled only under cfg(test)
        }
        match file.as_str() {
            "lib.rs" | "main.rs" if parts.is_empty() => {}
            "mod.rs" => {}
            _ => parts.push(file.trim_end_matches(".rs").to_string()),
        }
        if file == "main.rs" && parts.is_empty() && src.join("lib.rs").exists() {
            continue; // the binary beside a library: a crate of its own
        }
        modules.insert(parts, path);
    }
    modules
}

/// The paths a file names: `use` trees expanded, and `crate::`/`super::`/`self::` paths in code.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // `use` items, braces expanded.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let start = i + 4;
        let before = &rest[..i];
        let at_item = before
            .chars()
            .rev()
            .find(|c| !c.is_whitespace())
            .is_none_or(|c| matches!(c, ';' | '}' | '{' | ']' | ')'));
        let Some(end) = rest[start..].find(';') else {
            break;
        };
        if at_item || before.ends_with("pub ") || before.ends_with("pub(crate) ") {
            let tree = rest[start..start + end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace(" as ", "\u{1}")
                .replace(' ', "")
                .replace('\u{1}', " as ");
            expand(&tree, &mut Vec::new(), &mut out);
        }
        rest = &rest[start + end..];
    }
    // Inline paths.
    for anchor in ["crate::", "super::", "self::"] {
        let mut at = 0;
        while let Some(i) = code[at..].find(anchor) {
            let hit = at + i;
            let boundary = code[..hit]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            if boundary {
                let path: String = code[hit..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let segments: Vec<String> = path
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                out.push(segments);
            }
            at = hit + anchor.len();
        }
    }
    out
}

/// Expands one `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim_matches(',');
    let Some(brace) = tree.find('{') else {
        let mut path = prefix.clone();
        let plain = tree.split(" as ").next().unwrap_or(tree).trim();
        path.extend(
            plain
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        out.push(path);
        return;
    };
    let head: Vec<String> = tree[..brace]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let inner = &tree[brace + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut item = String::new();
    let depth_before = prefix.len();
    prefix.extend(head);
    for c in inner.chars().chain(std::iter::once(',')) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            if !item.is_empty() {
                expand(&item, prefix, out);
            }
            item.clear();
        } else {
            item.push(c);
        }
    }
    prefix.truncate(depth_before);
}

/// Resolves a path named in module `from` to the module it reaches (the longest module prefix).
fn resolve(
    from: &[String],
    is_dir_module: bool,
    path: &[String],
    modules: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let (mut base, rest): (Vec<String>, &[String]) = match first.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.to_vec(), &path[1..]),
        "super" => {
            let mut base = from.to_vec();
            let mut i = 0;
            while path.get(i).is_some_and(|s| s == "super") {
                base.pop()?;
                i += 1;
            }
            (base, &path[i..])
        }
        // A child module named directly (`use blobs::x` from its parent) or an item of the
        // file's own module.
        name if from.is_empty() || is_dir_module => {
            let mut child = from.to_vec();
            child.push(name.to_string());
            if !modules.contains_key(&child) {
                return None;
            }
            (from.to_vec(), path)
        }
        _ => return None,
    };
    for segment in rest {
        base.push(segment.clone());
        if !modules.contains_key(&base) {
            base.pop();
            break;
        }
    }
    Some(base)
}

#[test]
fn no_import_circle_between_modules_of_any_crate() {
    let mut circles = Vec::new();
    for krate in LIBRARY_CRATES {
        let src = root().join(krate).join("src");
        let modules = module_paths(&src);
        // For every module with children: the graph between its children, and which files
        // make each edge.
        let mut graphs: BTreeMap<Vec<String>, Graph> = BTreeMap::new();
        for (module, path) in &modules {
            let is_dir_module = path.ends_with("mod.rs") || module.is_empty();
            let code = code_of(&read(path));
            for named in named_paths(&code) {
                let Some(target) = resolve(module, is_dir_module, &named, &modules) else {
                    continue;
                };
                let common = module
                    .iter()
                    .zip(&target)
                    .take_while(|(a, b)| a == b)
                    .count();
                // A module naming itself, an ancestor or a descendant: containment.
                if common == module.len() || common == target.len() {
                    continue;
                }
                graphs
                    .entry(module[..common].to_vec())
                    .or_default()
                    .entry(module[common].clone())
                    .or_default()
                    .entry(target[common].clone())
                    .or_default()
                    .insert(relative(path));
            }
        }
        for (parent, graph) in &graphs {
            if let Some(circle) = find_circle(graph) {
                let mut why = Vec::new();
                for pair in circle.windows(2) {
                    let files = &graph[&pair[0]][&pair[1]];
                    why.push(format!(
                        "  {} -> {} (in {})",
                        pair[0],
                        pair[1],
                        files.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
                circles.push(format!(
                    "{krate}: in `{}`: {}\n{}",
                    if parent.is_empty() {
                        "crate".to_string()
                    } else {
                        parent.join("::")
                    },
                    circle.join(" -> "),
                    why.join("\n")
                ));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// A directed graph between sibling modules: from, to, and the files that make the edge.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// A circle in a directed graph, as its nodes with the first repeated at the end.
fn find_circle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut circle = stack[from..].to_vec();
                    circle.push(next.clone());
                    return Some(circle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(next, graph, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node)
            && let Some(c) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_circle_finder_finds_circles_and_only_circles() {
    // The checker itself must be able to fail.
    let edge = |pairs: &[(&str, &str)]| {
        let mut g: Graph = BTreeMap::new();
        for (a, b) in pairs {
            g.entry(a.to_string())
                .or_default()
                .insert(b.to_string(), BTreeSet::new());
        }
        g
    };
    assert_eq!(
        find_circle(&edge(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    let circle = find_circle(&edge(&[("a", "b"), ("b", "c"), ("c", "a")])).expect("a circle");
    assert_eq!(circle.first(), circle.last());
    assert_eq!(circle.len(), 4);
    // Generic arguments are split at the top level only.
    let found = generic_args("fn f() -> Result<HashMap<String, String>, E> {}", "Result<");
    assert_eq!(found[0], vec!["HashMap<String, String>", "E"]);
    let found = generic_args("-> Result<Vec<u8>, String>;", "Result<");
    assert_eq!(found[0], vec!["Vec<u8>", "String"]);
    // Paths are read from `use` trees and code alike.
    let paths = named_paths("use super::{a, b::{c, d as e}};\nfn f() { crate::x::y(); }");
    assert!(paths.contains(&vec!["super".into(), "a".into()]));
    assert!(paths.contains(&vec!["super".into(), "b".into(), "d".into()]));
    assert!(paths.contains(&vec!["crate".into(), "x".into(), "y".into()]));
}
