//! TLS transport sockets (gRPC A29): certificates only from certificate-provider instances,
//! SAN matchers for the peer's identity.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as pb;
use mesh_core::model::{
    CertificateProviderInstance, CertificateValidation, DownstreamTls, ECDH_CURVES, SanMatcher,
    SanType, TLS12_CIPHER_SUITES, TlsParams, TlsVersion, UpstreamTls,
};

use super::matcher::string_matcher;
use super::{At, Res, any_type_name, bail, refuse_set, unpack};

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";

enum Socket<'a> {
    Plaintext,
    Tls(&'a envoy_types::pb::google::protobuf::Any),
}

fn socket(ts: &core::TransportSocket) -> Res<Socket<'_>> {
    use core::transport_socket::ConfigType;
    let any = match &ts.config_type {
        Some(ConfigType::TypedConfig(any)) => any,
        None if ts.name == RAW_BUFFER => return Ok(Socket::Plaintext),
        None => {
            return bail(format!(
                "transport socket {:?} has no typed_config",
                ts.name
            ));
        }
    };
    match any_type_name(any) {
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" => Ok(Socket::Plaintext),
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
        | "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" => Ok(Socket::Tls(any)),
        other => bail(format!(
            "transport socket {:?} of type {other:?} is not supported (only {TLS_SOCKET} and {RAW_BUFFER})",
            ts.name
        )),
    }
}

/// Translates a cluster's transport socket; `None` for plaintext.
pub fn upstream(ts: &core::TransportSocket) -> Res<Option<UpstreamTls>> {
    let any = match socket(ts)? {
        Socket::Plaintext => return Ok(None),
        Socket::Tls(any) => any,
    };
    let ctx: pb::UpstreamTlsContext = unpack(any).at(".typed_config")?;
    if ctx.auto_host_sni {
        return bail("auto_host_sni is not supported");
    }
    if ctx.auto_sni_san_validation {
        return bail("auto_sni_san_validation is not supported");
    }
    // rustls never renegotiates.
    if ctx.allow_renegotiation {
        return bail("allow_renegotiation is not supported");
    }
    let Some(common) = &ctx.common_tls_context else {
        return bail("common_tls_context is required");
    };
    let c = common_context(common).at(".common_tls_context")?;
    if c.validation.ca_certificate.is_none() {
        return bail("a CA certificate provider instance is required to verify the server")
            .at(".common_tls_context");
    }
    Ok(Some(UpstreamTls {
        sni: (!ctx.sni.is_empty()).then(|| ctx.sni.clone()),
        identity_certificate: c.identity,
        validation: c.validation,
        alpn_protocols: common.alpn_protocols.clone(),
        params: c.params,
    }))
}

/// Translates a filter chain's transport socket; `None` for plaintext.
pub fn downstream(ts: &core::TransportSocket) -> Res<Option<DownstreamTls>> {
    let any = match socket(ts)? {
        Socket::Plaintext => return Ok(None),
        Socket::Tls(any) => any,
    };
    let ctx: pb::DownstreamTlsContext = unpack(any).at(".typed_config")?;
    if ctx.require_sni.as_ref().is_some_and(|v| v.value) {
        return bail("require_sni is not supported");
    }
    if ctx.ocsp_staple_policy == pb::downstream_tls_context::OcspStaplePolicy::MustStaple as i32 {
        return bail("ocsp_staple_policy MUST_STAPLE is not supported");
    }
    if ctx.session_ticket_keys_type.is_some() {
        return bail(
            "session_ticket_keys / session_ticket_keys_sds_secret_config / disable_stateless_session_resumption are not supported",
        );
    }
    // `disable_stateful_session_resumption` is accepted either way: our servers never
    // store or resume sessions (mesh-tls config). With no session there is no lifetime to
    // set, and rustls uses its own cipher order; istiod sets neither.
    refuse_set(&[
        ("session_timeout", ctx.session_timeout.is_some()),
        ("prefer_client_ciphers", ctx.prefer_client_ciphers),
    ])?;
    let Some(common) = &ctx.common_tls_context else {
        return bail("common_tls_context is required");
    };
    let c = common_context(common).at(".common_tls_context")?;
    let Some(identity) = c.identity else {
        return bail("an identity certificate provider instance is required for a TLS server")
            .at(".common_tls_context");
    };
    let require_client_certificate = ctx
        .require_client_certificate
        .as_ref()
        .is_some_and(|v| v.value);
    if require_client_certificate && c.validation.ca_certificate.is_none() {
        return bail(
            "require_client_certificate needs a CA certificate provider instance to verify clients",
        );
    }
    Ok(Some(DownstreamTls {
        identity_certificate: identity,
        validation: c.validation,
        require_client_certificate,
        alpn_protocols: common.alpn_protocols.clone(),
        params: c.params,
    }))
}

