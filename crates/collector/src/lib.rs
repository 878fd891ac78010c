//! ZeroState's embedded collector: OTLP/HTTP traces in from ZeroState nodes or any
//! OpenTelemetry SDK, kept on disk in SQLite (bounded by age and bytes, surviving
//! restarts), and served by a query API compatible with Jaeger's api_v3.
//!
//! ```no_run
//! # async fn example() -> Result<(), zerostate_collector::CollectorError> {
//! use zerostate_collector::{Collector, CollectorConfig};
//!
//! let mut config = CollectorConfig::default();
//! config.data_dir = "/tmp/zerostate-traces".into();
//! let collector = Collector::start(config).await?;
//! println!("OTLP on http://{}, queries on http://{}", collector.otlp_addr, collector.ui_addr);
//! # Ok(())
//! # }
//! ```
//!
//! The UI address also serves the web viewer: trace search, a trace's waterfall with span
//! details and its critical path, the gossip fan-out, the service map and the
//! per-operation latency table, from one page with no external resources.

mod counters;
mod estimate;
mod forward;
mod query;
mod receiver;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod tls;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zerostate_http as serve;
use zerostate_telemetry::error_chain;

pub use counters::CollectorStats;
pub use store::{
    Checkpointer, Edge, OperationStats, Prepared, Preparer, Store, StoreError, TraceQuery,
};

use counters::Counters;

/// Most requests the store's writer commits in one transaction.
const GROUP_COMMIT: usize = 16;
/// How often the checkpointer copies the write-ahead log into the store.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Starts the thread that checkpoints the store in `dir` every [`CHECKPOINT_EVERY`]
/// until `writing` is closed.
fn checkpoints(
    dir: &std::path::Path,
    writing: std::sync::mpsc::Receiver<()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let checkpointer = Checkpointer::open(dir)?;
    std::thread::Builder::new()
        .name("zerostate-collector-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                writing.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = checkpointer.checkpoint() {
                    tracing::warn!("checkpointing the store: {}", error_chain(&e));
                }
            }
        })?;
    Ok(())
}

/// How the collector runs. Every field says its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// OTLP/HTTP listen address. Default `127.0.0.1:4318`.
    #[serde(deserialize_with = "zerostate_http::address::deserialize_listen_addr")]
    pub otlp_http: SocketAddr,
    /// Query API and viewer listen address. Default `127.0.0.1:16686`.
    #[serde(deserialize_with = "zerostate_http::address::deserialize_listen_addr")]
    pub ui: SocketAddr,
    /// Where the store lives. Default `./zerostate-traces`.
    pub data_dir: PathBuf,
    /// How long spans are kept, in seconds. Default 7 days.
    pub retention_secs: u64,
    /// Most bytes the store may use; the oldest spans go first. Default 1 GiB.
    pub max_bytes: u64,
    /// Largest request body, before and after decompression. Default 64 MiB.
    pub max_body_bytes: usize,
    /// Export requests waiting for the store; beyond this the receiver answers 503 with
    /// `Retry-After`. Default 64.
    pub queue_requests: usize,
    /// Requests read, decompressed and decoded at once. Default 2.
    pub max_concurrent_decodes: usize,
    /// Memory that decoded requests not yet stored may take, bytes; a request that would
    /// take more alone is refused (413), one that does not fit now waits (503). Default
    /// 256 MiB.
    pub max_decoded_bytes: u64,
    /// Readers of the store serving queries at once (one heavy query does not stall the
    /// others). Default 4.
    pub query_readers: usize,
    /// Connections each listener serves at once. Default 256.
    pub max_connections: usize,
    /// Time for a request's headers to arrive, milliseconds. Default 10,000.
    pub header_read_timeout_ms: u64,
    /// Time a connection may stay silent, milliseconds. Default 60,000.
    pub idle_timeout_ms: u64,
    /// Time to read a request and answer it, milliseconds. Default 60,000.
    pub request_timeout_ms: u64,
    /// An OTLP/HTTP endpoint every stored batch is also sent to (a base URL gets
    /// `/v1/traces`), as protobuf; the collector's answers never wait for it. Default none.
    pub forward: Option<String>,
    /// Headers sent with every forwarded batch (the backend's token). Default none.
    pub forward_headers: std::collections::BTreeMap<String, String>,
    /// The authorities (PEM) the forward backend's certificate must chain to, instead of
    /// the system's. Default none.
    pub forward_certificate: Option<PathBuf>,
    /// TLS on both listeners: the certificate chain (PEM). Needs `tls_key`. Default none
    /// (plain HTTP, for loopback).
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// With TLS: require client certificates signed by this authority (PEM). Default none.
    pub tls_client_ca: Option<PathBuf>,
    /// A file whose first line is the bearer token OTLP intake requires (`Authorization:
    /// Bearer`); a request without it is answered 401 and counted. Default none.
    pub otlp_token_file: Option<PathBuf>,
    /// A file whose first line is the token the query API and viewer require (a header,
    /// or the cookie `GET /login?token=` sets for a browser). Default none.
    pub read_token_file: Option<PathBuf>,
}

