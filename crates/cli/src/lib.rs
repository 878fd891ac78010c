//! The `zerostate` command line: `zerostate node` (a bootnode, relay or edge node on the
//! p2p network, with its HTTP API), `zerostate devnet` (a whole local network with its
//! collector), `zerostate collector` and `zerostate trace` (traces in and out), what a task
//! author needs (`zerostate task`, `zerostate receipt verify`), and the tools that measure
//! the system across real processes (`bench`, `chaos`, from `zerostate-cluster`).

pub mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ZeroState: a peer-to-peer compute network with distributed tracing built in.
#[derive(Debug, Parser)]
#[command(name = "zerostate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with tasks.
    #[command(subcommand)]
    Task(commands::task::TaskCommand),
    /// Work with receipts.
    #[command(subcommand)]
    Receipt(commands::receipt::ReceiptCommand),
    /// Run a node (bootnode, relay or edge) until SIGINT or SIGTERM.
    Node(Box<commands::node::NodeCommand>),
    /// Run the trace collector (OTLP/HTTP in, a Jaeger api_v3 query API) until a signal.
    Collector(Box<commands::collector::CollectorCommand>),
    /// Run a local network (collector, bootnode with a guild, relay, edges) until a signal.
    Devnet(zerostate_cluster::devnet::DevnetCommand),
    /// Read traces from a collector.
    #[command(subcommand)]
    Trace(commands::trace::TraceCommand),
    /// Work with the guilds of a node on this machine.
    #[command(subcommand)]
    Guild(commands::guild::GuildCommand),
    /// Work with the payment channels of a node on this machine.
    #[command(subcommand)]
    Channel(commands::channel::ChannelCommand),
    /// Measure the system across real processes.
    #[command(subcommand)]
    Bench(zerostate_cluster::bench::BenchCommand),
    /// Inject faults into a network of real processes under load and measure what survives.
    Chaos(zerostate_cluster::chaos::ChaosCommand),
}

impl Cli {
    /// Runs the chosen command; the exit code says how it ended.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Task(c) => c.run(),
            Command::Receipt(c) => c.run(),
            Command::Node(c) => c.run(),
            Command::Collector(c) => c.run(),
            Command::Devnet(c) => c.run(),
            Command::Trace(c) => c.run(),
            Command::Guild(c) => c.run(),
            Command::Channel(c) => c.run(),
            Command::Bench(c) => c.run(),
            Command::Chaos(c) => c.run(),
        }
    }
}
