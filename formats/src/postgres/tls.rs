//! TLS to PostgreSQL as libpq does it: `sslmode` (`disable`, `allow`, `prefer` (the
//! default), `require`, `verify-ca`, `verify-full`), `sslrootcert` (a PEM file, or `system`),
//! `sslcert`/`sslkey` (a client certificate), from the URL or `PGSSLMODE`, `PGSSLROOTCERT`,
//! `PGSSLCERT`, `PGSSLKEY`, with libpq's defaults under `~/.postgresql/`.
//!
//! Two choices stricter than libpq's, because a backup tool holds the keys to everything:
//! `allow` tries TLS first like `prefer`; and over an unencrypted TCP connection a password
//! is never sent in clear text (a server asking for `password` authentication is refused)
//! unless the user said `sslmode=disable`.

use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::error::{FormatError, Result};

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS (and a cleartext password is then allowed: the user asked for it).
    Disable,
    /// As `prefer` here (libpq tries plain first).
    Allow,
    /// TLS when the server offers it, unverified; plain otherwise. libpq's default.
    Prefer,
    /// TLS or nothing; verified like `verify-ca` when a root certificate is given.
    Require,
    /// TLS with a certificate signed by the root certificate.
    VerifyCa,
    /// As `verify-ca`, and the certificate names the host.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(FormatError::Postgres {
                    context: "the PostgreSQL URL".into(),
                    message: format!(
                        "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ),
                    sqlstate: None,
                })
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of one connection.
#[derive(Clone, Debug)]
pub struct SslSettings {
    /// The mode.
    pub mode: SslMode,
    /// Root certificate file, or `system`.
    pub root: Option<String>,
    /// Client certificate and key.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The URL parameters this module owns (tokio-postgres would reject them).
pub(crate) const PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

fn tls_err(message: impl Into<String>) -> FormatError {
    FormatError::Postgres {
        context: "TLS to PostgreSQL".into(),
        message: message.into(),
        sqlstate: None,
    }
}

impl SslSettings {
    /// From the URL's parameters, else the `PGSSL*` variables, else libpq's defaults.
    ///
    /// # Errors
    /// An unknown `sslmode`; a client certificate without its key.
    pub fn resolve(params: &[(String, String)]) -> Result<SslSettings> {
        let get = |k: &str, env: &str| {
            params
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(env).ok())
                .filter(|v| !v.is_empty())
        };
        let mode = SslMode::parse(&get("sslmode", "PGSSLMODE").unwrap_or_else(|| "prefer".into()))?;
        let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql"));
        let default = |f: &str| {
            home.as_ref()
                .map(|h| h.join(f))
                .filter(|p| p.exists())
                .map(|p| p.display().to_string())
        };
        let root = get("sslrootcert", "PGSSLROOTCERT").or_else(|| default("root.crt"));
        let cert = get("sslcert", "PGSSLCERT").or_else(|| default("postgresql.crt"));
        let key = get("sslkey", "PGSSLKEY").or_else(|| default("postgresql.key"));
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, _) => None,
            (Some(c), None) => {
                return Err(tls_err(format!(
                    "client certificate {c} given without sslkey"
                )))
            }
        };
        Ok(SslSettings { mode, root, client })
    }

    /// The same settings for a libpq program (pg_dump, psql), in its environment.
    pub(crate) fn apply_to(&self, c: &mut std::process::Command) {
        c.env("PGSSLMODE", self.mode.name());
        for (k, v) in [
            ("PGSSLROOTCERT", self.root.clone()),
            (
                "PGSSLCERT",
                self.client.as_ref().map(|c| c.0.display().to_string()),
            ),
            (
                "PGSSLKEY",
                self.client.as_ref().map(|c| c.1.display().to_string()),
            ),
        ] {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
    }

    /// Whether the certificate chain is checked.
    fn verifies(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            // libpq: `require` with a root certificate behaves as `verify-ca`.
            SslMode::Require => self.root.is_some(),
            _ => false,
        }
    }

    /// The rustls configuration for these settings.
    ///
    /// # Errors
    /// Unreadable or invalid certificate or key files; no root certificate for a mode that
    /// verifies.
    pub(crate) fn connector(&self) -> Result<RustlsConnect> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if self.verifies() {
            let roots = self.roots()?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| tls_err(format!("root certificates: {e}")))?;
            Arc::new(Verify {
                inner: webpki,
                check_name: self.mode == SslMode::VerifyFull,
            })
        } else {
            Arc::new(Unverified(provider.clone()))
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            Some((cert, key)) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect())
                    .map_err(|e| tls_err(format!("client certificate {}: {e}", cert.display())))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_err(format!("client key {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| tls_err(format!("client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(RustlsConnect {
            config: Arc::new(config),
        })
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match self.root.as_deref() {
            None => {
                return Err(tls_err(format!(
                    "sslmode={} needs a root certificate: give sslrootcert=FILE (or system), \
                     set PGSSLROOTCERT, or put it in ~/.postgresql/root.crt",
                    self.mode.name()
                )))
            }
            Some("system") => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
            Some(file) => {
                let certs = CertificateDer::pem_file_iter(file)
                    .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| tls_err(format!("root certificate {file}: {e}")))?;
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| tls_err(format!("root certificate {file}: {e}")))?;
                }
            }
        }
        if roots.is_empty() {
            return Err(tls_err("no usable root certificate"));
        }
        Ok(roots)
    }
}

/// `verify-ca` and `verify-full`: the chain is checked; the name only for `verify-full`.
#[derive(Debug)]
struct Verify {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted, not authenticated (as
/// libpq); the handshake signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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

/// tokio-postgres's TLS hook, over rustls.
#[derive(Clone)]
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connector;
    type Error = std::io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> std::io::Result<Connector> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| std::io::Error::other(format!("server name {domain:?}: {e}")))?;
        Ok(Connector {
            config: self.config.clone(),
            name,
        })
    }
}

/// One handshake.
pub(crate) struct Connector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(TlsStream(s))
        })
    }
}

/// An encrypted connection.
pub(crate) struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// Whether the server at `host:port` would ask `user` for the password in clear text
/// (authentication request 3) on a plain connection. Asks, reads the answer, hangs up
/// before any password is sent (PostgreSQL logs nothing for that).
///
/// # Errors
/// The server cannot be reached.
pub(crate) fn asks_cleartext(host: &str, port: u16, user: &str, database: &str) -> Result<bool> {
    let io = |e: std::io::Error| tls_err(format!("asking {host}:{port} how it authenticates: {e}"));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(io)?
        .next()
        .ok_or_else(|| tls_err(format!("{host}: no address")))?;
    let timeout = std::time::Duration::from_secs(30);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for (k, v) in [("user", user), ("database", database)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    s.write_all(&msg).map_err(io)?;
    let mut head = [0u8; 9];
    if s.read_exact(&mut head).is_err() {
        return Ok(false); // let the real connection report what is wrong
    }
    let code = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    Ok(head[0] == b'R' && code == 3)
}
