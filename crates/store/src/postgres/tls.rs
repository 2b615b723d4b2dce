//! TLS to PostgreSQL, with libpq's `sslmode` values.
//!
//! tokio-postgres parses `sslmode=disable|prefer|require` and leaves what
//! "TLS" means to the connector it is given. libpq's two verifying modes,
//! `verify-ca` and `verify-full`, and `sslrootcert` it does not parse, so
//! [`split_url`] takes them out of the connection string first, leaving
//! `sslmode=require` (the connection must be encrypted) and a
//! [`ServerCheck`] saying what the rustls verifier checks on top:
//!
//! | sslmode | without a CA file | with a CA file |
//! |---|---|---|
//! | `disable` | plaintext | plaintext |
//! | `prefer` (the default) | TLS if the server offers it, certificate not checked | TLS if offered, chain checked |
//! | `require` | TLS, certificate not checked | TLS, chain checked |
//! | `verify-ca` | refused: needs a CA file | TLS, chain checked, any host name |
//! | `verify-full` | refused: needs a CA file | TLS, chain and host name checked |
//!
//! As with libpq, giving a CA file turns `prefer` and `require` into
//! `verify-ca`. Unchecked certificates still get their handshake signatures
//! verified, so the session is bound to whoever holds the certificate's
//! key (which SCRAM's channel binding relies on); what is not checked is
//! who that is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What is checked of the server's certificate beyond encrypting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerCheck {
    /// `disable`, `prefer` or `require`: the chain is checked only when a
    /// CA file is given (as libpq does when it finds a root certificate).
    #[default]
    IfCaGiven,
    /// `verify-ca`: the chain must lead to the CA file's certificates; the
    /// host name is not compared.
    Chain,
    /// `verify-full`: the chain, and the certificate must name the host
    /// tallyd connects to.
    Full,
}

/// A connection string with libpq's TLS settings that tokio-postgres does
/// not parse taken out.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SplitUrl {
    /// What tokio-postgres parses: `verify-*` replaced by `require`.
    pub url: String,
    pub check: ServerCheck,
    /// `sslrootcert`, when the URL names one.
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode=verify-ca|verify-full` and `sslrootcert` out of a URL
/// (`postgres://…?sslmode=…`) or a `key=value` connection string.
pub(super) fn split_url(url: &str) -> Result<SplitUrl, String> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let pairs = if is_url {
        query_pairs(url)?
    } else {
        key_value_pairs(url)?
    };
    let mut check = ServerCheck::IfCaGiven;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in pairs {
        match (key.as_str(), value.as_str()) {
            ("sslmode", "verify-ca") => check = ServerCheck::Chain,
            ("sslmode", "verify-full") => check = ServerCheck::Full,
            ("sslmode", _) => {
                check = ServerCheck::IfCaGiven;
                kept.push((key, value));
            }
            ("sslrootcert", "system") => {
                return Err(
                    "sslrootcert=system is not supported: name the CA bundle's file".to_owned(),
                );
            }
            ("sslrootcert", path) => root_cert = Some(PathBuf::from(path)),
            _ => kept.push((key, value)),
        }
    }
    if check != ServerCheck::IfCaGiven {
        kept.push(("sslmode".to_owned(), "require".to_owned()));
    }
    let url = if is_url {
        let base = url.split_once('?').map_or(url, |(base, _)| base);
        if kept.is_empty() {
            base.to_owned()
        } else {
            let query: Vec<String> = kept
                .iter()
                .map(|(key, value)| format!("{key}={}", percent_encode(value)))
                .collect();
            format!("{base}?{}", query.join("&"))
        }
    } else {
        kept.iter()
            .map(|(key, value)| {
                format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok(SplitUrl {
        url,
        check,
        root_cert,
    })
}

/// The decoded `key=value` pairs of a URL's query. Errors name the key,
/// never the value: it may be the password.
fn query_pairs(url: &str) -> Result<Vec<(String, String)>, String> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key)
                .map_err(|e| format!("a parameter name in the URL's query is {e}"))?;
            let value =
                percent_decode(value).map_err(|e| format!("the value of {key:?} is {e}"))?;
            Ok((key, value))
        })
        .collect()
}

