//! FileSource: the istio-agent file layout, hot reload through Kubernetes-style atomic
//! symlink swaps, and broken writes that must not replace a good identity.

mod common;

use std::path::Path;
use std::time::Duration;

use mesh_tls::source::{FileSource, FileSourceConfig};
use mesh_tls::{Credentials, IdentityStore, TlsError};

const LIMIT: Duration = Duration::from_secs(10);

fn fast(dir: &Path) -> FileSource {
    FileSource::new(FileSourceConfig {
        poll_interval: Duration::from_millis(50),
        ..FileSourceConfig::dir(dir)
    })
}

/// Kubernetes' AtomicWriter: files are symlinks into `..data`, itself a symlink to a
/// timestamped directory that is replaced by a rename.
fn k8s_publish(dir: &Path, version: &str, creds: &Credentials) {
    let versioned = dir.join(format!("..{version}"));
    common::write_istio_dir(&versioned, creds);
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["cert-chain.pem", "key.pem", "root-cert.pem"] {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

/// Replaces a file in one step (the content under test is what is broken, not the write).
fn write_atomic(path: std::path::PathBuf, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn leaf_of(store: &IdentityStore) -> Option<Vec<u8>> {
    store.current().map(|c| c.chain[0].to_vec())
}

#[tokio::test]
async fn hot_reload_follows_atomic_symlink_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::ca();
    let a = common::issue(&ca, "a", Duration::from_secs(3600));
    k8s_publish(dir.path(), "2026_01", &a);

    let (store, task) = IdentityStore::spawn(fast(dir.path()));
    let first = tokio::time::timeout(LIMIT, store.ready()).await.unwrap();
    assert_eq!(first.id, common::id("a"));
    assert_eq!(first.chain, a.chain);
    assert_eq!(first.roots, a.roots);

    let b = common::issue(&ca, "b", Duration::from_secs(3600));
    k8s_publish(dir.path(), "2026_02", &b);
    assert!(
        common::wait_for(LIMIT, || store
            .current()
            .is_some_and(|c| c.id == common::id("b")))
        .await,
        "new certificate not picked up"
    );
    assert_eq!(leaf_of(&store), Some(b.chain[0].to_vec()));
    assert_eq!(store.stats().rotations, 2);
    assert_eq!(store.stats().failures, 0);
    task.abort();
}

#[tokio::test]
async fn broken_writes_keep_the_old_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::ca();
    let a = common::issue(&ca, "a", Duration::from_secs(3600));
    common::write_istio_dir(dir.path(), &a);
    let (store, task) = IdentityStore::spawn(fast(dir.path()));
    tokio::time::timeout(LIMIT, store.ready()).await.unwrap();

    // A key that belongs to another certificate: rejected, naming both files.
    let other = common::issue(&ca, "a", Duration::from_secs(3600));
    write_atomic(dir.path().join("key.pem"), common::key_pem(&other));
    assert!(common::wait_for(LIMIT, || store.stats().failures >= 1).await);
    let err = store.stats().last_error.unwrap();
    assert!(
        err.contains("key.pem") && err.contains("does not match"),
        "{err}"
    );
    assert!(err.contains("cert-chain.pem"), "{err}");
    assert_eq!(
        leaf_of(&store),
        Some(a.chain[0].to_vec()),
        "old identity lost"
    );
    // Reported once, not on every poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.stats().failures, 1);

    // A half-written chain: rejected, naming the file; the old identity stays.
    write_atomic(dir.path().join("key.pem"), common::key_pem(&a));
    let pem = common::chain_pem(&a);
    write_atomic(dir.path().join("cert-chain.pem"), &pem[..pem.len() / 2]);
    assert!(common::wait_for(LIMIT, || store.stats().failures >= 2).await);
    let err = store.stats().last_error.unwrap();
    assert!(err.contains("cert-chain.pem"), "{err}");
    assert_eq!(
        leaf_of(&store),
        Some(a.chain[0].to_vec()),
        "old identity lost"
    );
    // Reported once, not on every poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.stats().failures, 2);

    // Garbage, not PEM at all: rejected, naming the file; the old identity stays.
    write_atomic(
        dir.path().join("cert-chain.pem"),
        b"\x00\x9f\xff garbage, not a certificate\n",
    );
    assert!(common::wait_for(LIMIT, || store.stats().failures >= 3).await);
    let err = store.stats().last_error.unwrap();
    assert!(err.contains("cert-chain.pem"), "{err}");
    println!("garbage chain: {err}");
    assert_eq!(
        leaf_of(&store),
        Some(a.chain[0].to_vec()),
        "old identity lost"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.stats().failures, 3);

    // A missing file: the error names it.
    std::fs::remove_file(dir.path().join("root-cert.pem")).unwrap();
    assert!(common::wait_for(LIMIT, || store.stats().failures >= 4).await);
    let err = store.stats().last_error.unwrap();
    assert!(err.contains("root-cert.pem"), "{err}");
    assert_eq!(
        leaf_of(&store),
        Some(a.chain[0].to_vec()),
        "old identity lost"
    );
    // Reported once, not on every poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.stats().failures, 4);

    // A complete, consistent set is installed again.
    let c = common::issue(&ca, "c", Duration::from_secs(3600));
    common::write_istio_dir(dir.path(), &c);
    assert!(
        common::wait_for(LIMIT, || store
            .current()
            .is_some_and(|cur| cur.id == common::id("c")))
        .await,
        "good set after broken ones not picked up"
    );
    task.abort();
}

#[tokio::test]
async fn sec1_keys_and_explicit_paths_load() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::ca();
    let a = common::issue(&ca, "a", Duration::from_secs(3600));
    let pkcs8 = dir.path().join("pkcs8.pem");
    std::fs::write(&pkcs8, common::key_pem(&a)).unwrap();
    // SEC1 ("EC PRIVATE KEY"), as `openssl ec` writes it.
    let sec1 = dir.path().join("tls.key");
    let status = std::process::Command::new("openssl")
        .args(["ec", "-in"])
        .arg(&pkcs8)
        .arg("-out")
        .arg(&sec1)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed to write a SEC1 key");
    assert!(status.success());
    assert!(
        std::fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    std::fs::write(dir.path().join("tls.crt"), common::chain_pem(&a)).unwrap();
    std::fs::write(dir.path().join("ca.crt"), common::roots_pem(&a)).unwrap();

    let source = FileSource::new(FileSourceConfig {
        cert_chain: dir.path().join("tls.crt"),
        key: sec1,
        roots: dir.path().join("ca.crt"),
        ..Default::default()
    });
    let creds = source.load().await.unwrap();
    assert_eq!(creds.id, common::id("a"));
    assert_eq!(creds.chain, a.chain);
}

#[tokio::test]
async fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileSource::dir(dir.path()).load().await.unwrap_err();
    assert!(matches!(err, TlsError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("cert-chain.pem"), "{err}");

    let ca = common::ca();
    let a = common::issue(&ca, "a", Duration::from_secs(3600));
    common::write_istio_dir(dir.path(), &a);
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let err = FileSource::dir(dir.path()).load().await.unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
}

#[tokio::test]
async fn pkcs1_rsa_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("openssl is needed to write an RSA key");
        assert!(status.success(), "openssl {args:?}");
    };
    // PKCS#1 ("RSA PRIVATE KEY") and a CSR for it, signed by the dev CA.
    openssl(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    openssl(&[
        "req", "-new", "-key", "rsa.key", "-subj", "/", "-out", "rsa.csr",
    ]);
    assert!(
        std::fs::read_to_string(d.join("rsa.key"))
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    let ca = common::ca();
    let csr = std::fs::read_to_string(d.join("rsa.csr")).unwrap();
    let chain = ca
        .sign_csr(&csr, &common::id("rsa"), Duration::from_secs(3600))
        .unwrap();
    std::fs::write(d.join("cert-chain.pem"), chain.concat()).unwrap();
    std::fs::rename(d.join("rsa.key"), d.join("key.pem")).unwrap();
    std::fs::write(d.join("root-cert.pem"), ca.root_pem()).unwrap();

    let creds = FileSource::dir(d).load().await.unwrap();
    assert_eq!(creds.id, common::id("rsa"));
    assert!(matches!(
        creds.key,
        rustls_pki_types::PrivateKeyDer::Pkcs1(_)
    ));
    IdentityStore::from_credentials(creds).unwrap();
}
