//! Reading Istio YAML from a directory, the way istiod's `--configDir` does.
//!
//! - every regular file ending in `.yaml` or `.yml`, recursively, in path order (symbolic
//!   links are skipped, as istiod's walk does);
//! - several documents per file, split on `---` lines; empty documents are skipped;
//! - `kind: List` documents are expanded into their `items`;
//! - a document whose `apiVersion` is not an Istio API group (`v1 Service`, `apps/v1
//!   Deployment`, `telemetry.istio.io/...`) is skipped with a warning, like istiod skips kinds
//!   it has no schema for;
//! - an Istio kind outside the supported six (`Gateway`, `Sidecar`, `EnvoyFilter`, ...) is an
//!   error: istiod would apply it, so ignoring it would change behaviour silently.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml_ng::{Mapping, Value};

use super::api::{Kind, Metadata, Origin, Resource, ResourceKey, Spec};
use super::error::{ConfigError, ConfigWarning};

/// The text of one config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path of the file (as found under the directory).
    pub path: PathBuf,
    /// Its contents.
    pub text: String,
}

/// The namespace given to resources without `metadata.namespace`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The result of parsing config files: resources, plus what was wrong or skipped.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    /// Resources that parsed (not yet validated against each other). A resource with
    /// structural errors is here too, without its bad fields, so later checks still see it.
    pub resources: Vec<Resource>,
    /// Documents that could not be parsed.
    pub errors: Vec<ConfigError>,
    /// Documents skipped on purpose.
    pub warnings: Vec<ConfigWarning>,
}

/// Reads every `.yaml`/`.yml` file under `dir`, recursively, sorted by path.
///
/// Files that can't be read become errors in the second list, so one unreadable file is
/// reported along with everything else.
pub fn read_dir(dir: &Path) -> Result<(Vec<SourceFile>, Vec<ConfigError>), std::io::Error> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    // Fails early when the directory itself is missing: that is not a config error.
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    walk(dir, &mut files, &mut errors);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, errors))
}

