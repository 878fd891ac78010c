//! Span names and attribute keys: the vocabulary every ZeroState trace is written in.
//!
//! Use these constants at call sites instead of string literals, so a renamed span is a
//! compile error rather than a silently broken dashboard. Names whose last segment depends
//! on the message or operation (`p2p.message.<type>`, `p2p.relay.<operation>`) are built
//! with [`p2p_message`] and [`p2p_relay`] and set through the `otel.name` field.

/// Span names, grouped by the part of the system that emits them.
pub mod span {
    // --- p2p ---------------------------------------------------------------------------
    /// Dialling or accepting a connection until it is established.
    pub const P2P_CONNECTION_ESTABLISH: &str = "p2p.connection.establish";
    /// A connection closing, with the cause.
    pub const P2P_CONNECTION_CLOSE: &str = "p2p.connection.close";
    /// Prefix of a message span; the full name is `p2p.message.<type>` (see [`super::p2p_message`]).
    pub const P2P_MESSAGE_PREFIX: &str = "p2p.message.";
    /// Storing a record in the DHT.
    pub const P2P_DHT_PUT: &str = "p2p.dht.put";
    /// Reading a record from the DHT.
    pub const P2P_DHT_GET: &str = "p2p.dht.get";
    /// Looking up a peer's addresses in the DHT.
    pub const P2P_DHT_FIND_PEER: &str = "p2p.dht.find_peer";
    /// Publishing a gossip message; each receiving node's span is its child.
    pub const P2P_GOSSIP_PUBLISH: &str = "p2p.gossip.publish";
    /// Subscribing to a gossip topic.
    pub const P2P_GOSSIP_SUBSCRIBE: &str = "p2p.gossip.subscribe";
    /// Prefix of a relay span; the full name is `p2p.relay.<operation>` (see [`super::p2p_relay`]).
    pub const P2P_RELAY_PREFIX: &str = "p2p.relay.";
    /// A health check of a peer or of the node itself.
    pub const P2P_HEALTH_CHECK: &str = "p2p.health.check";

    // --- guild -------------------------------------------------------------------------
    /// Creating a guild.
    pub const GUILD_CREATE: &str = "guild.create";
    /// Joining a guild.
    pub const GUILD_JOIN: &str = "guild.join";
    /// Leaving a guild.
    pub const GUILD_LEAVE: &str = "guild.leave";
    /// Dissolving a guild.
    pub const GUILD_DISSOLVE: &str = "guild.dissolve";
    /// Sending a message to a guild.
    pub const GUILD_SEND_MESSAGE: &str = "guild.send_message";
    /// Receiving a guild message.
    pub const GUILD_RECEIVE_MESSAGE: &str = "guild.receive_message";
    /// A membership heartbeat.
    pub const GUILD_HEARTBEAT: &str = "guild.heartbeat";
    /// Exchanging or rotating a guild key.
    pub const GUILD_KEY_EXCHANGE: &str = "guild.key_exchange";
    /// A change in a guild's membership.
    pub const GUILD_MEMBERSHIP_UPDATE: &str = "guild.membership.update";
    /// A successor taking over a guild whose coordinator fell silent, or a coordinator
    /// deferring to a newer one.
    pub const GUILD_HANDOVER: &str = "guild.handover";

    // --- execution ---------------------------------------------------------------------
    /// One task from manifest to receipt; the parent of the spans below.
    pub const EXECUTION_TASK: &str = "execution.task";
    /// Checking a task manifest against the node's policy.
    pub const EXECUTION_MANIFEST_VALIDATE: &str = "execution.manifest.validate";
    /// Compiling a WebAssembly module (absent or `cache.hit=true` when cached).
    pub const EXECUTION_WASM_COMPILE: &str = "execution.wasm.compile";
    /// Instantiating a module.
    pub const EXECUTION_WASM_INSTANTIATE: &str = "execution.wasm.instantiate";
    /// Running a module's entry point under its limits.
    pub const EXECUTION_WASM_EXECUTE: &str = "execution.wasm.execute";
    /// Building and signing the receipt.
    pub const EXECUTION_RECEIPT_GENERATE: &str = "execution.receipt.generate";
    /// Measuring the resources a task used.
    pub const EXECUTION_RESOURCES_MEASURE: &str = "execution.resources.measure";

