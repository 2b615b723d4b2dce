//! TLS on tallyd's gRPC listener (rustls, ring), optionally mutual.
//!
//! tallyd accepts TCP itself (`accepted` in lib.rs, Nagle off) and hands
//! each connection to a task that runs the handshake, with a deadline;
//! tonic gets the connections whose handshake succeeded. A client that
//! fails its handshake (plaintext, an unknown or missing client
//! certificate, a stalled hello) costs its own task only: the accept loop
//! goes on.
//!
//! Each handshake takes the [`ServerTls`]'s current `ServerConfig`. A
//! reload (the certificate, key or client CA files changed, or SIGHUP;
//! see `reload.rs`) builds a whole new one and swaps it in, so new
//! connections see the new certificate and CA while established ones keep
//! theirs. A reload that fails (a key that does not match the
//! certificate, a file half written) keeps the config in use, with a
//! warning; the next change tries again.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::Stream;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use tally_telemetry::Metrics;

use crate::reload::WatchedFiles;

/// Longest a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the certificate, its key and (for mutual TLS) the CA of the
/// clients' certificates are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With one, every client must present a certificate that leads to
    /// one of these (PEM).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// A server config from the files as they are now.
    fn load(&self) -> Result<ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = read_certs(&self.cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("key {}: {e}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS protocol versions: {e}"))?;
        let builder = match &self.client_ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(path, "client CA")? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("client CA {}: {e}", path.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("client CA {}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        // Checks that the key is the certificate's.
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            format!(
                "certificate {} and key {}: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        // gRPC is HTTP/2: a client that offers ALPN must be able to agree.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The listener's TLS settings in use, and where they come from.
pub struct ServerTls {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
    watched: Arc<WatchedFiles>,
}

impl ServerTls {
    /// Reads the files; tallyd does not start without usable ones.
    pub fn open(files: TlsFiles) -> Result<Arc<ServerTls>, String> {
        let watched = Arc::new(WatchedFiles::new(files.paths()));
        let config = files.load()?;
        info!(
            cert = %files.cert.display(),
            client_ca = files.client_ca.as_ref().map(|p| p.display().to_string()),
            "TLS certificate loaded"
        );
        Ok(Arc::new(ServerTls {
            files,
            config: RwLock::new(Arc::new(config)),
            watched,
        }))
    }

    /// Reads the files again; on failure the config in use stays.
    pub fn reload(&self) {
        match self.files.load() {
            Ok(config) => {
                *self.config.write().expect("TLS config lock") = Arc::new(config);
                info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => warn!(
                error = %e,
                "the TLS files did not load; the certificate in use stays"
            ),
        }
    }

    /// Reloads whenever a file changes and on SIGHUP, until the server
    /// stops.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        self.watched.clone().watch(move || tls.reload())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().expect("TLS config lock").clone())
    }
}

/// The TLS connections made on `tcp`'s connections: each handshake in a
/// task of its own, so a slow or failing client holds up no other. TCP
/// accept errors are passed on (tonic carries on after them); handshake
/// failures are logged at debug level, counted by reason
/// ([`failure_reason`]) and dropped. Dropping the stream
/// closes the listener and abandons the handshakes in progress.
pub fn incoming(
    tcp: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
    tls: Arc<ServerTls>,
    metrics: Metrics,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
    type Handshake = (
        Option<SocketAddr>,
        Result<io::Result<TlsStream<TcpStream>>, ()>,
    );
    let state = (Box::pin(tcp), JoinSet::<Handshake>::new(), tls, metrics);
    futures::stream::unfold(
        state,
        |(mut tcp, mut handshakes, tls, metrics)| async move {
            use tokio_stream::StreamExt as _;
            loop {
                tokio::select! {
                    accepted = tcp.next() => match accepted {
                        Some(Ok(stream)) => {
                            let acceptor = tls.acceptor();
                            handshakes.spawn(async move {
                                let peer = stream.peer_addr().ok();
                                let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                    .await
                                    .map_err(|_| ());
                                (peer, shaken)
                            });
                        }
                        Some(Err(e)) => return Some((Err(e), (tcp, handshakes, tls, metrics))),
                        None => return None,
                    },
                    Some(done) = handshakes.join_next(), if !handshakes.is_empty() => match done {
                        Ok((_, Ok(Ok(stream)))) => return Some((Ok(stream), (tcp, handshakes, tls, metrics))),
                        Ok((peer, Ok(Err(e)))) => {
                            let reason = failure_reason(&e);
                            metrics.tls_handshake_failed(reason);
                            debug!(?peer, error = %e, reason, "TLS handshake failed");
                        }
                        Ok((peer, Err(()))) => {
                            metrics.tls_handshake_failed("timeout");
                            debug!(?peer, "TLS handshake timed out");
                        }
                        Err(e) => debug!(error = %e, "TLS handshake task ended"),
                    },
                }
            }
        },
    )
}

/// Why a handshake failed, as `tally_tls_handshake_failures_total`'s
/// `tally.reason`: one of a few values, whatever the error said.
fn failure_reason(error: &io::Error) -> &'static str {
    use rustls::Error;
    let Some(error) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "other";
    };
    match error {
        // A plaintext client's first bytes (an HTTP/2 preface, "PRI * ...")
        // are not a TLS record.
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => "not_tls",
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(_) => "bad_client_certificate",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_have_a_few_reasons() {
        use rustls::{CertificateError, Error, InvalidMessage};
        let failed = |e: Error| failure_reason(&io::Error::new(io::ErrorKind::InvalidData, e));
        assert_eq!(
            failed(Error::InvalidMessage(InvalidMessage::InvalidContentType)),
            "not_tls"
        );
        assert_eq!(
            failed(Error::NoCertificatesPresented),
            "no_client_certificate"
        );
        assert_eq!(
            failed(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
            "bad_client_certificate"
        );
        assert_eq!(
            failed(Error::AlertReceived(rustls::AlertDescription::UnknownCA)),
            "other"
        );
        let closed = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(failure_reason(&closed), "other");
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = TlsFiles {
            cert: empty.clone(),
            key: dir.path().join("missing.key"),
            client_ca: None,
        };
        let err = ServerTls::open(files).err().expect("refused");
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );
    }
}
