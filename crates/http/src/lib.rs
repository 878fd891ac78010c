//! Serving HTTP with bounds, for every listener of ZeroState (the collector's OTLP and query
//! ports, a node's API): a slow or idle client cannot hold a connection for long, and no
//! more than a fixed number are open at once.
//!
//! - **Connection cap**: at most [`ServeLimits::max_connections`] connections are served at
//!   once; further clients wait in the kernel's accept queue until one closes (counted as
//!   [`ServeStats::at_capacity`]), they are not refused.
//! - **Header-read timeout**: a request's headers must arrive within
//!   [`ServeLimits::header_read_timeout`], or the connection is closed.
//! - **Idle timeout**: a connection on which no byte moves in either direction for
//!   [`ServeLimits::idle_timeout`] is closed (between keep-alive requests too).
//! - **Request timeout**: a request (reading its body included) that is not answered within
//!   [`ServeLimits::request_timeout`] is answered 408 and its work dropped.
//! - **Drain on shutdown**: once told to stop, a listener takes no new connection; each open
//!   one finishes the request under way (a keep-alive connection waiting for its next
//!   request is closed at once) within [`ServeLimits::drain_timeout`], after which what is
//!   left is cut off and counted ([`ServeStats::cut_off`]).
//!
//! [`address`] is the one way an address is written, for a listener and for a client.

pub mod address;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

/// The bounds of one listener. Every field says its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections served at once. Default 256.
    pub max_connections: usize,
    /// Time for a request's headers to arrive. Default 10 s.
    pub header_read_timeout: Duration,
    /// Time a connection may stay silent. Default 60 s.
    pub idle_timeout: Duration,
    /// Time to read a request and answer it. Default 60 s.
    pub request_timeout: Duration,
    /// Time the requests under way have to be answered once the listener stops. Default
    /// 5 s.
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// What a listener counted.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Times a new connection had to wait because the cap was reached.
    pub at_capacity: AtomicU64,
    /// Connections closed for moving no byte within the idle timeout.
    pub idle_closed: AtomicU64,
    /// Requests answered 408 for taking longer than the request timeout.
    pub request_timeouts: AtomicU64,
    /// TLS handshakes that failed or did not end within the header-read timeout.
    pub tls_failed: AtomicU64,
    /// Connections still busy when the drain timeout ran out on shutdown.
    pub cut_off: AtomicU64,
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes; counts go to
/// `stats`; then drains the connections still open (see the module's doc) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    stats: Arc<ServeStats>,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, app, limits, stats, shutdown, None).await;
}

/// [`serve`] over TLS when `tls` is given: the handshake must end within the header-read
/// timeout, and one that fails closes the connection (counted in
/// [`ServeStats::tls_failed`]).
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    stats: Arc<ServeStats>,
    shutdown: impl Future<Output = ()>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let timeout_stats = stats.clone();
    let request_timeout = limits.request_timeout;
    let app = app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let stats = timeout_stats.clone();
            async move {
                match tokio::time::timeout(request_timeout, next.run(req)).await {
                    Ok(response) => response,
                    Err(_) => {
                        stats.request_timeouts.fetch_add(1, Ordering::Relaxed);
                        (
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request was not read and answered within {} s\n",
                                request_timeout.as_secs()
                            ),
                        )
                            .into_response()
                    }
                }
            }
        },
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Told to every connection when the listener stops, and what they are waited for by.
    let closing = tokio_util::sync::CancellationToken::new();
    let open = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                stats.at_capacity.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let stats = stats.clone();
        let tls = tls.clone();
        let closing = closing.clone();
        open.spawn(async move {
            let idle = Idle::new(stream, limits.idle_timeout);
            let result = match tls {
                None => connection(idle, service, limits, closing).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(idle));
                    let accepted = tokio::select! {
                        accepted = handshake => accepted,
                        () = closing.cancelled() => return,
                    };
                    match accepted {
                        Ok(Ok(stream)) => connection(stream, service, limits, closing).await,
                        Ok(Err(e)) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!("a TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result
                && is_idle_timeout(&e)
            {
                stats.idle_closed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    // Stopped: no new connection; those open answer what they are answering, then close.
    drop(listener);
    closing.cancel();
    open.close();
    if tokio::time::timeout(limits.drain_timeout, open.wait())
        .await
        .is_err()
    {
        let left = open.len();
        stats.cut_off.fetch_add(left as u64, Ordering::Relaxed);
        tracing::warn!(
            "{left} connections still busy {} ms after the listener stopped: cut off",
            limits.drain_timeout.as_millis()
        );
    }
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until it closes; once `closing` is
/// cancelled, it finishes the request under way and closes.
async fn connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    limits: ServeLimits,
    closing: tokio_util::sync::CancellationToken,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => return result,
        () = closing.cancelled() => {}
    }
    served.as_mut().graceful_shutdown();
    served.await
}

/// Whether `e` is the idle timeout closing a connection.
fn is_idle_timeout(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// A TCP stream that fails with `TimedOut` once no byte has moved for `limit`.
struct Idle {
    stream: TcpStream,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(stream: TcpStream, limit: Duration) -> Self {
        Self {
            stream,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.limit);
    }

    /// When the inner operation is pending: a timeout error once the deadline passed.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle for too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Idle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.moved();
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl AsyncWrite for Idle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.moved();
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
