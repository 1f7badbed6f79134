//! Signature verification on every core.
//!
//! - One block ([`check_body_parallel`]): the transactions count and root are
//!   checked, then the signatures are split into contiguous chunks, one per core,
//!   each batch-verified ([`vision_chain::verify_batch`]) on its own thread (the
//!   calling thread takes the first chunk). The error is the one a single batch over
//!   the whole block would give: the first bad transaction, by index.
//! - A run of blocks ([`crate::ChainStore::accept_blocks`]): whole blocks, one batch
//!   each, are verified by one worker per core (`BodyPipeline`) while the calling
//!   thread checks headers, applies and commits the earlier ones in order; the
//!   verification of the next blocks overlaps the commit of the current one.
//!
//! Threads are scoped (`std::thread::scope`) to one call: no pool outlives a call,
//! no global state. A chunk is never smaller than [`VERIFY_CHUNK_MIN`] signatures
//! (ed25519 batch verification gets cheaper per signature as the batch grows, and a
//! thread costs tens of microseconds), and at most [`VERIFY_THREADS_MAX`] threads are
//! used.
//!
//! Mempool admission does not come here: it is one `verify_strict` per transaction.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use vision_chain::tx::SignatureError;
use vision_chain::{
    Block, BlockError, ChainParams, KeyCache, Network, Transaction, check_body_shape,
    verify_batch_cached,
};

/// Fewest signatures worth a thread of their own.
pub const VERIFY_CHUNK_MIN: usize = 128;
/// Most verification threads one call uses.
pub const VERIFY_THREADS_MAX: usize = 64;

/// Verification threads for this machine: one per core the OS gives us, at most
/// [`VERIFY_THREADS_MAX`].
pub fn verify_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, VERIFY_THREADS_MAX)
}

/// `error` as if the chunk's transactions started at index `offset` of the block.
fn shifted(error: SignatureError, offset: usize) -> SignatureError {
    match error {
        SignatureError::BadKey { index, from } => SignatureError::BadKey {
            index: index + offset,
            from,
        },
        SignatureError::BadSignature { index } => SignatureError::BadSignature {
            index: index + offset,
        },
    }
}

