//! Istio's YAML (what `mesh-control --config-dir` and `ConfigWatcher` read): one file of
//! arbitrary text through the loader (document split, `kind: List`, typed parse with
//! field paths) and the validator. Nothing may panic; a config that validates becomes a
//! `MeshConfig` and goes through the generators (proxyless, and Envoy), whose output is
//! decoded by mesh-xds as a client would.
//!
//! Seeds (fuzz/seeds/istio_yaml): examples/config/bookinfo and interop/istio/config.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use mesh_control::generate::{EnvoyNodeMeta, GeneratorOptions, MeshGenerator};
use mesh_control::istio::{LoadReport, SourceFile};
use mesh_xds::{ResourceType, decode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = [SourceFile {
        path: PathBuf::from("fuzz.yaml"),
        text: text.to_owned(),
    }];
    let report = LoadReport::from_files(&files);
    for error in &report.errors {
        let _ = error.to_string();
    }
    let Ok(config) = report.into_config(std::path::Path::new("fuzz")) else {
        return;
    };
    let generator = MeshGenerator::new(GeneratorOptions::default());
    let proxyless = generator.proxyless(&config);
    let envoy = generator.envoy(&config, &EnvoyNodeMeta::default());
    for resources in [&proxyless, &envoy] {
        for ty in ResourceType::ALL {
            for (_, any) in resources.of_type(ty.type_url()) {
                let _ = decode(ty, any);
            }
        }
    }
});
