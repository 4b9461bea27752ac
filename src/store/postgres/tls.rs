//! TLS to PostgreSQL (rustls, through tokio-postgres-rustls), with libpq's
//! `sslmode` semantics. tokio-postgres parses only `sslmode=disable|prefer|
//! require` and refuses `sslrootcert`, so this module reads `sslmode` and
//! `sslrootcert` from the connection string (URL or `key=value` form),
//! hands tokio-postgres the rest, and builds the certificate check itself:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | absent, `disable` | no | - |
//! | `prefer` | if the server offers it | no |
//! | `require` | yes | no; with `sslrootcert`, as `verify-ca` (as libpq) |
//! | `verify-ca` | yes | chain to `sslrootcert` |
//! | `verify-full` | yes | chain to `sslrootcert`, and the host name |
//!
//! `sslrootcert` is a PEM file, or `system` for the operating system's
//! roots; for `verify-*` without it, libpq's default
//! `~/.postgresql/root.crt` is used if it exists. Client certificates
//! (`sslcert`, `sslkey`) are not supported and are refused by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Check {
    /// Encrypt only (`prefer`, `require`): anyone on the path may pose as
    /// the server, as with libpq.
    Nothing,
    /// The chain ends at one of these roots (`verify-ca`).
    Chain(Roots),
    /// The chain and the host name (`verify-full`).
    Full(Roots),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Roots {
    File(PathBuf),
    System,
}

/// What to connect with: the connection string for tokio-postgres (with
/// `sslrootcert` removed and `verify-*` given as `require`), and the TLS
/// check, `None` for no TLS.
#[derive(Debug)]
pub(super) struct Plan {
    pub url: String,
    pub tls: Option<Check>,
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::Internal(format!("invalid database url: {}", msg.into()))
}

/// Reads the TLS settings out of a connection string.
pub(super) fn plan(url: &str) -> Result<Plan, StoreError> {
    let mut mode: Option<String> = None;
    let mut root: Option<String> = None;
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        strip_url(url, &mut mode, &mut root)?
    } else {
        strip_key_values(url, &mut mode, &mut root)?
    };
    let roots = |mode: &str| -> Result<Roots, StoreError> {
        match root.as_deref() {
            Some("system") => Ok(Roots::System),
            Some(path) => Ok(Roots::File(PathBuf::from(path))),
            None => {
                let default = std::env::var_os("HOME")
                    .map(|h| Path::new(&h).join(".postgresql/root.crt"))
                    .filter(|p| p.is_file());
                default.map(Roots::File).ok_or_else(|| {
                    bad(format!(
                        "sslmode={mode} needs sslrootcert=FILE (a PEM CA certificate) or \
                         sslrootcert=system"
                    ))
                })
            }
        }
    };
    let (tokio_mode, tls) = match mode.as_deref() {
        None => (None, None),
        Some("disable") => (Some("disable"), None),
        Some("allow") | Some("prefer") => (Some("prefer"), Some(Check::Nothing)),
        Some("require") => match root {
            Some(_) => (Some("require"), Some(Check::Chain(roots("require")?))),
            None => (Some("require"), Some(Check::Nothing)),
        },
        Some("verify-ca") => (Some("require"), Some(Check::Chain(roots("verify-ca")?))),
        Some("verify-full") => (Some("require"), Some(Check::Full(roots("verify-full")?))),
        Some(other) => {
            return Err(bad(format!(
                "unknown sslmode {other:?}; use disable, prefer, require, verify-ca or verify-full"
            )));
        }
    };
    let url = match tokio_mode {
        None => rest,
        Some(m) if rest.starts_with("postgres") => {
            let sep = if rest.contains('?') { '&' } else { '?' };
            format!("{rest}{sep}sslmode={m}")
        }
        Some(m) => format!("{rest} sslmode={m}"),
    };
    Ok(Plan { url, tls })
}

/// Takes TLS parameters out of the query of a `postgres://` URL.
fn strip_url(
    url: &str,
    mode: &mut Option<String>,
    root: &mut Option<String>,
) -> Result<String, StoreError> {
    let Some((head, query)) = url.split_once('?') else {
        return Ok(url.to_string());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = || percent_decode(v);
        match k {
            "sslmode" => *mode = Some(value()?),
            "sslrootcert" => *root = Some(value()?),
            "sslcert" | "sslkey" => {
                return Err(bad(format!("{k} (client certificates) is not supported")));
            }
            _ => kept.push(pair),
        }
    }
    Ok(if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    })
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| bad("a % escape is cut short"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad(format!("bad % escape %{hex}")))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("a % escape is not UTF-8"))
}

