//! The operations listener (`--admin`, loopback by default, its own port): `/metrics` for
//! Prometheus, `/healthz` and `/readyz` for probes. It asks for no token, so it serves
//! nothing private: counts, and whether each part of the node is able to work.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use zerostate_guild::Guilds;
use zerostate_p2p::{Network, PeerId};
use zerostate_telemetry::StatsReader;
use zerostate_telemetry::metrics::{self, Families};

use crate::metrics::NodeMetrics;

/// What a node is expected to have before it is ready.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    /// It is the bootnode: it may be alone.
    pub bootnode: bool,
    /// The nodes it was told to connect to on start (none: no peer is needed).
    pub bootstrap: usize,
    /// The guild it joins or creates on start, by id (joins) or `None`.
    pub guild: Option<String>,
    /// It creates a guild on start: it must be its coordinator.
    pub creates_guild: bool,
    /// The guilds' heartbeat interval: a member that has heard nothing from its
    /// coordinator for three of them is not ready.
    pub heartbeat_interval: std::time::Duration,
    /// The peer that runs the ledger, when payments are configured and it is not this node.
    pub ledger: Option<PeerId>,
    /// Its data directory, which must be writable.
    pub data_dir: PathBuf,
    /// What it was told to do wrong (`--misbehave`, tests only).
    pub misbehaving: Vec<String>,
}

#[derive(Clone)]
struct Admin {
    network: Network,
    guilds: Guilds,
    metrics: NodeMetrics,
    telemetry: StatsReader,
    payments: zerostate_payment_protocol::Payments,
    router: zerostate_p2p::RouterStats,
    expect: Arc<Expect>,
}

/// Serves the operations listener on `listener` until `stop` resolves.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: tokio::net::TcpListener,
    network: Network,
    guilds: Guilds,
    payments: zerostate_payment_protocol::Payments,
    router: zerostate_p2p::RouterStats,
    metrics: NodeMetrics,
    telemetry: StatsReader,
    expect: Expect,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Admin {
            network,
            guilds,
            metrics,
            telemetry,
            payments,
            router,
            expect: Arc::new(expect),
        });
    crate::api::serve_bounded(listener, app, stop).await;
}

