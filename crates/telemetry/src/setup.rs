//! Installing telemetry: the subscriber, the export thread, and the guard that stops them.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanExporter;
use tracing::Dispatch;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{ConfigError, LogFormat, TelemetryConfig};
use crate::export::{self, Control, ExportQueue, TelemetryStats};
use crate::layer::{RecordPool, SpanLayer};
use crate::names::attr;

/// Why telemetry could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// A setting cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The span or log filter does not parse.
    #[error("invalid {which} filter {filter:?}: {reason}")]
    Filter {
        /// `span` or `log`.
        which: &'static str,
        /// The directives given.
        filter: String,
        /// What is wrong with them.
        reason: String,
    },
    /// The exporter or its thread could not be started.
    #[error("could not start span export to {endpoint}: {reason}")]
    Exporter {
        /// Where spans would have gone.
        endpoint: String,
        /// Why it failed.
        reason: String,
    },
    /// Another global subscriber was installed first.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Why a flush or shutdown did not complete.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushError {
    /// The exporter did not finish in time; spans still queued are counted as dropped.
    #[error("span export did not finish within {0:?}")]
    TimedOut(Duration),
    /// An export failed (the spans in it are counted as failed).
    #[error("{0}")]
    Export(String),
    /// Telemetry has already shut down.
    #[error("telemetry has already shut down")]
    ShutDown,
}

type SpawnExporter =
    Box<dyn FnOnce(export::Pipeline) -> Result<(Arc<ExportQueue>, JoinHandle<()>), String> + Send>;

/// Builds the subscriber and the export pipeline. [`crate::init`] is the short form.
pub struct TelemetryBuilder {
    config: TelemetryConfig,
    exporter: Option<SpawnExporter>,
    log_writer: Option<BoxMakeWriter>,
}

impl std::fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TelemetryBuilder {
    /// Starts from `config`.
    pub fn new(config: TelemetryConfig) -> Self {
        Self {
            config,
            exporter: None,
            log_writer: None,
        }
    }