struct Common {
    identity: Option<CertificateProviderInstance>,
    validation: CertificateValidation,
    params: TlsParams,
}

fn instance(instance_name: &str, certificate_name: &str) -> Res<CertificateProviderInstance> {
    if instance_name.is_empty() {
        return bail("instance_name is required");
    }
    Ok(CertificateProviderInstance {
        instance_name: instance_name.to_owned(),
        certificate_name: certificate_name.to_owned(),
    })
}

fn common_context(c: &pb::CommonTlsContext) -> Res<Common> {
    use pb::common_tls_context::ValidationContextType as V;
    if !c.tls_certificates.is_empty() {
        return bail(
            "tls_certificates (inline certificates) are not supported; use a certificate provider instance",
        );
    }
    if !c.tls_certificate_sds_secret_configs.is_empty() {
        return bail(
            "tls_certificate_sds_secret_configs (SDS) is not supported; use a certificate provider instance",
        );
    }
    if c.tls_certificate_certificate_provider.is_some() {
        return bail(
            "tls_certificate_certificate_provider is not supported; use a certificate provider instance",
        );
    }
    if c.custom_handshaker.is_some() {
        return bail("custom_handshaker is not supported");
    }
    if c.key_log.is_some() {
        return bail("key_log is not supported");
    }
    if c.custom_tls_certificate_selector.is_some() {
        return bail("custom_tls_certificate_selector is not supported");
    }
    let identity = match (
        &c.tls_certificate_provider_instance,
        &c.tls_certificate_certificate_provider_instance,
    ) {
        (Some(p), _) => Some(
            instance(&p.instance_name, &p.certificate_name)
                .at(".tls_certificate_provider_instance")?,
        ),
        (None, Some(p)) => Some(
            instance(&p.instance_name, &p.certificate_name)
                .at(".tls_certificate_certificate_provider_instance")?,
        ),
        (None, None) => None,
    };
    let validation = match &c.validation_context_type {
        None => CertificateValidation::default(),
        Some(V::ValidationContext(v)) => validation_context(v, None).at(".validation_context")?,
        Some(V::CombinedValidationContext(comb)) => {
            if comb.validation_context_sds_secret_config.is_some() {
                return bail("validation_context_sds_secret_config (SDS) is not supported")
                    .at(".combined_validation_context");
            }
            if comb.validation_context_certificate_provider.is_some() {
                return bail("validation_context_certificate_provider is not supported")
                    .at(".combined_validation_context");
            }
            let ca = comb
                .validation_context_certificate_provider_instance
                .as_ref()
                .map(|p| instance(&p.instance_name, &p.certificate_name))
                .transpose()
                .at(
                    ".combined_validation_context.validation_context_certificate_provider_instance",
                )?;
            let default = comb.default_validation_context.clone().unwrap_or_default();
            validation_context(&default, ca)
                .at(".combined_validation_context.default_validation_context")?
        }
        Some(V::ValidationContextSdsSecretConfig(_)) => {
            return bail("validation_context_sds_secret_config (SDS) is not supported");
        }
        Some(V::ValidationContextCertificateProvider(_)) => {
            return bail("validation_context_certificate_provider is not supported");
        }
        Some(V::ValidationContextCertificateProviderInstance(p)) => CertificateValidation {
            ca_certificate: Some(
                instance(&p.instance_name, &p.certificate_name)
                    .at(".validation_context_certificate_provider_instance")?,
            ),
            san_matchers: Vec::new(),
        },
    };
    let params = match &c.tls_params {
        Some(p) => tls_params(p).at(".tls_params")?,
        None => TlsParams::default(),
    };
    Ok(Common {
        identity,
        validation,
        params,
    })
}

