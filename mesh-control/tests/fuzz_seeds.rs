//! The seed corpus of the `xds` fuzz target (fuzz/seeds/xds) is what our control plane
//! generates for real configs (Bookinfo, the interop config), proxyless and Envoy, and
//! the translation accepts every proxyless seed. `MESH_WRITE_FUZZ_SEEDS=1` rewrites the corpus
//! (after a generator change); otherwise the committed seeds are checked.
//!
//! A seed is the fuzz target's input: one selector byte (the resource type's index in
//! `ResourceType::ALL`) then the resource's protobuf bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envoy_types::pb::google::protobuf::Any;
use mesh_control::generate::{EnvoyNodeMeta, GeneratorOptions, MeshGenerator};
use mesh_control::istio::MeshConfig;
use mesh_xds::{ResourceType, decode};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Seed file name -> contents, for every resource generated from the real configs.
fn seeds() -> BTreeMap<String, Vec<u8>> {
    let generator = MeshGenerator::new(GeneratorOptions::default());
    let mut out = BTreeMap::new();
    for (tag, dir) in [
        ("bookinfo", "examples/config/bookinfo"),
        ("interop", "interop/istio/config"),
    ] {
        let (config, _) = MeshConfig::load_dir(repo().join(dir)).expect("a valid config");
        for (kind, resources) in [
            ("proxyless", generator.proxyless(&config)),
            ("envoy", generator.envoy(&config, &EnvoyNodeMeta::default())),
        ] {
            for (index, ty) in ResourceType::ALL.into_iter().enumerate() {
                for (n, (_, any)) in resources.of_type(ty.type_url()).enumerate() {
                    let mut seed = vec![index as u8];
                    seed.extend_from_slice(&any.value);
                    out.insert(format!("{tag}-{kind}-{}-{n:03}", ty.short_name()), seed);
                }
            }
        }
    }
    out
}

fn decodes(seed: &[u8]) -> Result<(), String> {
    let (&selector, value) = seed.split_first().ok_or("empty seed")?;
    let ty = ResourceType::ALL[usize::from(selector & 3)];
    let any = Any {
        type_url: ty.type_url().to_owned(),
        value: value.to_vec(),
    };
    decode(ty, &any).map(|_| ()).map_err(|r| r.to_string())
}

#[test]
fn xds_seeds_are_generated_resources_the_translation_accepts() {
    let dir = repo().join("fuzz/seeds/xds");
    let want = seeds();
    assert!(want.len() > 20, "{} seeds", want.len());
    if std::env::var_os("MESH_WRITE_FUZZ_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, seed) in &want {
            std::fs::write(dir.join(name), seed).unwrap();
        }
    }
    let have = read(&dir);
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "fuzz/seeds/xds is stale: rerun with MESH_WRITE_FUZZ_SEEDS=1"
    );
    for (name, seed) in &have {
        let decoded = decodes(seed);
        // The Envoy resources carry inline certificate files, which our translation
        // refuses (it wants a certificate provider): good seeds for the refusal paths.
        if name.contains("-proxyless-") {
            decoded.unwrap_or_else(|e| panic!("seed {name} is refused: {e}"));
        }
    }
}

fn read(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}
