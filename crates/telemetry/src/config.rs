//! What a node's telemetry does, and where each setting comes from.
//!
//! Precedence is flag > environment > config file > default. A caller builds the lower
//! layers first ([`TelemetryConfig::default`] or a deserialized file), overlays the
//! environment with [`TelemetryConfig::apply_env`], then sets what its own flags say, so
//! values set in code always win.

use std::collections::BTreeMap;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

/// Default OTLP/HTTP endpoint (the embedded collector).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318";

/// Targets whose spans are not exported unless the span filter names them: networking and
/// runtime libraries that open spans for every poll or connection (alloy: one per JSON-RPC
/// request; a settlement's span names its transaction instead).
pub const DEFAULT_SPAN_FILTER: &str = "info,libp2p=off,multistream_select=off,yamux=off,\
quinn=off,quinn_proto=off,rustls=off,wasmtime=off,cranelift=off,hyper=off,hyper_util=off,\
h2=off,reqwest=off,tower=off,tower_http=off,axum=off,opentelemetry=off,alloy_transport=off,\
alloy_transport_http=off,alloy_rpc_client=off,alloy_provider=off";

/// How a node's telemetry is set up. Every field says its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Whether spans are exported. Default `true`; `OTEL_SDK_DISABLED=true` turns it off.
    /// When off, spans still get ids (logs and propagation keep working) and no export
    /// thread is started.
    pub enabled: bool,
    /// `service.name`: the node's name. Default `"zerostate"`; `OTEL_SERVICE_NAME`, or
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_name: String,
    /// `service.version`. Default: this crate's version.
    pub service_version: String,
    /// `service.instance.id`, the node's libp2p peer id. Default: none.
    pub instance_id: Option<String>,
    /// `zerostate.node.role` (`edge`, `relay`, `bootnode`, `cli`, ...). Default: none.
    pub node_role: Option<String>,
    /// More resource attributes. Default: none; `OTEL_RESOURCE_ATTRIBUTES` adds to them.
    pub resource_attributes: BTreeMap<String, String>,
    /// OTLP/HTTP base URL; traces go to `<endpoint>/v1/traces`. Default
    /// `http://127.0.0.1:4318`; `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// Full traces URL, used as is when set. Default: none;
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub traces_endpoint: Option<String>,
    /// Headers sent with every export, for authentication. Default: none;
    /// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (`k=v,k2=v2`).
    pub headers: BTreeMap<String, String>,
    /// Gzip request bodies. Default `true`; `OTEL_EXPORTER_OTLP_COMPRESSION=gzip|none`.
    pub gzip: bool,
    /// For an `https://` endpoint: a PEM file of the certificate authorities its
    /// certificate must chain to, used instead of the system's. Default: the system's;
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` (or `..._TRACES_CERTIFICATE`).
    pub certificate: Option<std::path::PathBuf>,
    /// For mutual TLS: this process's certificate (PEM) and its private key (PKCS#8 PEM).
    /// Default: none; `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
    /// `OTEL_EXPORTER_OTLP_CLIENT_KEY` (or the `_TRACES_` variants).
    pub client_certificate: Option<std::path::PathBuf>,
    /// See `client_certificate`.
    pub client_key: Option<std::path::PathBuf>,
    /// Which traces are kept.
    pub sampling: Sampling,
    /// How spans are queued and sent.
    pub batch: BatchConfig,
    /// How long [`crate::TelemetryGuard::shutdown`] may take, in milliseconds, before it
    /// gives up on the exporter. Default 5000.
    pub shutdown_timeout_ms: u64,
    /// Where spans wait that the backend did not take (it did not answer, or answered 429,
    /// 502, 503 or 504), to be sent again oldest first once it does; they survive a
    /// restart. Default: none (such spans are lost and counted); a node uses `spool` in its
    /// data directory.
    pub spool_dir: Option<std::path::PathBuf>,
    /// The most bytes the spool holds (compressed, as sent); when full, its oldest spans are
    /// deleted and counted as lost. `0` turns the spool off. Default 268435456 (256 MiB):
    /// a node under the chaos suite's load spools about 93 bytes a span, 9 MiB an hour of
    /// outage, so this holds about a day of it at that load and hours of a busier node's.
    pub spool_bytes: u64,
    /// How often the export account is sent, in milliseconds: a
    /// `telemetry.export_account` span saying what became of the spans made in the interval
    /// (exported, spooled, dropped and why), so a backend can tell why a span is missing.
    /// `0` turns it off. Default 10000; at most 3600000.
    pub account_interval_ms: u64,
    /// Which spans are exported, as `target=level` directives. Default
    /// [`DEFAULT_SPAN_FILTER`]; `ZEROSTATE_TRACES_FILTER`.
    pub span_filter: String,
    /// Which events are logged, `RUST_LOG` syntax. Default `"info"`; `RUST_LOG`.
    pub log_filter: String,
    /// How logs are written to stderr. Default `pretty`; `ZEROSTATE_LOG_FORMAT`.
    pub log_format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            service_name: "zerostate".to_owned(),
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            instance_id: None,
            node_role: None,
            resource_attributes: BTreeMap::new(),
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            traces_endpoint: None,
            headers: BTreeMap::new(),
            gzip: true,
            certificate: None,
            client_certificate: None,
            client_key: None,
            sampling: Sampling::default(),
            batch: BatchConfig::default(),
            shutdown_timeout_ms: 5000,
            spool_dir: None,
            spool_bytes: 256 << 20,
            account_interval_ms: 10_000,
            span_filter: DEFAULT_SPAN_FILTER.to_owned(),
            log_filter: "info".to_owned(),
            log_format: LogFormat::Pretty,
        }
    }
}

