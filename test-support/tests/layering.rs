//! The crate layering of docs/architecture.md, checked against `cargo metadata` and
//! `cargo tree`: a crate that gains a workspace dependency its layer may not have, or pulls
//! in (transitively, normal dependencies, default features) a crate its layer forbids, or
//! grows past its crate budget, fails this test.
//!
//! The rules are the ```` ```layers ```` block of docs/architecture.md, one line per crate:
//! `crate: allowed workspace deps | forbidden crates | max distinct crates` (the last two
//! optional).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Rule {
    allowed: BTreeSet<String>,
    forbidden: Vec<String>,
    max_crates: Option<usize>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rules() -> BTreeMap<String, Rule> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let block = doc
        .split("```layers\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("docs/architecture.md has a ```layers block");
    let mut rules = BTreeMap::new();
    for line in block.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (krate, rest) = line.split_once(':').expect("`crate: ...`");
        let mut parts = rest.split('|').map(str::trim);
        let words = |s: Option<&str>| -> Vec<String> {
            s.unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let allowed = words(parts.next()).into_iter().collect();
        let forbidden = words(parts.next());
        let max_crates = parts
            .next()
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("max crates is a number"));
        rules.insert(
            krate.trim().to_owned(),
            Rule {
                allowed,
                forbidden,
                max_crates,
            },
        );
    }
    rules
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Workspace packages and their declared normal (non-dev, non-build) workspace
/// dependencies, and the library crates (the top-level `mesh*/` folders) that need a rule.
fn workspace_deps() -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let libraries = packages
        .iter()
        .filter(|p| {
            let manifest = Path::new(p["manifest_path"].as_str().unwrap());
            let dir = manifest.parent().unwrap();
            dir.parent() == Some(root().as_path())
                && dir
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("mesh")
        })
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let deps = packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|n| members.contains(n))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect();
    (deps, libraries)
}

/// Every crate a user of `krate` compiles (normal dependencies, default features).
fn tree(krate: &str) -> BTreeSet<String> {
    let out = cargo()
        .args([
            "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--locked",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_crate_keeps_to_its_layer() {
    let rules = rules();
    let (deps, libraries) = workspace_deps();
    let mut broken = Vec::new();
    for (krate, rule) in &rules {
        let Some(declared) = deps.get(krate) else {
            broken.push(format!(
                "{krate}: in the layering rules but not in the workspace"
            ));
            continue;
        };
        for d in declared.difference(&rule.allowed) {
            broken.push(format!(
                "{krate} depends on {d}, which its layer does not allow"
            ));
        }
        if rule.forbidden.is_empty() && rule.max_crates.is_none() {
            continue;
        }
        let all = tree(krate);
        for f in &rule.forbidden {
            if all.contains(f) {
                broken.push(format!("{krate} pulls in {f}, which its layer forbids"));
            }
        }
        if let Some(max) = rule.max_crates
            && all.len() > max
        {
            broken.push(format!(
                "{krate} pulls in {} crates, more than {max}",
                all.len()
            ));
        }
    }
    for krate in libraries {
        if !rules.contains_key(&krate) {
            broken.push(format!("{krate}: a library crate without a layering rule"));
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}
