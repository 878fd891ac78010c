//! The fuzz targets of ZeroState: every decoder that reads bytes another party chose, one
//! function per target. Each takes arbitrary bytes and must return without panicking,
//! whatever they are; a decoded value is also put through what the receiving code does
//! next with it (its checks, its re-encoding), so that those paths are explored too.
//!
//! The AFL++ harness in `crates/fuzz/afl` runs each target coverage-guided; the tests of
//! this crate replay every file of `crates/fuzz/corpus/<target>/` (the seeds and every
//! input that once failed) through its target on each `cargo test`.

use std::collections::HashMap;
use std::sync::Mutex;

use prost::Message;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, as the corpus directories and the AFL++ binaries are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("guild_wire", guild_wire),
    ("trace_context", trace_context),
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_json", otlp_json),
    ("task_wire", task_wire),
    ("payment_state", payment_state),
    ("config", config),
    ("api_json", api_json),
];

/// The largest envelope a node accepts (the network's message limit).
const MAX_ENVELOPE: usize = 1 << 20;

/// The p2p envelope every gossip message and request travels in: decoding, its trace
/// context, and re-encoding what decoded.
pub fn envelope(data: &[u8]) {
    if let Ok(e) = zerostate_p2p::Envelope::decode(data, MAX_ENVELOPE) {
        let _ = e.trace_context();
        let _ = e.age();
        let again = zerostate_p2p::Envelope::decode(&e.encode(), MAX_ENVELOPE);
        assert!(
            again.is_ok(),
            "a decoded envelope re-encodes to one that decodes"
        );
    }
}

/// Guild wire messages (inside sealed guild messages and guild requests), and an
/// invitation token as a user pastes it.
pub fn guild_wire(data: &[u8]) {
    use zerostate_guild::wire::*;
    let _ = Membership::decode(data);
    let _ = Sealed::decode(data);
    let _ = Plain::decode(data);
    let _ = Heartbeat::decode(data);
    let _ = SyncRequest::decode(data);
    let _ = JoinRequest::decode(data);
    let _ = Invitation::decode(data);
    let _ = JoinReply::decode(data);
    let _ = KeyUpdate::decode(data);
    let _ = LeaveRequest::decode(data);
    let _ = Dissolve::decode(data);
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = Invitation::from_token(token);
    }
}

/// W3C `traceparent`, `tracestate` and `baggage` headers (split on newlines, as several
/// header values), extraction from a carrier, and the binary trace context.
pub fn trace_context(data: &[u8]) {
    use zerostate_telemetry::propagation;
    let _ = propagation::from_bytes(data);
    let text = String::from_utf8_lossy(data);
    let values: Vec<&str> = text.split('\n').collect();
    let _ = propagation::parse_traceparent(&values);
    let _ = propagation::parse_tracestate(&values);
    let _ = propagation::parse_baggage(&values);
    let mut carrier = HashMap::new();
    let mut parts = text.splitn(3, '\n');
    for name in ["traceparent", "tracestate", "baggage"] {
        if let Some(v) = parts.next() {
            carrier.insert(name.to_owned(), v.to_owned());
        }
    }
    if let Some(cx) = propagation::extract(&carrier) {
        let mut out = HashMap::new();
        propagation::inject(&cx, &mut out);
    }
}

/// The most memory an OTLP body may take once decoded in these targets (the collector's
/// default budget is larger; this keeps each run quick).
const MAX_DECODED: u64 = 64 << 20;

/// The store the OTLP targets write into: one per format, in the temporary directory,
/// shared by the runs of a process and by the processes AFL++ starts one after another,
/// and kept under 64 MiB.
fn store(json: bool) -> &'static Mutex<Option<zerostate_collector::Store>> {
    static STORES: [Mutex<Option<zerostate_collector::Store>>; 2] =
        [Mutex::new(None), Mutex::new(None)];
    &STORES[usize::from(json)]
}

