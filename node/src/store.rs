//! Durable storage: the RocksDB event log and the snapshot files.
//!
//! Log: column family `log`, key = sequence number (8 bytes big-endian, so keys sort in
//! sequence order), value = the chain hash after that event (32 bytes) followed by the event's
//! canonical encoding. Every append is one RocksDB `WriteBatch` written with `sync = true`, so a
//! group of events becomes durable together or not at all.
//!
//! Epochs: which leader generation wrote each entry, kept beside the log rather than in it (the
//! canonical event bytes and the chain stay a function of the events alone). Column family
//! `meta` holds `epoch/<first seq, big-endian>` = the epoch (little-endian) of every entry from
//! that sequence number until the next such key; it is written in the same batch as the first
//! entry of a new epoch. Entries older than any key were written before epochs were recorded
//! and read as epoch 0. `meta` also holds the node's role (`role`).
//!
//! Snapshots: `snapshots/snapshot-<seq, 20 digits>.vsnap` beside the database. Written to a
//! temporary file, synced, renamed into place, and the directory synced, so a snapshot file is
//! either complete or absent.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use valori_kernel::codec::Sink;
use valori_kernel::Hash;

use crate::error::{Doing, StorageError};

/// A [`Sink`] into a snapshot file being written: keeps the first I/O error and drops what
/// comes after it ([`Store::write_snapshot_with`] reports the error).
pub struct FileSink {
    out: std::io::BufWriter<fs::File>,
    bytes: u64,
    error: Option<std::io::Error>,
}

impl Sink for FileSink {
    fn put(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            match self.out.write_all(bytes) {
                Ok(()) => self.bytes += bytes.len() as u64,
                Err(e) => self.error = Some(e),
            }
        }
    }
}

const LOG: &str = "log";
const META: &str = "meta";
/// Prefix of the keys of [`META`] that start an epoch's range of the log.
const EPOCH_PREFIX: &[u8] = b"epoch/";

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number (the first event is 1).
    pub seq: u64,
    /// Chain hash after this event.
    pub chain: Hash,
    /// The event's canonical encoding.
    pub event: Vec<u8>,
    /// The epoch of the leader that wrote it (0: written before epochs were recorded).
    pub epoch: u64,
}

/// A snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Sequence number it captures.
    pub seq: u64,
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A snapshot file's (or a complete download's) bytes, mapped read-only: the page cache holds them, not the heap, so
/// loading a large snapshot does not need a second copy of it in memory.
pub fn map_snapshot(path: &std::path::Path) -> std::io::Result<memmap2::Mmap> {
    let file = std::fs::File::open(path)?;
    // SAFETY: a snapshot file is written under a temporary name, synced and renamed into place,
    // and never written again; retention only unlinks it, which leaves an existing mapping
    // intact. A follower's download file is mapped only once complete, and unlinked (never
    // truncated) before the next download creates a new one. Only something outside the node
    // changing files in its data directory could change the mapped bytes (as it could
    // corrupt any of them).
    #[allow(unsafe_code)]
    unsafe {
        memmap2::Mmap::map(&file)
    }
}

