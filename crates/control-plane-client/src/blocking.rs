//! A blocking facade over [`ControlPlaneClient`] for tools that do not run tokio
//! (feature `blocking`): each call runs on a small current-thread runtime the
//! facade owns. Do not call it from inside an async runtime (tokio refuses to
//! block there); use [`ControlPlaneClient`] directly instead.

use std::time::Duration;

use vision_chain::{Address, Transaction, TxId};
use vision_wire::{
    AccountResponse, AccountTxsResponse, FeesResponse, StatusResponse, SubmitTxResponse, TxResponse,
};

use crate::{ClientConfig, ClientError, ControlPlaneClient};

/// The blocking client: the exchange-facing calls of [`ControlPlaneClient`].
#[derive(Debug)]
pub struct BlockingClient {
    rt: tokio::runtime::Runtime,
    inner: ControlPlaneClient,
}

impl BlockingClient {
    /// A client with `config`, and the runtime it runs on.
    pub fn new(config: ClientConfig) -> Result<BlockingClient, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::InvalidRequest {
                reason: format!("cannot start the blocking client's runtime: {e}"),
            })?;
        let inner = {
            let _guard = rt.enter();
            ControlPlaneClient::new(config)?
        };
        Ok(BlockingClient { rt, inner })
    }

    /// The async client underneath.
    pub fn inner(&self) -> &ControlPlaneClient {
        &self.inner
    }

    /// [`ControlPlaneClient::fetch_status`].
    pub fn fetch_status(&self, url: &str) -> Result<StatusResponse, ClientError> {
        self.rt.block_on(self.inner.fetch_status(url))
    }

    /// [`ControlPlaneClient::fetch_account`].
    pub fn fetch_account(
        &self,
        url: &str,
        address: &Address,
    ) -> Result<AccountResponse, ClientError> {
        self.rt.block_on(self.inner.fetch_account(url, address))
    }

    /// [`ControlPlaneClient::submit_tx`].
    pub fn submit_tx(&self, url: &str, tx: &Transaction) -> Result<SubmitTxResponse, ClientError> {
        self.rt.block_on(self.inner.submit_tx(url, tx))
    }

    /// [`ControlPlaneClient::fetch_tx`].
    pub fn fetch_tx(&self, url: &str, txid: &TxId) -> Result<TxResponse, ClientError> {
        self.rt.block_on(self.inner.fetch_tx(url, txid))
    }

    /// [`ControlPlaneClient::fetch_account_txs`].
    pub fn fetch_account_txs(
        &self,
        url: &str,
        address: &Address,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<AccountTxsResponse, ClientError> {
        self.rt
            .block_on(self.inner.fetch_account_txs(url, address, limit, cursor))
    }

    /// [`ControlPlaneClient::fetch_fees`].
    pub fn fetch_fees(&self, url: &str) -> Result<FeesResponse, ClientError> {
        self.rt.block_on(self.inner.fetch_fees(url))
    }

    /// [`ControlPlaneClient::wait_for_confirmations`].
    pub fn wait_for_confirmations(
        &self,
        url: &str,
        txid: &TxId,
        confirmations: u64,
        timeout: Duration,
        progress: impl FnMut(&TxResponse),
    ) -> Result<TxResponse, ClientError> {
        self.rt.block_on(self.inner.wait_for_confirmations(
            url,
            txid,
            confirmations,
            timeout,
            progress,
        ))
    }
}
