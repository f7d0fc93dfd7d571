//! Architecture invariants, checked by reading the sources.
//!
//! ARCHITECTURE.md states what each module must never touch; this test keeps
//! those sentences true. It strips comments and string literals first, so a
//! doc comment may say "raft never imports mio" without tripping the check.

use std::fs;
use std::path::{Path, PathBuf};

/// Words a pure module (no I/O, no clock, no OS randomness) must not contain.
const IMPURE: &[&str] = &[
    "mio",
    "std::fs",
    "std::net",
    "std::time",
    "Instant::now",
    "SystemTime",
    "std::thread",
    "std::env",
    "std::process",
    "libc",
    "memmap2",
    // Default-hashed maps iterate in a different order in every process, which
    // would make replay from a seed and byte-identical replicas impossible.
    "HashMap",
    "HashSet",
    "RandomState",
];

/// (module folder or file, words it must not contain, why).
const RULES: &[(&str, &[&str], &str)] = &[
    ("src/raft", IMPURE, "raft is a pure state machine"),
    (
        "src/raft",
        &["postcard", "crate::mvcc", "crate::wal", "crate::server"],
        "raft knows only itself",
    ),
    ("src/mvcc", IMPURE, "mvcc is pure and deterministic"),
    (
        "src/mvcc",
        &["crate::raft", "crate::wal", "crate::server"],
        "mvcc knows nothing of consensus",
    ),
    ("src/state", IMPURE, "the state machine is pure"),
    (
        "src/state",
        &[
            "crate::server",
            "crate::wal",
            "crate::snap",
            "crate::transport",
            "crate::client",
            "crate::cli",
        ],
        "the state machine applies entries; the drivers carry out its effects",
    ),
    (
        "src/lease",
        &["mio", "std::fs", "std::net", "std::time", "Instant::now", "SystemTime"],
        "leases expire through proposals",
    ),
    ("src/auth", IMPURE, "auth is pure: time and random bytes come in as arguments"),
    (
        "src/auth",
        &["crate::server", "crate::wal", "crate::snap", "crate::transport", "ring::rand"],
        "auth decides; the drivers hash, draw random bytes and talk",
    ),
    (
        "src/proto",
        &["mio", "std::net", "std::fs", "crate::server", "crate::raft"],
        "proto only turns bytes into values",
    ),
    (
        "src/wal",
        &["crate::mvcc", "crate::server", "crate::snap", "mio", "std::net"],
        "the WAL stores opaque entries and knows no snapshot file",
    ),
    (
        "src/snap",
        &["crate::mvcc", "crate::server", "crate::wal", "mio", "std::net"],
        "snapshot files hold opaque payloads and know no WAL",
    ),
    (
        "src/transport",
        &["crate::mvcc", "crate::server", "crate::wal"],
        "transport moves frames, not meaning",
    ),
    (
        "src/tls.rs",
        &["crate::server", "crate::transport", "crate::client", "crate::proto", "crate::cli"],
        "tls carries bytes and knows no protocol on top of them",
    ),
    ("src/server", &["crate::cli"], "the server knows no command line; cli depends on it"),
    (
        "src/client",
        &["crate::server", "crate::raft", "crate::wal", "crate::mvcc"],
        "the client speaks only proto",
    ),
];

/// The closed list of runtime dependencies (DESIGN.md); dev-dependencies are free.
const ALLOWED_DEPENDENCIES: &[&str] = &[
    "mio",
    "heapless",
    "postcard",
    "crc32fast",
    "memmap2",
    "log",
    "serde",
    "libc",
    "ring",
    "rustls",
];

#[test]
fn modules_keep_their_boundaries() {
    let mut breaches = Vec::new();
    for (place, words, why) in RULES {
        for file in rust_files(&root().join(place)) {
            let code = strip_comments_and_strings(&fs::read_to_string(&file).unwrap());
            for word in *words {
                for line in lines_with_word(&code, word) {
                    breaches.push(format!("{}:{line}: uses `{word}`: {why}", relative(&file)));
                }
            }
        }
    }
    assert!(breaches.is_empty(), "architecture invariants broken:\n{}", breaches.join("\n"));
}

/// The files of `src/server` each name the others they use as
/// `super::<file>`; no chain of such uses may lead back to where it began,
/// so each part can be read (and tested) without the ones above it.
#[test]
fn server_files_import_each_other_one_way() {
    let dir = root().join("src/server");
    let mut edges: Vec<(String, Vec<String>)> = Vec::new();
    for file in rust_files(&dir) {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let code = strip_comments_and_strings(&fs::read_to_string(&file).unwrap());
        let mut uses: Vec<String> = code
            .split("super::")
            .skip(1)
            .flat_map(imported_names)
            .filter(|used: &String| used != &name && dir.join(format!("{used}.rs")).exists())
            .collect();
        uses.sort();
        uses.dedup();
        edges.push((name, uses));
    }
    let mut cycles = Vec::new();
    for (start, _) in &edges {
        let mut path = vec![start.clone()];
        find_cycle(&edges, start, &mut path, &mut cycles);
    }
    assert!(cycles.is_empty(), "server files that import each other in a circle: {cycles:?}");
}

