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

#[test]
fn a_node_exports_over_tls_with_the_authority_it_was_given_and_not_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path());
    let token = dir.path().join("otlp.token");
    std::fs::write(&token, "node-token-0123456789\n").expect("token");
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
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--otlp-token-file")
        .arg(&token)
        .arg("--data-dir")
        .arg(dir.path().join("collector"));
    let collector = Child::spawn(
        "collector",
        command,
        &dir.path().join("collector.log"),
        Duration::from_secs(60),
    )
    .expect("the collector starts");
    let ready = zerostate_node::console::Ready::parse(collector.ready())
        .expect("a ready line")
        .collector
        .expect("a collector's ready line");
    assert!(ready.otlp.starts_with("https://"), "{ready:?}");
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
