//! The Istio CA API, `istio.v1.auth.IstioCertificateService` (istio/api
//! `security/v1alpha1/ca.proto`), as hand-written prost messages: no protoc, no build.rs.

/// `IstioCertificateRequest`: a PEM CSR and the wanted validity.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded PKCS#10 certificate request. Only its public key is binding: the CA
    /// signs the identity the caller authenticated as.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested validity in seconds (0: the CA's default).
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Opaque node metadata (Istio reads `WorkloadName`, `WorkloadIP`, `ClusterID`).
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `IstioCertificateResponse`: the PEM chain, leaf first, root last.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates, leaf first and root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// The gRPC service name.
pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";

/// The gRPC path of `CreateCertificate`.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// The header Istio clients send with their cluster's name.
pub const CLUSTER_ID_HEADER: &str = "clusterid";

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn request_uses_istio_field_numbers() {
        let req = IstioCertificateRequest {
            csr: "x".into(),
            validity_duration: 60,
            metadata: None,
        };
        // field 1 (string, wire type 2) "x", field 3 (varint) 60
        assert_eq!(req.encode_to_vec(), vec![0x0a, 0x01, b'x', 0x18, 60]);
        let resp = IstioCertificateResponse {
            cert_chain: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            resp.encode_to_vec(),
            vec![0x0a, 0x01, b'a', 0x0a, 0x01, b'b']
        );
    }
}
