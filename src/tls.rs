//! TLS: the server's certificate (loaded at start, reloaded on SIGHUP), the TLS [`Transport`],
//! the client's trust roots, and the self-signed certificate of `actor-chat-server gen-cert`.
//!
//! rustls runs on the *ring* provider, installed explicitly in every config rather than as a
//! process default, so nothing depends on which provider another crate may have enabled; and
//! only TLS 1.2 and 1.3 are offered. The TLS transport does its handshake in
//! [`Transport::open`], on the worker that will serve the connection, after the [`Gate`] has
//! given it a slot: a handshake counts against `server.max_connections` and the per-address
//! limit like any connection, and one that does not finish within `heartbeat.login_timeout_secs`
//! is dropped, so a client that connects and says nothing (or speaks plain text) costs a slot
//! only for that long.
//!
//! [`Gate`]: crate::server::Gate

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ClientConfig, RootCertStore, ServerConfig,
};
use tokio::{
    io::{ReadHalf, WriteHalf},
    net::TcpStream,
    time::timeout,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor, TlsConnector};

use crate::{
    config::TlsSettings,
    connection::{Security, Transport},
    metrics::TransportKind,
};

/// The protocol versions offered and accepted: TLS 1.3, and 1.2 for older clients.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider every config here is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a certificate or key could not be used; the message names the key (`tls.cert`,
/// `tls.key`, or `--ca` for the client) and the file, never the key's contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {path} cannot be read: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{key} {path} holds no {what} in PEM form")]
    NoPem {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{key} {path} is not a usable PEM file: {reason}")]
    BadPem {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls.key {key} cannot be used with tls.cert {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("no trusted certificates found on this system; give the server's with --ca FILE")]
    NoRoots,
    #[error("{0}")]
    Other(String),
}

/// Reads `path` whole; the key named in errors is `key`.
fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in the PEM file at `path`, at least one.
fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadPem {
            key,
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            key,
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("tls.key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPem {
            key: "tls.key",
            path: path.to_owned(),
            what: "private key",
        },
        // The error names a section or its position, not the key's bytes.
        other => TlsError::BadPem {
            key: "tls.key",
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// A server config for the certificate chain and key in these files.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates("tls.cert", cert)?;
    let private = private_key(key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|error| TlsError::Other(error.to_string()))?
        .with_no_client_auth()
        // Fails unless the key is well formed and belongs to the first certificate.
        .with_single_cert(chain, private)
        .map_err(|error| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: error.to_string(),
        })?;
    Ok(Arc::new(config))
}

/// The server's certificate and key: loaded at start, replaced by [`Certificates::reload`]
/// (on SIGHUP) so that a renewed certificate serves new connections without a restart.
/// Connections already open keep the one they were made with.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads `tls.cert` and `tls.key`; an error names the key and the file at fault.
    pub fn load(settings: &TlsSettings) -> Result<Arc<Certificates>, TlsError> {
        let config = server_config(&settings.cert, &settings.key)?;
        Ok(Arc::new(Certificates {
            cert: settings.cert.clone(),
            key: settings.key.clone(),
            current: RwLock::new(config),
        }))
    }

    /// Reads the files again; on success new connections get the new certificate, on failure
    /// the old one stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The certificate file, for the log.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// A server config for the HTTPS listener (`http.tls`) whose certificate is always the one
    /// in use now: it asks this `Certificates` on every handshake, so a SIGHUP reload reaches
    /// HTTPS too, although actix-web keeps the config it was given for its whole life.
    pub fn http_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|error| TlsError::Other(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Current(self.clone())));
        Ok(config)
    }

    /// An acceptor with the certificate in use now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }
}

/// Resolves every handshake to the certificate [`Certificates`] holds at that moment.
#[derive(Debug)]
struct Current(Arc<Certificates>);

impl ResolvesServerCert for Current {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let config = self
            .0
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        config.cert_resolver.resolve(hello)
    }
}

/// A TCP connection on the TLS port, its handshake still to do (in [`Transport::open`]).
pub(crate) struct TlsTransport {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) acceptor: TlsAcceptor,
    /// `heartbeat.login_timeout_secs`: how long the handshake may take.
    pub(crate) handshake_timeout: Duration,
}

