//! Who gets in: invitations (the default), allowlists, the join rate for members too, and
//! a failed join that leaves nothing behind.

use std::time::Duration;

use prost::Message;
use zerostate_guild::wire::{JoinReply, JoinRequest};
use zerostate_guild::{Admission, GuildConfig, GuildError, TOPIC_PREFIX};

use crate::harness::{guild_config, node, raw};

fn refusal(result: Result<zerostate_guild::GuildInfo, GuildError>) -> String {
    match result {
        Err(GuildError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guild_admits_by_single_use_invitation_and_a_refused_join_leaves_nothing() {
    let _turn = crate::harness::exclusive().await;
    let coordinator = node(None, guild_config()).await;
    let guild = coordinator.guilds.create("g").await.expect("create");
    let to = coordinator.network.peer_id();
    let at = vec![coordinator.addr.clone()];
    let (a, b) = (
        node(Some(&coordinator.addr), guild_config()).await,
        node(Some(&coordinator.addr), guild_config()).await,
    );

    // No invitation: refused, counted, and no subscription is left behind.
    let reason = refusal(a.guilds.join(&guild.id, to, at.clone(), None).await);
    assert!(reason.contains("invitation"), "{reason}");
    let topic = format!("{TOPIC_PREFIX}{}", guild.id);
    assert!(
        !a.network.topics().await.expect("topics").contains(&topic),
        "a failed join must not stay subscribed"
    );
    assert!(a.guilds.list().await.expect("list").is_empty());
    assert_eq!(coordinator.guilds.stats().joins_refused_policy, 1);

    // An invitation for b is useless to a.
    let for_b = coordinator
        .guilds
        .invite(
            &guild.id,
            Some(b.network.peer_id()),
            Duration::from_secs(60),
        )
        .await
        .expect("invite");
    let reason = refusal(
        a.guilds
            .join(&guild.id, to, at.clone(), Some(for_b.clone()))
            .await,
    );
    assert!(reason.contains("another peer"), "{reason}");

    // An open invitation admits the first to present it, and only it (again, if it asks).
    let open = coordinator
        .guilds
        .invite(&guild.id, None, Duration::from_secs(60))
        .await
        .expect("invite");
    let token = zerostate_guild::Invitation::from_token(&open.to_token()).expect("token");
    a.guilds
        .join(&guild.id, to, at.clone(), Some(token.clone()))
        .await
        .expect("a admitted");
    let reason = refusal(b.guilds.join(&guild.id, to, at.clone(), Some(token)).await);
    assert!(reason.contains("already used"), "{reason}");

    // An expired one is refused; b's own is taken.
    let brief = coordinator
        .guilds
        .invite(&guild.id, None, Duration::from_secs(1))
        .await
        .expect("invite");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reason = refusal(b.guilds.join(&guild.id, to, at.clone(), Some(brief)).await);
    assert!(reason.contains("expired"), "{reason}");
    b.guilds
        .join(&guild.id, to, at.clone(), Some(for_b))
        .await
        .expect("b admitted");
    assert_eq!(
        coordinator
            .guilds
            .info(&guild.id)
            .await
            .expect("info")
            .members
            .len(),
        3
    );
    assert_eq!(coordinator.guilds.stats().joins_refused_policy, 4);

    // Only the coordinator signs invitations, within the allowed lifetime.
    assert!(matches!(
        a.guilds
            .invite(&guild.id, None, Duration::from_secs(60))
            .await,
        Err(GuildError::NotCoordinator(_))
    ));
    assert!(matches!(
        coordinator
            .guilds
            .invite(&guild.id, None, Duration::from_secs(365 * 86_400))
            .await,
        Err(GuildError::InvalidInvitation(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlist_admits_its_peers_only() {
    let _turn = crate::harness::exclusive().await;
    let (allowed_net, _events, _) = raw(None).await;
    let coordinator = node(
        None,
        GuildConfig {
            admission: Admission::Allowlist,
            allowlist: vec![allowed_net.peer_id().to_string()],
            ..guild_config()
        },
    )
    .await;
    let guild = coordinator.guilds.create("g").await.expect("create");
    let ask = |net: zerostate_p2p::Network| {
        let request = JoinRequest {
            guild_id: guild.id.clone(),
            exchange_public: zerostate_guild::ExchangeKey::generate().public().to_vec(),
            invitation: None,
        }
        .encode_to_vec();
        let (to, at) = (coordinator.network.peer_id(), coordinator.addr.clone());
        async move {
            let reply = net
                .request(to, vec![at], "guild_join", request)
                .await
                .expect("an answer");
            JoinReply::decode(&reply.payload[..]).expect("a join reply")
        }
    };
    assert_eq!(ask(allowed_net.clone()).await.refusal, "");
    let (stranger, _events, _) = raw(Some(&coordinator.addr)).await;
    let reply = ask(stranger).await;
    assert!(reply.refusal.contains("allowlist"), "{}", reply.refusal);
    assert_eq!(coordinator.guilds.stats().joins_refused_policy, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_in_a_loop_is_rate_limited_and_costs_no_new_key_exchange() {
    let _turn = crate::harness::exclusive().await;
    // One join a second, a burst of two.
    let coordinator = node(
        None,
        GuildConfig {
            admission: Admission::Open,
            joins_per_second: 1,
            ..guild_config()
        },
    )
    .await;
    let guild = coordinator.guilds.create("g").await.expect("create");
    let (member, _events, _) = raw(Some(&coordinator.addr)).await;
    let request = JoinRequest {
        guild_id: guild.id.clone(),
        exchange_public: zerostate_guild::ExchangeKey::generate().public().to_vec(),
        invitation: None,
    }
    .encode_to_vec();
    let join = || {
        let (net, request) = (member.clone(), request.clone());
        let (to, at) = (coordinator.network.peer_id(), coordinator.addr.clone());
        async move {
            net.request(to, vec![at], "guild_join", request)
                .await
                .expect("an answer")
                .payload
        }
    };
    let first = join().await;
    let again = join().await;
    assert_eq!(
        JoinReply::decode(&first[..]).expect("reply").refusal,
        "",
        "admitted"
    );
    assert_eq!(
        first, again,
        "a repeated join at the same version and key gets the same reply: no new key \
         exchange, no new signature"
    );
    let third = JoinReply::decode(&join().await[..]).expect("reply");
    assert!(
        third.refusal.contains("too many"),
        "a member is rate limited like anyone: {third:?}"
    );
}
