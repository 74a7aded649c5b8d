//! Files that hold keys: written atomically and private, checked when loaded.
//!
//! A key is written to a temporary file in the same directory (mode 0600 on Unix), synced,
//! then renamed over the target, so a crash leaves either the old file or the new one, never
//! half a key. Directories created for keys are 0700.

use std::io::Write;
use std::path::Path;

use crate::TlsError;

fn io_err(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `dir` (and missing parents) readable only by its owner.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io_err(dir, e))
}

/// Writes `contents` to `path` atomically: temp file (owner-only when `private`), fsync,
/// rename, then fsync of the directory so the rename itself survives a crash.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if private { 0o600 } else { 0o644 };
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut tmp = builder.tempfile_in(dir).map_err(|e| io_err(dir, e))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io_err(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| io_err(path, e.error))?;
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))?;
    Ok(())
}

/// Refuses a key file that its group or others can read or write (a CA key must be
/// private to the control plane's user).
pub(crate) fn check_private(path: &Path) -> Result<(), TlsError> {
    match crate::source::files::shared_mode(path) {
        Some(mode) => Err(TlsError::Other(format!(
            "{}: a key file must not be accessible to group or others (mode {mode:o}); run chmod 600",
            path.display()
        ))),
        None => Ok(()),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_private_and_replaced_whole() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("ca");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let key = dir.join("key.pem");
        write_atomic(&key, b"one", true).unwrap();
        assert_eq!(mode(&key), 0o600);
        check_private(&key).unwrap();
        write_atomic(&key, b"two", true).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"two");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let cert = dir.join("cert.pem");
        write_atomic(&cert, b"cert", false).unwrap();
        assert_eq!(mode(&cert), 0o644);
    }

    #[test]
    fn a_readable_key_is_refused_naming_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca-key.pem");
        std::fs::write(&key, "k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_private(&key).unwrap_err().to_string();
        assert!(
            err.contains("ca-key.pem") && err.contains("644") && err.contains("chmod 600"),
            "{err}"
        );
    }
}