/// The first path segment of each name imported after a `super::`:
/// `node::Node` gives `node`, `{ServeError, signal}` gives both names.
fn imported_names(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    };
    match rest.strip_prefix('{') {
        Some(group) => group.split('}').next().unwrap_or("").split(',').map(ident).collect(),
        None => vec![ident(rest)],
    }
}

fn find_cycle(
    edges: &[(String, Vec<String>)],
    start: &str,
    path: &mut Vec<String>,
    cycles: &mut Vec<String>,
) {
    let at = path.last().unwrap().clone();
    let next = edges.iter().find(|(name, _)| *name == at).map(|(_, uses)| uses.clone());
    for used in next.unwrap_or_default() {
        if used == start {
            cycles.push(format!("{} -> {start}", path.join(" -> ")));
        } else if !path.contains(&used) {
            path.push(used);
            find_cycle(edges, start, path, cycles);
            path.pop();
        }
    }
}

/// Limits spell "max" one way: the quantity first, then its unit, then the
/// qualifier (`REQUEST_BYTES_MAX_DEFAULT`, not `DEFAULT_MAX_REQUEST_BYTES`).
#[test]
fn limits_put_max_after_what_they_bound() {
    let mut misnamed = Vec::new();
    for file in rust_files(&root().join("src")) {
        let code = strip_comments_and_strings(&fs::read_to_string(&file).unwrap());
        for (at, line) in code.lines().enumerate() {
            let Some((_, rest)) = line.split_once("const ") else { continue };
            if rest.starts_with("MAX_") || rest.starts_with("DEFAULT_MAX_") {
                misnamed.push(format!("{}:{}: {}", relative(&file), at + 1, line.trim()));
            }
        }
    }
    assert!(misnamed.is_empty(), "constants that put MAX first:\n{}", misnamed.join("\n"));
}

#[test]
fn every_module_says_what_it_owns() {
    let mut undocumented = Vec::new();
    for file in rust_files(&root().join("src")) {
        let is_module_root = file.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs")
            || file.parent() == Some(&root().join("src"));
        let text = fs::read_to_string(&file).unwrap();
        if is_module_root && !text.trim_start().starts_with("//!") {
            undocumented.push(relative(&file));
        }
    }
    assert!(undocumented.is_empty(), "modules without a `//!` doc comment: {undocumented:?}");
}

#[test]
fn dependencies_stay_on_the_list() {
    let manifest = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut in_dependencies = false;
    let mut strangers = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        let Some((name, _)) = line.split_once('=') else { continue };
        let name = name.trim();
        if in_dependencies && !name.starts_with('#') && !ALLOWED_DEPENDENCIES.contains(&name) {
            strangers.push(name.to_string());
        }
    }
    assert!(strangers.is_empty(), "dependencies outside the design's list: {strangers:?}");
}

#[test]
fn the_checker_sees_through_comments_but_not_code() {
    let code = strip_comments_and_strings(
        "//! raft never imports mio\nlet s = \"std::fs\"; /* mio */\nuse mio::Poll;\nlet premio = 1;",
    );
    assert_eq!(lines_with_word(&code, "mio"), vec![3]);
    assert!(lines_with_word(&code, "std::fs").is_empty());
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Every `.rs` file at or below `path`, in a stable order.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let Ok(entries) = fs::read_dir(path) else { return Vec::new() };
    let mut files = Vec::new();
    let mut children: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    children.sort();
    for child in children {
        if child.is_dir() {
            files.extend(rust_files(&child));
        } else if child.extension().is_some_and(|e| e == "rs") {
            files.push(child);
        }
    }
    files
}

/// Line numbers (1-based) where `word` stands as a whole path or identifier.
fn lines_with_word(code: &str, word: &str) -> Vec<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let hit = line.match_indices(word).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + word.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        });
        if hit {
            found.push(number + 1);
        }
    }
    found
}

/// Blanks out comments, string and char literals, keeping line breaks so line
/// numbers still match the file.
fn strip_comments_and_strings(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            i = skip_until(&chars, i + 2, &['*', '/'], &mut out);
        } else if chars[i] == '"' {
            i = skip_string(&chars, i + 1, &mut out);
        } else if let Some(end) = char_literal_end(&chars, i) {
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Skips to just past `end`, keeping only the newlines on the way.
fn skip_until(chars: &[char], mut i: usize, end: &[char], out: &mut String) -> usize {
    while i < chars.len() && !chars[i..].starts_with(end) {
        if chars[i] == '\n' {
            out.push('\n');
        }
        i += 1;
    }
    (i + end.len()).min(chars.len())
}

fn skip_string(chars: &[char], mut i: usize, out: &mut String) -> usize {
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\n' {
            out.push('\n');
        }
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    out.push_str("\"\"");
    i + 1
}

/// `'x'` or `'\n'` is a char literal; `'a` alone is a lifetime.
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    if chars[i] != '\'' {
        return None;
    }
    if chars.get(i + 1) == Some(&'\\') {
        let close = chars[i + 2..].iter().take(10).position(|&c| c == '\'')?;
        return Some(i + 2 + close + 1);
    }
    (chars.get(i + 2) == Some(&'\'')).then_some(i + 3)
}