/// Sampling of new traces. A parent-based sampler follows the caller's decision for spans
/// with a parent (local or remote) and applies the ratio only to new roots.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// Follow the parent's sampled flag. Default `true`.
    pub parent_based: bool,
    /// Fraction of traces kept, by trace id: 1.0 is always on, 0.0 always off. Default 1.0.
    pub ratio: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            parent_based: true,
            ratio: 1.0,
        }
    }
}

/// Batching of exported spans, as in the OpenTelemetry batch span processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Spans queued for export at most; a span closed while the queue is full is dropped
    /// and counted. Default 2048; `OTEL_BSP_MAX_QUEUE_SIZE`.
    pub max_queue_size: usize,
    /// Spans sent in one request at most. Default 512; `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
    pub max_export_batch_size: usize,
    /// Longest wait before queued spans are sent, in ms. Default 5000; `OTEL_BSP_SCHEDULE_DELAY`.
    pub scheduled_delay_ms: u64,
    /// Longest one export may take, in ms. Default 10000; `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` or `OTEL_BSP_EXPORT_TIMEOUT`.
    pub export_timeout_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay_ms: 5000,
            export_timeout_ms: 10_000,
        }
    }
}

impl BatchConfig {
    pub(crate) fn scheduled_delay(&self) -> Duration {
        Duration::from_millis(self.scheduled_delay_ms.max(1))
    }

    pub(crate) fn export_timeout(&self) -> Duration {
        Duration::from_millis(self.export_timeout_ms.max(1))
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
    /// No logs.
    Off,
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable holds a value that cannot be used.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// What it held.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A field holds a value that cannot be used.
    #[error("telemetry setting `{field}` is invalid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why it cannot be used.
        reason: String,
    },
}

