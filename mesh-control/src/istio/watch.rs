//! Watching a config directory: poll, reload on change, publish only valid snapshots.
//!
//! Polling (like istiod's file monitor) rather than inotify: it works the same on every
//! platform, on bind mounts and on Kubernetes ConfigMap volumes, and a config directory is
//! small enough to re-read a few times a second.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::{ConfigError, ConfigErrors, ConfigWarning};
use super::load::{ParseCache, SourceFile, read_dir};
use super::{LoadReport, MeshConfig, Origin};

/// How the watcher polls.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Time between two reads of the directory (default 300 ms). A change is applied once
    /// two reads in a row see it, so it takes effect within two intervals.
    pub interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            interval: Duration::from_millis(300),
        }
    }
}

/// What the watcher did last.
#[derive(Clone, Debug, Default)]
pub struct WatchStatus {
    /// Number of snapshots published (1 after start).
    pub generation: u64,
    /// Number of changes rejected as invalid.
    pub rejected: u64,
    /// Why the current directory contents were rejected; `None` when the directory is valid
    /// and published.
    pub last_error: Option<Arc<ConfigErrors>>,
    /// Warnings of the last load.
    pub warnings: Vec<ConfigWarning>,
}

/// Watches a config directory and publishes validated [`MeshConfig`] snapshots.
///
/// Dropping the watcher stops it; receivers then see the channel closed.
#[derive(Debug)]
pub struct ConfigWatcher {
    config: watch::Receiver<Arc<MeshConfig>>,
    status: watch::Receiver<WatchStatus>,
    task: JoinHandle<()>,
}

type Contents = (Vec<SourceFile>, Vec<ConfigError>);

impl ConfigWatcher {
    /// Loads the directory (it must be valid) and starts watching it.
    pub async fn start(
        dir: impl Into<PathBuf>,
        options: WatchOptions,
    ) -> Result<ConfigWatcher, crate::Error> {
        let dir = dir.into();
        let contents = read(&dir).await?;
        let (cache, contents, report) = report_of(ParseCache::default(), contents).await;
        let warnings = report.warnings.clone();
        let config = report.into_config(&dir)?;
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let (status_tx, status_rx) = watch::channel(WatchStatus {
            generation: 1,
            warnings,
            ..WatchStatus::default()
        });
        let task = tokio::spawn(poll(dir, options, cache, contents, config_tx, status_tx));
        Ok(ConfigWatcher {
            config: config_rx,
            status: status_rx,
            task,
        })
    }

    /// A receiver of validated snapshots.
    pub fn config(&self) -> watch::Receiver<Arc<MeshConfig>> {
        self.config.clone()
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<MeshConfig> {
        self.config.borrow().clone()
    }

    /// A receiver of the watcher's status (rejections and their errors).
    pub fn status(&self) -> watch::Receiver<WatchStatus> {
        self.status.clone()
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read(dir: &Path) -> Result<Contents, crate::Error> {
    let d = dir.to_path_buf();
    let res = tokio::task::spawn_blocking(move || read_dir(&d)).await;
    let res = res.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    res.map_err(|source| crate::Error::ConfigDir {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Parses (only the changed files) and validates, off the async threads: a large mesh takes
/// a few hundred milliseconds.
async fn report_of(cache: ParseCache, contents: Contents) -> (ParseCache, Contents, LoadReport) {
    let task = tokio::task::spawn_blocking(move || {
        let mut cache = cache;
        let mut report = LoadReport::from_parsed(cache.parse(&contents.0));
        report.locate_fields(&contents.0);
        report.errors.extend(contents.1.iter().cloned());
        (cache, contents, report)
    });
    match task.await {
        Ok(done) => done,
        // Only on a bug or at runtime shutdown: report it and start afresh on the next poll.
        Err(e) => {
            let origin = Origin::default();
            let error = ConfigError::new(&origin, None, "", format!("config load failed: {e}"));
            let report = LoadReport {
                errors: vec![error],
                ..LoadReport::default()
            };
            (ParseCache::default(), (Vec::new(), Vec::new()), report)
        }
    }
}

async fn poll(
    dir: PathBuf,
    options: WatchOptions,
    mut cache: ParseCache,
    mut last: Contents,
    config_tx: watch::Sender<Arc<MeshConfig>>,
    status_tx: watch::Sender<WatchStatus>,
) {
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the initial load is done
    let mut pending: Option<Contents> = None;
    loop {
        tick.tick().await;
        let contents = match read(&dir).await {
            Ok(c) => c,
            Err(e) => {
                // The directory vanished or became unreadable: keep serving the last config.
                let origin = Origin {
                    file: dir.clone(),
                    line: 0,
                };
                (
                    Vec::new(),
                    vec![ConfigError::new(&origin, None, "", e.to_string())],
                )
            }
        };
        if contents == last {
            pending = None;
            continue;
        }
        // Apply a change only once two reads in a row agree, so a file caught half-written
        // (or a multi-file edit caught halfway) is never published or reported.
        if pending.as_ref() != Some(&contents) {
            pending = Some(contents);
            continue;
        }
        pending = None;
        let (c, contents, report) = report_of(cache, contents).await;
        cache = c;
        last = contents;
        let warnings = report.warnings.clone();
        match report.into_config(&dir) {
            Ok(mut config) => {
                tracing::info!(dir = %dir.display(), "config reloaded");
                config_tx.send_if_modified(|current| {
                    if **current == config {
                        false
                    } else {
                        config.share_unchanged(current);
                        *current = Arc::new(config);
                        true
                    }
                });
                status_tx.send_modify(|s| {
                    s.generation += 1;
                    s.last_error = None;
                    s.warnings = warnings;
                });
            }
            Err(errors) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "config change rejected, keeping the previous config:\n{errors}"
                );
                status_tx.send_modify(|s| {
                    s.rejected += 1;
                    s.last_error = Some(Arc::new(errors));
                    s.warnings = warnings;
                });
            }
        }
    }
}
