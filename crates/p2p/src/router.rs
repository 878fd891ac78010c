//! One router for what arrives from the network. Each protocol a node speaks registers
//! once, naming the direct-request types it answers and the gossip topics it takes; two
//! protocols claiming one type is an error when the router is built. A request no protocol
//! claims is refused with a reason ([`REFUSAL`]) and counted, and so is one that finds the
//! node at its bound of requests in progress.
//!
//! The router owns every handler it starts: [`Router::serve`] returns only once the
//! events end or it is told to stop, and then waits, up to a deadline, for the handlers
//! still running to finish their answers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::task::JoinSet;

use crate::{Event, GossipMessage, IncomingRequest, Network};

/// The reply type with which every protocol refuses a request; the payload is the reason,
/// as text.
pub const REFUSAL: &str = "error";

/// A protocol served over the network.
pub trait ProtocolHandler: Clone + Send + Sync + 'static {
    /// Its name, for logs.
    const NAME: &'static str;
    /// The direct-request types it answers.
    const REQUESTS: &'static [&'static str];
    /// The prefix of the gossip topics it takes (none: it takes no gossip).
    const TOPICS: Option<&'static str> = None;
    /// Whether its requests are handed over one at a time, in the order they arrived, on
    /// the router's own task (the handler must then return at once, queueing the work
    /// itself); otherwise each is answered on a task of its own.
    const IN_ORDER: bool = false;

    /// Answers one request (every path answers it, a refusal with [`REFUSAL`]).
    fn request(&self, request: IncomingRequest) -> impl Future<Output = ()> + Send;

    /// Takes one gossip message on a topic under [`Self::TOPICS`].
    fn gossip(&self, message: GossipMessage) -> impl Future<Output = ()> + Send {
        let _ = message;
        async {}
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A protocol with its types erased, so that the router holds them side by side.
trait Erased: Send + Sync {
    fn request(&self, request: IncomingRequest) -> BoxFuture;
    fn gossip(&self, message: GossipMessage) -> BoxFuture;
    fn in_order(&self) -> bool;
}

impl<P: ProtocolHandler> Erased for P {
    fn request(&self, request: IncomingRequest) -> BoxFuture {
        let p = self.clone();
        Box::pin(async move { ProtocolHandler::request(&p, request).await })
    }

    fn gossip(&self, message: GossipMessage) -> BoxFuture {
        let p = self.clone();
        Box::pin(async move { ProtocolHandler::gossip(&p, message).await })
    }

    fn in_order(&self) -> bool {
        P::IN_ORDER
    }
}

/// What the router refused, readable while it runs.
#[derive(Clone, Debug, Default)]
pub struct RouterStats {
    inner: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    unrouted: AtomicU64,
    busy: AtomicU64,
    gossip_unrouted: AtomicU64,
}

impl RouterStats {
    /// Requests of a type no protocol of this node answers.
    pub fn unrouted(&self) -> u64 {
        self.inner.unrouted.load(Ordering::Relaxed)
    }

    /// Requests refused because as many were in progress as the router allows.
    pub fn busy(&self) -> u64 {
        self.inner.busy.load(Ordering::Relaxed)
    }

    /// Gossip on a topic no protocol takes (logged, and otherwise dropped).
    pub fn gossip_unrouted(&self) -> u64 {
        self.inner.gossip_unrouted.load(Ordering::Relaxed)
    }

    /// The counters as metric families.
    pub fn families(&self, f: &mut zerostate_telemetry::metrics::Families) {
        const REFUSED: &str = "p2p_requests_refused";
        const HELP: &str = "Requests this node refused before any protocol handled them, by \
                            reason (unrouted: a type none answers; busy: too many in progress).";
        f.counter_with(REFUSED, HELP, &[("reason", "unrouted")], self.unrouted())
            .counter_with(REFUSED, HELP, &[("reason", "busy")], self.busy())
            .counter(
                "p2p_gossip_unrouted",
                "Gossip messages on a topic no protocol of this node takes.",
                self.gossip_unrouted(),
            );
    }
}

/// Builds a [`Router`]: one [`Router::route`] per protocol.
pub struct Router {
    network: Network,
    requests: HashMap<&'static str, (&'static str, Arc<dyn Erased>)>,
    topics: Vec<(&'static str, Arc<dyn Erased>)>,
    max_in_progress: usize,
    stats: RouterStats,
}

/// Requests answered at once, by default.
const MAX_IN_PROGRESS: usize = 256;

impl Router {
    /// A router answering on `network`, with no protocol yet.
    pub fn new(network: Network) -> Self {
        Self {
            network,
            requests: HashMap::new(),
            topics: Vec::new(),
            max_in_progress: MAX_IN_PROGRESS,
            stats: RouterStats::default(),
        }
    }

    /// At most `n` requests answered at once (at least 1); more are refused as busy.
    pub fn max_in_progress(mut self, n: usize) -> Self {
        self.max_in_progress = n.max(1);
        self
    }

    /// Serves `protocol`.
    ///
    /// # Panics
    ///
    /// When another protocol registered already answers one of its request types: two
    /// handlers for one type is a mistake in the node's code, found by any node that starts.
    pub fn route<P: ProtocolHandler>(mut self, protocol: P) -> Self {
        let erased: Arc<dyn Erased> = Arc::new(protocol);
        for &t in P::REQUESTS {
            if let Some((other, _)) = self.requests.insert(t, (P::NAME, erased.clone())) {
                panic!(
                    "request type {t} is claimed by both {other} and {}",
                    P::NAME
                );
            }
        }
        if let Some(prefix) = P::TOPICS {
            self.topics.push((prefix, erased));
        }
        self
    }

    /// Its counters, to read while it serves.
    pub fn stats(&self) -> RouterStats {
        self.stats.clone()
    }

    /// Routes `events` until they end or `stop` resolves; then waits up to `drain` for
    /// the requests still being answered, and aborts what is left. Returns how many
    /// handlers it had to abort.
    pub async fn serve(
        self,
        mut events: Receiver<Event>,
        stop: impl Future<Output = ()>,
        drain: Duration,
    ) -> usize {
        let mut running = JoinSet::new();
        tokio::pin!(stop);
        loop {
            let event = tokio::select! {
                biased;
                () = &mut stop => break,
                // Finished handlers are reaped as they end, so the set holds only live ones.
                Some(_) = running.join_next(), if !running.is_empty() => continue,
                event = events.recv() => event,
            };
            let Some(event) = event else { break };
            match event {
                Event::Request(r) => self.request(r, &mut running).await,
                Event::Gossip(m) => self.gossip(m).await,
            }
        }
        drop(events);
        let deadline = tokio::time::Instant::now() + drain;
        while !running.is_empty() {
            match tokio::time::timeout_at(deadline, running.join_next()).await {
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let left = running.len();
        if left > 0 {
            tracing::warn!(
                left,
                "requests still being answered after {} ms: aborted",
                drain.as_millis()
            );
        }
        running.shutdown().await;
        left
    }

    async fn request(&self, r: IncomingRequest, running: &mut JoinSet<()>) {
        let Some((_, handler)) = self.requests.get(r.envelope.message_type.as_str()) else {
            self.stats.inner.unrouted.fetch_add(1, Ordering::Relaxed);
            let why = format!(
                "this node has no handler for message type {}",
                r.envelope.message_type
            );
            return self.refuse(r, why).await;
        };
        if handler.in_order() {
            return handler.request(r).await;
        }
        if running.len() >= self.max_in_progress {
            self.stats.inner.busy.fetch_add(1, Ordering::Relaxed);
            let why = format!(
                "this node is answering {} requests already: try again later",
                running.len()
            );
            return self.refuse(r, why).await;
        }
        running.spawn(handler.request(r));
    }

    async fn refuse(&self, r: IncomingRequest, why: String) {
        let span = r.span.clone();
        if let Err(e) = self.network.respond(r, REFUSAL, why.into_bytes()).await {
            zerostate_telemetry::SpanExt::record_error(&span, &e);
        }
    }

    async fn gossip(&self, m: GossipMessage) {
        if let Some((_, handler)) = self.topics.iter().find(|(p, _)| m.topic.starts_with(p)) {
            return handler.gossip(m).await;
        }
        self.stats
            .inner
            .gossip_unrouted
            .fetch_add(1, Ordering::Relaxed);
        let _entered = m.span.enter();
        tracing::info!(
            topic = %m.topic,
            message.type = %m.envelope.message_type,
            from = %m.source.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            "gossip received"
        );
    }
}

/// Declares the direct-request types of a protocol as an enum, each variant naming the
/// constant that spells its type on the wire: `TYPES` lists them (for
/// [`ProtocolHandler::REQUESTS`]), `of` reads a type off an envelope, `as_str` spells one.
/// A handler that matches on the enum is told by the compiler when a type is added and
/// not handled.
///
/// ```
/// pub const PING: &str = "demo_ping";
/// pub const PONG: &str = "demo_pong";
/// zerostate_p2p::request_types! {
///     /// What the demo protocol answers.
///     pub enum Demo {
///         /// A ping.
///         Ping = PING,
///         /// A pong.
///         Pong = PONG,
///     }
/// }
/// assert_eq!(Demo::TYPES, ["demo_ping", "demo_pong"]);
/// assert_eq!(Demo::of("demo_pong"), Some(Demo::Pong));
/// assert_eq!(Demo::of("demo_pang"), None);
/// assert_eq!(Demo::Ping.as_str(), "demo_ping");
/// ```
#[macro_export]
macro_rules! request_types {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $ty:path ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every type, as the wire spells it.
            pub const TYPES: &'static [&'static str] = &[$($ty),+];

            /// The kind of a request of type `message_type`, if it is one of these.
            pub fn of(message_type: &str) -> ::core::option::Option<Self> {
                $( if message_type == $ty { return ::core::option::Option::Some(Self::$variant); } )+
                ::core::option::Option::None
            }

            /// Its type, as the wire spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $ty, )+
                }
            }
        }
    };
}
