//! A guild outlives its coordinator: the first successor takes over when it falls silent,
//! two successors that act at once converge on the one named first, a coordinator restarted
//! on its data directory resumes its guild (or, replaced meanwhile, defers and comes back
//! as a member), and a restarted member is back without an invitation.

use std::time::{Duration, Instant};

use zerostate_guild::{GuildConfig, GuildInfo};
use zerostate_p2p::identity::Keypair;

use crate::harness::{Node, eventually, guild_config, join, meshed, node_kept, read_eventually};

/// A coordinator (keeping its guilds in `dir` when given) with a new guild, and `n`
/// members that joined it in order (the first is the senior one: the first successor).
async fn guild_of(
    n: usize,
    key: Keypair,
    dir: Option<&std::path::Path>,
    member_config: impl Fn(usize) -> GuildConfig,
) -> (Node, GuildInfo, Vec<Node>) {
    let coordinator = node_kept(None, guild_config(), key, dir).await;
    let guild = coordinator.guilds.create("g").await.expect("create");
    let mut members = Vec::new();
    for i in 0..n {
        let m = node_kept(
            Some(&coordinator.addr),
            member_config(i),
            Keypair::generate_ed25519(),
            None,
        )
        .await;
        join(&m, &coordinator, &guild.id).await;
        meshed(&m.network, &guild.id).await;
        members.push(m);
    }
    // Members know each other directly, as they do once the DHT has run, not only
    // through the coordinator: a guild whose members reach each other only through it
    // cannot outlive it (a member cut off that way gives up, as the partition case says).
    for (i, m) in members.iter().enumerate() {
        for other in &members[i + 1..] {
            // A dial can meet one the other side makes at the same moment and lose its
            // handshake; it is made again.
            eventually("members connected", || async {
                m.network.dial(other.addr.clone()).await.ok()
            })
            .await;
        }
    }
    let want: Vec<String> = members
        .iter()
        .map(|m| m.network.peer_id().to_string())
        .collect();
    eventually("every member named among the successors", || async {
        let info = members[0].guilds.info(&guild.id).await.expect("info");
        (info.successors.len() == n.min(3) && info.successors[..] == want[..n.min(3)]).then_some(())
    })
    .await;
    (coordinator, guild, members)
}

/// `sender` sends `body` to the guild, and every one of `readers` opens it.
async fn sent_and_read(sender: &Node, readers: &[&Node], id: &str, body: &str) {
    sender
        .guilds
        .send(id, "note", body.as_bytes().to_vec())
        .await
        .expect("send");
    for r in readers {
        read_eventually(r, id, body).await;
    }
}

async fn stop(node: &Node) {
    node.guilds.shutdown().await;
    node.network.shutdown().await;
}

