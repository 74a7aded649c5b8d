//! The docs' snippets are the code that runs: a ```rust block of README.md or docs/*.md with
//! `<!-- snippet: PATH#NAME -->` on the line before it must equal PATH's `// ANCHOR: NAME`
//! region (scripts/sync-doc-snippets copies them). That every other block is compiled, as a
//! doctest, is checked by scripts/check-doc-snippets.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The text between `// ANCHOR: name` and `// ANCHOR_END: name` in `file`.
fn region(file: &str, name: &str) -> String {
    let text = std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let start = format!("// ANCHOR: {name}\n");
    let end = format!("// ANCHOR_END: {name}\n");
    let from = text
        .find(&start)
        .unwrap_or_else(|| panic!("{file}: no `{start}`"))
        + start.len();
    let to = text[from..]
        .find(&end)
        .unwrap_or_else(|| panic!("{file}: no `{end}`"));
    text[from..from + to].to_owned()
}

/// The ```rust blocks of `text`: (line of the fence, the line before it, the contents).
fn rust_blocks(text: &str) -> Vec<(usize, String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].starts_with("```rust") {
            let before = if i > 0 { lines[i - 1] } else { "" };
            let mut body = String::new();
            let mut j = i + 1;
            while j < lines.len() && !lines[j].starts_with("```") {
                body.push_str(lines[j]);
                body.push('\n');
                j += 1;
            }
            blocks.push((i + 1, before.to_owned(), body));
            i = j;
        }
        i += 1;
    }
    blocks
}

#[test]
fn every_snippet_in_the_docs_is_its_crates_code() {
    let mut files = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    files.sort();
    let mut problems = Vec::new();
    let mut snippets = 0;
    for file in &files {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for (line, before, body) in rust_blocks(&text) {
            if let Some(spec) = before
                .strip_prefix("<!-- snippet: ")
                .and_then(|s| s.strip_suffix(" -->"))
            {
                let (path, name) = spec.split_once('#').expect("snippet: PATH#NAME");
                if body != region(path, name) {
                    problems.push(format!(
                        "{file}:{line}: differs from {path}#{name}: run scripts/sync-doc-snippets"
                    ));
                }
                snippets += 1;
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(snippets >= 5, "the guide's snippets: {snippets}");
}
