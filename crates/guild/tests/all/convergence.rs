//! A guild converges after lost gossip: a member that missed a membership update holds a
//! new member's message until it has caught up, then opens it; a restarted receiver does
//! not open old ciphertexts again; and every refusal ends the message's receive span, in
//! the sender's trace, with the reason.

use std::time::Duration;

use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::InMemorySpanExporter;
use zerostate_guild::GuildConfig;
use zerostate_p2p::identity::Keypair;
use zerostate_telemetry::{LogFormat, TelemetryBuilder, TelemetryConfig};

use crate::harness::{
    Spied, capture, eventually, guild_config, join, member_with_key, meshed, node, read_eventually,
    spied_guild,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_an_update_holds_the_new_members_message_then_opens_it() {
    let _turn = crate::harness::exclusive().await;
    let coordinator = node(None, guild_config()).await;
    let guild = coordinator.guilds.create("g").await.expect("create");
    // This member never applies a membership update from the topic.
    let deaf = node(
        Some(&coordinator.addr),
        GuildConfig {
            withhold_membership_updates: true,
            ..guild_config()
        },
    )
    .await;
    join(&deaf, &coordinator, &guild.id).await;
    meshed(&deaf.network, &guild.id).await;
    let newcomer = node(Some(&coordinator.addr), guild_config()).await;
    join(&newcomer, &coordinator, &guild.id).await;
    meshed(&newcomer.network, &guild.id).await;
    // Sent at once: the deaf member does not know the newcomer yet.
    newcomer
        .guilds
        .send(&guild.id, "note", b"from the newcomer".to_vec())
        .await
        .expect("send");
    read_eventually(&deaf, &guild.id, "from the newcomer").await;
    let stats = deaf.guilds.stats();
    assert_eq!(stats.rejected_not_member, 0, "{stats:?}");
    assert!(
        deaf.guilds.info(&guild.id).await.expect("info").version >= 3,
        "caught up"
    );
    assert!(stats.syncs >= 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_receiver_does_not_open_an_old_ciphertext_again() {
    let _turn = crate::harness::exclusive().await;
    let Spied {
        coordinator,
        guild,
        topic,
        spy: _spy,
        mut spy_events,
    } = spied_guild(guild_config()).await;
    let sender = member_with_key(&coordinator, &guild.id, Keypair::generate_ed25519()).await;
    let receiver_key = Keypair::generate_ed25519();
    let receiver = member_with_key(&coordinator, &guild.id, receiver_key.clone()).await;
    sender
        .guilds
        .send(&guild.id, "note", b"once".to_vec())
        .await
        .expect("send");
    let frame = capture(&mut spy_events, "guild_message").await;
    read_eventually(&receiver, &guild.id, "once").await;
    // Older than the clock skew a joiner allows (2 s) by the time the receiver is back.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The receiver restarts with the same identity and rejoins (same key epoch).
    receiver.guilds.shutdown().await;
    receiver.network.shutdown().await;
    let receiver = member_with_key(&coordinator, &guild.id, receiver_key).await;
    // The sender publishes the captured frame again.
    sender
        .network
        .publish_opaque(&topic, "guild_message", frame)
        .await
        .expect("replay");
    eventually("the old ciphertext refused", || async {
        (receiver.guilds.stats().rejected_replayed >= 1).then_some(())
    })
    .await;
    assert!(
        receiver
            .guilds
            .messages(&guild.id)
            .await
            .expect("messages")
            .is_empty()
    );
    // The sender's new messages still open.
    sender
        .guilds
        .send(&guild.id, "note", b"new".to_vec())
        .await
        .expect("send");
    read_eventually(&receiver, &guild.id, "new").await;
}

#[test]
fn a_refusal_ends_the_receive_span_in_the_senders_trace_with_the_reason() {
    let exporter = InMemorySpanExporter::default();
    let mut config = TelemetryConfig::default();
    config.log_format = LogFormat::Off;
    let (dispatch, guard) = TelemetryBuilder::new(config)
        .with_exporter(exporter.clone())
        .build()
        .expect("telemetry");
    // One thread, so that every node's spans reach this subscriber.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tracing::dispatcher::with_default(&dispatch, || {
        runtime.block_on(async {
            let _turn = crate::harness::exclusive().await;
            let Spied {
                coordinator,
                guild,
                topic,
                spy: _spy,
                mut spy_events,
            } = spied_guild(guild_config()).await;
            let member =
                member_with_key(&coordinator, &guild.id, Keypair::generate_ed25519()).await;
            let membership = capture(&mut spy_events, "guild_membership").await;
            member
                .guilds
                .send(&guild.id, "note", b"one".to_vec())
                .await
                .expect("send");
            let frame = capture(&mut spy_events, "guild_message").await;
            read_eventually(&coordinator, &guild.id, "one").await;
            member
                .network
                .publish_opaque(&topic, "guild_message", frame)
                .await
                .expect("replay");
            eventually("the replay refused", || async {
                (coordinator.guilds.stats().rejected_replayed >= 1).then_some(())
            })
            .await;
            // The membership the member already holds, once more from the coordinator, as
            // gossip reordering delivers it on a healthy network.
            coordinator
                .network
                .publish_opaque(&topic, "guild_membership", membership)
                .await
                .expect("again");
            eventually("the older membership counted", || async {
                (member.guilds.stats().rejected_stale >= 1).then_some(())
            })
            .await;
        });
    });
    guard.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let send = spans
        .iter()
        .find(|s| s.name == "guild.send_message")
        .expect("guild.send_message");
    let refused: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.name == "p2p.message.guild_message"
                && matches!(&s.status, Status::Error { description } if description.contains("replay"))
        })
        .collect();
    assert_eq!(refused.len(), 1, "one refusal span");
    // An older membership is an event on its receive span, not an error.
    let older: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.name == "p2p.message.guild_membership"
                && s.events
                    .iter()
                    .any(|e| e.name.contains("older than the membership"))
        })
        .collect();
    assert!(
        !older.is_empty(),
        "the older membership's span has the event"
    );
    assert!(
        older
            .iter()
            .all(|s| !matches!(s.status, Status::Error { .. })),
        "{older:?}"
    );
    assert_eq!(
        refused[0].span_context.trace_id(),
        send.span_context.trace_id(),
        "the refusal is in the sender's trace"
    );
}
