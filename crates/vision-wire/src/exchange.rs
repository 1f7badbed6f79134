//! What exchanges and wallets read: transactions by id, address history, fee
//! estimates, and blocks and transactions in JSON with their ids (CONTRACT.md §6).

use serde::{Deserialize, Serialize};
use vision_chain::{Address, Block, BlockHeader, Hash32, Signature, Transaction, TxId};

/// A transaction in JSON: its id, then its fields (block, mempool and lookup JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxJson {
    /// The transaction id ([`Transaction::id`]).
    pub txid: TxId,
    /// Sender.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// Base units moved.
    pub amount: u64,
    /// Base units paid to the miner.
    pub fee: u64,
    /// The sender's nonce it consumes.
    pub nonce: u64,
    /// The sender's signature.
    pub signature: Signature,
}

impl From<&Transaction> for TxJson {
    fn from(tx: &Transaction) -> TxJson {
        TxJson {
            txid: tx.id(),
            from: tx.from,
            to: tx.to,
            amount: tx.amount,
            fee: tx.fee,
            nonce: tx.nonce,
            signature: tx.signature,
        }
    }
}

impl TxJson {
    /// The transaction, if `txid` is its id (else `None`: the JSON was altered).
    pub fn to_tx(&self) -> Option<Transaction> {
        let tx = Transaction {
            from: self.from,
            to: self.to,
            amount: self.amount,
            fee: self.fee,
            nonce: self.nonce,
            signature: self.signature,
        };
        (tx.id() == self.txid).then_some(tx)
    }
}

/// A block in JSON: its hash, network name, height and (on the main chain) its
/// confirmations, then the canonical header, the miner and the transactions with
/// their ids. The header keeps the network as its magic number, since that is
/// what the hash covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockJson {
    /// The block's hash.
    pub hash: Hash32,
    /// The network by name (`mainnet`, `testnet`, `devnet`, `regtest`).
    pub network: String,
    /// Height.
    pub height: u64,
    /// Blocks on top of it and itself, if it is on the main chain; absent on a side
    /// branch, and in `GET /api/block/{hash}`'s answer, which is immutable (cached
    /// for a year) and so holds nothing that the next block changes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub confirmations: Option<u64>,
    /// The header.
    pub header: BlockHeader,
    /// Who the reward goes to.
    pub miner: Address,
    /// The transactions, in block order.
    pub txs: Vec<TxJson>,
}

impl BlockJson {
    /// The JSON of `block`; `confirmations` when it is on the main chain.
    pub fn new(block: &Block, confirmations: Option<u64>) -> BlockJson {
        BlockJson {
            hash: block.hash(),
            network: vision_chain::Network::from_magic(block.header.network)
                .map(|n| n.as_str().to_string())
                .unwrap_or_else(|| format!("{:#x}", block.header.network)),
            height: block.header.height,
            confirmations,
            header: block.header.clone(),
            miner: block.miner,
            txs: block.txs.iter().map(TxJson::from).collect(),
        }
    }

    /// The block, if its hash and every txid match the contents (else `None`).
    pub fn to_block(&self) -> Option<Block> {
        let block = Block {
            header: self.header.clone(),
            miner: self.miner,
            txs: self
                .txs
                .iter()
                .map(TxJson::to_tx)
                .collect::<Option<Vec<_>>>()?,
        };
        (block.hash() == self.hash).then_some(block)
    }
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxStatus {
    /// In the mempool, in no main-chain block.
    Pending,
    /// In a main-chain block.
    Confirmed,
}

/// `GET /api/tx/{txid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxResponse {
    /// The id.
    pub txid: TxId,
    /// `pending` or `confirmed`.
    pub status: TxStatus,
    /// Height of its block (null while pending).
    pub height: Option<u64>,
    /// Hash of its block (null while pending).
    pub block_hash: Option<Hash32>,
    /// Main-chain blocks from its block to the tip (0 while pending).
    pub confirmations: u64,
    /// Sender.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// Base units moved.
    pub amount: u64,
    /// Fee.
    pub fee: u64,
    /// The sender's nonce.
    pub nonce: u64,
    /// Its block's timestamp; while pending, when this node first saw it (null if
    /// not known).
    pub time_ms: Option<u64>,
}

