//! Issue #16: every field path of the six Istio kinds (from istio.io/api's protos), and every
//! field of the Envoy messages the xDS translation decodes (from the protos of the
//! `envoy-types` crate Cargo.lock pins), is in the "Istio fields" / "Envoy fields" tables of
//! docs/configuration.md with a test, refused by a test that names it, or a listed known gap:
//! runs `python3 scripts/config-fields --check` from the workspace root.
//!
//! The script fetches istio.io/api once with Go (cached under `.cache/istio-api/`) and reads
//! the Envoy protos from Cargo's registry. Without Go, network, the crate source or Python it
//! exits 3; under `MESH_REQUIRE_PEERS=1` that fails this test, otherwise the test is skipped
//! with the reason.

use std::path::Path;
use std::process::Command;

#[test]
fn every_istio_and_envoy_field_is_in_the_tables_or_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let required = std::env::var("MESH_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    let out = match Command::new("python3")
        .arg("scripts/config-fields")
        .arg("--check")
        .current_dir(root)
        .output()
    {
        Ok(out) => out,
        Err(e) if !required => {
            eprintln!("SKIPPED: python3 cannot be run ({e}); set MESH_REQUIRE_PEERS=1 to fail");
            return;
        }
        Err(e) => panic!("python3 cannot be run: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(3) && !required {
        eprintln!("SKIPPED (set MESH_REQUIRE_PEERS=1 to fail): {text}");
        return;
    }
    assert!(
        out.status.success(),
        "scripts/config-fields --check failed:\n{text}"
    );
    eprintln!("{text}");
}