    // --- task entry --------------------------------------------------------------------
    /// A client submitting a task (CLI or the node's HTTP API).
    pub const TASK_SUBMIT: &str = "task.submit";
    /// The requester handing a task to one executor and checking what comes back; a failed
    /// attempt ends with the reason.
    pub const TASK_ATTEMPT: &str = "task.attempt";
    /// The requester rerunning a receipt's task in its own engine before paying it (a spot
    /// check); `status` is `match` or `mismatch`, a mismatch an error naming what differs.
    pub const TASK_VERIFY: &str = "task.verify";
    /// An executor offering to run a task it heard of in its guild.
    pub const TASK_OFFER: &str = "task.offer";
    /// An executor fetching a module too large to travel with its task, chunk by chunk,
    /// from the requester; an error names the chunk that did not match or did not come.
    pub const TASK_MODULE_FETCH: &str = "task.module.fetch";
    /// A request served by a node's HTTP API. Exported as `{method} {route template}`
    /// (`POST /v1/guilds/{id}/messages`), as OpenTelemetry's HTTP conventions name server
    /// spans.
    pub const HTTP_SERVER_REQUEST: &str = "http.server.request";

    // --- payment -----------------------------------------------------------------------
    /// Paying for one receipt, from channel open to verification.
    pub const PAYMENT_FLOW: &str = "payment.flow";
    /// Opening a payment channel.
    pub const PAYMENT_CHANNEL_OPEN: &str = "payment.channel.open";
    /// Closing a payment channel.
    pub const PAYMENT_CHANNEL_CLOSE: &str = "payment.channel.close";
    /// Moving a channel to a new signed state.
    pub const PAYMENT_CHANNEL_UPDATE: &str = "payment.channel.update";
    /// One payment within a channel.
    pub const PAYMENT_TRANSACTION: &str = "payment.transaction";
    /// Signing a channel state.
    pub const PAYMENT_SIGNATURE_SIGN: &str = "payment.signature.sign";
    /// Verifying a payment on the receiving side.
    pub const PAYMENT_VERIFY: &str = "payment.verify";
    /// Settling a channel.
    pub const PAYMENT_SETTLEMENT: &str = "payment.settlement";
    /// Raising or answering a dispute.
    pub const PAYMENT_DISPUTE: &str = "payment.dispute";

    // --- telemetry -----------------------------------------------------------------------
    /// A process's export account for one interval: what became of the spans it made
    /// (attributes in [`super::account`]). Alone in a trace of its own; the collector keeps
    /// it out of trace lists and searches that do not ask for it.
    pub const TELEMETRY_EXPORT_ACCOUNT: &str = "telemetry.export_account";
}

/// The attributes of a [`span::TELEMETRY_EXPORT_ACCOUNT`] span. The span starts and ends
/// with the interval it accounts for; the counts are of that interval, the spool's of its end.
pub mod account {
    /// How often the process reports, in milliseconds.
    pub const INTERVAL_MS: &str = "zerostate.account.interval_ms";
    /// Spans that left the export queue (exported, lost, or spooled).
    pub const SPANS_MADE: &str = "zerostate.account.spans_made";
    /// Spans the backend accepted, sent at once or from the spool.
    pub const SPANS_EXPORTED: &str = "zerostate.account.spans_exported";
    /// Spans written to the spool because the backend did not take them.
    pub const SPANS_SPOOLED: &str = "zerostate.account.spans_spooled";
    /// Spans sent from the spool and accepted.
    pub const SPANS_RESENT: &str = "zerostate.account.spans_resent";
    /// Spans dropped because the export queue was full.
    pub const DROPPED_QUEUE_FULL: &str = "zerostate.account.dropped.queue_full";
    /// Spans not recorded because the sampler left them out.
    pub const DROPPED_SAMPLED_OUT: &str = "zerostate.account.dropped.sampled_out";
    /// Spans deleted from a full spool (or unreadable in it).
    pub const DROPPED_SPOOL_OVERFLOW: &str = "zerostate.account.dropped.spool_overflow";
    /// Spans the backend refused with an answer that would not change, or that failed
    /// with no spool to keep them.
    pub const DROPPED_FAILED: &str = "zerostate.account.dropped.failed";
    /// Spans in the spool at the interval's end.
    pub const SPOOL_SPANS: &str = "zerostate.account.spool_spans";
    /// When exports began failing, in unix milliseconds; absent while they succeed.
    pub const FAILING_SINCE_MS: &str = "zerostate.account.failing_since_ms";
    /// Why the latest export failed; absent while they succeed.
    pub const ERROR: &str = "zerostate.account.error";
    /// `true` on the last account, sent as telemetry shuts down.
    pub const FINAL: &str = "zerostate.account.final";
}

