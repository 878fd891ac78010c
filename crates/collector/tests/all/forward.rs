//! Forwarding: what the collector stores also reaches another OTLP/HTTP backend, and a dead
//! backend costs the senders nothing.

use prost::Message;
use zerostate_telemetry::testing::OtlpReceiver;

use crate::harness::{collector, eventually, post, request, span};

#[test]
fn stored_spans_are_forwarded_to_another_backend() {
    // The backend runs its own runtime, so it is started and dropped outside this one.
    let backend = OtlpReceiver::start();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(forwarded_to(&backend));
}

async fn forwarded_to(backend: &OtlpReceiver) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |cfg| cfg.forward = Some(backend.endpoint())).await;
    let batch = request("forwarded-service", vec![span(7, 1, 0, "root", 0, 5)]);
    let answer = post(&c, "application/x-protobuf", false, batch.encode_to_vec()).await;
    assert_eq!(answer.status(), 200);
    let spans = eventually("the span at the other backend", || async {
        let spans = backend.spans();
        (!spans.is_empty()).then_some(spans)
    })
    .await;
    assert_eq!(spans[0].service, "forwarded-service");
    assert_eq!(spans[0].span.name, "root");
    eventually("the batch counted as forwarded", || async {
        (c.stats().forward_sent == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_counted_and_the_sender_still_gets_its_answer() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |cfg| {
        cfg.forward = Some(format!("http://127.0.0.1:{port}"));
    })
    .await;
    let batch = request("s", vec![span(8, 1, 0, "root", 0, 5)]);
    let answer = post(&c, "application/x-protobuf", false, batch.encode_to_vec()).await;
    assert_eq!(answer.status(), 200, "stored, whatever the backend does");
    eventually("the failed forward counted", || async {
        (c.stats().forward_failed == 1).then_some(())
    })
    .await;
    assert_eq!(c.stats().spans_stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_forwarded_over_tls_with_the_backends_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = crate::tls::pki(dir.path());
    let token = "backend-token-0123456789";
    let token_file = dir.path().join("otlp.token");
    std::fs::write(&token_file, token).expect("token");
    // The backend: another collector, on TLS, wanting a token.
    let backend = collector(&dir.path().join("backend"), |cfg| {
        cfg.tls_cert = Some(pki.server_cert.clone());
        cfg.tls_key = Some(pki.server_key.clone());
        cfg.otlp_token_file = Some(token_file.clone());
    })
    .await;
    let url = format!("https://{}", backend.otlp_addr);
    let front = collector(&dir.path().join("front"), |cfg| {
        cfg.forward = Some(url.clone());
        cfg.forward_certificate = Some(pki.ca.clone());
        cfg.forward_headers = [("authorization".to_owned(), format!("Bearer {token}"))]
            .into_iter()
            .collect();
    })
    .await;
    let batch = request("forwarded-service", vec![span(8, 1, 0, "root", 0, 5)]);
    let answer = post(
        &front,
        "application/x-protobuf",
        false,
        batch.encode_to_vec(),
    )
    .await;
    assert_eq!(answer.status(), 200);
    eventually("the span stored at the backend", || async {
        (backend.stats().spans_stored == 1).then_some(())
    })
    .await;
    // The backend may store the span before the front has read its answer and counted it.
    eventually("the forward counted as sent", || async {
        (front.stats().forward_sent == 1).then_some(())
    })
    .await;
    assert_eq!(backend.stats().unauthorized, 0);
    // Without the backend's authority, every try fails on its certificate and is counted.
    let stranger = collector(&dir.path().join("stranger"), |cfg| {
        cfg.forward = Some(url.clone());
    })
    .await;
    let batch = request("forwarded-service", vec![span(9, 1, 0, "root", 0, 5)]);
    post(
        &stranger,
        "application/x-protobuf",
        false,
        batch.encode_to_vec(),
    )
    .await;
    eventually("the failed batch counted", || async {
        (stranger.stats().forward_failed == 1).then_some(())
    })
    .await;
    assert_eq!(backend.stats().spans_stored, 1);
    for c in [front, stranger, backend] {
        c.shutdown().await;
    }
}