/// Takes TLS parameters out of a `key=value` connection string, keeping
/// every other pair exactly as written.
fn strip_key_values(
    s: &str,
    mode: &mut Option<String>,
    root: &mut Option<String>,
) -> Result<String, StoreError> {
    let mut kept = String::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let start = rest;
        let eq = rest
            .find('=')
            .ok_or_else(|| bad(format!("expected key=value at {rest:?}")))?;
        let key = rest[..eq].trim();
        rest = rest[eq + 1..].trim_start();
        let mut value = String::new();
        if let Some(quoted) = rest.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().ok_or_else(|| bad("a \\ at the end"))?.1),
                    '\'' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            rest = &quoted[end.ok_or_else(|| bad("an unterminated quote"))?..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        let pair = &start[..start.len() - rest.len()];
        rest = rest.trim_start();
        match key {
            "sslmode" => *mode = Some(value),
            "sslrootcert" => *root = Some(value),
            "sslcert" | "sslkey" => {
                return Err(bad(format!("{key} (client certificates) is not supported")));
            }
            _ => {
                if !kept.is_empty() {
                    kept.push(' ');
                }
                kept.push_str(pair.trim());
            }
        }
    }
    Ok(kept)
}

/// The tokio-postgres connector for a check.
pub(super) fn connector(check: &Check) -> Result<MakeRustlsConnect, StoreError> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(StoreError::internal)?;
    let config = match check {
        Check::Full(roots) => builder
            .with_root_certificates(root_store(roots)?)
            .with_no_client_auth(),
        Check::Chain(roots) => {
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(roots)?),
                Arc::clone(&provider),
            )
            .build()
            .map_err(StoreError::internal)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
        Check::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn root_store(roots: &Roots) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| {
                    StoreError::Internal(format!("cannot read sslrootcert {}: {e}", path.display()))
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Internal(format!(
                    "sslrootcert {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(StoreError::Internal(
                    "sslrootcert=system: the system has no root certificates".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must end at a trusted root; the name is not
/// checked (libpq's meaning).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
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

/// `prefer`/`require`: any certificate, but the handshake's signatures are
/// still checked against it (so the session is with its key's holder).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

    #[test]
    fn key_value_strings_lose_only_their_tls_settings() {
        let p = plan("host=db.example port=5432 sslmode=verify-full sslrootcert='/etc/ca dir/ca.pem' user=fusion").unwrap();
        assert_eq!(
            p.url,
            "host=db.example port=5432 user=fusion sslmode=require"
        );
        assert_eq!(
            p.tls,
            Some(Check::Full(Roots::File("/etc/ca dir/ca.pem".into())))
        );
        let p = plan("host=/run/postgresql user=fusion").unwrap();
        assert_eq!(
            (p.url.as_str(), p.tls),
            ("host=/run/postgresql user=fusion", None)
        );
        let p = plan("host=h sslmode = require").unwrap();
        assert_eq!(
            (p.url.as_str(), p.tls),
            ("host=h sslmode=require", Some(Check::Nothing))
        );
        let p = plan(r"host=h password='it\'s' sslmode=prefer").unwrap();
        assert_eq!(
            (p.url.as_str(), p.tls),
            (
                r"host=h password='it\'s' sslmode=prefer",
                Some(Check::Nothing)
            )
        );
    }

    #[test]
    fn urls_lose_only_their_tls_settings() {
        let p = plan("postgres://u:p@h:5433/db?sslmode=verify-ca&sslrootcert=%2Ftmp%2Fca.pem&application_name=x").unwrap();
        assert_eq!(
            p.url,
            "postgres://u:p@h:5433/db?application_name=x&sslmode=require"
        );
        assert_eq!(p.tls, Some(Check::Chain(Roots::File("/tmp/ca.pem".into()))));
        let p = plan("postgresql://h/db?sslmode=disable").unwrap();
        assert_eq!(
            (p.url.as_str(), p.tls),
            ("postgresql://h/db?sslmode=disable", None)
        );
        let p = plan("postgres://h/db?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(p.tls, Some(Check::Chain(Roots::System)));
    }

    #[test]
    fn unknown_modes_and_client_certificates_are_refused_by_name() {
        for (url, word) in [
            ("host=h sslmode=sometimes", "sslmode"),
            ("host=h sslcert=/c.pem", "sslcert"),
            ("postgres://h/db?sslkey=/k.pem", "sslkey"),
            ("postgres://h/db?sslmode=verify-full", "sslrootcert"),
        ] {
            let err = plan(url).unwrap_err().to_string();
            assert!(err.contains(word), "{url}: {err}");
        }
    }
}
