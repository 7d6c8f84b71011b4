//! TLS: `[server.tls]` names a PEM certificate chain and its private key. With both set the
//! server speaks HTTPS only (a plain HTTP request on that port fails the TLS handshake and the
//! connection is closed); with neither it speaks plain HTTP. One without the other, or a file
//! that cannot be read or holds no usable PEM block, stops the server at start with the key and
//! the file named.
//!
//! Lifecycle: [`TlsConfig::load`] reads the files once, at start (`main.rs` before the store is
//! opened; [`crate::run`] when it is called with a state whose configuration has TLS). The
//! result is shared by every connection; replacing a certificate needs a restart.
//!
//! Crypto is rustls with the `ring` provider; TLS 1.2 and 1.3 with rustls' safe defaults; ALPN
//! offers `http/1.1` only, since the server speaks HTTP/1.1 (as it does without TLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sunfish_core::StartupError;

/// `[server.tls]`: certificate and key files. Both or neither.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the certificate chain: the server's certificate first, then any
    /// intermediates.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether a certificate or a key is configured (a lone one is an error in [`Self::load`]).
    pub fn is_configured(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// Reads both files and builds the TLS server configuration; `None` when neither is set
    /// (plain HTTP).
    ///
    /// # Errors
    /// [`StartupError::Config`] when only one of `cert` and `key` is set, when a file cannot be
    /// read or holds no certificate / private key (the file is named), or when the key does
    /// not belong to the certificate.
    pub fn load(&self) -> Result<Option<Arc<rustls::ServerConfig>>, StartupError> {
        let (cert, key) = match (&self.cert, &self.key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                return Err(StartupError::Config(
                    "server.tls.cert is set but server.tls.key is not: set both (HTTPS) or neither (plain HTTP)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(StartupError::Config(
                    "server.tls.key is set but server.tls.cert is not: set both (HTTPS) or neither (plain HTTP)".into(),
                ))
            }
        };
        let chain = read_chain(cert)?;
        let private = read_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StartupError::Config(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                StartupError::Config(format!(
                    "server.tls.key {} does not fit server.tls.cert {}: {e}",
                    key.display(),
                    cert.display()
                ))
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// Every `CERTIFICATE` block of `path`, in order.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, StartupError> {
    let bad = |reason: String| StartupError::Config(format!("server.tls.cert {}: {reason}", path.display()));
    // Read first so a missing or unreadable file says so, rather than a PEM parser's wording.
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no CERTIFICATE block in the file".into()));
    }
    Ok(chain)
}

/// The first private key block of `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, StartupError> {
    let bad = |reason: String| StartupError::Config(format!("server.tls.key {}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            bad("no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block in the file".into())
        }
        other => bad(format!("not a PEM private key file: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: &TlsConfig) -> String {
        match c.load() {
            Ok(_) => panic!("{c:?} loaded"),
            Err(e) => e.to_string(),
        }
    }

    /// Neither file: plain HTTP.
    #[test]
    fn neither_is_plain() {
        assert!(TlsConfig::default().load().unwrap().is_none());
        assert!(!TlsConfig::default().is_configured());
    }

    /// One without the other is refused, naming the missing key.
    #[test]
    fn one_without_the_other() {
        let e = err(&TlsConfig { cert: Some("c.pem".into()), key: None });
        assert!(e.contains("server.tls.key is not"), "{e}");
        let e = err(&TlsConfig { cert: None, key: Some("k.pem".into()) });
        assert!(e.contains("server.tls.cert is not"), "{e}");
    }

    /// A missing file and a file without PEM blocks are refused, naming the file.
    #[test]
    fn unreadable_and_invalid_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all\n").unwrap();
        let e = err(&TlsConfig { cert: Some(missing.clone()), key: Some(junk.clone()) });
        assert!(e.contains("server.tls.cert") && e.contains(&missing.display().to_string()), "{e}");
        assert!(e.contains("cannot read"), "{e}");
        let e = err(&TlsConfig { cert: Some(junk.clone()), key: Some(junk.clone()) });
        assert!(e.contains("server.tls.cert") && e.contains(&junk.display().to_string()), "{e}");
        assert!(e.contains("no CERTIFICATE block"), "{e}");
    }
}