fn percent_decode(text: &str) -> Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or("not valid percent-encoding")?;
            decoded.push(hex);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "not UTF-8 once decoded")
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/,".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The pairs of a libpq `key=value` string: spaces around `=` allowed,
/// values in single quotes or bare, `\` escaping the next character.
/// Errors name keys, never words that may be part of a value (an unquoted
/// password with a space in it).
fn key_value_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut chars = text.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "setting {} of the connection string is not `key=value` (a value with spaces must be in single quotes)",
                pairs.len() + 1
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quote in the value of {key:?}")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// The connector for `check`, trusting the certificates in `ca_file`.
pub(super) fn connector(
    check: ServerCheck,
    ca_file: Option<&Path>,
) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let roots = ca_file.map(load_roots).transpose()?;
    let config = match (check, roots) {
        (ServerCheck::Chain | ServerCheck::Full, None) => {
            return Err(
                "sslmode=verify-ca and verify-full need the CA that signed the server's \
                 certificate: give a CA file (sslrootcert in the URL, or --pg-ca-file)"
                    .to_owned(),
            );
        }
        (ServerCheck::Full, Some(roots)) => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (ServerCheck::Chain | ServerCheck::IfCaGiven, Some(roots)) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("CA file: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyHostName(webpki)))
                .with_no_client_auth()
        }
        (ServerCheck::IfCaGiven, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Every certificate in a PEM file, as trust anchors.
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("CA file {shown}: {e}"))? {
        let cert = cert.map_err(|e| format!("CA file {shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {shown} holds no certificate"));
    }
    Ok(roots)
}

/// `verify-ca`: the webpki verifier, less its host name comparison. It
/// checks the chain before the name, so a name mismatch means the chain
/// was good.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA file: any certificate, but the
/// handshake must be signed by its key.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> SplitUrl {
        split_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn verifying_modes_become_require_and_a_check() {
        let split_full = split(
            "postgres://u:p%40ss@db:5432/tally?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&application_name=t",
        );
        assert_eq!(split_full.check, ServerCheck::Full);
        assert_eq!(split_full.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        assert_eq!(
            split_full.url,
            "postgres://u:p%40ss@db:5432/tally?application_name=t&sslmode=require"
        );
        let parsed: tokio_postgres::Config = split_full.url.parse().unwrap();
        assert_eq!(
            parsed.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(parsed.get_password(), Some(&b"p@ss"[..]));

        let split_ca = split("postgresql://db/tally?sslmode=verify-ca");
        assert_eq!(split_ca.check, ServerCheck::Chain);
        assert_eq!(split_ca.url, "postgresql://db/tally?sslmode=require");
    }

    #[test]
    fn other_modes_and_plain_urls_pass_through() {
        for url in [
            "postgres://db/tally",
            "postgres://db/tally?sslmode=require",
            "postgres://db/tally?sslmode=disable&connect_timeout=3",
        ] {
            let split_url = split(url);
            assert_eq!(split_url.url, url);
            assert_eq!(split_url.check, ServerCheck::IfCaGiven);
            assert_eq!(split_url.root_cert, None);
        }
        let with_root = split("postgres://db/tally?sslrootcert=/ca.pem&sslmode=prefer");
        assert_eq!(with_root.url, "postgres://db/tally?sslmode=prefer");
        assert_eq!(with_root.root_cert, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn key_value_strings_are_split_too() {
        let split_kv = split(
            "host=db user=tally password='it\\'s \\'quoted\\' x' sslmode = verify-full sslrootcert=/tls/ca.pem",
        );
        assert_eq!(split_kv.check, ServerCheck::Full);
        assert_eq!(split_kv.root_cert, Some(PathBuf::from("/tls/ca.pem")));
        let parsed: tokio_postgres::Config = split_kv.url.parse().unwrap();
        assert_eq!(parsed.get_user(), Some("tally"));
        assert_eq!(parsed.get_password(), Some(&b"it's 'quoted' x"[..]));
        assert_eq!(
            parsed.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert!(split_url("host=db sslmode").is_err());
        assert!(split_url("host='db").is_err());
    }

    #[test]
    fn errors_never_quote_a_value() {
        for (url, secret) in [
            ("postgres://u@db/t?password=s3cr%zzet", "s3cr"),
            ("postgres://u@db/t?password=%ff%fe", "%ff"),
            ("host=db user=u password=my secret words", "secret"),
        ] {
            let err = split_url(url).unwrap_err();
            assert!(!err.contains(secret), "{url}: {err}");
        }
        assert!(
            split_url("postgres://u@db/t?password=%zz")
                .unwrap_err()
                .contains("\"password\"")
        );
    }

    #[test]
    fn the_system_roots_are_refused_by_name() {
        let err = split_url("postgres://db/t?sslmode=verify-full&sslrootcert=system").unwrap_err();
        assert!(err.contains("sslrootcert=system"), "{err}");
    }

    #[test]
    fn verifying_without_a_ca_is_refused() {
        for check in [ServerCheck::Chain, ServerCheck::Full] {
            let err = connector(check, None).err().expect("refused");
            assert!(err.contains("CA file"), "{err}");
        }
        assert!(connector(ServerCheck::IfCaGiven, None).is_ok());
        let err = connector(ServerCheck::Full, Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .expect("refused");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
