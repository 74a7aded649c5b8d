//! Istio's own config language: typed resources, loading a `--configDir`-style directory,
//! validation with precise errors, a validated [`MeshConfig`] snapshot, and a watcher.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_control::Error> {
//! use mesh_control::istio::{ConfigWatcher, WatchOptions};
//!
//! // Fails if the directory is missing or its config is invalid (every error is listed).
//! let watcher = ConfigWatcher::start("examples/config/bookinfo", WatchOptions::default()).await?;
//! let mut config = watcher.config();
//! loop {
//!     let snapshot = config.borrow_and_update().clone();
//!     println!("{} services", snapshot.services.len());
//!     // Only valid edits are published; a broken edit leaves the last snapshot in place.
//!     if config.changed().await.is_err() {
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod api;
pub mod duration;
mod error;
mod load;
mod locate;
mod snapshot;
mod validate;
mod watch;

use std::path::Path;

pub use api::{Kind, Origin, Resource, ResourceKey};
pub use error::{ConfigError, ConfigErrors, ConfigWarning};
pub use load::{DEFAULT_NAMESPACE, ParseCache, Parsed, SourceFile, parse_files, read_dir};
pub use snapshot::{
    DOMAIN_SUFFIX, MeshConfig, Named, ROOT_NAMESPACE, Service, Workload, labels_match, qualify_host,
};
pub use validate::validate;
pub use watch::{ConfigWatcher, WatchOptions, WatchStatus};

/// Everything one load of a config source found: resources, errors and warnings.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Resources that parsed.
    pub resources: Vec<Resource>,
    /// Parse and validation errors (the config is valid when this is empty).
    pub errors: Vec<ConfigError>,
    /// Documents skipped on purpose (kinds that are not Istio config).
    pub warnings: Vec<ConfigWarning>,
}

impl LoadReport {
    /// Parses and validates in-memory files.
    pub fn from_files(files: &[SourceFile]) -> LoadReport {
        let mut report = LoadReport::from_parsed(parse_files(files));
        report.locate_fields(files);
        report
    }

    /// Points each error with a field path at the field's line in `files` (the files the
    /// report was made from) instead of its document's first line.
    pub fn locate_fields(&mut self, files: &[SourceFile]) {
        // Kept in document order: a document's errors stay together, in rule order.
        locate::locate_fields(files, &mut self.errors);
    }

    /// Validates parsed files.
    pub fn from_parsed(parsed: Parsed) -> LoadReport {
        let mut errors = parsed.errors;
        errors.extend(validate(&parsed.resources));
        errors.sort_by(|a, b| a.origin.cmp(&b.origin));
        LoadReport {
            resources: parsed.resources,
            errors,
            warnings: parsed.warnings,
        }
    }

    /// Reads, parses and validates a directory (recursively, `.yaml` and `.yml`).
    pub fn from_dir(dir: &Path) -> Result<LoadReport, crate::Error> {
        let (files, read_errors) = read_dir(dir).map_err(|source| crate::Error::ConfigDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut report = LoadReport::from_files(&files);
        report.errors.extend(read_errors);
        Ok(report)
    }

    /// The validated snapshot, or every error.
    pub fn into_config(self, source_dir: &Path) -> Result<MeshConfig, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(MeshConfig::from_validated(&self.resources))
        } else {
            Err(ConfigErrors {
                source_dir: source_dir.to_path_buf(),
                errors: self.errors,
            })
        }
    }
}

impl MeshConfig {
    /// Parses and validates in-memory files; returns the snapshot and the warnings.
    pub fn from_files(
        files: &[SourceFile],
    ) -> Result<(MeshConfig, Vec<ConfigWarning>), ConfigErrors> {
        let report = LoadReport::from_files(files);
        let warnings = report.warnings.clone();
        report
            .into_config(Path::new("<memory>"))
            .map(|c| (c, warnings))
    }

    /// Reads, parses and validates a directory; returns the snapshot and the warnings.
    pub fn load_dir(
        dir: impl AsRef<Path>,
    ) -> Result<(MeshConfig, Vec<ConfigWarning>), crate::Error> {
        let dir = dir.as_ref();
        let report = LoadReport::from_dir(dir)?;
        let warnings = report.warnings.clone();
        Ok((report.into_config(dir)?, warnings))
    }
}
