//! The node's own mempool on disk, kept across restarts (like bitcoind's
//! `mempool.dat`).
//!
//! Two files in the data directory:
//! - `mempool.dat`, a snapshot written atomically (temporary file, `fsync`, rename)
//!   on shutdown and periodically: magic `VMPL`, format version, network magic,
//!   transaction count (`u32`, little-endian), the transactions' canonical encodings
//!   ([`TX_SIZE`] bytes each), then the blake3 hash of everything before it;
//! - `mempool.journal`, every transaction accepted since the last snapshot, appended
//!   as it is accepted (magic and network first, then [`TX_SIZE`] bytes per
//!   transaction). An append is one `write` without `fsync`: it survives the process
//!   being killed (the kernel has it), not the machine losing power; the snapshot
//!   is the durable copy. A torn last record is ignored.
//!
//! Loading returns the transactions of both, at most [`MEMPOOL_FILE_TXS_MAX`], for
//! the caller to revalidate against the tip (signatures, nonces, balances): a file
//! never adds a transaction the pool would not accept. A damaged snapshot is an
//! error naming it; the caller starts with an empty pool then.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vision_chain::tx::TX_SIZE;
use vision_chain::{Hash32, Network, Transaction};

use crate::StoreError;

/// The snapshot's file name in the data directory.
pub const MEMPOOL_FILE: &str = "mempool.dat";
/// The journal's file name in the data directory.
pub const MEMPOOL_JOURNAL_FILE: &str = "mempool.journal";
/// Most transactions a snapshot holds or a load returns (the default pool's size).
pub const MEMPOOL_FILE_TXS_MAX: usize = 50_000;
/// Journal records after which the caller should write a snapshot (which empties
/// the journal); the journal refuses to grow past twice this.
pub const MEMPOOL_JOURNAL_TXS_MAX: usize = 10_000;

const MAGIC: &[u8; 4] = b"VMPL";
const JOURNAL_MAGIC: &[u8; 4] = b"VMPJ";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 4 + 4 + 4 + 4;
const JOURNAL_HEADER_LEN: usize = 4 + 4 + 4;
const CHECKSUM_LEN: usize = 32;

/// What [`MempoolFile::load`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadedMempool {
    /// Transactions of the snapshot, then of the journal, in order; not yet
    /// revalidated.
    pub txs: Vec<Transaction>,
    /// Records that did not decode, or beyond [`MEMPOOL_FILE_TXS_MAX`].
    pub skipped: usize,
}

/// The mempool files of one data directory.
#[derive(Debug)]
pub struct MempoolFile {
    snapshot: PathBuf,
    journal_path: PathBuf,
    network: Network,
    /// The open journal and its record count; the lock also orders appends against
    /// snapshots, so a transaction is never in neither.
    journal: Mutex<Option<(File, usize)>>,
}

impl MempoolFile {
    /// The files in `dir` for `network`. Nothing is opened yet.
    pub fn new(dir: &Path, network: Network) -> MempoolFile {
        MempoolFile {
            snapshot: dir.join(MEMPOOL_FILE),
            journal_path: dir.join(MEMPOOL_JOURNAL_FILE),
            network,
            journal: Mutex::new(None),
        }
    }

    /// The snapshot's path.
    pub fn path(&self) -> &Path {
        &self.snapshot
    }