/// An OTLP/HTTP body through the receiver's path into the store, and the traces it wrote
/// read back. A protobuf body is stored as the collector stores it, read in place: it
/// must be taken exactly when the protobuf decoder takes it.
fn otlp(data: &[u8], json: bool) {
    let name = if json { "otlp_json" } else { "otlp_protobuf" };
    let mut guard = store(json).lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        let dir = std::env::temp_dir().join(format!("zerostate-fuzz-{name}"));
        *guard = Some(zerostate_collector::Store::open(&dir).expect("the store opens"));
    }
    let Some(s) = guard.as_mut() else { return };
    let decoded = zerostate_collector::decode_export(data, json, MAX_DECODED);
    let done = if json {
        let Ok((request, _, _)) = &decoded else {
            return;
        };
        s.ingest(request).expect("a decoded request is stored")
    } else {
        let in_place = s.ingest_export(data);
        let decodes =
            decoded.is_ok() || zerostate_collector::decode_export(data, json, u64::MAX).is_ok();
        assert_eq!(
            in_place.is_ok(),
            decodes,
            "the store and the decoder disagree: {in_place:?}"
        );
        match in_place {
            Ok(done) if decoded.is_ok() => done,
            _ => return,
        }
    };
    let Ok((request, _, _)) = decoded else { return };
    // A span sent again soon is not written again; its first copy may have been trimmed.
    let check = done.duplicates == 0;
    for rs in request.resource_spans.iter().filter(|_| check) {
        for ss in &rs.scope_spans {
            for span in ss.spans.iter().take(4) {
                let found = s.trace(&span.trace_id).expect("the store reads");
                assert!(found.is_some(), "a stored span's trace is found");
            }
        }
    }
    if spread(data).is_multiple_of(256) {
        s.enforce_limits(0, std::time::Duration::ZERO, 64 << 20)
            .expect("the store trims itself");
    }
}

/// A cheap, deterministic hash of an input (so that trimming runs now and then).
fn spread(data: &[u8]) -> u32 {
    data.iter().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(16_777_619)
    })
}

/// OTLP/HTTP protobuf bodies.
pub fn otlp_protobuf(data: &[u8]) {
    otlp(data, false);
}

/// OTLP/HTTP JSON bodies.
pub fn otlp_json(data: &[u8]) {
    otlp(data, true);
}

/// The task messages nodes exchange (JSON) and the signed receipt inside a result.
pub fn task_wire(data: &[u8]) {
    use zerostate_market::wire::*;
    // Every direct request of the market, from its enum: a new one is fuzzed with it.
    for call in Call::TYPES.iter().filter_map(|t| Call::of(t)) {
        let _ = call.decode(data);
    }
    // The announcement (gossip) and the answers.
    let _ = serde_json::from_slice::<TaskRequest>(data);
    let _ = serde_json::from_slice::<TaskResult>(data);
    if let Ok(r) = zerostate_execution::Receipt::from_json(data) {
        let _ = r.verify();
        let _ = r.signing_bytes();
    }
}

/// A payment channel's signed state as the payee receives it.
pub fn payment_state(data: &[u8]) {
    if let Ok(state) = zerostate_payment::SignedState::from_bytes(data) {
        let payer = zerostate_payment::Keypair::from_seed([7; 32]).public();
        let _ = state.verify(&payer);
        assert_eq!(
            &state.to_bytes()[..],
            data,
            "a state that decodes re-encodes to the same bytes"
        );
    }
}

/// The node's (and the collector's) configuration file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = toml::from_str::<zerostate_node::node_file::NodeFile>(text);
        let _ = toml::from_str::<zerostate_telemetry::TelemetryConfig>(text).map(|c| c.validate());
        let _ = toml::from_str::<zerostate_p2p::NetworkConfig>(text);
    }
}

/// The JSON bodies and query strings of the node's HTTP API.
pub fn api_json(data: &[u8]) {
    use zerostate_node::api::bodies::*;
    let _ = serde_json::from_slice::<SubmitBody>(data);
    let _ = serde_json::from_slice::<ModuleBody>(data);
    let _ = serde_json::from_slice::<ListQuery>(data);
    let _ = serde_json::from_slice::<HistoryQuery>(data);
    let _ = serde_json::from_slice::<CloseBody>(data);
    let _ = serde_json::from_slice::<FaucetBody>(data);
    let _ = serde_json::from_slice::<CreateBody>(data);
    let _ = serde_json::from_slice::<JoinBody>(data);
    let _ = serde_json::from_slice::<InviteBody>(data);
    let _ = serde_json::from_slice::<PublishBody>(data);
    let _ = serde_json::from_slice::<DialBody>(data);
    let _ = serde_json::from_slice::<RequestBody>(data);
}
