//! Config problems: where (file, line, resource, field) and why.

use std::fmt;
use std::path::PathBuf;

use super::api::{Origin, ResourceKey};

/// One problem with the config: a rule broken by a resource (or a file that can't be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// File and line: the field's line when the field is found in block-style YAML, else
    /// the YAML document's first line.
    pub origin: Origin,
    /// The resource, when the document got far enough to name one.
    pub resource: Option<ResourceKey>,
    /// Field path inside the document, such as `spec.http[0].route[1].weight` (may be empty).
    pub field: String,
    /// What rule is broken.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(
        origin: &Origin,
        resource: Option<&ResourceKey>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError {
            origin: origin.clone(),
            resource: resource.cloned(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Something skipped on purpose (for example a kind this control plane does not know), as
/// istiod does with a `--configDir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// File and line of the YAML document.
    pub origin: Origin,
    /// What was skipped and why.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Every problem found in one load of a config directory (never just the first).
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The directory (or source) that was loaded.
    pub source_dir: PathBuf,
    /// All errors, in file order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} error(s) in config {}",
            self.errors.len(),
            self.source_dir.display()
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}
