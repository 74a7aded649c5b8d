//! Parse + validate + snapshot time for a large mesh: N services, each with a ServiceEntry,
//! two WorkloadEntries (v1, v2), a DestinationRule with two subsets and a VirtualService
//! with a 90/10 split. Run: `cargo bench -p mesh-control --bench load`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh_control::istio::{LoadReport, MeshConfig, SourceFile};

fn mesh(services: usize) -> Vec<SourceFile> {
    let mut text = String::new();
    for i in 0..services {
        let host = format!("svc-{i}.default.svc.cluster.local");
        text.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: {{ name: svc-{i}, namespace: default }}\n\
             spec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
             ports: [{{ number: 9080, name: http, protocol: HTTP }}]\n  \
             workloadSelector: {{ labels: {{ app: svc-{i} }} }}\n"
        ));
        for (v, port) in [("v1", 20000 + 2 * i), ("v2", 20001 + 2 * i)] {
            text.push_str(&format!(
                "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
                 metadata: {{ name: svc-{i}-{v}, namespace: default }}\n\
                 spec:\n  address: 127.0.0.1\n  ports: {{ http: {port} }}\n  \
                 labels: {{ app: svc-{i}, version: {v} }}\n  serviceAccount: svc-{i}\n"
            ));
        }
        text.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{ name: svc-{i}, namespace: default }}\n\
             spec:\n  host: {host}\n  trafficPolicy: {{ tls: {{ mode: ISTIO_MUTUAL }} }}\n  \
             subsets:\n  - {{ name: v1, labels: {{ version: v1 }} }}\n  \
             - {{ name: v2, labels: {{ version: v2 }} }}\n\
             ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {{ name: svc-{i}, namespace: default }}\n\
             spec:\n  hosts: [{host}]\n  http:\n  - match: [{{ headers: {{ end-user: {{ exact: jason }} }} }}]\n    \
             route: [{{ destination: {{ host: {host}, subset: v2 }} }}]\n  \
             - route:\n    - {{ destination: {{ host: {host}, subset: v1 }}, weight: 90 }}\n    \
             - {{ destination: {{ host: {host}, subset: v2 }}, weight: 10 }}\n    \
             timeout: 2s\n    retries: {{ attempts: 2, retryOn: 5xx }}\n"
        ));
    }
    vec![SourceFile {
        path: "mesh.yaml".into(),
        text,
    }]
}

fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load_validate_snapshot");
    group.sample_size(10);
    for n in [100, 1000] {
        let files = mesh(n);
        assert!(LoadReport::from_files(&files).errors.is_empty());
        group.bench_with_input(BenchmarkId::from_parameter(n), &files, |b, files| {
            b.iter(|| MeshConfig::from_files(files).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
