//! The tracing guide checked against the code: its span catalog and the constants in
//! `names` say the same thing (every span name and attribute key the code can write is in
//! the catalog, every span the catalog's tables name is one the code can write), and its
//! Rust blocks are excerpts of files the workspace compiles.

const NAMES: &str = include_str!("../../src/names.rs");
const GUIDE: &str = include_str!("../../../../docs/tracing-guide.md");

/// The string values of the `pub const`s in `pub mod <module>` of names.rs.
fn constants(module: &str) -> Vec<String> {
    let start = NAMES
        .find(&format!("pub mod {module} {{"))
        .unwrap_or_else(|| panic!("no module {module}"));
    let body = &NAMES[start..];
    let end = body.find("\n}").expect("end of module");
    body[..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

/// The catalog section of the guide.
fn catalog() -> &'static str {
    let start = GUIDE
        .find("## The span catalog")
        .expect("a catalog section");
    let rest = &GUIDE[start + 3..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// A constant as the catalog writes it: prefixes take a placeholder.
fn as_written(name: &str) -> String {
    match name {
        "p2p.message." => "p2p.message.<type>".into(),
        "p2p.relay." => "p2p.relay.<operation>".into(),
        other => other.to_owned(),
    }
}

#[test]
fn every_span_and_attribute_of_the_code_is_in_the_catalog() {
    let catalog = catalog();
    let spans = constants("span");
    let attrs = constants("attr");
    assert!(spans.len() > 30 && attrs.len() > 20, "{spans:?} {attrs:?}");
    for name in spans.iter().chain(&attrs) {
        let written = format!("`{}`", as_written(name));
        assert!(
            catalog.contains(&written),
            "{written} is a constant in names.rs but not in the guide's span catalog"
        );
    }
}

#[test]
fn every_span_the_catalog_lists_is_one_the_code_writes() {
    let known: Vec<String> = constants("span").iter().map(|n| as_written(n)).collect();
    let mut listed = 0;
    for row in catalog().lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).expect("a first cell");
        for name in first.split('`').skip(1).step_by(2) {
            listed += 1;
            assert!(
                known.iter().any(|k| k == name),
                "the catalog lists {name}, which names.rs does not define"
            );
        }
    }
    assert!(listed >= known.len(), "{listed} spans listed");
}

/// Every Rust block of the guide names, on its first line, the compiled file it is taken
/// from, and each of its lines is a line of that file: the guide shows only code that
/// builds.
#[test]
fn every_rust_block_of_the_guide_is_an_excerpt_of_compiled_code() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut blocks = 0;
    let mut rest = GUIDE;
    while let Some(start) = rest.find("```rust\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("a closed block");
        let mut lines = body[..end].lines().map(str::trim).filter(|l| !l.is_empty());
        let source = lines
            .next()
            .and_then(|l| l.strip_prefix("// "))
            .unwrap_or_else(|| panic!("a Rust block does not name its file:\n{}", &body[..end]));
        let text = std::fs::read_to_string(format!("{root}/{source}"))
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        let have: Vec<&str> = text.lines().map(str::trim).collect();
        for line in lines.filter(|l| !l.starts_with("// ")) {
            assert!(
                have.contains(&line),
                "the guide shows `{line}`, which {source} does not have"
            );
        }
        blocks += 1;
        rest = &body[end + 3..];
    }
    assert!(blocks >= 7, "{blocks} Rust blocks");
}