    fn err(&self, path: &Path, message: impl Into<String>) -> StoreError {
        StoreError::MempoolFile {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// Read the snapshot and the journal. Missing files are an empty pool.
    pub fn load(&self) -> Result<LoadedMempool, StoreError> {
        let mut out = LoadedMempool::default();
        if let Some(bytes) = read_bounded(&self.snapshot, snapshot_len_max())
            .map_err(|e| self.err(&self.snapshot, e))?
        {
            self.parse_snapshot(&bytes, &mut out)?;
        }
        if let Some(bytes) = read_bounded(&self.journal_path, journal_len_max())
            .map_err(|e| self.err(&self.journal_path, e))?
        {
            self.parse_journal(&bytes, &mut out)?;
        }
        Ok(out)
    }

    fn parse_snapshot(&self, bytes: &[u8], out: &mut LoadedMempool) -> Result<(), StoreError> {
        let bad = |m: &str| self.err(&self.snapshot, m);
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(bad("truncated"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Hash32::digest(body).0 != sum {
            return Err(bad("checksum mismatch (damaged or truncated)"));
        }
        if &body[..4] != MAGIC {
            return Err(bad("not a mempool file"));
        }
        if u32_at(body, 4) != FORMAT_VERSION {
            return Err(bad("unknown format version"));
        }
        if u32_at(body, 8) != self.network.magic() {
            return Err(bad("belongs to another network"));
        }
        let count = u32_at(body, 12) as usize;
        let records = &body[HEADER_LEN..];
        if count > MEMPOOL_FILE_TXS_MAX || records.len() != count * TX_SIZE {
            return Err(bad("transaction count does not match the file's length"));
        }
        push_records(records, out);
        Ok(())
    }

    fn parse_journal(&self, bytes: &[u8], out: &mut LoadedMempool) -> Result<(), StoreError> {
        if bytes.len() < JOURNAL_HEADER_LEN {
            // Torn at creation: nothing was recorded.
            return Ok(());
        }
        if &bytes[..4] != JOURNAL_MAGIC
            || u32_at(bytes, 4) != FORMAT_VERSION
            || u32_at(bytes, 8) != self.network.magic()
        {
            return Err(self.err(&self.journal_path, "not a mempool journal of this network"));
        }
        let records = &bytes[JOURNAL_HEADER_LEN..];
        let whole = records.len() / TX_SIZE * TX_SIZE;
        push_records(&records[..whole], out);
        Ok(())
    }

    /// Record one accepted transaction in the journal; returns the journal's record
    /// count (write a snapshot at [`MEMPOOL_JOURNAL_TXS_MAX`]).
    pub fn append(&self, tx: &Transaction) -> Result<usize, StoreError> {
        let mut guard = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.open_journal()?);
        }
        let Some((file, n)) = guard.as_mut() else {
            return Err(self.err(&self.journal_path, "journal not open"));
        };
        if *n >= 2 * MEMPOOL_JOURNAL_TXS_MAX {
            return Err(self.err(&self.journal_path, "journal full: a snapshot is overdue"));
        }
        let bytes = tx.encode();
        if let Err(e) = file.write_all(&bytes) {
            // A partial record may be on disk: start a new journal next time (the
            // torn tail is ignored on load anyway).
            *guard = None;
            return Err(self.err(&self.journal_path, e.to_string()));
        }
        *n += 1;
        Ok(*n)
    }

    fn open_journal(&self) -> Result<(File, usize), StoreError> {
        let e = |e: std::io::Error| self.err(&self.journal_path, e.to_string());
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.journal_path)
            .map_err(e)?;
        let len = file.metadata().map_err(e)?.len() as usize;
        if len < JOURNAL_HEADER_LEN {
            file.set_len(0).map_err(e)?;
            file.write_all(&journal_header(self.network)).map_err(e)?;
            return Ok((file, 0));
        }
        Ok((file, (len - JOURNAL_HEADER_LEN) / TX_SIZE))
    }

    /// Write a snapshot of `txs()` (at most [`MEMPOOL_FILE_TXS_MAX`], the first ones
    /// kept) and empty the journal. `txs` runs under the journal's lock, so a
    /// transaction accepted meanwhile lands in the snapshot or in the new journal.
    /// Returns how many transactions were written.
    pub fn save(&self, txs: impl FnOnce() -> Vec<Transaction>) -> Result<usize, StoreError> {
        let mut guard = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let txs = txs();
        let n = txs.len().min(MEMPOOL_FILE_TXS_MAX);
        let mut body = Vec::with_capacity(HEADER_LEN + n * TX_SIZE + CHECKSUM_LEN);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        body.extend_from_slice(&self.network.magic().to_le_bytes());
        body.extend_from_slice(&(n as u32).to_le_bytes());
        for tx in &txs[..n] {
            tx.encode_into(&mut body);
        }
        let sum = Hash32::digest(&body);
        body.extend_from_slice(&sum.0);
        let tmp = self.snapshot.with_extension("dat.tmp");
        let e = |e: std::io::Error| self.err(&self.snapshot, e.to_string());
        {
            let mut f = File::create(&tmp).map_err(e)?;
            f.write_all(&body).map_err(e)?;
            f.sync_all().map_err(e)?;
        }
        std::fs::rename(&tmp, &self.snapshot).map_err(e)?;
        if let Some(dir) = self.snapshot.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        // Everything the journal held is in the snapshot now.
        let mut file = File::create(&self.journal_path)
            .map_err(|err| self.err(&self.journal_path, err.to_string()))?;
        file.write_all(&journal_header(self.network))
            .map_err(|err| self.err(&self.journal_path, err.to_string()))?;
        drop(file);
        *guard = None;
        Ok(n)
    }
}

fn journal_header(network: Network) -> Vec<u8> {
    let mut h = Vec::with_capacity(JOURNAL_HEADER_LEN);
    h.extend_from_slice(JOURNAL_MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&network.magic().to_le_bytes());
    h
}

fn snapshot_len_max() -> u64 {
    (HEADER_LEN + MEMPOOL_FILE_TXS_MAX * TX_SIZE + CHECKSUM_LEN) as u64
}

fn journal_len_max() -> u64 {
    (JOURNAL_HEADER_LEN + 2 * MEMPOOL_JOURNAL_TXS_MAX * TX_SIZE) as u64
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn push_records(records: &[u8], out: &mut LoadedMempool) {
    for rec in records.chunks_exact(TX_SIZE) {
        if out.txs.len() >= MEMPOOL_FILE_TXS_MAX {
            out.skipped += 1;
            continue;
        }
        match Transaction::decode(rec) {
            Ok(tx) => out.txs.push(tx),
            Err(_) => out.skipped += 1,
        }
    }
}

/// The file's bytes, `None` if it does not exist; an error if it is longer than
/// `max` (never read an unbounded file into memory).
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, String> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len > max {
        return Err(format!(
            "{len} bytes, more than the {max} a valid file can have"
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    Read::by_ref(&mut f)
        .take(max)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_chain::{Address, SecretKey};

    fn txs(n: u64) -> Vec<Transaction> {
        let key = SecretKey::from_seed(&[7u8; 32]);
        (0..n)
            .map(|i| {
                Transaction::new_signed(&key, Network::Regtest, Address([9u8; 32]), 10 + i, 1, i)
            })
            .collect()
    }

    #[test]
    fn snapshot_and_journal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = MempoolFile::new(dir.path(), Network::Regtest);
        assert_eq!(f.load().unwrap(), LoadedMempool::default());
        let all = txs(8);
        assert_eq!(f.save(|| all[..3].to_vec()).unwrap(), 3);
        for tx in &all[3..] {
            f.append(tx).unwrap();
        }
        // A new handle (a restarted node) reads both.
        let again = MempoolFile::new(dir.path(), Network::Regtest);
        assert_eq!(again.load().unwrap().txs, all);
        // A snapshot empties the journal.
        again.save(|| all.clone()).unwrap();
        assert_eq!(again.load().unwrap().txs, all);
        let jlen = std::fs::metadata(dir.path().join(MEMPOOL_JOURNAL_FILE))
            .unwrap()
            .len();
        assert_eq!(jlen as usize, JOURNAL_HEADER_LEN);
    }

    #[test]
    fn a_torn_journal_tail_is_ignored_and_a_damaged_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = MempoolFile::new(dir.path(), Network::Regtest);
        let all = txs(3);
        for tx in &all {
            f.append(tx).unwrap();
        }
        let jp = dir.path().join(MEMPOOL_JOURNAL_FILE);
        let bytes = std::fs::read(&jp).unwrap();
        std::fs::write(&jp, &bytes[..bytes.len() - 5]).unwrap();
        assert_eq!(f.load().unwrap().txs, all[..2].to_vec());

        f.save(|| all.clone()).unwrap();
        let sp = dir.path().join(MEMPOOL_FILE);
        let mut bytes = std::fs::read(&sp).unwrap();
        bytes[HEADER_LEN + 3] ^= 0x40;
        std::fs::write(&sp, &bytes).unwrap();
        let err = f.load().unwrap_err().to_string();
        assert!(
            err.contains("mempool.dat") && err.contains("checksum"),
            "{err}"
        );
        // Another network's file is refused, not read.
        f.save(|| all.clone()).unwrap();
        let other = MempoolFile::new(dir.path(), Network::Devnet);
        assert!(other.load().is_err());
    }

    #[test]
    fn files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = MempoolFile::new(dir.path(), Network::Regtest);
        // An oversized file is refused before it is read.
        let sp = dir.path().join(MEMPOOL_FILE);
        let big = std::fs::File::create(&sp).unwrap();
        big.set_len(snapshot_len_max() + 1).unwrap();
        let err = f.load().unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        std::fs::remove_file(&sp).unwrap();
        // A snapshot keeps at most MEMPOOL_FILE_TXS_MAX.
        let one = txs(1).remove(0);
        let n = f.save(|| vec![one; MEMPOOL_FILE_TXS_MAX + 5]).unwrap();
        assert_eq!(n, MEMPOOL_FILE_TXS_MAX);
        assert_eq!(f.load().unwrap().txs.len(), MEMPOOL_FILE_TXS_MAX);
    }
}