impl CollectorConfig {
    fn serve_limits(&self) -> serve::ServeLimits {
        serve::ServeLimits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            ..serve::ServeLimits::default()
        }
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            otlp_http: SocketAddr::from(([127, 0, 0, 1], 4318)),
            ui: SocketAddr::from(([127, 0, 0, 1], 16686)),
            data_dir: PathBuf::from("zerostate-traces"),
            retention_secs: 7 * 24 * 3600,
            max_bytes: 1 << 30,
            max_body_bytes: 64 << 20,
            queue_requests: 64,
            max_concurrent_decodes: 2,
            max_decoded_bytes: 256 << 20,
            query_readers: 4,
            max_connections: 256,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 60_000,
            forward: None,
            forward_headers: std::collections::BTreeMap::new(),
            forward_certificate: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            otlp_token_file: None,
            read_token_file: None,
        }
    }
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectorError {
    /// The store did not open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS or a token is misconfigured (a file missing or not what it should be).
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// An address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running collector.
#[derive(Debug)]
pub struct Collector {
    /// Where OTLP/HTTP is received.
    pub otlp_addr: SocketAddr,
    /// Where the query API is served.
    pub ui_addr: SocketAddr,
    counters: Arc<Counters>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
    queue: Option<std::sync::mpsc::SyncSender<receiver::Job>>,
    /// What the OTLP listener counted.
    pub otlp_serve_stats: Arc<serve::ServeStats>,
    /// What the query listener counted.
    pub ui_serve_stats: Arc<serve::ServeStats>,
}

/// What the OTLP receiver does with an uncompressed export body before it queues it for
/// the store: the memory decoding would take (refused above `max_decoded_bytes`), the
/// decoding, and the spans with unusable ids dropped. Returns the request and (spans
/// received, spans dropped). The receiver's own path; public for fuzzing.
pub fn decode_export(
    body: &[u8],
    json: bool,
    max_decoded_bytes: u64,
) -> Result<(ExportTraceServiceRequest, u64, u64), String> {
    let needed = if json {
        estimate::json(body)
    } else {
        estimate::protobuf(body)
            .map_err(receiver::not_otlp)?
            .decoded
    };
    if needed > max_decoded_bytes {
        return Err(format!(
            "the request would take {needed} bytes once decoded, more than {max_decoded_bytes}"
        ));
    }
    let mut request = receiver::decode(body, json)?;
    let (received, rejected) = receiver::drop_invalid(&mut request);
    Ok((request, received, rejected))
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Collector {
    /// Opens the store and starts receiving and serving, on the current tokio runtime.
    pub async fn start(config: CollectorConfig) -> Result<Collector, CollectorError> {
        let acceptor = match (&config.tls_cert, &config.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some(tls::acceptor(cert, key, config.tls_client_ca.as_deref())?)
            }
            _ => {
                return Err(tls::TlsError::from(
                    "TLS needs both tls_cert and tls_key (--tls-cert, --tls-key)",
                )
                .into());
            }
        };
        let otlp_token = config
            .otlp_token_file
            .as_deref()
            .map(tls::token)
            .transpose()?;
        let read_token = config
            .read_token_file
            .as_deref()
            .map(tls::token)
            .transpose()?;
        let mut writer_store = Store::open(&config.data_dir)?;
        let preparer = writer_store
            .preparer()
            .expect("a store opened for writing prepares");
        let readers = (0..config.query_readers.max(1))
            .map(|_| Store::reader(&config.data_dir))
            .collect::<Result<Vec<_>, _>>()?;
        let counters = Arc::new(Counters::default());
        let (queue, rx) =
            std::sync::mpsc::sync_channel::<receiver::Job>(config.queue_requests.max(1));
        let retention = Duration::from_secs(config.retention_secs);
        let data_dir = config.data_dir.clone();
        let max_bytes = config.max_bytes;
        let wc = counters.clone();
        let writer = std::thread::Builder::new()
            .name("zerostate-collector-store".into())
            .spawn(move || {
                let mut last_check = Instant::now();
                let enforce = |store: &mut Store| match store.enforce_limits(
                    now_ns(),
                    retention,
                    max_bytes,
                ) {
                    Ok(n) => wc.spans_expired.add(n),
                    Err(e) => tracing::error!("enforcing retention: {}", error_chain(&e)),
                };
                enforce(&mut writer_store);
                // Checkpoints beside the writer, until the writer ends (nothing is ever
                // sent: the channel closes with the writer).
                let (_writing, written) = std::sync::mpsc::sync_channel::<()>(1);
                if let Err(e) = checkpoints(&data_dir, written) {
                    tracing::warn!(
                        "the store's writer will checkpoint itself: {}",
                        error_chain(&*e)
                    );
                }
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(job) => {
                            // A group commit: the requests that wait are written together.
                            let mut jobs = vec![job];
                            while jobs.len() < GROUP_COMMIT {
                                match rx.try_recv() {
                                    Ok(job) => jobs.push(job),
                                    Err(_) => break,
                                }
                            }
                            let (prepared, answers): (Vec<_>, Vec<_>) = jobs
                                .into_iter()
                                .map(|j| (j.prepared, (j.done, j._reservation)))
                                .unzip();
                            let result = writer_store.write(prepared);
                            // Each request's answer waits for this; its reservation of the
                            // decode budget ends with its job.
                            match result {
                                Ok(done) => {
                                    for (d, (answer, _reservation)) in done.into_iter().zip(answers)
                                    {
                                        wc.spans_stored.add(d.stored);
                                        wc.spans_duplicate.add(d.duplicates);
                                        let _ = answer.send(Ok(d));
                                    }
                                }
                                Err(e) => {
                                    wc.store_errors.inc();
                                    let e = error_chain(&e);
                                    tracing::error!("storing spans: {e}");
                                    for (answer, _reservation) in answers {
                                        let _ = answer.send(Err(e.clone()));
                                    }
                                }
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    if last_check.elapsed() > Duration::from_secs(10) {
                        last_check = Instant::now();
                        enforce(&mut writer_store);
                    }
                }
            })
            .map_err(|e| CollectorError::Bind {
                addr: config.otlp_http,
                source: e,
            })?;

        let bind = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| CollectorError::Bind { addr, source })
        };
        let otlp = bind(config.otlp_http).await?;
        let ui = bind(config.ui).await?;
        let otlp_addr = otlp.local_addr().map_err(|source| CollectorError::Bind {
            addr: config.otlp_http,
            source,
        })?;
        let ui_addr = ui.local_addr().map_err(|source| CollectorError::Bind {
            addr: config.ui,
            source,
        })?;
        let mut servers = Vec::new();
        let forward = match config.forward.as_deref() {
            None => None,
            Some(url) => {
                let (forwarder, task) = forward::Forwarder::start(
                    url,
                    &config.forward_headers,
                    config.forward_certificate.as_deref(),
                    counters.clone(),
                )?;
                servers.push(task);
                Some(forwarder)
            }
        };
        let mut receiver = receiver::router(receiver::Receiver {
            preparer,
            forward,
            queue: queue.clone(),
            counters: counters.clone(),
            max_body_bytes: config.max_body_bytes,
            decodes: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_decodes.max(1),
            )),
            budget: Arc::new(receiver::Budget::new(config.max_decoded_bytes)),
            store_timeout: Duration::from_secs(30),
        });
        if let Some(token) = otlp_token {
            let counters = counters.clone();
            receiver = receiver.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let (token, counters) = (token.clone(), counters.clone());
                    async move {
                        if tls::presents(&request, &token, false) {
                            next.run(request).await
                        } else {
                            counters.unauthorized.inc();
                            tls::unauthorized("exporting spans needs the collector's OTLP token")
                        }
                    }
                },
            ));
        }
        let mut api = query::router(query::Api {
            readers: Arc::new(query::Readers::new(readers)),
            counters: counters.clone(),
            read_token: read_token.clone(),
        });
        if let Some(token) = read_token {
            let counters = counters.clone();
            api = api.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let (token, counters) = (token.clone(), counters.clone());
                    async move {
                        let response = tls::require_read(token, request, next).await;
                        if response.status() == axum::http::StatusCode::UNAUTHORIZED {
                            counters.unauthorized.inc();
                        }
                        response
                    }
                },
            ));
        }
        let limits = config.serve_limits();
        let otlp_serve_stats = Arc::new(serve::ServeStats::default());
        let ui_serve_stats = Arc::new(serve::ServeStats::default());
        servers.extend([
            tokio::spawn(serve::serve_tls(
                otlp,
                receiver,
                limits,
                otlp_serve_stats.clone(),
                std::future::pending(),
                acceptor.clone(),
            )),
            tokio::spawn(serve::serve_tls(
                ui,
                api,
                limits,
                ui_serve_stats.clone(),
                std::future::pending(),
                acceptor,
            )),
        ]);
        Ok(Collector {
            otlp_addr,
            ui_addr,
            counters,
            servers,
            writer: Some(writer),
            queue: Some(queue),
            otlp_serve_stats,
            ui_serve_stats,
        })
    }

    /// What the collector counted.
    pub fn stats(&self) -> CollectorStats {
        self.counters.snapshot()
    }

    /// Stops receiving, stores what was already queued, and returns.
    pub async fn shutdown(mut self) {
        for s in &self.servers {
            s.abort();
        }
        for s in self.servers.drain(..) {
            let _ = s.await;
        }
        // With the servers gone this is the last sender, unless a client's connection is
        // still open: the writer drains the queue and ends, or is left to the process exit
        // after 5 s.
        drop(self.queue.take());
        if let Some(w) = self.writer.take() {
            let join = tokio::task::spawn_blocking(move || w.join());
            if tokio::time::timeout(Duration::from_secs(5), join)
                .await
                .is_err()
            {
                tracing::warn!("the trace store did not finish within 5 s of shutdown");
            }
        }
    }
}