/// Waits until every node in `nodes` holds the same coordinator, term, version and key
/// epoch for `id`, with `coordinator` coordinating; returns that view.
async fn converged(nodes: &[&Node], id: &str, coordinator: &Node) -> GuildInfo {
    let want = coordinator.network.peer_id().to_string();
    let deadline = Instant::now() + crate::harness::DEADLINE;
    loop {
        let mut infos = Vec::new();
        for n in nodes {
            infos.push(n.guilds.info(id).await.expect("info"));
        }
        let first = &infos[0];
        let same = infos.iter().all(|i| {
            i.coordinator == want
                && i.term == first.term
                && i.version == first.version
                && i.key_epoch == first.key_epoch
                && matches!(i.status.as_str(), "coordinator" | "member")
        });
        if same {
            return first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no convergence on {want}: {:#?}",
            infos
                .iter()
                .map(|i| (
                    &i.status,
                    &i.coordinator,
                    i.term,
                    i.version,
                    i.key_epoch,
                    i.members.len(),
                    &i.reason
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_successor_takes_over_a_silent_coordinator_and_the_guild_goes_on() {
    let _turn = crate::harness::exclusive().await;
    let (coordinator, guild, members) =
        guild_of(3, Keypair::generate_ed25519(), None, |_| guild_config()).await;
    let before = members[1].guilds.info(&guild.id).await.expect("info");
    let old = coordinator.network.peer_id().to_string();
    let killed = Instant::now();
    stop(&coordinator).await;
    let view = converged(
        &[&members[0], &members[1], &members[2]],
        &guild.id,
        &members[0],
    )
    .await;
    let took = killed.elapsed();
    println!(
        "handover: {took:?} from the coordinator's stop to one membership at every member \
         (down after {} ms)",
        guild_config().down_after().as_millis()
    );
    assert_eq!(view.term, 1);
    assert!(view.key_epoch > before.key_epoch, "the key rotated");
    assert!(view.members.iter().all(|m| m.peer_id != old));
    assert_eq!(view.members.len(), 3);
    assert_eq!(
        members[0]
            .guilds
            .info(&guild.id)
            .await
            .expect("info")
            .status,
        "coordinator"
    );
    assert!(members[1].guilds.stats().handovers >= 1);
    sent_and_read(
        &members[2],
        &[&members[0], &members[1]],
        &guild.id,
        "after the handover",
    )
    .await;
    for m in &members {
        assert_eq!(
            m.guilds.stats().rejected_forged,
            0,
            "{:?}",
            m.guilds.stats()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_successors_acting_at_once_converge_on_the_one_named_first() {
    let _turn = crate::harness::exclusive().await;
    // The second successor does not wait for its slot.
    let (coordinator, guild, members) =
        guild_of(3, Keypair::generate_ed25519(), None, |i| GuildConfig {
            take_over_without_waiting: i == 1,
            ..guild_config()
        })
        .await;
    stop(&coordinator).await;
    eventually("the second successor to take over too", || async {
        (members[1].guilds.stats().handovers >= 1).then_some(())
    })
    .await;
    let view = converged(
        &[&members[0], &members[1], &members[2]],
        &guild.id,
        &members[0],
    )
    .await;
    assert_eq!(view.term, 1);
    assert_eq!(
        members[1]
            .guilds
            .info(&guild.id)
            .await
            .expect("info")
            .status,
        "member",
        "the one named later defers"
    );
    sent_and_read(
        &members[1],
        &[&members[0], &members[2]],
        &guild.id,
        "from the one that deferred",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restarted_on_its_data_resumes_its_guild_under_a_new_key() {
    let _turn = crate::harness::exclusive().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Keypair::generate_ed25519();
    let (coordinator, guild, members) =
        guild_of(2, key.clone(), Some(dir.path()), |_| guild_config()).await;
    let before = coordinator.guilds.info(&guild.id).await.expect("info");
    stop(&coordinator).await;
    // Back well within the heartbeat window: no succession.
    let back = node_kept(
        Some(&members[0].addr),
        guild_config(),
        key,
        Some(dir.path()),
    )
    .await;
    let resumed = back.guilds.info(&guild.id).await.expect("resumed");
    assert_eq!(resumed.status, "coordinator");
    assert_eq!(resumed.members.len(), 3);
    assert!(resumed.key_epoch > before.key_epoch, "a new key epoch");
    let view = converged(&[&back, &members[0], &members[1]], &guild.id, &back).await;
    assert_eq!(view.term, 0, "no succession");
    sent_and_read(
        &members[1],
        &[&back, &members[0]],
        &guild.id,
        "after the restart",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_coordinator_back_after_its_successor_took_over_defers_and_rejoins() {
    let _turn = crate::harness::exclusive().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Keypair::generate_ed25519();
    let (coordinator, guild, members) =
        guild_of(2, key.clone(), Some(dir.path()), |_| guild_config()).await;
    stop(&coordinator).await;
    converged(&[&members[0], &members[1]], &guild.id, &members[0]).await;
    // It comes back on its data directory, still believing it coordinates.
    let back = node_kept(
        Some(&members[0].addr),
        guild_config(),
        key,
        Some(dir.path()),
    )
    .await;
    let view = converged(&[&back, &members[0], &members[1]], &guild.id, &members[0]).await;
    assert_eq!(view.term, 1);
    assert_eq!(
        view.members.len(),
        3,
        "the old coordinator is back as a member"
    );
    let old = back.guilds.info(&guild.id).await.expect("info");
    assert_eq!(old.status, "member");
    sent_and_read(&back, &[&members[1]], &guild.id, "from the old coordinator").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_on_its_data_is_back_without_an_invitation() {
    let _turn = crate::harness::exclusive().await;
    let coordinator = node_kept(None, guild_config(), Keypair::generate_ed25519(), None).await;
    let guild = coordinator.guilds.create("g").await.expect("create");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Keypair::generate_ed25519();
    let member = node_kept(
        Some(&coordinator.addr),
        guild_config(),
        key.clone(),
        Some(dir.path()),
    )
    .await;
    join(&member, &coordinator, &guild.id).await;
    meshed(&member.network, &guild.id).await;
    stop(&member).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = node_kept(
        Some(&coordinator.addr),
        guild_config(),
        key,
        Some(dir.path()),
    )
    .await;
    assert_eq!(
        back.guilds.info(&guild.id).await.expect("kept").status,
        "member",
        "in the guild from the start, with no join"
    );
    meshed(&back.network, &guild.id).await;
    sent_and_read(&coordinator, &[&back], &guild.id, "to the restarted member").await;
    sent_and_read(
        &back,
        &[&coordinator],
        &guild.id,
        "from the restarted member",
    )
    .await;
}