fn walk(dir: &Path, files: &mut Vec<SourceFile>, errors: &mut Vec<ConfigError>) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(io_error(dir, &e));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // symlink_metadata: links are skipped, not followed.
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            walk(&path, files, errors);
        } else if ft.is_file() && is_yaml(&path) {
            match fs::read_to_string(&path) {
                Ok(text) => files.push(SourceFile { path, text }),
                Err(e) => errors.push(io_error(&path, &e)),
            }
        }
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> ConfigError {
    let origin = Origin {
        file: path.to_path_buf(),
        line: 0,
    };
    ConfigError::new(&origin, None, "", format!("cannot read: {e}"))
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Parses the documents of every file.
pub fn parse_files(files: &[SourceFile]) -> Parsed {
    let mut out = Parsed::default();
    for f in files {
        parse_file(f, &mut out);
    }
    out
}

/// Parsed files by path and contents, so a reload re-parses only the files that changed.
#[derive(Debug, Default)]
pub struct ParseCache {
    files: HashMap<PathBuf, (String, Parsed)>,
}

impl ParseCache {
    /// Parses `files`, reusing the result of the previous call for unchanged files.
    pub fn parse(&mut self, files: &[SourceFile]) -> Parsed {
        let mut out = Parsed::default();
        let mut next = HashMap::with_capacity(files.len());
        for f in files {
            let parsed = match self.files.remove(&f.path) {
                Some((text, parsed)) if text == f.text => parsed,
                _ => {
                    let mut parsed = Parsed::default();
                    parse_file(f, &mut parsed);
                    parsed
                }
            };
            out.resources.extend(parsed.resources.iter().cloned());
            out.errors.extend(parsed.errors.iter().cloned());
            out.warnings.extend(parsed.warnings.iter().cloned());
            next.insert(f.path.clone(), (f.text.clone(), parsed));
        }
        self.files = next;
        out
    }
}

/// Parses the documents of one file into `out`.
pub fn parse_file(file: &SourceFile, out: &mut Parsed) {
    for (line, chunk) in split_documents(&file.text) {
        let origin = Origin {
            file: file.path.clone(),
            line,
        };
        let value: Value = match serde_yaml_ng::from_str(&chunk) {
            Ok(v) => v,
            Err(e) => {
                let reason = match e.location() {
                    Some(loc) => format!(
                        "invalid YAML at line {}: {}",
                        line + loc.line() - 1,
                        strip_location(&e.to_string())
                    ),
                    None => format!("invalid YAML: {e}"),
                };
                out.errors.push(ConfigError::new(&origin, None, "", reason));
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        parse_document(value, &origin, out);
    }
}

/// serde_yaml's messages end in "at line N column M"; we give the file line ourselves.
fn strip_location(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// Splits YAML text on `---` lines; yields (1-based first line, text) of each document.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if !current.trim().is_empty() {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        docs.push((start, current));
    }
    docs
}

fn parse_document(value: Value, origin: &Origin, out: &mut Parsed) {
    let Value::Mapping(mut doc) = value else {
        out.errors.push(ConfigError::new(
            origin,
            None,
            "",
            "a document must be a mapping with apiVersion, kind, metadata and spec",
        ));
        return;
    };
    let api_version = take_string(&mut doc, "apiVersion");
    let kind_name = take_string(&mut doc, "kind");
    let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
        out.errors.push(ConfigError::new(
            origin,
            None,
            "",
            "missing apiVersion or kind (both must be strings)",
        ));
        return;
    };
    if kind_name == "List" {
        match doc.remove("items") {
            Some(Value::Sequence(items)) => {
                for item in items {
                    parse_document(item, origin, out);
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => out.errors.push(ConfigError::new(
                origin,
                None,
                "items",
                "a List's items must be a sequence",
            )),
        }
        return;
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let Some(kind) = Kind::find(group, &kind_name) else {
        if group == super::api::NETWORKING_GROUP || group == super::api::SECURITY_GROUP {
            out.errors.push(ConfigError::new(
                origin,
                None,
                "kind",
                format!(
                    "{kind_name} ({group}) is not supported by this control plane (supported: \
                     ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, \
                     PeerAuthentication, AuthorizationPolicy)"
                ),
            ));
        } else {
            out.warnings.push(ConfigWarning {
                origin: origin.clone(),
                message: format!("skipped {api_version} {kind_name}: not an Istio config kind"),
            });
        }
        return;
    };
    let metadata = match parse_metadata(doc.remove("metadata")) {
        Ok(m) => m,
        Err((field, reason)) => {
            out.errors
                .push(ConfigError::new(origin, None, field, reason));
            return;
        }
    };
    let key = ResourceKey {
        kind,
        namespace: metadata.namespace.clone(),
        name: metadata.name.clone(),
    };
    if !kind.versions().contains(&version) {
        out.errors.push(ConfigError::new(
            origin,
            Some(&key),
            "apiVersion",
            format!(
                "unsupported apiVersion `{api_version}` (use {})",
                kind.versions()
                    .iter()
                    .map(|v| format!("{}/{v}", kind.group()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        return;
    }
    let spec_value = doc.remove("spec").unwrap_or(Value::Mapping(Mapping::new()));
    doc.remove("status"); // written by controllers, never read back
    if let Some((k, _)) = doc.into_iter().next() {
        let name = k.as_str().unwrap_or("?").to_string();
        out.errors.push(ConfigError::new(
            origin,
            Some(&key),
            name,
            "unknown top-level field (expected apiVersion, kind, metadata, spec, status)",
        ));
        return;
    }
    let (spec, errors) = match kind {
        Kind::ServiceEntry => spec_of(typed(spec_value), Spec::ServiceEntry),
        Kind::WorkloadEntry => spec_of(typed(spec_value), Spec::WorkloadEntry),
        Kind::VirtualService => spec_of(typed(spec_value), Spec::VirtualService),
        Kind::DestinationRule => {
            spec_of(typed(spec_value), |dr| Spec::DestinationRule(Box::new(dr)))
        }
        Kind::PeerAuthentication => spec_of(typed(spec_value), Spec::PeerAuthentication),
        Kind::AuthorizationPolicy => spec_of(typed(spec_value), Spec::AuthorizationPolicy),
    };
    for (field, reason) in errors {
        out.errors
            .push(ConfigError::new(origin, Some(&key), field, reason));
    }
    if let Some(spec) = spec {
        out.resources.push(Resource {
            api_version,
            metadata,
            spec,
            origin: origin.clone(),
        });
    }
}

fn spec_of<T>(
    (spec, errors): (Option<T>, Vec<(String, String)>),
    wrap: impl FnOnce(T) -> Spec,
) -> (Option<Spec>, Vec<(String, String)>) {
    (spec.map(wrap), errors)
}

fn take_string(doc: &mut Mapping, key: &str) -> Option<String> {
    match doc.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// Most structural errors reported for one document before giving up.
const MAX_SPEC_ERRORS: usize = 32;

/// Deserializes a spec, collecting every structural error (field path, reason).
///
/// serde stops at the first error; to report them all, the offending node is removed and
/// the spec parsed again. The spec that finally parses (without the bad nodes) is returned
/// too, so cross-resource checks still see the resource and don't report it as missing.
fn typed<T: DeserializeOwned>(mut value: Value) -> (Option<T>, Vec<(String, String)>) {
    let mut errors = Vec::new();
    while errors.len() < MAX_SPEC_ERRORS {
        let e = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return (Some(t), errors),
            Err(e) => e,
        };
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let path = e.path().to_string();
        let path = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        let inner = e.into_inner().to_string();
        // serde lists every expected field; the path already ends with the bad one.
        let reason = if inner.starts_with("unknown field `") {
            "unknown field (not in Istio's API: check the spelling)".to_string()
        } else {
            strip_location(&inner).to_string()
        };
        errors.push((path, reason));
        if !remove_at(&mut value, &segments) {
            break;
        }
    }
    (None, errors)
}

/// Removes the node at `path`; false when there is nothing (more) to remove there.
fn remove_at(value: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        node = match (seg, node) {
            (Segment::Map { key }, Value::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(s)) => match s.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        (Segment::Seq { index }, Value::Sequence(s)) if *index < s.len() => {
            s.remove(*index);
            true
        }
        _ => false,
    }
}

fn parse_metadata(value: Option<Value>) -> Result<Metadata, (String, String)> {
    let Some(Value::Mapping(mut m)) = value else {
        return Err(("metadata".into(), "metadata with a name is required".into()));
    };
    let name = match m.remove("name") {
        Some(Value::String(s)) => s,
        _ => return Err(("metadata.name".into(), "a name (string) is required".into())),
    };
    let namespace = match m.remove("namespace") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => DEFAULT_NAMESPACE.to_string(),
        Some(_) => return Err(("metadata.namespace".into(), "must be a string".into())),
    };
    let labels = string_map(m.remove("labels"), "metadata.labels")?;
    let annotations = string_map(m.remove("annotations"), "metadata.annotations")?;
    Ok(Metadata {
        name,
        namespace,
        labels,
        annotations,
    })
}

fn string_map(
    value: Option<Value>,
    field: &str,
) -> Result<BTreeMap<String, String>, (String, String)> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(v) => serde_yaml_ng::from_value(v).map_err(|e| {
            (
                field.to_string(),
                format!("must map strings to strings: {e}"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_reparses_only_changed_files() {
        let file = |path: &str, name: &str| SourceFile {
            path: path.into(),
            text: format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
                 metadata: {{ name: {name} }}\nspec: {{ address: 10.0.0.1 }}\n"
            ),
        };
        let mut cache = ParseCache::default();
        let first = [file("a.yaml", "a"), file("b.yaml", "b")];
        let names = |p: &Parsed| -> Vec<String> {
            p.resources
                .iter()
                .map(|r| r.metadata.name.clone())
                .collect()
        };
        assert_eq!(names(&cache.parse(&first)), ["a", "b"]);
        // b changes, c appears, a is gone: the result is the same as a fresh parse.
        let second = [file("b.yaml", "b2"), file("c.yaml", "c")];
        let cached = cache.parse(&second);
        assert_eq!(names(&cached), ["b2", "c"]);
        assert_eq!(cached.resources, parse_files(&second).resources);
        assert_eq!(cache.files.len(), 2);
    }

    #[test]
    fn splits_documents_with_lines() {
        let docs = split_documents("a: 1\n---\n\n---\nb: 2\nc: 3\n--- # x\nd: 4\n");
        assert_eq!(
            docs,
            vec![
                (1, "a: 1\n".to_string()),
                (5, "b: 2\nc: 3\n".to_string()),
                (8, "d: 4\n".to_string())
            ]
        );
    }
}
