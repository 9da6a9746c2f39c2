//! TLS for the registry endpoint (rustls, ring provider): the server's certificate and key, and
//! optionally a CA whose client certificates alone are let in — for node-to-node use, where
//! every node holds a certificate of the cluster's CA.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("registry TLS: {0}")]
pub struct TlsError(String);

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{what} {}: {e}", crate::escape::shown(&path))))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no certificate in it",
            crate::escape::shown(&path)
        )));
    }
    Ok(certs)
}

/// The server configuration: `cert` (PEM, the chain) and `key` (PEM), and with `client_ca`
/// client certificates required and verified against it.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(cert, "tls_cert")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("tls_key {}: {e}", crate::escape::shown(&key))))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca, "client_ca")? {
                roots.add(c).map_err(|e| {
                    TlsError(format!("client_ca {}: {e}", crate::escape::shown(&ca)))
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError(format!("client_ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("tls_cert and tls_key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