impl Transport for TlsTransport {
    type Reader = ReadHalf<TlsStream<TcpStream>>;
    type Writer = WriteHalf<TlsStream<TcpStream>>;
    const KIND: TransportKind = TransportKind::Tls;

    async fn open(self) -> io::Result<(Self::Reader, Self::Writer)> {
        let stream = TcpStream::from_std(self.stream)?;
        match timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Ok(tokio::io::split(stream)),
            // Plain text on the TLS port, a client that gave up, or one that does not trust
            // us: its business, logged at debug by the caller.
            Ok(Err(error)) => Err(io::Error::new(
                error.kind(),
                format!("TLS handshake failed: {error}"),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake not finished within heartbeat.login_timeout_secs",
            )),
        }
    }

    fn security(&self) -> Security {
        Security::Encrypted
    }
}

/// A client config that trusts the certificates in `ca` (for a self-signed server), or else
/// the system's trust store.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certificates("--ca", path)? {
                roots.add(cert).map_err(|error| TlsError::BadPem {
                    key: "--ca",
                    path: path.to_owned(),
                    reason: error.to_string(),
                })?;
            }
        }
        None => {
            // Unreadable entries of the system store are skipped: the rest may be enough.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|error| TlsError::Other(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A connector for [`client_config`].
pub fn connector(config: Arc<ClientConfig>) -> TlsConnector {
    TlsConnector::from(config)
}

/// The name to check the server's certificate against, from `HOST:PORT` (`[::1]:9999` too).
pub fn server_name(server: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match server.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => server,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned())
        .map_err(|_| TlsError::Other(format!("{host:?} is not a host name or an IP address")))
}

/// A self-signed certificate for `names` (host names or IP addresses), and its private key,
/// both as PEM: enough to try TLS out, not to be trusted by anyone who did not copy it.
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|error| TlsError::Other(format!("cannot make a certificate: {error}")))?;
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.clone());
    }
    let key = rcgen::KeyPair::generate()
        .map_err(|error| TlsError::Other(format!("cannot make a key: {error}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|error| TlsError::Other(format!("cannot sign the certificate: {error}")))?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_host_and_port() {
        for (server, name) in [
            ("localhost:9999", "localhost"),
            ("chat.example.org:443", "chat.example.org"),
            ("127.0.0.1:9999", "127.0.0.1"),
            ("[::1]:9999", "::1"),
        ] {
            let parsed = server_name(server).expect("a valid name");
            assert_eq!(parsed.to_str(), name, "{server}");
        }
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn a_generated_certificate_loads_and_bad_files_name_their_key() {
        let dir = std::env::temp_dir().join(format!("actor-chat-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let (cert, key) = self_signed(&["localhost".to_owned()]).expect("a certificate");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, cert).expect("write the certificate");
        std::fs::write(&key_path, key).expect("write the key");
        let settings = TlsSettings {
            bind: "127.0.0.1:0".parse().expect("an address"),
            cert: cert_path.clone(),
            key: key_path.clone(),
        };
        let certificates = Certificates::load(&settings).expect("the pair loads");
        certificates.reload().expect("and reloads");
        assert!(client_config(Some(&cert_path)).is_ok());

        let missing = TlsSettings {
            cert: dir.join("missing.pem"),
            ..settings.clone()
        };
        let error = Certificates::load(&missing).expect_err("a missing file");
        assert!(error.to_string().starts_with("tls.cert "), "{error}");
        let swapped = TlsSettings {
            cert: key_path.clone(),
            key: cert_path.clone(),
            ..settings.clone()
        };
        let error = Certificates::load(&swapped).expect_err("the files swapped");
        assert!(error.to_string().starts_with("tls.cert "), "{error}");
        let (other_cert, _) = self_signed(&["localhost".to_owned()]).expect("a certificate");
        std::fs::write(&cert_path, other_cert).expect("write another certificate");
        let error = Certificates::load(&settings).expect_err("a key for another certificate");
        assert!(error.to_string().starts_with("tls.key "), "{error}");
        // A bad file on reload keeps the old certificate.
        assert!(certificates.reload().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
