//! A `zerostate node` process exporting to a `zerostate collector` process over TLS with a
//! token: it delivers when given the collector's authority, and otherwise says why in its
//! log, keeps running, and delivers nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use zerostate_node::process::{Child, stop_all};

use crate::cluster::{NodeProcess, eventually};

/// An authority and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`:
/// (authority, certificate, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "zerostate test CA");
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let server = server.signed_by(&key, &ca, &ca_key).expect("certificate");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", server.pem()),
        write("server.key", key.serialize_pem()),
    )
}

/// The body of `url`, read over HTTPS trusting only the authority in `ca`.
fn https_get(url: &str, ca: &Path) -> String {
    let roots = reqwest::Certificate::from_pem(&std::fs::read(ca).expect("ca")).expect("pem");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        reqwest::Client::builder()
            .tls_certs_only([roots])
            .build()
            .expect("client")
            .get(url)
            .send()
            .await
            .expect("the collector answers over TLS")
            .text()
            .await
            .expect("body")
    })
}

/// The collector's counters, read over HTTPS with the authority.
fn stats(ui: &str, ca: &Path) -> serde_json::Value {
    serde_json::from_str(&https_get(&format!("{ui}/api/zerostate/stats"), ca)).expect("json")
}

/// A `zerostate collector` process in `dir` serving TLS with `cert` and `key`, with the
/// further flags `more`; it and its ready line.
fn tls_collector(
    dir: &Path,
    cert: &Path,
    key: &Path,
    more: &[&std::ffi::OsStr],
) -> (Child, zerostate_node::console::CollectorReady) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zerostate"));
    command
        .args([
            "collector",
            "--otlp-http",
            "127.0.0.1:0",
            "--ui",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .args(more)
        .arg("--data-dir")
        .arg(dir.join("collector"));
    let collector = Child::spawn(
        "collector",
        command,
        &dir.join("collector.log"),
        Duration::from_secs(60),
    )
    .expect("the collector starts");
    let ready = zerostate_node::console::Ready::parse(collector.ready())
        .expect("a ready line")
        .collector
        .expect("a collector's ready line");
    assert!(ready.otlp.starts_with("https://"), "{ready:?}");
    (collector, ready)
}

#[test]
fn a_node_exports_over_tls_with_the_authority_it_was_given_and_not_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path());
    let token = dir.path().join("otlp.token");
    std::fs::write(&token, "node-token-0123456789\n").expect("token");
    let (collector, ready) = tls_collector(
        dir.path(),
        &cert,
        &key,
        &["--otlp-token-file".as_ref(), token.as_os_str()],
    );
    let header = "authorization=Bearer node-token-0123456789";
    let trusted = NodeProcess::start_with_env(
        dir.path(),
        "with-ca",
        &["--listen", "/ip4/127.0.0.1/tcp/0"],
        &ready.otlp,
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca.to_string_lossy()),
            ("OTEL_EXPORTER_OTLP_HEADERS", header),
        ],
    );
    let untrusted = NodeProcess::start_with_env(
        dir.path(),
        "without-ca",
        &["--listen", "/ip4/127.0.0.1/tcp/0"],
        &ready.otlp,
        &[("OTEL_EXPORTER_OTLP_HEADERS", header)],
    );
    // Each node's start makes spans (its subscriptions); the trusting one's arrive.
    eventually("the node with the authority's spans stored", || {
        (stats(&ready.ui, &ca)["spans_stored"].as_u64()? > 0).then_some(())
    });
    let log = dir.path().join("without-ca.log");
    eventually("the warning of the node without it", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("UnknownIssuer").then_some(())
    });
    let services = https_get(&format!("{}/api/v3/services", ready.ui), &ca);
    assert!(services.contains("with-ca"), "{services}");
    assert!(!services.contains("without-ca"), "{services}");
    assert_eq!(stats(&ready.ui, &ca)["unauthorized"], 0);
    crate::cluster::stop_cleanly(vec![trusted, untrusted]);
    let _ = stop_all(vec![collector], Duration::from_secs(15));
}

/// A self-signed certificate for 127.0.0.1 made as users make one, with the `openssl`
/// one-liner (which marks it `CA:TRUE`), as PEM files in `dir`: (certificate, key).
fn openssl_self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (scripts/test-deps.sh installs it)");
    assert!(made.status.success(), "{}", crate::text(&made.stderr));
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl runs");
    // The case the WebPKI rules refuse as a server's own certificate.
    assert!(
        crate::text(&text.stdout).contains("CA:TRUE"),
        "{}",
        crate::text(&text.stdout)
    );
    (cert, key)
}

/// A node exports to a collector whose certificate is self-signed by `openssl req -x509`,
/// given to the node as its trusted certificate; the collector in turn requires a client
/// certificate and trusts the node's, self-signed the same way. A node without a client
/// certificate is refused.
#[test]
fn a_node_exports_to_a_collector_with_openssl_self_signed_certificates_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server_cert, server_key) = openssl_self_signed(dir.path(), "server");
    let (client_cert, client_key) = openssl_self_signed(dir.path(), "client");
    let (collector, ready) = tls_collector(
        dir.path(),
        &server_cert,
        &server_key,
        &["--tls-client-ca".as_ref(), client_cert.as_os_str()],
    );
    let server = server_cert.to_string_lossy();
    let with_cert = NodeProcess::start_with_env(
        dir.path(),
        "self-signed",
        &["--listen", "/ip4/127.0.0.1/tcp/0"],
        &ready.otlp,
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &server),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                &client_cert.to_string_lossy(),
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                &client_key.to_string_lossy(),
            ),
        ],
    );
    let without_cert = NodeProcess::start_with_env(
        dir.path(),
        "no-client-cert",
        &["--listen", "/ip4/127.0.0.1/tcp/0"],
        &ready.otlp,
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", &server)],
    );
    // Read as the node reads: the collector's own certificate trusted, the client's given.
    let tls = zerostate_telemetry::tls::client_config(
        zerostate_telemetry::tls::certificates("server", &server_cert).expect("server"),
        Some((
            zerostate_telemetry::tls::certificates("client", &client_cert).expect("client"),
            zerostate_telemetry::tls::private_key("client key", &client_key).expect("key"),
        )),
    )
    .expect("a client config");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client");
    let get = |path: &str| -> Option<String> {
        runtime.block_on(async {
            let answer = client
                .get(format!("{}{path}", ready.ui))
                .send()
                .await
                .ok()?;
            answer.text().await.ok()
        })
    };
    eventually("the self-signed node's spans stored", || {
        let services = get("/api/v3/services")?;
        services.contains("self-signed").then_some(())
    });
    let log = dir.path().join("no-client-cert.log");
    eventually(
        "the warning of the node without a client certificate",
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("CertificateRequired").then_some(())
        },
    );
    let services = get("/api/v3/services").expect("services");
    assert!(!services.contains("no-client-cert"), "{services}");
    crate::cluster::stop_cleanly(vec![with_cert, without_cert]);
    let _ = stop_all(vec![collector], Duration::from_secs(15));
}
