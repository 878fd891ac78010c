//! A listener told to stop drains: the request under way is answered, then it returns; one
//! busy past the drain timeout is cut off and counted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zerostate_http::{ServeLimits, ServeStats, serve};

/// A listener on loopback serving `/slow` after `delay`; its address, its counts, the switch
/// that stops it and the task serving it.
async fn start(
    delay: Duration,
    limits: ServeLimits,
) -> (
    std::net::SocketAddr,
    Arc<ServeStats>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route(
        "/slow",
        get(move || async move {
            tokio::time::sleep(delay).await;
            "done"
        }),
    );
    let stats = Arc::new(ServeStats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, app, limits, stats.clone(), async move {
        let _ = stopped.await;
    }));
    (addr, stats, stop, served)
}

/// Sends `GET /slow` on a new connection; the whole answer.
async fn slow(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_stopping_listener_answers_the_request_under_way_then_returns() {
    let (addr, stats, stop, served) =
        start(Duration::from_millis(400), ServeLimits::default()).await;
    let asking = tokio::spawn(slow(addr));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped_at = Instant::now();
    stop.send(()).expect("stop");
    let answer = asking.await.expect("asked");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
    // The connection was closed after its answer, not kept alive.
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    tokio::time::timeout(Duration::from_secs(2), served)
        .await
        .expect("the listener returned once the answer was given")
        .expect("served");
    assert!(stopped_at.elapsed() < Duration::from_secs(2));
    assert_eq!(stats.cut_off.load(Ordering::Relaxed), 0);
    // And it takes no new connection.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_request_busy_past_the_drain_timeout_is_cut_off_and_counted() {
    let limits = ServeLimits {
        drain_timeout: Duration::from_millis(200),
        ..ServeLimits::default()
    };
    let (addr, stats, stop, served) = start(Duration::from_secs(30), limits).await;
    let asking = tokio::spawn(slow(addr));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(2), served)
        .await
        .expect("the listener returned at the drain timeout")
        .expect("served");
    assert_eq!(stats.cut_off.load(Ordering::Relaxed), 1);
    asking.abort();
}