async fn scrape(State(admin): State<Admin>) -> Response {
    let mut f = Families::new();
    admin.network.stats().families(&mut f);
    admin.network.type_families(&mut f);
    admin.guilds.stats().families(&mut f);
    admin.router.families(&mut f);
    admin.telemetry.read().families(&mut f);
    if let Ok(peers) = admin.network.peers().await {
        f.gauge(
            "p2p_peers",
            "Peers connected now.",
            u64::try_from(peers.len()).unwrap_or(u64::MAX),
        );
    }
    if let Ok(guilds) = admin.guilds.list().await {
        const GUILDS: &str = "guild_guilds";
        const HELP: &str = "Guilds this node knows, by its status in them.";
        for status in [
            "coordinator",
            "member",
            "watching",
            "left",
            "removed",
            "dissolved",
        ] {
            let n = guilds.iter().filter(|g| g.status == status).count();
            f.gauge_with(
                GUILDS,
                HELP,
                &[("status", status)],
                u64::try_from(n).unwrap_or(u64::MAX),
            );
        }
        let members: usize = guilds
            .iter()
            .filter(|g| matches!(g.status.as_str(), "coordinator" | "member"))
            .map(|g| g.members.len())
            .sum();
        f.gauge(
            "guild_members",
            "Members of the guilds this node is in, summed.",
            u64::try_from(members).unwrap_or(u64::MAX),
        );
    }
    {
        const OPEN: &str = "payment_channels_open";
        const HELP: &str = "Channels not being settled, by this node's side.";
        let [payer, payee] = admin.payments.open_counts();
        for (side, n) in [("payer", payer), ("payee", payee)] {
            f.gauge_with(OPEN, HELP, &[("side", side)], n);
        }
    }
    let mut registry = admin.metrics.registry(f);
    registry.register_with_unit(
        "p2p_gossip_delivery",
        "Time from a gossip message's author to this node (by the author's clock).",
        prometheus_client::registry::Unit::Seconds,
        admin.network.delivery_latency().0,
    );
    (
        [(CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(&registry),
    )
        .into_response()
}

/// One component's state: `ok`, `off` (not configured), or what is wrong.
#[derive(Serialize)]
struct Readiness {
    ready: bool,
    components: std::collections::BTreeMap<&'static str, String>,
}

async fn ready(State(admin): State<Admin>) -> Response {
    let e = &admin.expect;
    let mut c = std::collections::BTreeMap::new();
    let ok = || "ok".to_owned();
    c.insert(
        "listening",
        match admin.network.listen_addresses().await {
            Ok(a) if !a.is_empty() => ok(),
            Ok(_) => "not ready: listening on no address".into(),
            Err(err) => format!("not ready: {}", zerostate_telemetry::error_chain(&err)),
        },
    );
    let peers = admin.network.peers().await.unwrap_or_default();
    c.insert(
        "peers",
        if !peers.is_empty() {
            ok()
        } else if e.bootnode || e.bootstrap == 0 {
            "ok (no peer needed yet)".into()
        } else {
            format!(
                "not ready: connected to no peer (none of the {} bootstrap nodes answered)",
                e.bootstrap
            )
        },
    );
    let guilds = admin.guilds.list().await.unwrap_or_default();
    c.insert(
        "guild",
        match (&e.guild, e.creates_guild) {
            (None, false) => "off".into(),
            (None, true) => {
                if guilds.iter().any(|g| g.handover) {
                    "not ready: coordinator handover".into()
                } else if guilds
                    .iter()
                    .any(|g| matches!(g.status.as_str(), "coordinator" | "member"))
                {
                    ok()
                } else {
                    "not ready: the guild this node creates is not up".into()
                }
            }
            (Some(id), _) => match guilds.iter().find(|g| &g.id == id) {
                Some(g) if g.status == "member" && g.handover => {
                    "not ready: coordinator handover".into()
                }
                Some(g) if g.status == "member" => {
                    let silent = g
                        .members
                        .iter()
                        .find(|m| m.peer_id == g.coordinator)
                        .map_or(u64::MAX, |m| m.last_heard_ms);
                    let limit = e.heartbeat_interval.saturating_mul(3);
                    if u128::from(silent) > limit.as_millis() {
                        format!(
                            "not ready: guild {id}: nothing heard from its coordinator {} for \
                             {silent} ms",
                            g.coordinator
                        )
                    } else {
                        ok()
                    }
                }
                Some(g) if g.status == "coordinator" => ok(),
                Some(g) => format!(
                    "not ready: guild {id} is {}{}",
                    g.status,
                    g.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
                None => format!("not ready: not admitted to guild {id} yet"),
            },
        },
    );
    c.insert(
        "ledger",
        match e.ledger {
            None => "off".into(),
            Some(ledger) if peers.iter().any(|p| p.peer_id == ledger.to_string()) => ok(),
            Some(ledger) => format!("not ready: the ledger node {ledger} is not connected"),
        },
    );
    let t = admin.telemetry.read();
    c.insert(
        "span_export",
        if !admin.telemetry.is_exporting() {
            "off".into()
        } else if t.failing {
            format!(
                "not ready: exporting spans fails (failed exports: {}; spans spooled to send \
                 again: {}; spans lost: {})",
                t.failed_exports,
                t.spool_spans,
                t.spans_lost()
            )
        } else {
            ok()
        },
    );
    let probe = e.data_dir.join(".readyz");
    c.insert(
        "data_dir",
        match std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe)) {
            Ok(()) => ok(),
            Err(err) => format!("not ready: cannot write to {}: {err}", e.data_dir.display()),
        },
    );
    // Informational: a node that misbehaves on purpose works, and says so.
    c.insert(
        "misbehaviour",
        if e.misbehaving.is_empty() {
            "off".into()
        } else {
            format!("on (tests only): {}", e.misbehaving.join(", "))
        },
    );
    let ready = c.values().all(|v| !v.starts_with("not ready"));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            components: c,
        }),
    )
        .into_response()
}