/// BoringSSL suite names rustls does not implement (static-RSA key exchange, CBC, 3DES):
/// allowed by a list, they are simply not offered (the offer narrows, never widens).
/// istiod's default inbound list ends with `AES256-GCM-SHA384` and `AES128-GCM-SHA256`.
const TLS12_NOT_OFFERED: &[&str] = &[
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
    "DES-CBC3-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
];

/// Curves Envoy knows that the provider lacks: not offered, as above.
const CURVES_NOT_OFFERED: &[&str] = &["P-521", "X25519MLKEM768"];

/// Envoy's `TlsParameters` as a narrowing of what rustls offers: versions to the range
/// (rustls has only TLS 1.2 and 1.3, so an older minimum means 1.2 and an older maximum is
/// refused), TLS 1.2 suites and groups to the listed ones it implements. A name Envoy would
/// reject is refused; a list left with nothing rustls implements is refused (no handshake
/// could succeed).
fn tls_params(p: &pb::TlsParameters) -> Res<TlsParams> {
    use pb::tls_parameters::TlsProtocol as P;
    refuse_set(&[
        ("signature_algorithms", !p.signature_algorithms.is_empty()),
        ("compliance_policies", !p.compliance_policies.is_empty()),
    ])?;
    let min_version = match P::try_from(p.tls_minimum_protocol_version) {
        Ok(P::TlsAuto | P::TlSv10 | P::TlSv11) => None,
        Ok(P::TlSv12) => Some(TlsVersion::Tls12),
        Ok(P::TlSv13) => Some(TlsVersion::Tls13),
        Err(_) => return bail("tls_minimum_protocol_version: unknown value"),
    };
    let max_version = match P::try_from(p.tls_maximum_protocol_version) {
        Ok(P::TlsAuto) => None,
        Ok(P::TlSv12) => Some(TlsVersion::Tls12),
        Ok(P::TlSv13) => Some(TlsVersion::Tls13),
        Ok(P::TlSv10 | P::TlSv11) => {
            return bail(
                "tls_maximum_protocol_version below TLSv1_2 is not supported (rustls implements TLS 1.2 and 1.3)",
            );
        }
        Err(_) => return bail("tls_maximum_protocol_version: unknown value"),
    };
    if let (Some(min), Some(max)) = (min_version, max_version)
        && min > max
    {
        return bail(
            "tls_minimum_protocol_version above tls_maximum_protocol_version is not supported",
        );
    }
    let cipher_suites = names(
        &p.cipher_suites,
        TLS12_CIPHER_SUITES,
        TLS12_NOT_OFFERED,
        "cipher_suites",
    )?;
    let ecdh_curves = names(
        &p.ecdh_curves,
        ECDH_CURVES,
        CURVES_NOT_OFFERED,
        "ecdh_curves",
    )?;
    if !p.ecdh_curves.is_empty() && ecdh_curves.is_empty() {
        return bail("ecdh_curves: a list without a curve rustls implements is not supported");
    }
    let params = TlsParams {
        min_version,
        max_version,
        cipher_suites,
        ecdh_curves,
    };
    // Only TLS 1.2 uses the suite list (TLS 1.3 suites are fixed, as in Envoy).
    if !p.cipher_suites.is_empty()
        && params.cipher_suites.is_empty()
        && !params.allows(TlsVersion::Tls13)
    {
        return bail("cipher_suites: a list without a suite rustls implements is not supported");
    }
    Ok(params)
}