/// [`vision_chain::verify_batch`] over `txs` in up to `threads` contiguous chunks
/// verified at once, the senders' keys from `keys`
/// ([`vision_chain::verify_batch_cached`]); the first bad transaction by index,
/// exactly as one batch.
pub fn verify_chunked(
    txs: &[Transaction],
    network: Network,
    threads: usize,
    keys: &KeyCache,
) -> Result<(), SignatureError> {
    let chunks = threads
        .clamp(1, VERIFY_THREADS_MAX)
        .min(txs.len() / VERIFY_CHUNK_MIN)
        .max(1);
    if chunks == 1 {
        return verify_batch_cached(txs, network, keys);
    }
    let chunk_len = txs.len().div_ceil(chunks);
    let results: Vec<Result<(), SignatureError>> = std::thread::scope(|s| {
        let mut parts = txs.chunks(chunk_len);
        let first = parts.next().unwrap_or(&[]);
        let handles: Vec<_> = parts
            .map(|part| s.spawn(move || verify_batch_cached(part, network, keys)))
            .collect();
        let mut out = vec![verify_batch_cached(first, network, keys)];
        for h in handles {
            // A panic in ed25519 verification would be a bug there; carry it over.
            out.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out
    });
    for (i, r) in results.into_iter().enumerate() {
        r.map_err(|e| shifted(e, i * chunk_len))?;
    }
    Ok(())
}

/// [`vision_chain::check_body`] with the signatures verified on up to `threads`
/// threads: the same answer, the same error precedence.
pub fn check_body_parallel(
    params: &ChainParams,
    block: &Block,
    threads: usize,
    keys: &KeyCache,
) -> Result<(), BlockError> {
    check_body_shape(params, block)?;
    verify_chunked(&block.txs, params.network, threads, keys)?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker's body check, or the panic that interrupted it.
type BodyCheck = std::thread::Result<Result<(), BlockError>>;

/// Body checks of a run of blocks, done ahead by worker threads: one whole block
/// (one batch) per worker at a time, in order of index. The consumer takes the
/// results in order ([`BodyPipeline::take`]); [`BodyPipeline::stop`] makes the
/// workers finish after their current block.
pub(crate) struct BodyPipeline<'a> {
    params: &'a ChainParams,
    keys: &'a KeyCache,
    blocks: &'a [Block],
    next: AtomicUsize,
    stopped: AtomicBool,
    /// Stop at the first block that fails ([`BodyPipeline::checking`]).
    stop_on_failure: bool,
    /// Each block's check, or the panic that stopped it (carried to the consumer).
    results: Mutex<Vec<Option<BodyCheck>>>,
    ready: Condvar,
}

impl<'a> BodyPipeline<'a> {
    pub(crate) fn new(
        params: &'a ChainParams,
        keys: &'a KeyCache,
        blocks: &'a [Block],
    ) -> BodyPipeline<'a> {
        BodyPipeline {
            params,
            keys,
            blocks,
            next: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            stop_on_failure: false,
            results: Mutex::new((0..blocks.len()).map(|_| None).collect()),
            ready: Condvar::new(),
        }
    }

    /// A pipeline whose workers stop at the first block that fails: for a check
    /// whose result is the passing prefix ([`BodyPipeline::passed_prefix`]), never
    /// for a consumer that [`BodyPipeline::take`]s past a failure.
    pub(crate) fn checking(
        params: &'a ChainParams,
        keys: &'a KeyCache,
        blocks: &'a [Block],
    ) -> BodyPipeline<'a> {
        BodyPipeline {
            stop_on_failure: true,
            ..BodyPipeline::new(params, keys, blocks)
        }
    }

    /// A worker's loop: claim the next unverified block, verify it, publish.
    pub(crate) fn work(&self) {
        while !self.stopped.load(Ordering::SeqCst) {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(block) = self.blocks.get(i) else {
                return;
            };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check_body_shape(self.params, block)?;
                verify_batch_cached(&block.txs, self.params.network, self.keys)?;
                Ok(())
            }));
            if self.stop_on_failure && !matches!(r, Ok(Ok(()))) {
                self.stop();
            }
            lock(&self.results)[i] = Some(r);
            self.ready.notify_all();
        }
    }

    /// Block `i`'s body check, waiting for a worker to finish it. Workers claim
    /// blocks in order, so `i` is always claimed or about to be while they run; after
    /// [`BodyPipeline::stop`] the caller must not ask for more. A panic in the
    /// worker's check is resumed here, on the consumer's thread.
    pub(crate) fn take(&self, i: usize) -> Result<(), BlockError> {
        let mut results = lock(&self.results);
        loop {
            if let Some(r) = results[i].take() {
                drop(results);
                return r.unwrap_or_else(|p| std::panic::resume_unwind(p));
            }
            results = self.ready.wait(results).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// How many blocks, from the first, passed their check, once the workers are
    /// done (a block not checked, failed or panicked ends the prefix).
    pub(crate) fn passed_prefix(&self) -> usize {
        lock(&self.results)
            .iter()
            .take_while(|r| matches!(r, Some(Ok(Ok(())))))
            .count()
    }

    /// Workers stop after the block they are on.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_chain::{SecretKey, Signature};

    fn txs(n: usize) -> Vec<Transaction> {
        let k = SecretKey::from_seed(&[3; 32]);
        (0..n as u64)
            .map(|i| {
                Transaction::new_signed(
                    &k,
                    Network::Regtest,
                    SecretKey::from_seed(&[4; 32]).address(),
                    1,
                    1,
                    i,
                )
            })
            .collect()
    }

    #[test]
    fn chunks_give_the_single_batch_answer() {
        let good = txs(700);
        let keys = KeyCache::new();
        for threads in [1, 2, 3, 8] {
            assert_eq!(
                verify_chunked(&good, Network::Regtest, threads, &keys),
                Ok(())
            );
            // the network is part of what is signed
            assert!(verify_chunked(&good, Network::Devnet, threads, &keys).is_err());
            // one bad signature anywhere: the same index as one batch names
            for bad_at in [0usize, 127, 128, 350, 699] {
                let mut bad = good.clone();
                bad[bad_at].signature = Signature([7; 64]);
                let expected = vision_chain::verify_batch(&bad, Network::Regtest);
                assert_eq!(
                    expected,
                    Err(SignatureError::BadSignature { index: bad_at })
                );
                assert_eq!(
                    verify_chunked(&bad, Network::Regtest, threads, &keys),
                    expected,
                    "threads {threads}"
                );
                // two bad ones: the first wins, whichever chunk finishes first
                bad[699 - bad_at / 2].signature = Signature([9; 64]);
                assert_eq!(
                    verify_chunked(&bad, Network::Regtest, threads, &keys),
                    vision_chain::verify_batch(&bad, Network::Regtest)
                );
            }
        }
        assert_eq!(verify_chunked(&[], Network::Regtest, 4, &keys), Ok(()));
    }
}
