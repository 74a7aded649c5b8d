//! Loading a config directory the way istiod's `--configDir` does.

use std::fs;
use std::path::Path;

use mesh_control::istio::api::{MtlsMode, Spec};
use mesh_control::istio::{Kind, LoadReport, MeshConfig, SourceFile};

const SE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: NAME, namespace: default }
spec:
  hosts: [NAME.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  endpoints: [{ address: 127.0.0.1, ports: { http: PORT } }]
";

fn se(name: &str, port: u16) -> String {
    SE.replace("NAME", name).replace("PORT", &port.to_string())
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn reads_yaml_and_yml_recursively_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &se("a", 1001));
    write(dir.path(), "nested/deeper/b.yml", &se("b", 1002));
    write(dir.path(), "c.json", &se("c", 1003));
    write(dir.path(), "README.md", &se("d", 1004));
    write(dir.path(), "e.yaml.bak", &se("e", 1005));
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path().join("a.yaml"), dir.path().join("link.yaml")).unwrap();

    let (config, warnings) = MeshConfig::load_dir(dir.path()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let hosts: Vec<&str> = config.services.keys().map(String::as_str).collect();
    assert_eq!(
        hosts,
        ["a.default.svc.cluster.local", "b.default.svc.cluster.local"]
    );
}

#[test]
fn multi_document_files_lists_and_empty_documents() {
    let text = format!(
        "---\n# only a comment\n---\n{}---\n\n---\napiVersion: v1\nkind: List\nitems:\n- {}\n",
        se("a", 1001),
        se("b", 1002).replace('\n', "\n  ")
    );
    let files = [SourceFile {
        path: "all.yaml".into(),
        text,
    }];
    let report = LoadReport::from_files(&files);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert_eq!(report.resources.len(), 2);
    assert_eq!(report.resources[0].origin.line, 4);
    assert_eq!(report.resources[1].metadata.name, "b");
}

#[test]
fn unknown_kinds_are_skipped_with_a_warning() {
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: reviews }}\nspec: {{ ports: [{{ port: 80 }}] }}\n\
         ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: reviews }}\n\
         ---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{ name: t }}\n---\n{}",
        se("a", 1001)
    );
    let files = [SourceFile {
        path: "mixed.yaml".into(),
        text,
    }];
    let report = LoadReport::from_files(&files);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert_eq!(report.resources.len(), 1);
    let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "mixed.yaml:1: skipped v1 Service: not an Istio config kind",
            "mixed.yaml:6: skipped apps/v1 Deployment: not an Istio config kind",
            "mixed.yaml:10: skipped telemetry.istio.io/v1 Telemetry: not an Istio config kind",
        ]
    );
}

#[test]
fn all_api_versions_and_default_namespace() {
    let mut text = String::new();
    for (i, v) in ["v1", "v1beta1", "v1alpha3"].iter().enumerate() {
        text.push_str(&format!(
            "---\napiVersion: networking.istio.io/{v}\nkind: WorkloadEntry\n\
             metadata: {{ name: w{i} }}\nspec: {{ address: 10.0.0.{i} }}\n"
        ));
    }
    for (i, v) in ["v1", "v1beta1"].iter().enumerate() {
        text.push_str(&format!(
            "---\napiVersion: security.istio.io/{v}\nkind: PeerAuthentication\n\
             metadata: {{ name: p{i}, namespace: ns{i}, uid: abc, resourceVersion: \"7\", \
             creationTimestamp: null }}\nspec:\n  selector: {{ matchLabels: {{ app: x }} }}\n  \
             portLevelMtls:\n    8080: {{ mode: DISABLE }}\n    \"9090\": {{ mode: STRICT }}\n\
             status: {{ conditions: [] }}\n"
        ));
    }
    let report = LoadReport::from_files(&[SourceFile {
        path: "v.yaml".into(),
        text,
    }]);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let kinds: Vec<(Kind, &str)> = report
        .resources
        .iter()
        .map(|r| (r.spec.kind(), r.metadata.namespace.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Kind::WorkloadEntry, "default"),
            (Kind::WorkloadEntry, "default"),
            (Kind::WorkloadEntry, "default"),
            (Kind::PeerAuthentication, "ns0"),
            (Kind::PeerAuthentication, "ns1"),
        ]
    );
    let Spec::PeerAuthentication(pa) = &report.resources[3].spec else {
        panic!("not a PeerAuthentication");
    };
    let ports: Vec<(u32, MtlsMode)> = pa
        .port_level_mtls
        .iter()
        .map(|(p, m)| (p.0, m.mode))
        .collect();
    assert_eq!(ports, [(8080, MtlsMode::Disable), (9090, MtlsMode::Strict)]);
}

#[test]
fn missing_directory_is_an_error_not_an_empty_mesh() {
    let err = MeshConfig::load_dir("/nonexistent/config/dir").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read config directory /nonexistent/config/dir:"),
        "{err}"
    );
}

#[test]
fn invalid_config_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        &se("a", 1001).replace("number: 80", "number: 0"),
    );
    write(dir.path(), "b.yaml", "kind: [\n");
    let err = MeshConfig::load_dir(dir.path()).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with("2 error(s) in config "), "{err}");
    // The field's line (flow style: the line of `ports`), not the document's.
    assert!(lines[1].contains("a.yaml:8: ServiceEntry default/a: spec.ports[0].number: port 0 is out of range 1..=65535"), "{err}");
    assert!(lines[2].contains("b.yaml:1: invalid YAML"), "{err}");
}
