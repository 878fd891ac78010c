//! Forwarding: every batch the collector has stored is also sent on, as OTLP/HTTP protobuf,
//! to another backend (Jaeger, Tempo, an OpenTelemetry Collector). The collector's own
//! answer never waits for it: batches queue (bounded in count and bytes; beyond that they
//! are dropped and counted), and each is tried again on 429, 502, 503, 504 or no answer,
//! backing off from 200 ms, up to four times.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::counters::Counters;

/// Batches waiting to be forwarded.
const QUEUE_BATCHES: usize = 256;
/// Bytes of batches waiting to be forwarded.
const QUEUE_BYTES: u64 = 64 << 20;
/// Tries per batch.
const ATTEMPTS: u32 = 4;
/// How long one try may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending side, cloned into the receiver.
#[derive(Clone, Debug)]
pub(crate) struct Forwarder {
    queue: mpsc::Sender<Vec<u8>>,
    queued_bytes: Arc<AtomicU64>,
    counters: Arc<Counters>,
}

/// `url` as the traces endpoint: a base URL gets `/v1/traces`, as OTLP exporters do with
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub(crate) fn traces_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v1/traces") {
        url.to_owned()
    } else {
        format!("{url}/v1/traces")
    }
}

impl Forwarder {
    /// Starts the forwarding task on the current runtime: to `url`, with `headers` on every
    /// request (a backend's token), trusting the authorities in `certificate` (PEM) instead
    /// of the system's when given.
    pub(crate) fn start(
        url: &str,
        headers: &std::collections::BTreeMap<String, String>,
        certificate: Option<&std::path::Path>,
        counters: Arc<Counters>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), crate::tls::TlsError> {
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| crate::tls::TlsError::from(format!("forward header {k:?}: {e}")))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|e| crate::tls::TlsError::from(format!("forward header {k:?}: {e}")))?;
            map.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(TRY_TIMEOUT)
            .default_headers(map);
        if let Some(path) = certificate {
            // Authorities the backend's chain leads to, or its own (self-signed)
            // certificate.
            let trusted = zerostate_telemetry::tls::certificates("the forward CA", path)
                .map_err(crate::tls::TlsError::from)?;
            let tls = zerostate_telemetry::tls::client_config(trusted, None)
                .map_err(crate::tls::TlsError::from)?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        let client = builder.build().map_err(|e| {
            crate::tls::TlsError::from(
                format!(
                    "the forwarding client: {}",
                    zerostate_telemetry::error_chain(&e)
                )
                .as_str(),
            )
        })?;
        let (queue, rx) = mpsc::channel(QUEUE_BATCHES);
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(
            client,
            traces_url(url),
            rx,
            queued_bytes.clone(),
            counters.clone(),
        ));
        Ok((
            Self {
                queue,
                queued_bytes,
                counters,
            },
            task,
        ))
    }

    /// Queues a stored batch (protobuf bytes) for forwarding; drops and counts it when the
    /// queue is full.
    pub(crate) fn offer(&self, batch: Vec<u8>) {
        let len = batch.len() as u64;
        if self.queued_bytes.load(Ordering::Acquire) + len > QUEUE_BYTES {
            self.counters.forward_dropped.inc();
            return;
        }
        self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if self.queue.try_send(batch).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.counters.forward_dropped.inc();
        }
    }
}

async fn run(
    client: reqwest::Client,
    url: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    queued_bytes: Arc<AtomicU64>,
    counters: Arc<Counters>,
) {
    while let Some(batch) = rx.recv().await {
        let len = batch.len() as u64;
        match send(&client, &url, batch).await {
            Ok(()) => counters.forward_sent.inc(),
            Err(why) => {
                counters.forward_failed.inc();
                if zerostate_telemetry::is_power_of_ten(counters.snapshot().forward_failed) {
                    tracing::warn!(
                        "forwarding spans to {url}: {why} (logged at 1, 10, 100, ... failed \
                         batches)"
                    );
                }
            }
        }
        queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }
}

/// One batch, tried up to [`ATTEMPTS`] times.
async fn send(client: &reqwest::Client, url: &str, batch: Vec<u8>) -> Result<(), String> {
    let mut wait = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let answer = client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(batch.clone())
            .send()
            .await;
        let retry = match answer {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                last = format!("the backend answered {}", r.status());
                matches!(r.status().as_u16(), 429 | 502 | 503 | 504)
            }
            Err(e) => {
                last = format!("no answer: {}", zerostate_telemetry::error_chain(&e));
                true
            }
        };
        if !retry || attempt == ATTEMPTS {
            break;
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(traces_url("http://h/v1/traces"), "http://h/v1/traces");
    }
}
