//! The line of a field inside a YAML document, so that an error points at the field
//! (`spec.http[0].route[1].weight`) rather than at the document's first line.
//!
//! Block-style YAML is followed key by key and item by item by indentation; when a part of
//! the path is not found (flow style such as `{a: 1}`, a missing field), the deepest line
//! found is the answer (at worst the document's first line).

use super::error::ConfigError;
use super::load::SourceFile;

/// One step of a field path.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `spec.http[0].route` -> `spec`, `http`, `[0]`, `route`. Map keys in brackets
/// (`labels["app"]`) are keys.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some((inside, after)) = rest.split_once(']') {
            let inside = inside.trim_matches('"');
            out.push(match inside.parse() {
                Ok(i) => Step::Index(i),
                Err(_) => Step::Key(inside),
            });
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The 0-based line (within `lines`) of `path` in the document, best effort.
fn find(lines: &[&str], path: &str) -> usize {
    // The current scope: a range of lines, their copies with the item dash blanked out.
    let mut scope: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i, (*l).to_owned()))
        .collect();
    let mut found = 0;
    for step in steps(path) {
        let Some(base) = scope
            .iter()
            .filter(|(_, l)| is_content(l))
            .map(|(_, l)| indent(l))
            .min()
        else {
            break;
        };
        let at_base = |l: &str| is_content(l) && indent(l) == base;
        let start = match step {
            Step::Key(key) => scope.iter().position(|(_, l)| {
                at_base(l) && {
                    let t = l.trim_start().trim_start_matches(['"', '\'']);
                    t.strip_prefix(key)
                        .is_some_and(|r| r.trim_start_matches(['"', '\'']).starts_with(':'))
                }
            }),
            Step::Index(i) => scope
                .iter()
                .enumerate()
                .filter(|(_, (_, l))| at_base(l) && l.trim_start().starts_with('-'))
                .nth(i)
                .map(|(pos, _)| pos),
        };
        let Some(start) = start else { break };
        found = scope[start].0;
        // The step's block: its line and the deeper lines after it (a key's sequence
        // items may sit at the key's own indentation).
        let ends = |l: &str| match step {
            Step::Key(_) => {
                indent(l) < base || (indent(l) == base && !l.trim_start().starts_with('-'))
            }
            Step::Index(_) => indent(l) <= base,
        };
        let end = scope[start + 1..]
            .iter()
            .position(|(_, l)| is_content(l) && ends(l))
            .map_or(scope.len(), |p| start + 1 + p);
        let mut block: Vec<(usize, String)> = scope[start..end].to_vec();
        match step {
            // An item's first line: its content is one level in, as its other lines.
            Step::Index(_) => {
                let first = &mut block[0].1;
                if let Some(dash) = first.find('-') {
                    first.replace_range(dash..=dash, " ");
                }
            }
            // A key's value: the lines under it (its own line holds an inline value).
            Step::Key(_) => {
                block.remove(0);
            }
        }
        scope = block;
    }
    found
}

/// Moves each error's line to its field's line, for errors in `files` with a field path.
pub(crate) fn locate_fields(files: &[SourceFile], errors: &mut [ConfigError]) {
    for e in errors.iter_mut().filter(|e| !e.field.is_empty()) {
        let Some(file) = files.iter().find(|f| f.path == e.origin.file) else {
            continue;
        };
        let Some(first) = e.origin.line.checked_sub(1) else {
            continue;
        };
        // The document: from its first line to the next `---`.
        let lines: Vec<&str> = file
            .text
            .lines()
            .skip(first)
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !l.starts_with("---"))
            .map(|(_, l)| l)
            .collect();
        e.origin.line += find(&lines, &e.field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination:
        host: reviews
      weight: 90
    - destination: {host: reviews, subset: v3}
      weight: -10
  workloadSelector:
    labels:
      "app": reviews
"#;

    fn line(path: &str) -> usize {
        let lines: Vec<&str> = DOC.lines().collect();
        find(&lines, path) + 1
    }

    #[test]
    fn follows_keys_and_items_by_indentation() {
        assert_eq!(line("spec.hosts"), 6);
        assert_eq!(line("spec.http[0].match[0].headers"), 9);
        assert_eq!(line("spec.http[0].route[0].destination"), 12);
        assert_eq!(line("spec.http[1].route[0].weight"), 16);
        assert_eq!(line("spec.http[1].route[1].weight"), 18);
        assert_eq!(line("spec.http[1].route[0].destination.host"), 15);
        assert_eq!(line("spec.workloadSelector.labels[\"app\"]"), 21);
        assert_eq!(line("metadata.name"), 4);
    }

    #[test]
    fn stops_at_the_deepest_part_found() {
        // Flow style: the line of the mapping.
        assert_eq!(line("spec.http[0].route[0].destination.subset"), 12);
        // Missing: the parent's line.
        assert_eq!(line("spec.http[5].route"), 7);
        assert_eq!(line("nothing"), 1);
    }
}
