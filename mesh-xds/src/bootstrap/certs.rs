//! Certificate providers (gRPC A29): the `file_watcher` plugin's config.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::BootstrapError;

/// A certificate-provider instance (gRPC A29).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificateProviderConfig {
    /// Plugin name; `file_watcher` is the one gRPC and Istio use.
    pub plugin_name: String,
    /// Plugin config.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// The `file_watcher` plugin's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWatcherConfig {
    /// Certificate chain (PEM), leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<PathBuf>,
    /// Private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// Trust bundle (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_file: Option<PathBuf>,
    /// How often the files are re-read, protobuf-JSON duration such as `"600s"` (default
    /// 10 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
}

impl FileWatcherConfig {
    /// The refresh interval (default 600 s, as gRPC).
    pub fn refresh(&self) -> Result<Duration, BootstrapError> {
        match &self.refresh_interval {
            None => Ok(Duration::from_secs(600)),
            Some(s) => parse_json_duration(s).ok_or_else(|| {
                BootstrapError::Invalid(format!(
                    "refresh_interval {s:?} is not a protobuf JSON duration like \"600s\""
                ))
            }),
        }
    }
}

impl CertificateProviderConfig {
    /// The config of a `file_watcher` instance, validated (A29: the certificate and key come
    /// together; at least one of them or the CA file is set).
    pub fn file_watcher(&self) -> Result<FileWatcherConfig, BootstrapError> {
        if self.plugin_name != "file_watcher" {
            return Err(BootstrapError::Invalid(format!(
                "certificate provider plugin {:?} is not supported (only file_watcher)",
                self.plugin_name
            )));
        }
        let cfg: FileWatcherConfig =
            serde_path_to_error::deserialize(&self.config).map_err(|e| BootstrapError::Json {
                path: format!("config.{}", e.path()),
                message: e.inner().to_string(),
            })?;
        if cfg.certificate_file.is_some() != cfg.private_key_file.is_some() {
            return Err(BootstrapError::Invalid(
                "file_watcher: certificate_file and private_key_file must be set together".into(),
            ));
        }
        if cfg.certificate_file.is_none() && cfg.ca_certificate_file.is_none() {
            return Err(BootstrapError::Invalid(
                "file_watcher: set certificate_file + private_key_file and/or ca_certificate_file"
                    .into(),
            ));
        }
        cfg.refresh()?;
        Ok(cfg)
    }
}
/// Parses a protobuf JSON duration: decimal seconds with an `s` suffix.
fn parse_json_duration(s: &str) -> Option<Duration> {
    let secs = s.strip_suffix('s')?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(whole.parse().ok()?, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_durations() {
        assert_eq!(
            parse_json_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_json_duration("0s"), Some(Duration::ZERO));
        assert_eq!(
            parse_json_duration("0.000000001s"),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(parse_json_duration("-1s"), None);
        assert_eq!(parse_json_duration("1"), None);
        assert_eq!(parse_json_duration("s"), None);
    }
}