impl TelemetryConfig {
    /// The defaults overlaid with the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.apply_env()?;
        Ok(config)
    }

    /// Overlays the standard `OTEL_*` variables (and `RUST_LOG`, `ZEROSTATE_TRACES_FILTER`,
    /// `ZEROSTATE_LOG_FORMAT`) of this process on `self`.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_env_from(|var| std::env::var(var).ok())
    }

    /// Like [`apply_env`](Self::apply_env), reading variables through `lookup`.
    pub fn apply_env_from(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());

        if let Some(v) = get("OTEL_SDK_DISABLED") {
            self.enabled = !parse_bool("OTEL_SDK_DISABLED", &v)?;
        }
        if let Some(v) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for (key, value) in parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v)? {
                if key == crate::names::attr::SERVICE_NAME {
                    self.service_name = value;
                } else {
                    self.resource_attributes.insert(key, value);
                }
            }
        }
        if let Some(v) = get("OTEL_SERVICE_NAME") {
            self.service_name = v;
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.endpoint = check_url("OTEL_EXPORTER_OTLP_ENDPOINT", v)?;
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            self.traces_endpoint = Some(check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", v)?);
        }
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(v) = get(var) {
                self.headers.extend(parse_pairs(var, &v)?);
            }
        }
        for var in [
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        ] {
            if let Some(v) = get(var) {
                self.gzip = match v.trim() {
                    "gzip" => true,
                    "none" => false,
                    _ => return Err(invalid(var, &v, "expected `gzip` or `none`")),
                };
            }
        }
        for (generic, traces, field) in [
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                &mut self.certificate,
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                &mut self.client_certificate,
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                &mut self.client_key,
            ),
        ] {
            // The signal-specific variable wins over the generic one.
            if let Some(v) = get(traces).or_else(|| get(generic)) {
                *field = Some(std::path::PathBuf::from(v.trim()));
            }
        }
        for var in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            if let Some(v) = get(var)
                && v.trim() != "http/protobuf"
            {
                return Err(invalid(var, &v, "only `http/protobuf` is supported"));
            }
        }
        if let Some(v) = get("OTEL_TRACES_SAMPLER") {
            let arg = get("OTEL_TRACES_SAMPLER_ARG");
            self.sampling = parse_sampler(&v, arg.as_deref())?;
        } else if let Some(arg) = get("OTEL_TRACES_SAMPLER_ARG") {
            self.sampling.ratio = parse_ratio(&arg)?;
        }
        if let Some(v) = get("OTEL_BSP_MAX_QUEUE_SIZE") {
            self.batch.max_queue_size = parse_positive("OTEL_BSP_MAX_QUEUE_SIZE", &v)?;
        }
        if let Some(v) = get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            self.batch.max_export_batch_size =
                parse_positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &v)?;
        }
        if let Some(v) = get("OTEL_BSP_SCHEDULE_DELAY") {
            self.batch.scheduled_delay_ms = parse_ms("OTEL_BSP_SCHEDULE_DELAY", &v)?;
        }
        for var in [
            "OTEL_BSP_EXPORT_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        ] {
            if let Some(v) = get(var) {
                self.batch.export_timeout_ms = parse_ms(var, &v)?;
            }
        }
        if let Some(v) = get("ZEROSTATE_TRACES_FILTER") {
            self.span_filter = v;
        }
        if let Some(v) = get("RUST_LOG") {
            self.log_filter = v;
        }
        if let Some(v) = get("ZEROSTATE_LOG_FORMAT") {
            self.log_format = match v.trim() {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                "off" => LogFormat::Off,
                _ => {
                    return Err(invalid(
                        "ZEROSTATE_LOG_FORMAT",
                        &v,
                        "expected `pretty`, `json` or `off`",
                    ));
                }
            };
        }
        Ok(())
    }

    /// The URL spans are posted to.
    pub fn traces_url(&self) -> String {
        match &self.traces_endpoint {
            Some(url) => url.clone(),
            None => format!("{}/v1/traces", self.endpoint.trim_end_matches('/')),
        }
    }

    /// Checks the values that cannot be checked by their type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(0.0..=1.0).contains(&self.sampling.ratio) {
            return field("sampling.ratio", "must be between 0.0 and 1.0");
        }
        if self.batch.max_queue_size == 0 || self.batch.max_export_batch_size == 0 {
            return field("batch", "queue and batch sizes must be at least 1");
        }
        if self.service_name.is_empty() {
            return field("service_name", "must not be empty");
        }
        if self.account_interval_ms > 3_600_000 {
            return field("account_interval_ms", "must be at most 3600000 (an hour)");
        }
        let url = self.traces_url();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return field("endpoint", "must be an http:// or https:// URL");
        }
        Ok(())
    }

    pub(crate) fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// How often the export account is sent; `None` when it is off.
    pub(crate) fn account_interval(&self) -> Option<Duration> {
        (self.account_interval_ms > 0).then(|| Duration::from_millis(self.account_interval_ms))
    }
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidEnv {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(var, v, "expected `true` or `false`")),
    }
}

fn parse_positive(var: &'static str, v: &str) -> Result<usize, ConfigError> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(invalid(var, v, "expected a whole number above 0")),
    }
}

fn parse_ms(var: &'static str, v: &str) -> Result<u64, ConfigError> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| invalid(var, v, "expected milliseconds as a whole number"))
}

fn parse_ratio(v: &str) -> Result<f64, ConfigError> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(invalid(
            "OTEL_TRACES_SAMPLER_ARG",
            v,
            "expected a ratio between 0.0 and 1.0",
        )),
    }
}