    /// Exports to `exporter` instead of OTLP/HTTP (an in-memory exporter in tests, say).
    pub fn with_exporter<E: SpanExporter + Send + 'static>(mut self, exporter: E) -> Self {
        let destination = std::any::type_name::<E>().to_owned();
        self.exporter = Some(Box::new(move |pipeline| {
            export::start(
                move || Ok(exporter),
                pipeline,
                destination,
                crate::client::LastError::default(),
                None,
            )
        }));
        self
    }

    /// Writes logs to `writer` instead of stderr.
    pub fn with_log_writer<W>(mut self, writer: W) -> Self
    where
        W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
    {
        self.log_writer = Some(BoxMakeWriter::new(writer));
        self
    }

    /// The resource every exported span carries.
    pub fn resource(config: &TelemetryConfig) -> Resource {
        let mut attrs = vec![
            KeyValue::new(attr::SERVICE_NAME, config.service_name.clone()),
            KeyValue::new(attr::SERVICE_NAMESPACE, "zerostate"),
            KeyValue::new(attr::SERVICE_VERSION, config.service_version.clone()),
        ];
        if let Some(id) = &config.instance_id {
            attrs.push(KeyValue::new(attr::SERVICE_INSTANCE_ID, id.clone()));
        }
        if let Some(role) = &config.node_role {
            attrs.push(KeyValue::new(attr::NODE_ROLE, role.clone()));
        }
        for (k, v) in &config.resource_attributes {
            if attrs.iter().all(|a| a.key.as_str() != k) {
                attrs.push(KeyValue::new(k.clone(), v.clone()));
            }
        }
        Resource::builder_empty().with_attributes(attrs).build()
    }

    /// Builds the subscriber (as a [`Dispatch`], to install globally or in a scope) and the
    /// guard that flushes and stops export.
    pub fn build(self) -> Result<(Dispatch, TelemetryGuard), InitError> {
        let config = self.config;
        config.validate()?;
        crate::clock::warm_up();
        let span_filter: Targets =
            config
                .span_filter
                .parse()
                .map_err(
                    |e: tracing_subscriber::filter::ParseError| InitError::Filter {
                        which: "span",
                        filter: config.span_filter.clone(),
                        reason: e.to_string(),
                    },
                )?;
        let log_filter = EnvFilter::builder()
            .parse(&config.log_filter)
            .map_err(|e| InitError::Filter {
                which: "log",
                filter: config.log_filter.clone(),
                reason: e.to_string(),
            })?;

        // Records in flight: those queued for export plus those of open spans reused again.
        let pool = Arc::new(RecordPool::new(config.batch.max_queue_size));
        let worker = if config.enabled {
            let resource = Self::resource(&config);
            let spawn = match self.exporter {
                Some(spawn) => spawn,
                None => otlp_spawner(&config),
            };
            let (queue, handle) = spawn(export::Pipeline {
                resource,
                batch: config.batch,
                pool: pool.clone(),
                account: config.account_interval(),
            })
            .map_err(|reason| InitError::Exporter {
                endpoint: config.traces_url(),
                reason,
            })?;
            Some((queue, handle))
        } else {
            None
        };

        let span_layer = SpanLayer {
            sampling: config.sampling,
            queue: worker.as_ref().map(|(q, _)| q.clone()),
            pool,
        }
        .with_filter(span_filter);

        // Logs off is a log layer whose filter wants nothing, rather than no layer: an
        // absent layer would declare interest in every callsite, and spans the span filter
        // drops would then be filtered on every call instead of once per callsite.
        let off = config.log_format == LogFormat::Off;
        let json = config.log_format == LogFormat::Json;
        let (writer, ansi) = match self.log_writer {
            _ if off => (BoxMakeWriter::new(std::io::sink), false),
            Some(w) => (w, false),
            None => (
                BoxMakeWriter::new(std::io::stderr),
                !json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            ),
        };
        let log_layer = tracing_subscriber::fmt::layer()
            .event_format(crate::log::LogFormat {
                json,
                ansi,
                service: config.service_name.as_str().into(),
                instance: config.instance_id.as_deref().map(Into::into),
            })
            .with_writer(writer)
            .with_filter(if off {
                EnvFilter::new("off")
            } else {
                log_filter
            });

        let subscriber = Registry::default().with(span_layer).with(log_layer);
        keep_interest_shared();
        let dispatch = Dispatch::new(subscriber);
        // A callsite that another thread registers while this dispatcher is being added can
        // cache "never" without asking it, and its spans are then silently missing from a
        // scoped dispatcher (seen under load with parallel tests). Asking every callsite
        // again now that the dispatcher is known closes that window.
        tracing::callsite::rebuild_interest_cache();
        if let Some((queue, _)) = &worker {
            let _ = queue.log_to.set(dispatch.downgrade());
        }
        let guard = TelemetryGuard {
            worker,
            shutdown_timeout: config.shutdown_timeout(),
            stats_after_shutdown: None,
        };
        Ok((dispatch, guard))
    }

    /// Builds and installs the subscriber for the whole process.
    pub fn init(self) -> Result<TelemetryGuard, InitError> {
        let (dispatch, guard) = self.build()?;
        tracing::dispatcher::set_global_default(dispatch)
            .map_err(|_| InitError::AlreadyInstalled)?;
        Ok(guard)
    }
}

/// Keeps a second dispatcher registered for the life of the process.
///
/// While exactly one dispatcher is registered, `tracing` decides whether a callsite is
/// wanted by asking only the dispatcher of the thread that reaches it first. A thread with
/// no dispatcher of its own then marks the callsite "never", and a scoped dispatcher built
/// here (`build` without `init`) silently loses that span on every thread. With two
/// registered, every live dispatcher is asked instead. The witness wants nothing, so it
/// adds no work to any span or event.
fn keep_interest_shared() {
    static WITNESS: std::sync::OnceLock<Dispatch> = std::sync::OnceLock::new();
    WITNESS.get_or_init(|| Dispatch::new(tracing::subscriber::NoSubscriber::default()));
}

/// How a failed export is retried when there is no spool (with one, the spool retries): a
/// collector that answers 429 or 503 (with or without `Retry-After`), 502, 504 or not at
/// all is tried again after a backoff (100 ms doubling to 2 s, or what `Retry-After` asks),
/// up to five times, all within the export timeout. Meanwhile new spans wait in the bounded
/// queue; only when it is full are they dropped and counted. Other answers (400, 413, ...)
/// are not retried: the same batch would fail again.
fn retry_policy() -> opentelemetry_otlp::RetryPolicy {
    opentelemetry_otlp::RetryPolicy::recommended()
        .with_max_retries(5)
        .with_initial_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
}