/// What an address-history entry is, seen from the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    /// A block reward (fixed reward plus fees) paid to it.
    Reward,
    /// A transfer it sent.
    Send,
    /// A transfer it received.
    Receive,
    /// A transfer from itself to itself (it pays only the fee).
    #[serde(rename = "self")]
    SelfTransfer,
}

/// One entry of `GET /api/accounts/{address}/txs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// `reward`, `send`, `receive` or `self`.
    pub kind: HistoryKind,
    /// The transaction id (null for a reward).
    pub txid: Option<TxId>,
    /// Height of the block.
    pub height: u64,
    /// Hash of the block.
    pub block_hash: Hash32,
    /// Main-chain blocks from it to the tip.
    pub confirmations: u64,
    /// The block's timestamp.
    pub time_ms: u64,
    /// Sender (null for a reward).
    pub from: Option<Address>,
    /// Recipient (the miner for a reward).
    pub to: Address,
    /// Base units moved (for a reward: reward plus the block's fees).
    pub amount: u64,
    /// Fee (0 for a reward).
    pub fee: u64,
    /// The sender's nonce (null for a reward).
    pub nonce: Option<u64>,
    /// For a reward: whether it has matured (is in the spendable balance).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub matured: Option<bool>,
}

/// `GET /api/accounts/{address}/txs?limit=&cursor=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTxsResponse {
    /// The address.
    pub address: Address,
    /// The tip height the page was read at.
    pub height: u64,
    /// Entries, newest first.
    pub txs: Vec<HistoryItem>,
    /// Pass as `cursor` for the next (older) page; null at the oldest entry.
    pub next_cursor: Option<String>,
}

/// `GET /api/fees`: fee estimates in base units per transaction (every transaction
/// has the same size, so a fee per transaction is the whole story).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeesResponse {
    /// A fee likely to be included in the next block.
    pub next_block: u64,
    /// A fee likely to be included within 6 blocks.
    pub within_6_blocks: u64,
    /// The least fee the mempool admits.
    pub min_fee: u64,
    /// Transactions in the mempool.
    pub mempool_count: usize,
    /// Most transactions one block holds.
    pub max_block_txs: u32,
    /// Recent main-chain blocks looked at.
    pub recent_blocks: u64,
    /// Median fee paid in those blocks (null if they held no transaction).
    pub recent_median_fee: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_chain::{Network, SecretKey};

    #[test]
    fn block_and_tx_json_carry_ids_and_round_trip() {
        let k = SecretKey::from_seed(&[1; 32]);
        let tx = Transaction::new_signed(&k, Network::Regtest, Address([2; 32]), 5, 1, 0);
        let mut block = Network::Regtest.params().genesis();
        block.txs = vec![tx.clone()];
        block.header.tx_root = block.compute_tx_root();
        let j = BlockJson::new(&block, Some(3));
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["hash"], block.hash().to_hex());
        assert_eq!(v["network"], "regtest");
        assert_eq!(v["confirmations"], 3);
        assert_eq!(v["txs"][0]["txid"], tx.id().to_hex());
        let back: BlockJson = serde_json::from_value(v).unwrap();
        assert_eq!(back.to_block().unwrap(), block);
        let mut altered = back.clone();
        altered.txs[0].amount += 1;
        assert!(
            altered.to_block().is_none(),
            "a txid that does not match is refused"
        );
        let side = serde_json::to_value(BlockJson::new(&block, None)).unwrap();
        assert!(side.get("confirmations").is_none());
        assert_eq!(
            serde_json::to_value(HistoryKind::SelfTransfer).unwrap(),
            "self"
        );
        assert_eq!(serde_json::to_value(TxStatus::Pending).unwrap(), "pending");
    }
}
