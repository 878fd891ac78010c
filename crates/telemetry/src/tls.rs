//! Certificates as users give them: a file of PEM certificates is trusted as authorities a
//! peer's chain must lead to, and also as the very certificates a peer may present. The
//! second is what a certificate made with `openssl req -x509` needs: it is its own issuer
//! and, by `openssl`'s defaults, marked as an authority (`CA:TRUE`), which the WebPKI
//! rules refuse as a server's or a client's own certificate (`CaUsedAsEndEntity`); the Go,
//! Python and Java OpenTelemetry SDKs accept it given as the trusted certificate, and so
//! does ZeroState. A pinned certificate is still checked for the name the peer is reached
//! by (a server) and for every handshake signature; only its place in a chain is not.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// The crypto every TLS connection of ZeroState uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The PEM certificates in `path` (`what` names the file in errors): at least one.
pub fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {what} {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// The PEM private key in `path`.
pub fn private_key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("reading {what} {}: {e}", path.display()))
}

fn roots(trusted: &[CertificateDer<'static>]) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone()).map_err(|e| e.to_string())?;
    }
    Ok(Arc::new(roots))
}

fn pinned(trusted: &[CertificateDer<'static>], presented: &CertificateDer<'_>) -> bool {
    trusted.iter().any(|c| c.as_ref() == presented.as_ref())
}

/// Handshake signatures, checked with the provider's algorithms whoever the peer is.
#[derive(Debug)]
struct Signatures(Arc<CryptoProvider>);

impl Signatures {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
}

/// Checks servers against certificates given as trusted: a chain to one of them, or one of
/// them presented as the server's own (for the name it is reached by).
#[derive(Debug)]
pub struct TrustedServers {
    chained: Arc<rustls::client::WebPkiServerVerifier>,
    trusted: Vec<CertificateDer<'static>>,
    signatures: Signatures,
}

impl TrustedServers {
    /// Trusting `trusted` (from one PEM file, say).
    pub fn new(trusted: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        let provider = provider();
        let chained = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(&trusted)?,
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        Ok(Self {
            chained,
            trusted,
            signatures: Signatures(provider),
        })
    }
}

impl ServerCertVerifier for TrustedServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.chained.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(refused) if pinned(&self.trusted, end_entity) => {
                // The very certificate trusted: only its name is left to check.
                let parsed =
                    rustls::server::ParsedCertificate::try_from(end_entity).map_err(|_| refused)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(refused) => Err(refused),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chained.supported_verify_schemes()
    }
}

/// A client's TLS configuration trusting servers by `trusted` ([`TrustedServers`]), with
/// `identity` (a certificate chain and its key) for servers that ask for one.
pub fn client_config(
    trusted: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustedServers::new(trusted)?));
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the client certificate and its key: {e}")),
    }
}

/// Requires clients to present a certificate that chains to one given as trusted, or is
/// one of them.
#[derive(Debug)]
pub struct TrustedClients {
    chained: Arc<dyn ClientCertVerifier>,
    trusted: Vec<CertificateDer<'static>>,
    signatures: Signatures,
}

impl TrustedClients {
    /// Trusting `trusted` (from one PEM file, say).
    pub fn new(trusted: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        let provider = provider();
        let chained = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&trusted)?,
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        Ok(Self {
            chained,
            trusted,
            signatures: Signatures(provider),
        })
    }
}

impl ClientCertVerifier for TrustedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chained.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self
            .chained
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => Ok(verified),
            Err(_) if pinned(&self.trusted, end_entity) => Ok(ClientCertVerified::assertion()),
            Err(refused) => Err(refused),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chained.supported_verify_schemes()
    }
}
