//! One node's connection to the channel contract on a chain.

use std::sync::Arc;
use std::time::Duration;

use alloy::contract::SolCallBuilder;

use alloy::network::{ReceiptResponse, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::sol_types::{SolEventInterface, SolValue};
use zerostate_payment::Amount;

use crate::contract::ZeroStateChannels::{self, ZeroStateChannelsErrors, ZeroStateChannelsEvents};
use crate::{ChainError, SettlementKey, VoucherDomain, from_wei, to_wei};

/// How long a transaction may take to be mined with its confirmations.
const MINING_TIMEOUT: Duration = Duration::from_secs(60);

/// A mined transaction: its hash, block and the gas it used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tx {
    /// The transaction hash.
    pub hash: B256,
    /// The block it was mined in.
    pub block: u64,
    /// Gas used.
    pub gas_used: u64,
}

/// A channel opened on chain.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    /// The channel id (`channelId(payer, payee, salt)`).
    pub id: B256,
    /// The opening transaction.
    pub tx: Tx,
}

/// Where a channel is in its life on chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnChainStatus {
    /// No channel has this id.
    None,
    /// Open: the payee may close, the payer may start a close.
    Open,
    /// The payer started a close; the payee may top it until `closes_at`.
    Closing,
    /// Settled: the money is in the parties' balances, the id is spent.
    Settled,
}

/// A channel as the contract holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnChainChannel {
    /// Who locked the deposit and signs vouchers.
    pub payer: Address,
    /// Who is paid.
    pub payee: Address,
    /// Where it is in its life.
    pub status: OnChainStatus,
    /// The deposit.
    pub deposit: Amount,
    /// Seconds a payer's close stays open to the payee's answer, fixed at opening.
    pub challenge_period: u64,
    /// When a payer's close may be finalized (block time, seconds), 0 unless closing.
    pub closes_at: u64,
    /// What the payer named when it started to close.
    pub closing_amount: Amount,
}

/// Something the contract logged about a channel, with the block it happened in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEvent {
    /// A channel was opened.
    Opened {
        /// The channel.
        id: B256,
        /// Its payer.
        payer: Address,
        /// Its payee.
        payee: Address,
        /// The deposit.
        deposit: Amount,
        /// Its challenge period in seconds.
        challenge_period: u64,
        /// The block.
        block: u64,
    },
    /// The payer started to close, naming `amount`.
    CloseStarted {
        /// The channel.
        id: B256,
        /// What the payer named.
        amount: Amount,
        /// When the challenge period ends.
        closes_at: u64,
        /// The block.
        block: u64,
    },
    /// The channel settled.
    Settled {
        /// The channel.
        id: B256,
        /// Paid to the payee.
        to_payee: Amount,
        /// Returned to the payer.
        to_payer: Amount,
        /// The block.
        block: u64,
    },
}

/// A node's connection to the channel contract: its settlement key signs the
/// transactions, and every mined transaction is waited for with the configured
/// confirmations.
#[derive(Clone, Debug)]
pub struct Chain {
    provider: DynProvider,
    url: String,
    domain: VoucherDomain,
    key: SettlementKey,
    confirmations: u64,
    contract: ZeroStateChannels::ZeroStateChannelsInstance<DynProvider>,
    sending: Arc<tokio::sync::Mutex<()>>,
}

fn provider(url: &str, key: &SettlementKey) -> Result<DynProvider, ChainError> {
    let parsed = url.parse().map_err(|e| ChainError::Unreachable {
        url: url.to_string(),
        reason: format!("not a URL: {e}"),
    })?;
    // The nonce is asked of the chain for every transaction (not counted locally): a call
    // the contract refuses while its gas is estimated must not use up a nonce, or every
    // later transaction waits behind the gap. `Chain::send` sends one at a time.
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(key.signer().clone())
        .connect_http(parsed)
        .erased())
}

impl Chain {
    /// Deploys the channel contract with `key` paying for it; returns its address.
    pub async fn deploy(url: &str, key: &SettlementKey) -> Result<(Address, Tx), ChainError> {
        let provider = provider(url, key)?;
        let request =
            TransactionRequest::default().with_deploy_code(ZeroStateChannels::BYTECODE.clone());
        let pending = provider
            .send_transaction(request)
            .await
            .map_err(|e| unreachable(url, e))?;
        let receipt = pending
            .with_timeout(Some(MINING_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| unreachable(url, e))?;
        let address = receipt
            .contract_address()
            .ok_or_else(|| ChainError::Refused {
                operation: "deploy",
                reason: "the creation transaction made no contract".into(),
            })?;
        Ok((address, tx_of(&receipt)))
    }

    /// Connects to the contract at `contract`, checking that it is there.
    pub async fn connect(
        url: &str,
        contract: Address,
        key: SettlementKey,
        confirmations: u64,
    ) -> Result<Self, ChainError> {
        let provider = provider(url, &key)?;
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|e| unreachable(url, e))?;
        let code = provider
            .get_code_at(contract)
            .await
            .map_err(|e| unreachable(url, e))?;
        if code.is_empty() {
            return Err(ChainError::NoContract {
                contract: contract.to_string(),
                chain_id,
            });
        }
        Ok(Self {
            contract: ZeroStateChannels::new(contract, provider.clone()),
            sending: Arc::default(),
            provider,
            url: url.to_string(),
            domain: VoucherDomain { chain_id, contract },
            key,
            confirmations: confirmations.max(1),
        })
    }