fn parse_sampler(v: &str, arg: Option<&str>) -> Result<Sampling, ConfigError> {
    let ratio = || arg.map_or(Ok(1.0), parse_ratio);
    let (parent_based, ratio) = match v.trim() {
        "always_on" => (false, 1.0),
        "always_off" => (false, 0.0),
        "traceidratio" => (false, ratio()?),
        "parentbased_always_on" => (true, 1.0),
        "parentbased_always_off" => (true, 0.0),
        "parentbased_traceidratio" => (true, ratio()?),
        _ => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                v,
                "expected always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ));
        }
    };
    Ok(Sampling {
        parent_based,
        ratio,
    })
}

/// `key=value,key2=value2`, values percent-decoded (the `OTEL_*` list format).
fn parse_pairs(var: &'static str, v: &str) -> Result<Vec<(String, String)>, ConfigError> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(var, v, &format!("`{pair}` is not key=value")))?;
            let value = percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|_| invalid(var, v, "a value is not UTF-8 once decoded"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(invalid(var, v, "a key is empty"));
            }
            Ok((key.to_owned(), value.into_owned()))
        })
        .collect()
}

fn check_url(var: &'static str, v: String) -> Result<String, ConfigError> {
    let t = v.trim();
    if t.starts_with("http://") || t.starts_with("https://") {
        Ok(t.to_owned())
    } else {
        Err(invalid(var, &v, "expected an http:// or https:// URL"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with_env(vars: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut c = TelemetryConfig::default();
        c.apply_env_from(|k| env.get(k).cloned())?;
        Ok(c)
    }

    #[test]
    fn defaults_match_the_design() {
        let c = TelemetryConfig::default();
        assert_eq!(c.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.batch.max_export_batch_size, 512);
        assert_eq!(c.batch.max_queue_size, 2048);
        assert_eq!(c.batch.scheduled_delay_ms, 5000);
        assert_eq!(
            c.sampling,
            Sampling {
                parent_based: true,
                ratio: 1.0
            }
        );
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn standard_variables_are_honoured() {
        let c = with_env(&[
            ("OTEL_SERVICE_NAME", "edge-node-1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20abc, x-tenant = t1",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "3000"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=dev,zerostate.node.role=edge",
            ),
        ])
        .expect("valid");
        assert_eq!(c.service_name, "edge-node-1");
        assert_eq!(c.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(c.headers["authorization"], "Bearer abc");
        assert_eq!(c.headers["x-tenant"], "t1");
        assert_eq!(
            c.sampling,
            Sampling {
                parent_based: true,
                ratio: 0.25
            }
        );
        assert_eq!(
            c.batch,
            BatchConfig {
                max_queue_size: 100,
                max_export_batch_size: 10,
                scheduled_delay_ms: 250,
                export_timeout_ms: 3000,
            }
        );
        assert_eq!(c.resource_attributes["deployment.environment"], "dev");
    }

    #[test]
    fn service_name_variable_beats_resource_attributes() {
        let c = with_env(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
            ("OTEL_SERVICE_NAME", "from-name"),
        ])
        .expect("valid");
        assert_eq!(c.service_name, "from-name");
        let c =
            with_env(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs")]).expect("valid");
        assert_eq!(c.service_name, "from-attrs");
    }

    #[test]
    fn signal_endpoint_is_used_as_is_and_disabled_is_read() {
        let c = with_env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://h:1/custom"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])
        .expect("valid");
        assert_eq!(c.traces_url(), "http://h:1/custom");
        assert!(!c.enabled);
    }

    #[test]
    fn code_set_values_win_over_the_environment() {
        let mut c = with_env(&[("OTEL_SERVICE_NAME", "from-env")]).expect("valid");
        c.service_name = "from-code".into();
        assert_eq!(c.service_name, "from-code");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ];
        for (var, value) in cases {
            let err = with_env(&[(var, value)]).expect_err(var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn config_file_round_trips_through_toml_shape() {
        let c = TelemetryConfig::default();
        let json = serde_json::to_string(&c).expect("serializes");
        let back: TelemetryConfig = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, c);
        let unknown = serde_json::from_str::<TelemetryConfig>(r#"{"endpont":"x"}"#);
        assert!(unknown.is_err());
    }
}