/// Attribute keys. Where OpenTelemetry's semantic conventions name a thing, theirs is used.
pub mod attr {
    /// The HTTP method of a request (OpenTelemetry HTTP conventions).
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    /// The route template that matched a request, such as `/v1/guilds/{id}/messages`.
    pub const HTTP_ROUTE: &str = "http.route";
    /// The status code of a response.
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// A libp2p peer id (base58).
    pub const PEER_ID: &str = "peer.id";
    /// A guild id.
    pub const GUILD_ID: &str = "guild.id";
    /// A task id.
    pub const TASK_ID: &str = "task.id";
    /// A payment channel id.
    pub const CHANNEL_ID: &str = "channel.id";
    /// The type of a p2p message (`task_request`, `receipt`, ...).
    pub const MESSAGE_TYPE: &str = "message.type";
    /// A short outcome word (`ok`, `error`, `timeout`, ...).
    pub const STATUS: &str = "status";
    /// The human-readable error, whole chain, for a failed operation.
    pub const ERROR_MESSAGE: &str = "error.message";
    /// Duration of an operation in milliseconds (float).
    pub const DURATION_MS: &str = "duration.ms";
    /// A size in bytes.
    pub const SIZE_BYTES: &str = "size.bytes";
    /// A count of things.
    pub const COUNT: &str = "count";
    /// Peak linear memory a task used, in bytes.
    pub const RESOURCES_MEMORY_BYTES: &str = "resources.memory_bytes";
    /// Wall time a task ran, in milliseconds.
    pub const RESOURCES_DURATION_MS: &str = "resources.duration_ms";
    /// Fuel a task consumed.
    pub const RESOURCES_FUEL: &str = "resources.fuel";
    /// Whether a compiled module came from the cache.
    pub const CACHE_HIT: &str = "cache.hit";
    /// The SHA-256 of a receipt's signed bytes, hex: what a payment pays for.
    pub const RECEIPT_SHA256: &str = "receipt.sha256";

    /// Semantic convention: the logical service name (a node's name).
    pub const SERVICE_NAME: &str = "service.name";
    /// Semantic convention: the service namespace (`zerostate`).
    pub const SERVICE_NAMESPACE: &str = "service.namespace";
    /// Semantic convention: the service version.
    pub const SERVICE_VERSION: &str = "service.version";
    /// Semantic convention: the instance id (a node's libp2p peer id).
    pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";
    /// ZeroState resource attribute: the role of the node (`edge`, `relay`, `bootnode`, `cli`).
    pub const NODE_ROLE: &str = "zerostate.node.role";
    /// Semantic convention: the class of an error.
    pub const ERROR_TYPE: &str = "error.type";
    /// Semantic convention: exception type on an `exception` event.
    pub const EXCEPTION_TYPE: &str = "exception.type";
    /// Semantic convention: exception message on an `exception` event.
    pub const EXCEPTION_MESSAGE: &str = "exception.message";
    /// Semantic convention: the address of the remote peer.
    pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
}

/// Span fields with a special meaning to the span layer (as in other `tracing` bridges).
pub mod field {
    /// Overrides the span's name; used for names only known at run time.
    pub const OTEL_NAME: &str = "otel.name";
    /// The span kind: `internal` (default), `server`, `client`, `producer`, `consumer`.
    pub const OTEL_KIND: &str = "otel.kind";
    /// The span status: `ok` or `error`.
    pub const OTEL_STATUS_CODE: &str = "otel.status_code";
    /// The description that goes with an `error` status.
    pub const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";
}

/// The name of the span event that records an error, as the semantic conventions say.
pub const EXCEPTION_EVENT: &str = "exception";

/// The span name for a p2p message of type `message_type`: `p2p.message.<type>`.
pub fn p2p_message(message_type: &str) -> String {
    format!("{}{message_type}", span::P2P_MESSAGE_PREFIX)
}

/// The span name for a relay operation: `p2p.relay.<operation>`.
pub fn p2p_relay(operation: &str) -> String {
    format!("{}{operation}", span::P2P_RELAY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_names_follow_the_prefix() {
        assert_eq!(p2p_message("task_request"), "p2p.message.task_request");
        assert_eq!(p2p_relay("reserve"), "p2p.relay.reserve");
    }
}
