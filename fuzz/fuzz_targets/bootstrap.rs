//! The xDS bootstrap (gRPC A27 JSON, from `GRPC_XDS_BOOTSTRAP` or a file): parsing and
//! validation must refuse bad input with an error, never panic; a bootstrap that is
//! accepted must answer every accessor the client uses, and must survive a round trip
//! through `to_json` unchanged (what `Bootstrap::istio_proxyless` writes is read back).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_xds::bootstrap::Bootstrap;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(bootstrap) = Bootstrap::from_json(json) else {
        return;
    };
    let _ = bootstrap.node_proto();
    let _ = bootstrap.xds_client_config();
    let _ = bootstrap.token_file();
    let _ = bootstrap.server_listener_name(&"10.0.0.1:8080".parse().expect("an address"));
    let _ = bootstrap.server_listener_name(&"[::1]:8080".parse().expect("an address"));
    for server in &bootstrap.xds_servers {
        let _ = server.channel_credentials();
        let _ = server.ignore_resource_deletion();
    }
    for provider in bootstrap.certificate_providers.values() {
        if let Ok(watcher) = provider.file_watcher() {
            let _ = watcher.refresh();
        }
    }
    let again = Bootstrap::from_json(&bootstrap.to_json())
        .unwrap_or_else(|e| panic!("to_json of an accepted bootstrap is refused: {e}"));
    assert_eq!(again, bootstrap, "to_json round trip");
});
