//! Real swarms on loopback: delivery, requests, the DHT, relay circuits and hostile peers.

mod harness;
mod hostile;
mod network;