/// The listed names that are `implemented`, in order; BoringSSL's equal-preference groups
/// (`[A|B]`) are flattened. A name in neither list is refused with its index.
fn names(
    listed: &[String],
    implemented: &[&str],
    not_offered: &[&str],
    field: &str,
) -> Res<Vec<String>> {
    let mut out = Vec::new();
    for (i, entry) in listed.iter().enumerate() {
        let group = entry.trim().trim_start_matches('[').trim_end_matches(']');
        for name in group.split('|').map(str::trim) {
            if implemented.contains(&name) {
                if !out.iter().any(|n| n == name) {
                    out.push(name.to_owned());
                }
            } else if !not_offered.contains(&name) {
                return bail(format!("{field}[{i}]: {name:?} is not supported"));
            }
        }
    }
    Ok(out)
}

fn validation_context(
    v: &pb::CertificateValidationContext,
    ca_from_combined: Option<CertificateProviderInstance>,
) -> Res<CertificateValidation> {
    if v.trusted_ca.is_some() {
        return bail(
            "trusted_ca (inline or file CA) is not supported; use ca_certificate_provider_instance",
        );
    }
    if v.watched_directory.is_some() {
        return bail("watched_directory is not supported");
    }
    if v.system_root_certs.is_some() {
        return bail("system_root_certs is not supported");
    }
    if !v.verify_certificate_spki.is_empty() {
        return bail("verify_certificate_spki is not supported");
    }
    if !v.verify_certificate_hash.is_empty() {
        return bail("verify_certificate_hash is not supported");
    }
    if v.require_signed_certificate_timestamp
        .as_ref()
        .is_some_and(|b| b.value)
    {
        return bail("require_signed_certificate_timestamp is not supported");
    }
    if v.crl.is_some() {
        return bail("crl is not supported");
    }
    if v.allow_expired_certificate {
        return bail("allow_expired_certificate is not supported");
    }
    if v.trust_chain_verification
        == pb::certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32
    {
        return bail("trust_chain_verification ACCEPT_UNTRUSTED is not supported");
    }
    if v.custom_validator_config.is_some() {
        return bail("custom_validator_config is not supported");
    }
    // webpki applies its own chain depth limit; istiod never sets one.
    if v.max_verify_depth.is_some() {
        return bail("max_verify_depth is not supported");
    }
    let ca_certificate = match (&v.ca_certificate_provider_instance, ca_from_combined) {
        (Some(p), _) => Some(
            instance(&p.instance_name, &p.certificate_name)
                .at(".ca_certificate_provider_instance")?,
        ),
        (None, ca) => ca,
    };
    let mut san_matchers = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        san_matchers.push(typed_san(m).at_with(|| format!(".match_typed_subject_alt_names[{i}]"))?);
    }
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        san_matchers.push(SanMatcher {
            san_type: SanType::Any,
            matcher: string_matcher(m).at_with(|| format!(".match_subject_alt_names[{i}]"))?,
        });
    }
    Ok(CertificateValidation {
        ca_certificate,
        san_matchers,
    })
}

fn typed_san(m: &pb::SubjectAltNameMatcher) -> Res<SanMatcher> {
    use pb::subject_alt_name_matcher::SanType as T;
    let san_type = match T::try_from(m.san_type) {
        Ok(T::Uri) => SanType::Uri,
        Ok(T::Dns) => SanType::Dns,
        Ok(T::Email) => SanType::Email,
        Ok(T::IpAddress) => SanType::IpAddress,
        Ok(T::OtherName) => return bail("san_type OTHER_NAME is not supported"),
        Ok(T::Unspecified) | Err(_) => return bail("san_type is required"),
    };
    let Some(matcher) = &m.matcher else {
        return bail("matcher is required");
    };
    Ok(SanMatcher {
        san_type,
        matcher: string_matcher(matcher).at(".matcher")?,
    })
}