    /// The vouchers' domain: this contract on this chain.
    pub fn domain(&self) -> VoucherDomain {
        self.domain
    }

    /// This node's account.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// The settlement key.
    pub fn key(&self) -> &SettlementKey {
        &self.key
    }

    /// The JSON-RPC endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The newest block's number.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| unreachable(&self.url, e))
    }

    /// The newest block's time (Unix seconds): the contract's clock.
    pub async fn block_time(&self) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| unreachable(&self.url, e))?
            .ok_or_else(|| unreachable(&self.url, "it has no latest block"))?;
        Ok(block.header.timestamp)
    }

    /// `who`'s coin balance in wei (what pays for deposits and gas).
    pub async fn coin_balance(&self, who: Address) -> Result<U256, ChainError> {
        self.provider
            .get_balance(who)
            .await
            .map_err(|e| unreachable(&self.url, e))
    }

    /// Sends `wei` of the coin to `to` (a faucet funding a node's settlement key).
    pub async fn transfer(&self, to: Address, wei: U256) -> Result<Tx, ChainError> {
        let request = TransactionRequest::default().with_to(to).with_value(wei);
        let turn = self.sending.lock().await;
        let pending = self
            .provider
            .send_transaction(request)
            .await
            .map_err(|e| unreachable(&self.url, e));
        drop(turn);
        self.mined("transfer", pending?).await
    }

    /// Opens a channel to `payee` locking `deposit`; `salt` makes its id (the same payer,
    /// payee and salt can never open twice).
    pub async fn open(
        &self,
        payee: Address,
        salt: B256,
        challenge_period: u64,
        deposit: Amount,
    ) -> Result<Opened, ChainError> {
        let call = self
            .contract
            .open(payee, salt, challenge_period)
            .value(to_wei(deposit));
        let tx = self.submit("open", call).await?;
        Ok(Opened {
            id: channel_id(self.address(), payee, salt),
            tx,
        })
    }

    /// The payee's close with the payer's voucher for `amount`.
    pub async fn close(&self, id: B256, amount: Amount, voucher: &[u8]) -> Result<Tx, ChainError> {
        let call = self
            .contract
            .close(id, to_wei(amount), Bytes::copy_from_slice(voucher));
        self.submit("close", call).await
    }

    /// The payer's exit: names `amount` as what it owes and starts the challenge period.
    pub async fn start_close(&self, id: B256, amount: Amount) -> Result<Tx, ChainError> {
        let call = self.contract.startClose(id, to_wei(amount));
        self.submit("startClose", call).await
    }

    /// Settles a payer's close whose challenge period is over.
    pub async fn finalize(&self, id: B256) -> Result<Tx, ChainError> {
        let call = self.contract.finalize(id);
        self.submit("finalize", call).await
    }

    /// Takes everything settled to this node's account.
    pub async fn withdraw(&self) -> Result<Tx, ChainError> {
        let call = self.contract.withdraw();
        self.submit("withdraw", call).await
    }

    /// What settled channels owe `who`, not yet withdrawn.
    pub async fn settled_balance(&self, who: Address) -> Result<Amount, ChainError> {
        let wei = self
            .contract
            .balances(who)
            .call()
            .await
            .map_err(|e| self.refused("balances", e))?;
        from_wei(wei)
    }

    /// The channel `id` as the contract holds it.
    pub async fn channel(&self, id: B256) -> Result<OnChainChannel, ChainError> {
        let c = self
            .contract
            .getChannel(id)
            .call()
            .await
            .map_err(|e| self.refused("getChannel", e))?;
        Ok(OnChainChannel {
            payer: c.payer,
            payee: c.payee,
            status: match c.status {
                0 => OnChainStatus::None,
                1 => OnChainStatus::Open,
                2 => OnChainStatus::Closing,
                _ => OnChainStatus::Settled,
            },
            deposit: from_wei(c.deposit)?,
            challenge_period: c.challengePeriod,
            closes_at: c.closesAt,
            closing_amount: from_wei(c.closingAmount)?,
        })
    }

    /// Every channel event in blocks `from..=to`, oldest first.
    pub async fn events(&self, from: u64, to: u64) -> Result<Vec<ChannelEvent>, ChainError> {
        let filter = Filter::new()
            .address(self.domain.contract)
            .from_block(from)
            .to_block(to);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(|e| unreachable(&self.url, e))?;
        let mut events = Vec::with_capacity(logs.len());
        for log in logs {
            let block = log.block_number.unwrap_or_default();
            let Ok(decoded) = ZeroStateChannelsEvents::decode_log(&log.inner) else {
                continue;
            };
            events.push(match decoded.data {
                ZeroStateChannelsEvents::Opened(e) => ChannelEvent::Opened {
                    id: e.channel,
                    payer: e.payer,
                    payee: e.payee,
                    deposit: from_wei(e.deposit)?,
                    challenge_period: e.challengePeriod,
                    block,
                },
                ZeroStateChannelsEvents::CloseStarted(e) => ChannelEvent::CloseStarted {
                    id: e.channel,
                    amount: from_wei(e.amount)?,
                    closes_at: e.closesAt,
                    block,
                },
                ZeroStateChannelsEvents::Settled(e) => ChannelEvent::Settled {
                    id: e.channel,
                    to_payee: from_wei(e.toPayee)?,
                    to_payer: from_wei(e.toPayer)?,
                    block,
                },
                ZeroStateChannelsEvents::Withdrawn(_) => continue,
            });
        }
        Ok(events)
    }

    /// Sends one contract call, one at a time for this key (the chain gives each its
    /// nonce), and waits for it to be mined.
    async fn submit<C: alloy::sol_types::SolCall>(
        &self,
        operation: &'static str,
        call: SolCallBuilder<&DynProvider, C>,
    ) -> Result<Tx, ChainError> {
        let turn = self.sending.lock().await;
        let pending = call.send().await.map_err(|e| self.refused(operation, e));
        drop(turn);
        let pending = pending?;
        tracing::info!(
            tx.hash = %pending.tx_hash(),
            "{operation} transaction sent, waiting for it to be mined"
        );
        self.mined(operation, pending).await
    }

    async fn mined(
        &self,
        operation: &'static str,
        pending: PendingTransactionBuilder<alloy::network::Ethereum>,
    ) -> Result<Tx, ChainError> {
        let receipt = pending
            .with_required_confirmations(self.confirmations)
            .with_timeout(Some(MINING_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| unreachable(&self.url, e))?;
        let tx = tx_of(&receipt);
        if !receipt.status() {
            return Err(ChainError::Refused {
                operation,
                reason: format!("transaction {} reverted in block {}", tx.hash, tx.block),
            });
        }
        Ok(tx)
    }

    fn refused(&self, operation: &'static str, error: alloy::contract::Error) -> ChainError {
        match error.as_decoded_interface_error::<ZeroStateChannelsErrors>() {
            Some(decoded) => ChainError::Refused {
                operation,
                reason: describe(&decoded),
            },
            None => unreachable(&self.url, error),
        }
    }
}

