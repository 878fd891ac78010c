//! What an honest guild does.

use crate::harness::{eventually, guild_config, join, meshed, node, read_eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_read_each_other_outsiders_and_leavers_do_not() {
    let _turn = crate::harness::exclusive().await;
    let coordinator = node(None, guild_config()).await;
    let guild = coordinator
        .guilds
        .create("render farm")
        .await
        .expect("create");
    assert_eq!(guild.status, "coordinator");
    let mut members = Vec::new();
    for _ in 0..3 {
        let m = node(Some(&coordinator.addr), guild_config()).await;
        let info = join(&m, &coordinator, &guild.id).await;
        assert_eq!(info.status, "member");
        members.push(m);
    }
    let watcher = node(Some(&coordinator.addr), guild_config()).await;
    watcher.guilds.watch(&guild.id).await.expect("watch");
    eventually("every member sees four members", || async {
        let mut all = true;
        for m in &members {
            all &= m.guilds.info(&guild.id).await.expect("info").members.len() == 4;
        }
        all.then_some(())
    })
    .await;
    for m in &members {
        meshed(&m.network, &guild.id).await;
    }
    meshed(&watcher.network, &guild.id).await;

    // A message from a member reaches and opens on every other member.
    members[1]
        .guilds
        .send(&guild.id, "task_request", b"frame 7".to_vec())
        .await
        .expect("send");
    for n in [&coordinator, &members[0], &members[2]] {
        let got = eventually("the message decrypted", || async {
            n.guilds.messages(&guild.id).await.expect("messages").pop()
        })
        .await;
        assert_eq!(got.body, "frame 7");
        assert_eq!(got.message_type, "task_request");
        assert_eq!(got.from, members[1].network.peer_id().to_string());
    }
    // The watcher sees the ciphertext and opens nothing.
    let seen = eventually("the watcher to see the ciphertext", || async {
        let info = watcher.guilds.info(&guild.id).await.expect("info");
        (info.ciphertexts_seen >= 1).then_some(info)
    })
    .await;
    assert_eq!(seen.undecryptable, seen.ciphertexts_seen);
    assert!(
        watcher
            .guilds
            .messages(&guild.id)
            .await
            .expect("messages")
            .is_empty()
    );

    // A member leaves: the key rotates, and it cannot read what follows.
    let epoch_before = coordinator
        .guilds
        .info(&guild.id)
        .await
        .expect("info")
        .key_epoch;
    members[2].guilds.leave(&guild.id).await.expect("leave");
    eventually("the remaining members to hold the new key", || async {
        let mut all = true;
        for m in &members[..2] {
            let info = m.guilds.info(&guild.id).await.expect("info");
            all &= info.key_epoch > epoch_before && info.members.len() == 3;
        }
        all.then_some(())
    })
    .await;
    let leaver_before = members[2].guilds.info(&guild.id).await.expect("info");
    assert_eq!(leaver_before.status, "left");
    members[0]
        .guilds
        .send(&guild.id, "task_request", b"after the leave".to_vec())
        .await
        .expect("send");
    read_eventually(&coordinator, &guild.id, "after the leave").await;
    let leaver = eventually("the leaver to see the new ciphertext", || async {
        let info = members[2].guilds.info(&guild.id).await.expect("info");
        (info.ciphertexts_seen > leaver_before.ciphertexts_seen).then_some(info)
    })
    .await;
    assert!(
        leaver.undecryptable > leaver_before.undecryptable,
        "{leaver:?}"
    );
    let read = members[2]
        .guilds
        .messages(&guild.id)
        .await
        .expect("messages");
    assert!(read.iter().all(|m| m.body != "after the leave"));
}

/// Members send their heartbeats to the coordinator, not to the whole guild, and the
/// coordinator answers each: what a member receives on the topic while the guild is idle
/// is the coordinator's beat once a missed-heartbeat window, whatever the guild's size, and
/// every member still counts every other as up on the coordinator's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_beat_to_the_coordinator_and_hear_only_its_beat() {
    let _turn = crate::harness::exclusive().await;
    let coordinator = node(None, guild_config()).await;
    let guild = coordinator.guilds.create("quiet").await.expect("create");
    let mut members = Vec::new();
    for _ in 0..4 {
        let m = node(Some(&coordinator.addr), guild_config()).await;
        join(&m, &coordinator, &guild.id).await;
        members.push(m);
    }
    eventually("every member sees five members", || async {
        let mut all = true;
        for m in &members {
            all &= m.guilds.info(&guild.id).await.expect("info").members.len() == 5;
        }
        all.then_some(())
    })
    .await;
    for m in &members {
        meshed(&m.network, &guild.id).await;
    }
    // Twelve heartbeat intervals of an idle guild.
    let intervals: u64 = 12;
    let window = std::time::Duration::from_millis(
        guild_config()
            .heartbeat_interval_ms
            .saturating_mul(intervals),
    );
    let heard: Vec<u64> = members
        .iter()
        .map(|m| m.network.stats().gossip_received)
        .collect();
    let asked = coordinator.network.stats().requests_received;
    tokio::time::sleep(window).await;
    for (m, before) in members.iter().zip(heard) {
        let got = m.network.stats().gossip_received - before;
        // The coordinator's beat once a missed-heartbeat window (8 intervals here), and one
        // more for a round across an edge of the window; every interval would be 12, and
        // the four members beating on the topic as well 60.
        assert!(
            got <= intervals / 2 + 2,
            "a member received {got} gossip messages in {intervals} idle heartbeat intervals"
        );
        let info = m.guilds.info(&guild.id).await.expect("info");
        assert!(info.members.iter().all(|x| x.up), "{info:?}");
    }
    let beats = coordinator.network.stats().requests_received - asked;
    assert!(
        beats >= intervals.saturating_mul(4) / 2,
        "the coordinator was asked {beats} times in {intervals} intervals by four members"
    );
    let seen = coordinator.guilds.info(&guild.id).await.expect("info");
    assert!(seen.members.iter().all(|x| x.up), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_is_removed_and_a_lost_coordinator_is_succeeded() {
    let _turn = crate::harness::exclusive().await;
    let coordinator = node(None, guild_config()).await;
    let guild = coordinator.guilds.create("g").await.expect("create");
    let stays = node(Some(&coordinator.addr), guild_config()).await;
    let dies = node(Some(&coordinator.addr), guild_config()).await;
    for m in [&stays, &dies] {
        join(m, &coordinator, &guild.id).await;
    }
    meshed(&stays.network, &guild.id).await;
    let epoch = coordinator
        .guilds
        .info(&guild.id)
        .await
        .expect("info")
        .key_epoch;
    dies.network.shutdown().await;
    let dead = dies.network.peer_id().to_string();
    eventually("the silent member removed everywhere", || async {
        let c = coordinator.guilds.info(&guild.id).await.expect("info");
        let s = stays.guilds.info(&guild.id).await.expect("info");
        (c.members.iter().all(|m| m.peer_id != dead)
            && s.members.iter().all(|m| m.peer_id != dead)
            && s.key_epoch > epoch)
            .then_some(())
    })
    .await;
    assert!(coordinator.guilds.stats().members_marked_down >= 1);

    coordinator.network.shutdown().await;
    // The one member left is the first successor: it takes the guild over.
    let taken = eventually("the member to take the guild over", || async {
        let s = stays.guilds.info(&guild.id).await.expect("info");
        (s.status == "coordinator").then_some(s)
    })
    .await;
    assert_eq!(taken.term, 1);
    assert_eq!(taken.coordinator, stays.network.peer_id().to_string());
    assert_eq!(taken.members.len(), 1, "{taken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_dissolves_and_only_the_coordinator_can() {
    let _turn = crate::harness::exclusive().await;
    let coordinator = node(None, guild_config()).await;
    let guild = coordinator
        .guilds
        .create("short-lived")
        .await
        .expect("create");
    let member = node(Some(&coordinator.addr), guild_config()).await;
    join(&member, &coordinator, &guild.id).await;
    meshed(&member.network, &guild.id).await;
    assert!(matches!(
        member.guilds.dissolve(&guild.id).await,
        Err(zerostate_guild::GuildError::NotCoordinator(_))
    ));
    assert!(matches!(
        coordinator.guilds.leave(&guild.id).await,
        Err(zerostate_guild::GuildError::CoordinatorLeaving(_))
    ));
    coordinator
        .guilds
        .dissolve(&guild.id)
        .await
        .expect("dissolve");
    let info = eventually("the member to learn of the dissolution", || async {
        let info = member.guilds.info(&guild.id).await.expect("info");
        (info.status == "dissolved").then_some(info)
    })
    .await;
    assert_eq!(info.reason.as_deref(), Some("dissolved by the coordinator"));
    assert!(member.guilds.send(&guild.id, "x", vec![]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_active_guilds_shuts_down_promptly() {
    let _turn = crate::harness::exclusive().await;
    let coordinator = node(None, guild_config()).await;
    coordinator.guilds.create("busy").await.expect("create");
    let started = std::time::Instant::now();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        coordinator.guilds.shutdown(),
    )
    .await
    .expect("the service stops within 5 s");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Every handle is closed now, and shutting down again does nothing.
    assert!(matches!(
        coordinator.guilds.list().await,
        Err(zerostate_guild::GuildError::Closed)
    ));
    coordinator.guilds.shutdown().await;
}
