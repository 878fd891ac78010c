//! The `zerostate` command line: `zerostate node` (a bootnode, relay or edge node on the
//! p2p network, with its HTTP API), `zerostate devnet` (a whole local network with its
//! collector), `zerostate collector` and `zerostate trace` (traces in and out), what a task
//! author needs (`zerostate task`, `zerostate receipt verify`), and the tools that measure
//! the system across real processes (`bench`, `chaos`, from `zerostate-cluster`).

pub mod commands;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// What every command's exit code means unless its own `--help` says more.
pub const EXIT_CODES: &str = "Exit codes: 0 done; 2 usage or bad input, or an error (printed \
                              as `error: ...` on stderr).";

/// ZeroState: a peer-to-peer compute network with distributed tracing built in.
///
/// An address is written `host:port` or `http(s)://host:port` everywhere (flags, the
/// environment, `devnet.json`); the data directory flag is `--data-dir` (`--data` too);
/// commands that talk to a node or a collector find a running devnet's `devnet.json` (see
/// `--devnet`).
#[derive(Debug, Parser)]
#[command(name = "zerostate", version, about, after_long_help = EXIT_CODES)]
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
    #[command(
        after_long_help = "Exit codes: 0 stopped by a signal, its tasks drained; 2 could \
                                 not start (the reason on stderr) or failed."
    )]
    Node(Box<commands::node::NodeCommand>),
    /// Run the trace collector (OTLP/HTTP in, a Jaeger api_v3 query API) until a signal.
    #[command(
        after_long_help = "Exit codes: 0 stopped by a signal; 2 could not start (the \
                                 reason on stderr) or failed."
    )]
    Collector(Box<commands::collector::CollectorCommand>),
    /// Run a local network (collector, bootnode with a guild, relay, edges) until a signal.
    #[command(
        after_long_help = "Exit codes: 0 stopped by a signal (with --exit: every task \
                                 succeeded and every trace was drawn); 1 with --exit, a task \
                                 failed or a trace was not drawn; 2 could not start."
    )]
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
    #[command(
        after_long_help = "Exit codes: 0 every scenario's checks held; 1 a check failed \
                                 (the table and --report say which); 2 could not run."
    )]
    Chaos(zerostate_cluster::chaos::ChaosCommand),
}

impl Cli {
    /// The command line as clap reads it, every command's long help ending in its exit
    /// codes ([`EXIT_CODES`] where it states none of its own).
    pub fn command_with_exit_codes() -> clap::Command {
        fn with_exit_codes(command: clap::Command) -> clap::Command {
            let command = match command.get_after_long_help() {
                Some(_) => command,
                None => command.after_long_help(EXIT_CODES),
            };
            command.mut_subcommands(with_exit_codes)
        }
        with_exit_codes(Cli::command())
    }

    /// Reads this process's arguments; on a usage error prints it and exits 2.
    pub fn from_args() -> Self {
        let matches = Self::command_with_exit_codes().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command, with its path (`zerostate task submit`).
    fn commands(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        let path = format!("{path} {}", command.get_name()).trim().to_owned();
        for sub in command.get_subcommands() {
            commands(sub, &path, out);
        }
        out.push((path, command.clone()));
    }

    #[test]
    fn every_flag_has_a_one_line_help_and_every_command_its_exit_codes() {
        let mut all = Vec::new();
        commands(&Cli::command_with_exit_codes(), "", &mut all);
        let mut long = Vec::new();
        for (path, command) in &all {
            let help = command.get_after_long_help().map(|h| h.to_string());
            if !help.is_some_and(|h| h.starts_with("Exit codes: 0")) {
                long.push(format!("{path}: its long help names no exit codes"));
            }
            for arg in command.get_arguments() {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(!help.is_empty() || arg.get_id() == "help" || arg.get_id() == "version");
                // One line of a terminal, beside the flag's name; details go to --help.
                if help.chars().count() > 100 {
                    long.push(format!("{path} --{}: {help}", arg.get_id()));
                }
            }
        }
        assert!(
            long.is_empty(),
            "flags whose -h help is more than one line, commands without exit codes:\n{}",
            long.join("\n")
        );
    }
}