/// The id the contract gives the channel `payer` opens to `payee` with `salt`.
pub fn channel_id(payer: Address, payee: Address, salt: B256) -> B256 {
    alloy::primitives::keccak256((payer, payee, salt).abi_encode())
}

fn tx_of(receipt: &impl ReceiptResponse) -> Tx {
    Tx {
        hash: receipt.transaction_hash(),
        block: receipt.block_number().unwrap_or_default(),
        gas_used: receipt.gas_used(),
    }
}

fn unreachable(url: &str, error: impl std::fmt::Display) -> ChainError {
    ChainError::Unreachable {
        url: url.to_string(),
        reason: error.to_string(),
    }
}

/// The contract's error in words.
fn describe(error: &ZeroStateChannelsErrors) -> String {
    use ZeroStateChannelsErrors as E;
    match error {
        E::BadPayee(_) => "the payee is empty or the payer itself".into(),
        E::EmptyDeposit(_) => "the deposit is zero".into(),
        E::DepositTooLarge(_) => "the deposit is over 2^128 wei".into(),
        E::BadChallengePeriod(_) => "the challenge period is not 1 second to 30 days".into(),
        E::ChannelExists(_) => "a channel with this id exists or existed".into(),
        E::NotPayer(_) => "only the channel's payer may do this".into(),
        E::NotPayee(_) => "only the channel's payee may do this".into(),
        E::WrongStatus(e) => format!("the channel's status is {}", status_name(e.status)),
        E::AmountOverDeposit(e) => {
            format!("{} wei is over the deposit of {} wei", e.amount, e.deposit)
        }
        E::BadSignature(_) => "the voucher is not signed by the channel's payer".into(),
        E::ChallengePeriodOver(_) => "the challenge period is over".into(),
        E::ChallengePeriodRunning(e) => {
            format!("the challenge period runs until {}", e.closesAt)
        }
        E::NothingToWithdraw(_) => "nothing is settled to this account".into(),
        E::Reentered(_) => "withdraw was entered again before it returned".into(),
        E::TransferFailed(_) => "the account refused the coin".into(),
    }
}

fn status_name(status: u8) -> &'static str {
    match status {
        0 => "none (no such channel)",
        1 => "open",
        2 => "closing",
        _ => "settled",
    }
}
