//! The watcher publishes valid edits and keeps the previous config on a broken one.
//! Real files and real time (short intervals), since the watcher polls the file system.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_control::istio::{ConfigWatcher, MeshConfig, WatchOptions, WatchStatus};
use tokio::sync::watch;

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(10);

fn copy_bookinfo() -> tempfile::TempDir {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/config/bookinfo");
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn split_of(config: &MeshConfig) -> Vec<i32> {
    let vs = config.virtual_service_for(REVIEWS).unwrap();
    vs.spec.http[1].route.iter().map(|d| d.weight).collect()
}

/// Replaces text in a file, all edits in one atomic write (temp file + rename), as editors
/// and config management tools do.
fn edit(dir: &Path, file: &str, edits: &[(&str, &str)]) {
    let path = dir.join(file);
    let mut text = fs::read_to_string(&path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from} not in {file}");
        text = text.replacen(from, to, 1);
    }
    let tmp = dir.join(format!(".{file}.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::rename(tmp, path).unwrap();
}

async fn next_status(
    status: &mut watch::Receiver<WatchStatus>,
    done: impl Fn(&WatchStatus) -> bool,
) -> WatchStatus {
    tokio::time::timeout(WAIT, status.wait_for(|s| done(s)))
        .await
        .expect("watcher did not react in time")
        .unwrap()
        .clone()
}

#[tokio::test]
async fn publishes_valid_edits_and_rejects_broken_ones() {
    let dir = copy_bookinfo();
    let options = WatchOptions {
        interval: Duration::from_millis(50),
    };
    let watcher = ConfigWatcher::start(dir.path(), options).await.unwrap();
    let mut config = watcher.config();
    let mut status = watcher.status();
    let first = config.borrow_and_update().clone();
    assert_eq!(split_of(&first), [90, 10]);
    assert_eq!(status.borrow().generation, 1);

    // A valid edit is published.
    edit(
        dir.path(),
        "routing.yaml",
        &[("weight: 90", "weight: 70"), ("weight: 10", "weight: 30")],
    );
    tokio::time::timeout(WAIT, config.changed())
        .await
        .expect("no new config")
        .unwrap();
    let second = config.borrow_and_update().clone();
    assert_eq!(split_of(&second), [70, 30]);
    next_status(&mut status, |s| s.generation == 2).await;
    // Only the edited route is new; the services are shared with the first snapshot.
    let reviews = &second.services[REVIEWS];
    assert!(std::sync::Arc::ptr_eq(reviews, &first.services[REVIEWS]));

    // A broken edit is rejected with the precise message; the last valid config stays.
    edit(dir.path(), "routing.yaml", &[("weight: 30", "weight: 40")]);
    let s = next_status(&mut status, |s| s.rejected == 1).await;
    let errors = s.last_error.expect("rejection carries the errors");
    let messages: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].ends_with(
            "VirtualService default/reviews: spec.http[1].route: weights add up to 110, not 100"
        ),
        "{messages:#?}"
    );
    assert!(messages[0].contains("routing.yaml:"), "{messages:#?}");
    assert!(
        !config.has_changed().unwrap(),
        "a broken edit must not be published"
    );
    assert_eq!(split_of(&watcher.current()), [70, 30]);

    // A new file with an unknown host is rejected too, still keeping the config.
    fs::write(
        dir.path().join(".extra.tmp"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: { name: nope, namespace: default }\nspec: { host: nope.default.svc.cluster.local }\n",
    )
    .unwrap();
    fs::rename(dir.path().join(".extra.tmp"), dir.path().join("extra.yaml")).unwrap();
    let s = next_status(&mut status, |s| s.rejected == 2).await;
    assert_eq!(
        s.last_error.unwrap().errors.len(),
        2,
        "both problems reported"
    );
    assert_eq!(split_of(&watcher.current()), [70, 30]);

    // Fixing both publishes again.
    fs::remove_file(dir.path().join("extra.yaml")).unwrap();
    edit(dir.path(), "routing.yaml", &[("weight: 40", "weight: 30")]);
    let s = next_status(&mut status, |s| s.generation == 3).await;
    assert!(s.last_error.is_none());
    // 70/30 again: the same config, so receivers are not woken for nothing.
    assert!(!config.has_changed().unwrap());
    assert_eq!(split_of(&watcher.current()), [70, 30]);
}

#[tokio::test]
async fn start_fails_on_invalid_config() {
    let dir = copy_bookinfo();
    edit(dir.path(), "routing.yaml", &[("subset: v2", "subset: v9")]);
    let err = ConfigWatcher::start(dir.path(), WatchOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("subset `v9` is not defined by a DestinationRule"),
        "{err}"
    );
}
