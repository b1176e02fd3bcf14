//! TLS for the boot HTTP server (`provision.cert`/`provision.key`) and the API's TCP
//! listener (`api.cert`/`api.key`): rustls on the ring provider, through tokio-rustls.
//!
//! A [`Certificate`] is a certificate chain and its key, read from PEM files, that can be
//! read again while serving ([`Certificate::reload`], on SIGHUP and when its files
//! change: [`reload_on_hangup_or_change`]).
//! The server config resolves the certificate on every handshake, so a reload takes
//! effect at the next handshake and connections already open keep theirs: nothing is
//! dropped. A reload that fails (a file missing, unreadable, not PEM, a key that does
//! not match the certificate) is reported and the previous certificate stays in use; at
//! start the same failure stops the server with the same message.
//!
//! Only TLS 1.2 and 1.3 with rustls's default cipher suites; no client certificates.
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Why a certificate or its key cannot be used; the message names the file and the
/// config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// A certificate chain and key from files, reloadable while serving.
pub struct Certificate {
    /// The config section the files come from (`provision`, `api`): messages name
    /// `{section}.cert` and `{section}.key`.
    section: &'static str,
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("section", &self.section)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl Certificate {
    /// Reads `cert` (PEM: the server's certificate first, then the chain) and `key` (PEM:
    /// PKCS#8, PKCS#1 RSA or SEC1 EC) and checks that they belong together.
    pub fn load(
        section: &'static str,
        cert: &Path,
        key: &Path,
    ) -> Result<Arc<Certificate>, TlsError> {
        let pair = read_pair(section, cert, key)?;
        Ok(Arc::new(Certificate {
            section,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
        }))
    }

    /// Reads the files again. On success the new certificate serves every handshake
    /// from now on and its description is returned; on failure the previous one stays.
    pub fn reload(&self) -> Result<String, TlsError> {
        let pair = read_pair(self.section, &self.cert, &self.key)?;
        let shown = describe(&pair);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
        Ok(shown)
    }

    /// The certificate in use: its SHA-256 fingerprint and the number of certificates
    /// in the chain.
    pub fn describe(&self) -> String {
        describe(&self.current())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The config section the files come from.
    pub fn section(&self) -> &'static str {
        self.section
    }

    /// An acceptor serving this certificate (as it is at each handshake), HTTP/1.1.
    pub fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The SHA-256 fingerprint of the server's certificate, as `openssl x509 -fingerprint
/// -sha256` shows it, and the chain's length.
fn describe(pair: &CertifiedKey) -> String {
    let leaf = pair.cert.first().map(|c| c.as_ref()).unwrap_or_default();
    let hex: Vec<String> = Sha256::digest(leaf)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    format!(
        "certificate sha256 {} ({} in the chain)",
        hex.join(":"),
        pair.cert.len()
    )
}

/// A PEM syntax error in words (the crate's own message shows lines as byte arrays).
fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    match e {
        E::MissingSectionEnd { end_marker } => {
            format!("no \"-----END {}-----\" line", text(end_marker))
        }
        E::IllegalSectionStart { line } => format!("malformed line {:?}", text(line)),
        E::Base64Decode(m) => format!("not base64 inside a section ({m})"),
        other => other.to_string(),
    }
}

fn read_pair(section: &str, cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            TlsError(format!(
                "{section}.{what}: cannot read {}: {e}",
                path.display()
            ))
        })
    };
    let cert_pem = read(cert, "cert")?;
    let key_pem = read(key, "key")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError(format!(
                "{section}.cert: {} is not a PEM certificate file: {}",
                cert.display(),
                pem_problem(&e)
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{section}.cert: {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError(format!(
            "{section}.key: {} holds no private key (expected PEM PKCS#8, RSA or EC)",
            key.display()
        )),
        e => TlsError(format!(
            "{section}.key: {} is not a PEM key file: {}",
            key.display(),
            pem_problem(&e)
        )),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| {
            TlsError(format!(
                "{section}.key: {}: unusable private key: {e}",
                key.display()
            ))
        })?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError(format!(
                "{section}.key: {} is not the key of the certificate in {} ({section}.cert)",
                key.display(),
                cert.display()
            )))
        }
        Err(e) => Err(TlsError(format!(
            "{section}.cert: {}: cannot check it against {section}.key: {e}",
            cert.display()
        ))),
    }
}

/// Reloads `certs` on every SIGHUP and when one of their files changes (debounced, as
/// the inventory files are: [`crate::reload`]) until `stop`. Each outcome is logged.
pub async fn reload_on_hangup_or_change(
    certs: Vec<Arc<Certificate>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut files: Vec<PathBuf> = certs
        .iter()
        .flat_map(|c| [c.cert.clone(), c.key.clone()])
        .collect();
    files.sort();
    files.dedup();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _watcher = crate::reload::watch(&files, tx)
        .map_err(|e| tracing::warn!("cannot watch the certificate files ({e}); reload with SIGHUP"))
        .ok();
    let mut hup = crate::reload::hangups();
    tokio::pin!(stop);
    loop {
        let why = tokio::select! {
            _ = &mut stop => return,
            Some(()) = crate::reload::next_hangup(&mut hup) => "SIGHUP",
            Some(()) = rx.recv() => {
                crate::reload::settle(&mut rx).await;
                "file change"
            }
        };
        for c in &certs {
            reload_logged(c, why);
        }
    }
}

/// Reloads `c`, logging the new certificate or why the old one stays.
pub fn reload_logged(c: &Certificate, why: &str) {
    match c.reload() {
        Ok(shown) => tracing::info!("{} TLS certificate reloaded ({why}): {shown}", c.section),
        Err(e) => tracing::error!(
            "{} TLS certificate reload ({why}) refused, still serving the previous one: {e}",
            c.section
        ),
    }
}

#[cfg(test)]
mod tests;