fn otlp_spawner(config: &TelemetryConfig) -> SpawnExporter {
    let url = config.traces_url();
    let url_for_messages = url.clone();
    let resend_url = url.clone();
    let resend_headers = config.headers.clone();
    let headers = config.headers.clone().into_iter().collect();
    let gzip = config.gzip;
    let timeout = config.batch.export_timeout();
    let tls = config.clone();
    let spool = match &config.spool_dir {
        Some(dir) if config.spool_bytes > 0 => Some((dir.clone(), config.spool_bytes)),
        _ => None,
    };
    Box::new(move |pipeline| {
        let cause = crate::client::LastError::default();
        let recorded = cause.clone();
        // Spans the backend did not take wait in the spool; the spool does the retrying.
        let spooling = match &spool {
            Some((dir, bytes)) => {
                let spool = crate::spool::Spool::open(dir, *bytes)?;
                let sender = crate::client::ExportClient::new(&tls, timeout, Default::default())?;
                let resend: export::Resend = Box::new(move |body, gzip| {
                    sender.resend(&resend_url, &resend_headers, body, gzip)
                });
                Some(export::Spooling::new(
                    spool,
                    Arc::new(crate::client::Outbox::default()),
                    resend,
                ))
            }
            None => None,
        };
        let outbox = spooling.as_ref().map(|s| s.outbox.clone());
        export::start(
            move || {
                let mut client = crate::client::ExportClient::new(&tls, timeout, recorded)?;
                let retries = match outbox {
                    Some(outbox) => {
                        client = client.with_outbox(outbox);
                        opentelemetry_otlp::RetryPolicy::recommended().with_max_retries(0)
                    }
                    None => retry_policy(),
                };
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(url)
                    .with_timeout(timeout)
                    .with_headers(headers)
                    .with_retry_policy(retries);
                if gzip {
                    builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
                }
                builder.build().map_err(|e| e.to_string())
            },
            pipeline,
            url_for_messages,
            cause,
            spooling,
        )
    })
}

/// Installs telemetry for the whole process: spans exported as `config` says, logs to
/// stderr. Keep the guard alive; call [`TelemetryGuard::shutdown`] before exiting.
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, InitError> {
    TelemetryBuilder::new(config).init()
}

/// Owns the export thread. Dropping it shuts telemetry down (bounded by the shutdown
/// timeout); call [`shutdown`](Self::shutdown) to see the outcome.
#[derive(Debug)]
pub struct TelemetryGuard {
    worker: Option<(Arc<ExportQueue>, JoinHandle<()>)>,
    shutdown_timeout: Duration,
    stats_after_shutdown: Option<TelemetryStats>,
}

impl TelemetryGuard {
    /// Exports every span queued so far, waiting at most the shutdown timeout.
    pub fn force_flush(&self) -> Result<(), FlushError> {
        match &self.worker {
            Some((queue, _)) => export::request(queue, Control::Flush, self.shutdown_timeout),
            None if self.stats_after_shutdown.is_some() => Err(FlushError::ShutDown),
            None => Ok(()),
        }
    }

    /// Exports what is queued, shuts the exporter down and stops the export thread, within
    /// the shutdown timeout. Spans closed afterwards are dropped. Calling it again is a
    /// no-op that returns `Ok`.
    pub fn shutdown(&mut self) -> Result<(), FlushError> {
        let Some((queue, handle)) = self.worker.take() else {
            return Ok(());
        };
        let result = export::request(&queue, Control::Shutdown, self.shutdown_timeout);
        queue.close();
        if result.is_ok() {
            let _ = handle.join();
        } else {
            // The thread is stuck in an export; it is left to finish on its own. What is
            // still queued will not be sent.
            let mut left = 0;
            while queue.pop_for_discard() {
                left += 1;
            }
            queue.counters.add_dropped(left);
        }
        self.stats_after_shutdown = Some(queue.counters.snapshot());
        result
    }

    /// Whether an export thread is running (not when telemetry is disabled or shut down).
    pub fn is_exporting(&self) -> bool {
        self.worker.is_some()
    }

    /// A reader of [`Self::stats`] that other threads can keep (for a metrics endpoint).
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(
            self.worker
                .as_ref()
                .map(|(queue, _)| queue.counters.clone()),
        )
    }

    /// Counts of exported, dropped and failed spans.
    pub fn stats(&self) -> TelemetryStats {
        match (&self.worker, self.stats_after_shutdown) {
            (Some((queue, _)), _) => queue.counters.snapshot(),
            (None, Some(stats)) => stats,
            (None, None) => TelemetryStats::default(),
        }
    }
}

/// Reads the export counters of a [`TelemetryGuard`] from anywhere; all zero when
/// telemetry does not export.
#[derive(Clone, Debug, Default)]
pub struct StatsReader(Option<Arc<crate::export::Counters>>);

impl StatsReader {
    /// The counters now.
    pub fn read(&self) -> TelemetryStats {
        self.0.as_ref().map(|c| c.snapshot()).unwrap_or_default()
    }

    /// Whether spans are exported at all.
    pub fn is_exporting(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
