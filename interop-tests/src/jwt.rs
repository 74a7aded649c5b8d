//! A JWT issuer for tests, shaped like a Kubernetes service-account token issuer.
//!
//! istiod outside Kubernetes authenticates callers with `JWT_RULE` (issuer, `jwks_uri`,
//! audiences). Its verifier (go-oidc) accepts only RS256 unless told otherwise, reads the
//! identity from `sub: system:serviceaccount:<ns>:<sa>` and wants `aud` to be a list
//! containing one of the rule's audiences. [`TestIssuer`] signs such tokens with a fixed
//! test-only RSA key (`testdata/`) and serves its JWKS at `http://127.0.0.1:<port>/jwks`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::HarnessError;

/// The test-only signing key (RSA 2048, PKCS#8). It signs nothing but test tokens.
const TEST_KEY_PEM: &str = include_str!("../testdata/jwt-signer.test-only.key.pem");
const KID: &str = "mesh-interop-test";

/// The audience istio-agent asks for and istiod expects by default.
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

/// Signs service-account tokens and serves the matching JWKS. The server stops on drop.
pub struct TestIssuer {
    key: RsaKeyPair,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("issuer", &self.issuer())
            .finish_non_exhaustive()
    }
}

impl TestIssuer {
    /// Loads the test key and starts the JWKS server on `127.0.0.1:0`.
    pub async fn start() -> Result<Self, HarnessError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(TEST_KEY_PEM.as_bytes())
            .map_err(|e| HarnessError::Crypto(format!("test JWT key: {e}")))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| HarnessError::Crypto(format!("test JWT key: {e}")))?;
        let public = PublicKeyComponents::<Vec<u8>>::from(key.public());
        let jwks = json!({"keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": KID,
            "n": B64.encode(&public.n), "e": B64.encode(&public.e),
        }]})
        .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(HarnessError::io("binding the JWKS server"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("JWKS server address"))?;
        let server = tokio::spawn(serve_jwks(listener, jwks));
        Ok(Self { key, addr, server })
    }

    /// The `iss` of the tokens, also the base URL of the JWKS server.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of the JWKS document.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    /// istiod's `JWT_RULE` for this issuer, with audience [`ISTIO_CA_AUDIENCE`].
    pub fn jwt_rule(&self) -> String {
        json!({
            "issuer": self.issuer(),
            "jwks_uri": self.jwks_uri(),
            "audiences": [ISTIO_CA_AUDIENCE],
        })
        .to_string()
    }

    /// A token for service account `sa` in namespace `ns`, audience
    /// [`ISTIO_CA_AUDIENCE`], valid for `ttl`.
    pub fn token(&self, ns: &str, sa: &str, ttl: Duration) -> Result<String, HarnessError> {
        self.token_with(
            &format!("system:serviceaccount:{ns}:{sa}"),
            ISTIO_CA_AUDIENCE,
            ttl,
        )
    }

    /// A token with an arbitrary subject and audience (for negative tests).
    pub fn token_with(&self, sub: &str, aud: &str, ttl: Duration) -> Result<String, HarnessError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": KID});
        let claims = json!({
            "iss": self.issuer(), "sub": sub, "aud": [aud],
            "iat": now, "nbf": now.saturating_sub(60), "exp": now + ttl.as_secs(),
        });
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| HarnessError::Crypto("RS256 signing failed".into()))?;
        Ok(format!("{input}.{}", B64.encode(sig)))
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Answers every HTTP request with the JWKS document (one request per connection).
async fn serve_jwks(listener: TcpListener, jwks: String) {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{jwks}",
        jwks.len()
    );
    while let Ok((mut conn, _)) = listener.accept().await {
        let response = response.clone();
        tokio::spawn(async move {
            // Read the request head (bounded), then answer and close.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