/// The event log and snapshot directory of one node.
pub struct Store {
    db: DB,
    snapshot_dir: PathBuf,
    /// First sequence number of each epoch's range of the log -> the epoch.
    epochs: std::sync::Mutex<std::collections::BTreeMap<u64, u64>>,
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn epoch_key(seq: u64) -> Vec<u8> {
    [EPOCH_PREFIX, &key(seq)[..]].concat()
}

/// The epoch of the entry at `seq`, given the ranges' starts.
fn epoch_at(epochs: &std::collections::BTreeMap<u64, u64>, seq: u64) -> u64 {
    epochs.range(..=seq).next_back().map_or(0, |(_, &e)| e)
}

/// The first sequence number of each epoch's range of the log, as the meta family records it.
fn load_epochs(db: &DB) -> Result<std::collections::BTreeMap<u64, u64>, StorageError> {
    let mut epochs = std::collections::BTreeMap::new();
    {
        let meta = db.cf_handle(META).expect("column family created at open");
        let iter = db.iterator_cf(
            meta,
            IteratorMode::From(EPOCH_PREFIX, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.doing(|| "reading the epochs of the log")?;
            let Some(seq) = k.strip_prefix(EPOCH_PREFIX) else {
                break;
            };
            let (Ok(seq), Ok(epoch)) = (<[u8; 8]>::try_from(seq), <[u8; 8]>::try_from(&v[..]))
            else {
                return Err(StorageError::malformed(
                    "reading the epochs of the log",
                    "an epoch range key or value is malformed",
                ));
            };
            epochs.insert(u64::from_be_bytes(seq), u64::from_le_bytes(epoch));
        }
    }
    Ok(epochs)
}

/// Bytes the log's memtable takes before RocksDB flushes it to a file.
const LOG_WRITE_BUFFER: usize = 16 << 20;

impl Store {
    /// Opens (creating if needed) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Every write is synced; RocksDB's own WAL carries the atomicity of each batch.
        opts.set_keep_log_file_num(4);
        // The log's memtable holds in memory what was appended since its last flush to a file:
        // RocksDB's default of 64 MiB (and as much again while one is flushed) was about a
        // fifth of what a 1M x 128 node held beside its state (BENCHMARKS.md, "Server
        // memory"). Entries are read from the files as well once flushed; 16 MiB keeps the
        // memtable small.
        let mut log_opts = Options::default();
        log_opts.set_write_buffer_size(LOG_WRITE_BUFFER);
        let cfs = [
            ColumnFamilyDescriptor::new(LOG, log_opts),
            ColumnFamilyDescriptor::new(META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs)
            .doing(|| format!("opening the database in {}", dir.display()))?;
        let snapshot_dir = dir.join("snapshots");
        let listing = || format!("listing {}", snapshot_dir.display());
        fs::create_dir_all(&snapshot_dir).doing(listing)?;
        // Temporary files (a snapshot being written, a download or upload being received) that
        // a crash left behind. Only one process has the store open (RocksDB's lock), so none of
        // them is in use.
        for e in fs::read_dir(&snapshot_dir).doing(listing)? {
            let name = e.doing(listing)?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(snapshot_dir.join(&*name));
            }
        }
        let epochs = load_epochs(&db)?;
        Ok(Store {
            db,
            snapshot_dir,
            epochs: std::sync::Mutex::new(epochs),
        })
    }

    /// Opens the store under `dir` read-only, for audits: nothing is written or removed and no
    /// lock is taken, so a running node may hold the directory; what the log held when it was
    /// opened is what is read.
    pub fn open_read_only(dir: &Path) -> Result<Store, StorageError> {
        let db_dir = dir.join("db");
        if !db_dir.is_dir() {
            return Err(StorageError::malformed(
                format!("opening {}", dir.display()),
                "not a data directory (it has no db/)",
            ));
        }
        let db = DB::open_cf_for_read_only(&Options::default(), &db_dir, [LOG, META], false)
            .doing(|| format!("opening the database in {} read-only", dir.display()))?;
        let epochs = load_epochs(&db)?;
        Ok(Store {
            db,
            snapshot_dir: dir.join("snapshots"),
            epochs: std::sync::Mutex::new(epochs),
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Appends entries as one synced write, with the start of each new epoch they bring.
    pub fn append(&self, entries: &[Entry]) -> Result<(), rocksdb::Error> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(LOG);
        let mut epochs = self.epochs.lock().expect("epochs lock");
        let mut starts = Vec::new();
        let mut value = Vec::new();
        for e in entries {
            value.clear();
            value.extend_from_slice(&e.chain);
            value.extend_from_slice(&e.event);
            batch.put_cf(cf, key(e.seq), &value);
            let current = starts
                .last()
                .map_or_else(|| epoch_at(&epochs, e.seq), |&(_, epoch)| epoch);
            if e.epoch != current {
                batch.put_cf(self.cf(META), epoch_key(e.seq), e.epoch.to_le_bytes());
                starts.push((e.seq, e.epoch));
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        epochs.extend(starts);
        Ok(())
    }

    /// The epoch of the leader that wrote the entry at `seq` (0: unknown, written before epochs
    /// were recorded or installed with a snapshot from elsewhere).
    pub fn epoch_of(&self, seq: u64) -> u64 {
        epoch_at(&self.epochs.lock().expect("epochs lock"), seq)
    }

    /// Records that the history up to `seq` (a snapshot installed there) was written by a
    /// leader at `epoch`, when nothing recorded says otherwise: the entries that follow start
    /// ranges of their own.
    pub fn note_epoch(&self, seq: u64, epoch: u64) -> Result<(), rocksdb::Error> {
        let mut epochs = self.epochs.lock().expect("epochs lock");
        if epoch_at(&epochs, seq) == epoch {
            return Ok(());
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(META), epoch_key(seq), epoch.to_le_bytes());
        self.db.write_opt(batch, &opts)?;
        epochs.insert(seq, epoch);
        Ok(())
    }

    /// Entries with sequence numbers from `from` on, in order. A value shorter than a hash is
    /// reported as an entry with an empty event, which then fails to decode (never skipped).
    pub fn entries_from(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<Entry, rocksdb::Error>> + '_ {
        let start = key(from);
        let epochs = self.epochs.lock().expect("epochs lock").clone();
        self.db
            .iterator_cf(
                self.cf(LOG),
                IteratorMode::From(&start, rocksdb::Direction::Forward),
            )
            .map(move |item| {
                item.map(|(k, v)| {
                    let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8]));
                    let mut chain = [0u8; 32];
                    let (c, event) = if v.len() >= 32 {
                        v.split_at(32)
                    } else {
                        (&[][..], &v[..])
                    };
                    if c.len() == 32 {
                        chain.copy_from_slice(c);
                    }
                    Entry {
                        seq,
                        chain,
                        event: event.to_vec(),
                        epoch: epoch_at(&epochs, seq),
                    }
                })
            })
    }

    /// One entry.
    pub fn entry(&self, seq: u64) -> Result<Option<Entry>, rocksdb::Error> {
        Ok(self
            .entries_from(seq)
            .next()
            .transpose()?
            .filter(|e| e.seq == seq))
    }

    /// The first retained sequence number, if any.
    pub fn first_seq(&self) -> Result<Option<u64>, rocksdb::Error> {
        Ok(self.entries_from(0).next().transpose()?.map(|e| e.seq))
    }

    /// Deletes log entries with sequence numbers `<= through`.
    pub fn prune_through(&self, through: u64) -> Result<(), rocksdb::Error> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(LOG), key(0), key(through.saturating_add(1)));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)
    }

    /// Deletes every log entry, and the epochs of their ranges.
    pub fn clear_log(&self) -> Result<(), rocksdb::Error> {
        self.prune_through(u64::MAX - 1)?;
        let mut epochs = self.epochs.lock().expect("epochs lock");
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(META), epoch_key(0), epoch_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        epochs.clear();
        Ok(())
    }

    /// Approximate bytes of the database files (for metrics).
    pub fn disk_bytes(&self) -> u64 {
        self.db
            .property_int_value_cf(self.cf(LOG), "rocksdb.total-sst-files-size")
            .ok()
            .flatten()
            .unwrap_or(0)
            + self
                .db
                .property_int_value_cf(self.cf(LOG), "rocksdb.cur-size-all-mem-tables")
                .ok()
                .flatten()
                .unwrap_or(0)
    }

    /// Stores a small metadata value durably.
    pub fn put_meta(&self, k: &str, v: &[u8]) -> Result<(), rocksdb::Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.put_cf_opt(self.cf(META), k, v, &opts)
    }

    /// Deletes a metadata value durably.
    pub fn delete_meta(&self, k: &str) -> Result<(), rocksdb::Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.delete_cf_opt(self.cf(META), k, &opts)
    }

    /// Reads a metadata value.
    pub fn get_meta(&self, k: &str) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.db.get_cf(self.cf(META), k)
    }

    /// Snapshot files, oldest first.
    pub fn snapshots(&self) -> std::io::Result<Vec<SnapshotFile>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.snapshot_dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix("snapshot-"))
                .and_then(|n| n.strip_suffix(".vsnap"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push(SnapshotFile {
                seq,
                path: e.path(),
                bytes: e.metadata()?.len(),
            });
        }
        out.sort_by_key(|s| s.seq);
        Ok(out)
    }

    /// Where a follower streams a snapshot it downloads before restoring from it (not a
    /// snapshot: never listed, overwritten by the next download).
    pub fn download_path(&self) -> PathBuf {
        self.snapshot_dir.join(".download.tmp")
    }

    /// A new path in the snapshot directory for an uploaded snapshot being received (not a
    /// snapshot: never listed; removed at the next open if left behind).
    pub fn upload_path(&self) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.snapshot_dir.join(format!(".upload-{n}.tmp"))
    }

    /// The path a snapshot at `seq` lives at.
    pub fn snapshot_path(&self, seq: u64) -> PathBuf {
        self.snapshot_dir.join(format!("snapshot-{seq:020}.vsnap"))
    }

    /// Writes a snapshot durably, its bytes streamed by `fill` (for example
    /// `Kernel::write_snapshot`, so a large snapshot is never held in memory whole): temporary
    /// file, sync, rename, directory sync.
    pub fn write_snapshot_with(
        &self,
        seq: u64,
        fill: impl FnOnce(&mut FileSink),
    ) -> std::io::Result<SnapshotFile> {
        let path = self.snapshot_path(seq);
        let tmp = self.snapshot_dir.join(format!(".snapshot-{seq:020}.tmp"));
        let written = (|| {
            let mut sink = FileSink {
                out: std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?),
                bytes: 0,
                error: None,
            };
            fill(&mut sink);
            if let Some(e) = sink.error {
                return Err(e);
            }
            let f = sink.out.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            Ok(sink.bytes)
        })();
        let bytes = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.snapshot_dir)?.sync_all()?;
        Ok(SnapshotFile { seq, path, bytes })
    }

    /// Makes the complete, synced snapshot file `from` (in the snapshot directory) the snapshot
    /// at `seq`: rename and directory sync, as [`Store::write_snapshot_with`] ends, without
    /// writing its bytes again.
    pub fn adopt_snapshot(&self, seq: u64, from: &Path) -> std::io::Result<SnapshotFile> {
        let bytes = fs::metadata(from)?.len();
        let path = self.snapshot_path(seq);
        fs::rename(from, &path)?;
        fs::File::open(&self.snapshot_dir)?.sync_all()?;
        Ok(SnapshotFile { seq, path, bytes })
    }

    /// Where a restore keeps its verified snapshot between deciding to restore and finishing
    /// (see `Engine`'s restore: a crash between the two is finished or undone at open). Not a
    /// snapshot: never listed, never served.
    pub fn staged_path(&self) -> PathBuf {
        self.snapshot_dir.join("restore-staged.vsnap")
    }

    /// Moves the complete snapshot file `from` (in the snapshot directory, already synced) to
    /// [`Store::staged_path`], durably.
    pub fn stage_snapshot(&self, from: &Path) -> std::io::Result<()> {
        fs::rename(from, self.staged_path())?;
        fs::File::open(&self.snapshot_dir)?.sync_all()
    }

    /// Removes a snapshot file.
    pub fn remove_snapshot(&self, file: &SnapshotFile) -> std::io::Result<()> {
        fs::remove_file(&file.path)?;
        fs::File::open(&self.snapshot_dir)?.sync_all()
    }
}
