//! The protocols a node speaks, composed into one libp2p behaviour.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, connection_limits, gossipsub, identify, identity::Keypair, kad, ping, relay,
    request_response,
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
    /// First, so that a connection over the limits is denied before any protocol sees it.
    pub(crate) limits: connection_limits::Behaviour,
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
        // Records other nodes ask this one to store are checked first (signed by their
        // publisher, key not bound to another): see `record.rs`.
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
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
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(config.max_connections_per_peer))
                .with_max_pending_incoming(Some(config.max_pending_connections))
                .with_max_pending_outgoing(Some(config.max_pending_connections)),
        );
        Ok(Self {
            limits,
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

/// What a frame's buffer starts at, whatever length its header announces.
const FIRST_READ: usize = 64 * 1024;

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
        // The buffer grows as bytes arrive: a peer that announces a large frame and sends
        // little costs this node what it sent, not what it announced.
        let mut buf = Vec::with_capacity(len.min(FIRST_READ));
        io.take(len as u64).read_to_end(&mut buf).await?;
        if buf.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the frame ended after {} of its {len} announced bytes",
                    buf.len()
                ),
            ));
        }
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A stream that announces `announced` bytes, sends `sent` of them, and ends; it records
    /// the largest buffer it was asked to fill.
    struct Stingy {
        header: [u8; 4],
        pos: usize,
        sent: usize,
        largest_ask: usize,
    }

    impl AsyncRead for Stingy {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.largest_ask = self.largest_ask.max(buf.len());
            let total = 4 + self.sent;
            if self.pos >= total || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let n = buf.len().min(total - self.pos);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                let at = self.pos + i;
                *b = if at < 4 { self.header[at] } else { 7 };
            }
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn a_frame_allocates_as_its_bytes_arrive_not_as_announced() {
        let max = 16 << 20;
        let codec = FrameCodec { max_bytes: max };
        let mut io = Stingy {
            header: (max as u32).to_be_bytes(),
            pos: 0,
            sent: 10,
            largest_ask: 0,
        };
        let err = futures::executor::block_on(codec.read_frame(&mut io)).expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("after 10 of its"), "{err}");
        assert!(
            io.largest_ask <= 2 * FIRST_READ,
            "asked to fill {} bytes for a frame that sent 10",
            io.largest_ask
        );
    }

    #[test]
    fn a_whole_frame_is_read() {
        let codec = FrameCodec { max_bytes: 1 << 20 };
        let mut io = Stingy {
            header: 300_000u32.to_be_bytes(),
            pos: 0,
            sent: 300_000,
            largest_ask: 0,
        };
        let frame = futures::executor::block_on(codec.read_frame(&mut io)).expect("frame");
        assert!(
            matches!(frame, Frame::Bytes(b) if b.len() == 300_000 && b.iter().all(|&x| x == 7))
        );
    }
}
