//! The protocols a node speaks, composed into one libp2p behaviour.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, gossipsub, identify, identity::Keypair, kad, ping, relay, request_response,
};
use sha2::{Digest, Sha256};

use crate::config::{NetworkConfig, Role};

/// Protocol of direct messages (request and response, each an envelope).
pub const REQUEST_PROTOCOL: StreamProtocol = StreamProtocol::new("/zerostate/request/1.0.0");
/// Protocol of the DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/zerostate/kad/1.0.0");
/// Protocol version announced by identify.
pub const IDENTIFY_PROTOCOL: &str = "/zerostate/1.0.0";

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) request: request_response::Behaviour<FrameCodec>,
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        config: &NetworkConfig,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(format!("zerostate/{}", env!("CARGO_PKG_VERSION"))),
        );
        let ping = ping::Behaviour::new(
            ping::Config::new().with_interval(Duration::from_millis(config.ping_interval_ms)),
        );

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_query_timeout(Duration::from_secs(30));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Every node answers DHT queries: loopback and LAN devnets have no confirmed external
        // address, which would otherwise keep them all in client mode.
        kad.set_mode(Some(kad::Mode::Server));

        // Content-addressed ids: the same bytes are the same message, whoever forwards them.
        let message_id = |m: &gossipsub::Message| {
            let digest = Sha256::digest(&m.data);
            gossipsub::MessageId::from(digest[..20].to_vec())
        };
        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(config.gossip_heartbeat_ms))
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .message_id_fn(message_id)
            .max_transmit_size(config.max_message_bytes + 1024)
            .build()
            .map_err(|e| format!("gossip configuration: {e}"))?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| format!("gossip: {e}"))?;
        let mut score = gossipsub::PeerScoreParams::default();
        // Application score is what this node's own checks say of a peer (dropped envelopes).
        score.app_specific_weight = 1.0;
        // Many peers behind one IP address lose score (a Sybil defence); every node of a
        // one-machine devnet is on loopback, so loopback is exempt.
        score.ip_colocation_factor_whitelist.extend([
            IpAddr::from(Ipv4Addr::LOCALHOST),
            IpAddr::from(Ipv6Addr::LOCALHOST),
        ]);
        gossipsub
            .with_peer_score(score, gossipsub::PeerScoreThresholds::default())
            .map_err(|e| format!("gossip peer scoring: {e}"))?;

        let relay_server = Toggle::from(
            (config.role == Role::Relay)
                .then(|| relay::Behaviour::new(peer_id, relay::Config::default())),
        );
        let request = request_response::Behaviour::with_codec(
            FrameCodec {
                max_bytes: config.max_message_bytes,
            },
            [(REQUEST_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(config.request_timeout()),
        );
        Ok(Self {
            identify,
            ping,
            kad,
            gossipsub,
            relay_server,
            relay_client,
            request,
        })
    }
}

/// Frames of direct messages: a 4-byte big-endian length, then that many bytes. A length
/// above the bound is not read: the frame arrives as [`Frame::Oversized`], so that the node
/// can count it and blame the sender (a read error would vanish inside libp2p).
#[derive(Clone, Debug)]
pub(crate) struct FrameCodec {
    pub(crate) max_bytes: usize,
}

/// One direct message as read off the wire.
#[derive(Debug)]
pub(crate) enum Frame {
    /// Its bytes, within the bound.
    Bytes(Vec<u8>),
    /// A frame announced as larger than the bound; its body was not read.
    Oversized {
        /// The announced length.
        size: usize,
    },
}

impl FrameCodec {
    async fn read_frame<T: AsyncRead + Unpin + Send>(&self, io: &mut T) -> io::Result<Frame> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_bytes {
            return Ok(Frame::Oversized { size: len });
        }
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        Ok(Frame::Bytes(buf))
    }

    async fn write_frame<T: AsyncWrite + Unpin + Send>(
        &self,
        io: &mut T,
        frame: Frame,
    ) -> io::Result<()> {
        let Frame::Bytes(bytes) = frame else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an oversized frame is never sent",
            ));
        };
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&l| l as usize <= self.max_bytes)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "message of {} bytes is larger than the limit of {} bytes",
                        bytes.len(),
                        self.max_bytes
                    ),
                )
            })?;
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(&bytes).await?;
        io.close().await
    }
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Frame;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, res).await
    }
}
