//! Envoy's `tls_params` applied to rustls: the crypto provider keeps only the listed TLS 1.2
//! suites and key-exchange groups (in the listed order, which is the preference order), and
//! the protocol versions are cut to the range. TLS 1.3 suites are left alone, as in Envoy.

use std::sync::Arc;

use mesh_core::model::{TlsParams, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, NamedGroup, SupportedCipherSuite, SupportedProtocolVersion};

use crate::TlsError;

/// The Envoy (BoringSSL) name of a TLS 1.2 suite, `None` for TLS 1.3 and unknown suites.
fn suite_name(suite: CipherSuite) -> Option<&'static str> {
    Some(match suite {
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            "ECDHE-ECDSA-CHACHA20-POLY1305"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

/// The Envoy name of a key-exchange group.
fn group_name(group: NamedGroup) -> Option<&'static str> {
    Some(match group {
        NamedGroup::X25519 => "X25519",
        NamedGroup::secp256r1 => "P-256",
        NamedGroup::secp384r1 => "P-384",
        NamedGroup::secp521r1 => "P-521",
        NamedGroup::X25519MLKEM768 => "X25519MLKEM768",
        _ => return None,
    })
}

fn refused(reason: String) -> TlsError {
    TlsError::Decode {
        what: "tls_params".into(),
        reason,
    }
}

/// `provider` narrowed to `params`, and the protocol versions to enable. With default
/// params the provider is returned unchanged and both versions are enabled.
pub(crate) fn narrow(
    provider: &Arc<CryptoProvider>,
    params: &TlsParams,
) -> Result<(Arc<CryptoProvider>, Vec<&'static SupportedProtocolVersion>), TlsError> {
    let mut versions = Vec::new();
    if params.allows(TlsVersion::Tls13) {
        versions.push(&rustls::version::TLS13);
    }
    if params.allows(TlsVersion::Tls12) {
        versions.push(&rustls::version::TLS12);
    }
    if params.cipher_suites.is_empty() && params.ecdh_curves.is_empty() {
        return Ok((provider.clone(), versions));
    }
    let mut narrowed = CryptoProvider::clone(provider);
    if !params.cipher_suites.is_empty() {
        let tls13 = provider
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
        let tls12 = params.cipher_suites.iter().filter_map(|name| {
            provider
                .cipher_suites
                .iter()
                .find(|s| suite_name(s.suite()) == Some(name.as_str()))
        });
        narrowed.cipher_suites = tls13.chain(tls12).copied().collect();
        if !narrowed
            .cipher_suites
            .iter()
            .any(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
        {
            // No TLS 1.2 suite left: TLS 1.2 cannot be negotiated.
            versions.retain(|v| v.version != rustls::ProtocolVersion::TLSv1_2);
        }
    }
    if !params.ecdh_curves.is_empty() {
        narrowed.kx_groups = params
            .ecdh_curves
            .iter()
            .filter_map(|name| {
                provider
                    .kx_groups
                    .iter()
                    .find(|g| group_name(g.name()) == Some(name.as_str()))
            })
            .copied()
            .collect();
        if narrowed.kx_groups.is_empty() {
            return Err(refused(format!(
                "none of the ecdh_curves {:?} is implemented by the crypto provider",
                params.ecdh_curves
            )));
        }
    }
    if versions.is_empty() {
        return Err(refused(format!(
            "none of the cipher_suites {:?} is implemented by the crypto provider",
            params.cipher_suites
        )));
    }
    Ok((Arc::new(narrowed), versions))
}
