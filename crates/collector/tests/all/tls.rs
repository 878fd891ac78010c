//! TLS and tokens between a real exporter (`zerostate-telemetry`'s OTLP/HTTP client) and
//! the collector: the exporter trusts the authority it was given and no other, mutual TLS
//! with a client certificate, a wrong OTLP token answered 401 and counted, and a query API
//! closed without its read token. Certificates are made for each test with `rcgen`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use zerostate_collector::Collector;
use zerostate_telemetry::{TelemetryBuilder, TelemetryConfig};

use crate::harness::collector;

/// A certificate authority, a server certificate for 127.0.0.1 and a client certificate,
/// as PEM files in `dir`.
pub(crate) struct Pki {
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// Another authority, which signed nothing here.
    stranger: PathBuf,
}

fn authority(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params.self_signed(&key).expect("CA"), key)
}

pub(crate) fn pki(dir: &Path) -> Pki {
    let (ca, ca_key) = authority("zerostate test CA");
    let server_key = KeyPair::generate().expect("key");
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let server = server
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server certificate");
    let client_key = KeyPair::generate().expect("key");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("params");
    client
        .distinguished_name
        .push(DnType::CommonName, "edge-node-1");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client
        .signed_by(&client_key, &ca, &ca_key)
        .expect("client certificate");
    let (stranger, _) = authority("someone else");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        stranger: write("stranger.pem", stranger.pem()),
    }
}

/// Log lines written by the exporter under test.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lines").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lines")).into_owned()
    }
}

/// Exports one span to `collector` over HTTPS as `tune` configures the exporter; the
/// flush's outcome and the exporter's log.
async fn export(collector: &Collector, tune: impl FnOnce(&mut TelemetryConfig)) -> (bool, String) {
    let mut config = TelemetryConfig {
        service_name: "tls-test".into(),
        endpoint: format!("https://{}", collector.otlp_addr),
        ..TelemetryConfig::default()
    };
    config.batch.export_timeout_ms = 3000;
    // One span, counted: no export account beside it.
    config.account_interval_ms = 0;
    tune(&mut config);
    let lines = Lines::default();
    let writer = lines.clone();
    tokio::task::spawn_blocking(move || {
        let (dispatch, guard) = TelemetryBuilder::new(config)
            .with_log_writer(move || writer.clone())
            .build()
            .expect("telemetry");
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("tls.test").in_scope(|| {});
        });
        let flushed = guard.force_flush();
        (flushed.is_ok(), lines.text())
    })
    .await
    .expect("export thread")
}

fn token(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).expect("token");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_trusts_the_authority_it_was_given_and_the_token_is_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());
    let otlp_token = "otlp-token-0123456789";
    let read_token = "read-token-0123456789";
    let c = collector(&dir.path().join("traces"), |config| {
        config.tls_cert = Some(pki.server_cert.clone());
        config.tls_key = Some(pki.server_key.clone());
        config.otlp_token_file = Some(token(dir.path(), "otlp.token", otlp_token));
        config.read_token_file = Some(token(dir.path(), "read.token", read_token));
    })
    .await;
    let bearer = |t: &str| {
        [("authorization".to_owned(), format!("Bearer {t}"))]
            .into_iter()
            .collect()
    };

    // The authority it was given, and the token: stored.
    let (ok, log) = export(&c, |config| {
        config.certificate = Some(pki.ca.clone());
        config.headers = bearer(otlp_token);
    })
    .await;
    assert!(ok, "{log}");
    assert_eq!(c.stats().spans_stored, 1);

    // The system's roots, or another authority: the handshake fails, and the one
    // warning says why.
    for certificate in [None, Some(pki.stranger.clone())] {
        let (ok, log) = export(&c, |config| {
            config.certificate = certificate;
            config.headers = bearer(otlp_token);
        })
        .await;
        assert!(!ok, "{log}");
        assert!(
            log.contains("certificate") || log.contains("UnknownIssuer"),
            "the warning names the certificate problem: {log}"
        );
    }

    // A wrong token: 401, counted, nothing stored.
    let (ok, log) = export(&c, |config| {
        config.certificate = Some(pki.ca.clone());
        config.headers = bearer("not-the-token-at-all");
    })
    .await;
    assert!(!ok, "{log}");
    assert!(log.contains("401"), "{log}");
    assert_eq!(c.stats().unauthorized, 1);
    assert_eq!(c.stats().spans_stored, 1);

    // The query API over TLS: closed without the read token, open with it (header or
    // the viewer's cookie), probes open.
    let roots =
        reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).expect("ca")).expect("certificate");
    let http = reqwest::Client::builder()
        .tls_certs_only([roots])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let ui = format!("https://{}", c.ui_addr);
    let get = |path: &str, auth: Option<&str>| {
        let mut request = http.get(format!("{ui}{path}"));
        if let Some(t) = auth {
            request = request.bearer_auth(t);
        }
        request.send()
    };
    assert_eq!(
        get("/api/v3/services", None).await.expect("get").status(),
        401
    );
    assert_eq!(get("/", None).await.expect("get").status(), 401);
    let services = get("/api/v3/services", Some(read_token))
        .await
        .expect("get");
    assert_eq!(services.status(), 200);
    assert!(services.text().await.expect("body").contains("tls-test"));
    assert_eq!(get("/healthz", None).await.expect("get").status(), 200);
    let login = get(&format!("/login?token={read_token}"), None)
        .await
        .expect("get");
    assert_eq!(login.status(), 303);
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let page = http
        .get(format!("{ui}/"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), 200);
    let wrong = get("/login?token=nope", None).await.expect("get");
    assert_eq!(wrong.status(), 401);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_lets_in_only_a_client_certificate_of_the_authority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());
    let c = collector(&dir.path().join("traces"), |config| {
        config.tls_cert = Some(pki.server_cert.clone());
        config.tls_key = Some(pki.server_key.clone());
        config.tls_client_ca = Some(pki.ca.clone());
    })
    .await;
    let (ok, log) = export(&c, |config| {
        config.certificate = Some(pki.ca.clone());
        config.client_certificate = Some(pki.client_cert.clone());
        config.client_key = Some(pki.client_key.clone());
    })
    .await;
    assert!(ok, "{log}");
    assert_eq!(c.stats().spans_stored, 1);
    let (ok, log) = export(&c, |config| {
        config.certificate = Some(pki.ca.clone());
    })
    .await;
    assert!(!ok, "without a client certificate: {log}");
    assert_eq!(c.stats().spans_stored, 1);
    c.shutdown().await;
}

#[test]
fn a_client_certificate_without_its_key_is_refused_at_start() {
    let config = TelemetryConfig {
        endpoint: "https://127.0.0.1:1".into(),
        client_certificate: Some("/nonexistent/client.pem".into()),
        ..TelemetryConfig::default()
    };
    let error = TelemetryBuilder::new(config)
        .build()
        .expect_err("refused")
        .to_string();
    assert!(error.contains("OTEL_EXPORTER_OTLP_CLIENT_KEY"), "{error}");
}
