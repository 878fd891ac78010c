//! A local development chain: `anvil` (Foundry's, npm `@foundry-rs/anvil`) started from
//! `PATH` on a loopback port, with its state kept in a file so that a restart finds the
//! chain where it was. The devnet's `--chain anvil` and the tests run it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use alloy::providers::{Provider, ProviderBuilder};

use crate::{Chain, ChainError, SettlementKey, WEI_PER_UNIT};

/// Anvil's first development account (from its default mnemonic, known to everyone):
/// it holds 10,000 coins on a new chain. Never a key for money anyone values.
pub const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// util-linux's `setpriv`, which starts anvil with a parent-death signal.
const SETPRIV: &str = "/usr/bin/setpriv";

/// How long anvil may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running anvil, killed when dropped.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    url: String,
    port: u16,
    chain_id: u64,
    state: Option<PathBuf>,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `anvil` runs from `PATH`.
pub fn anvil_on_path() -> bool {
    Command::new("anvil")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// For tests that need anvil: whether it is on `PATH`. Under `CI=true` a missing anvil
/// panics (`scripts/test-deps.sh` installs it) rather than letting the test pass unrun;
/// elsewhere the test is skipped, and says so.
pub fn anvil_for_tests() -> bool {
    if anvil_on_path() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "anvil is not on PATH: scripts/test-deps.sh installs it (npm @foundry-rs/anvil)"
    );
    eprintln!("skipped: anvil is not on PATH (scripts/test-deps.sh installs it)");
    false
}

impl Anvil {
    /// Starts anvil for chain `chain_id` on a free loopback port; with `state`, the chain
    /// is loaded from that file when it exists and written to it as it goes and on exit.
    pub async fn start(chain_id: u64, state: Option<&Path>) -> Result<Self, ChainError> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| not_started(format!("no free loopback port: {e}")))?
            .port();
        Self::start_on(chain_id, port, state).await
    }

    /// [`Anvil::start`] on `port` (a restart on the port the nodes know).
    pub async fn start_on(
        chain_id: u64,
        port: u16,
        state: Option<&Path>,
    ) -> Result<Self, ChainError> {
        Self::launch(chain_id, port, state, None).await
    }

    /// [`Anvil::start`], mining a block every `seconds` instead of one per transaction
    /// (a transaction then waits for the next block, as on a public chain).
    pub async fn start_mining_every(chain_id: u64, seconds: u64) -> Result<Self, ChainError> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| not_started(format!("no free loopback port: {e}")))?
            .port();
        Self::launch(chain_id, port, None, Some(seconds)).await
    }

    async fn launch(
        chain_id: u64,
        port: u16,
        state: Option<&Path>,
        block_time: Option<u64>,
    ) -> Result<Self, ChainError> {
        if !anvil_on_path() {
            return Err(not_started(
                "anvil is not on PATH: install it with `npm install -g @foundry-rs/anvil` \
                 (scripts/test-deps.sh does)"
                    .into(),
            ));
        }
        // Killed with the thread that started it (util-linux's setpriv, on every Debian):
        // a devnet killed with SIGKILL leaves no chain behind.
        let mut command = if Path::new(SETPRIV).exists() {
            let mut c = Command::new(SETPRIV);
            c.args(["--pdeathsig", "KILL", "--", "anvil"]);
            c
        } else {
            Command::new("anvil")
        };
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--chain-id", &chain_id.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(seconds) = block_time {
            command.args(["--block-time", &seconds.to_string()]);
        }
        if let Some(state) = state {
            // Written every second as well as on exit: a SIGKILL loses at most a second.
            command
                .arg("--state")
                .arg(state)
                .args(["--state-interval", "1"]);
        }
        let child = command
            .spawn()
            .map_err(|e| not_started(format!("anvil did not start: {e}")))?;
        let mut anvil = Anvil {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            chain_id,
            state: state.map(Path::to_path_buf),
        };
        let provider = ProviderBuilder::new()
            .connect_http(anvil.url.parse().map_err(|e| not_started(format!("{e}")))?);
        let started = Instant::now();
        while provider.get_chain_id().await.is_err() {
            if let Ok(Some(status)) = anvil.child.try_wait() {
                return Err(not_started(format!("anvil exited at once ({status})")));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(not_started(format!(
                    "anvil did not answer on {} within {} s",
                    anvil.url,
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(anvil)
    }

    /// Kills it with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on its port, on the state it kept (none without a state file).
    pub async fn restart(&mut self) -> Result<(), ChainError> {
        self.kill();
        let again = Self::launch(self.chain_id, self.port, self.state.as_deref(), None).await?;
        // The new process replaces the old one, already reaped (dropping it kills
        // nothing).
        drop(std::mem::replace(self, again));
        Ok(())
    }

    /// Its JSON-RPC endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The file its state is kept in, if any.
    pub fn state(&self) -> Option<&Path> {
        self.state.as_deref()
    }

    /// The process id (to kill it as a crash would).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The development account ([`DEV_KEY`]).
    pub fn dev_key(&self) -> SettlementKey {
        dev_key()
    }

    /// A fresh key funded with `coins` whole coins by `faucet`.
    pub async fn funded_key(
        &self,
        faucet: &Chain,
        coins: u64,
    ) -> Result<SettlementKey, ChainError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| ChainError::Signature(e.to_string()))?;
        let key = SettlementKey::from_secret(B256::from(secret))?;
        faucet.transfer(key.address(), coins_to_wei(coins)).await?;
        Ok(key)
    }

    /// Moves the chain's clock on by `seconds` and mines a block.
    pub async fn advance(&self, seconds: u64) -> Result<(), ChainError> {
        let parsed = self.url.parse().map_err(|e| ChainError::Unreachable {
            url: self.url.clone(),
            reason: format!("{e}"),
        })?;
        let provider = ProviderBuilder::new().connect_http(parsed);
        let fail = |e: alloy::transports::TransportError| ChainError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        let _: serde_json::Value = provider
            .raw_request("evm_increaseTime".into(), (seconds,))
            .await
            .map_err(fail)?;
        let _: serde_json::Value = provider
            .raw_request("evm_mine".into(), ())
            .await
            .map_err(fail)?;
        Ok(())
    }
}

/// The development account ([`DEV_KEY`]).
pub fn dev_key() -> SettlementKey {
    SettlementKey::from_secret(DEV_KEY.parse().expect("DEV_KEY is 32 bytes of hex"))
        .expect("DEV_KEY is a secp256k1 key")
}

/// `coins` whole coins in wei.
pub fn coins_to_wei(coins: u64) -> U256 {
    U256::from(coins) * U256::from(WEI_PER_UNIT) * U256::from(WEI_PER_UNIT)
}

fn not_started(reason: String) -> ChainError {
    ChainError::Unreachable {
        url: "anvil".into(),
        reason,
    }
}
