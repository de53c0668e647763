//! Snapshots: a versioned, checksummed image of the whole state.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `VALORISN` |
//! | 4 | snapshot format version ([`SNAPSHOT_FORMAT_VERSION`]) |
//! | 8 | sequence number |
//! | 32 | chain hash at that sequence number |
//! | 32 | state hash |
//! | 8 | body length `n` |
//! | n | body: the canonical state encoding ([`Kernel::encode_state`]) |
//! | 32 | blake3 of everything above |
//!
//! Restoring checks the magic, version, length and checksum before decoding anything, then
//! decodes the body strictly and checks that the restored state hashes to the recorded state
//! hash.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::codec::{DecodeError, Reader, Sink};
use crate::kernel::{Hash, Kernel};
use crate::rows::ChunkStore;

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"VALORISN";
/// Version of the snapshot layout.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 32 + 32 + 8;

/// Why a snapshot was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Not a snapshot: the magic bytes are wrong.
    BadMagic,
    /// A snapshot version this kernel does not read.
    UnsupportedVersion(u32),
    /// Shorter or longer than its header says.
    Truncated,
    /// The checksum does not match: the bytes were damaged.
    ChecksumMismatch,
    /// The body does not decode.
    Decode(DecodeError),
    /// The decoded state does not hash to the recorded state hash.
    StateHashMismatch,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::BadMagic => f.write_str("not a Valori snapshot (bad magic)"),
            SnapshotError::UnsupportedVersion(v) => {
                write!(f, "unsupported snapshot version {v}")
            }
            SnapshotError::Truncated => f.write_str("snapshot is truncated or has extra bytes"),
            SnapshotError::ChecksumMismatch => f.write_str("snapshot checksum mismatch"),
            SnapshotError::Decode(e) => write!(f, "snapshot body does not decode: {e}"),
            SnapshotError::StateHashMismatch => {
                f.write_str("restored state does not match the snapshot's state hash")
            }
        }
    }
}

impl core::error::Error for SnapshotError {}

/// What a snapshot's header says, readable without decoding the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Sequence number.
    pub seq: u64,
    /// Chain hash at `seq`.
    pub chain_hash: Hash,
    /// State hash.
    pub state_hash: Hash,
}

/// A sink that hashes what passes through it and counts the bytes, then hands them on.
struct Hashing<'a, S: Sink> {
    inner: &'a mut S,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<S: Sink> Sink for Hashing<'_, S> {
    fn put(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.inner.put(bytes);
    }
}

/// A sink that drops what it is given.
struct Discard;

impl Sink for Discard {
    fn put(&mut self, _: &[u8]) {}
}

impl Kernel {
    /// Encodes the whole state as a snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_snapshot(&mut out);
        out
    }

    /// Writes [`Kernel::snapshot`]'s bytes to `out` without holding them in memory: one pass
    /// over the state finds the body's hash and length for the header, a second streams the
    /// body, and the checksum goes last. Returns the number of bytes written.
    pub fn write_snapshot(&self, out: &mut impl Sink) -> u64 {
        let mut probe = Hashing {
            inner: &mut Discard,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        self.encode_state(&mut probe);
        let (state_hash, body_len) = (*probe.hasher.finalize().as_bytes(), probe.bytes);
        let mut w = Hashing {
            inner: out,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        w.put(&SNAPSHOT_MAGIC);
        w.put_u32(SNAPSHOT_FORMAT_VERSION);
        w.put_u64(self.seq());
        w.put(&self.chain_hash());
        w.put(&state_hash);
        w.put_u64(body_len);
        self.encode_state(&mut w);
        debug_assert_eq!(w.bytes, HEADER_BYTES as u64 + body_len);
        let checksum = *w.hasher.finalize().as_bytes();
        w.inner.put(&checksum);
        w.bytes + 32
    }

    /// Restores a state from [`Kernel::snapshot`]'s output.
    pub fn restore(bytes: &[u8]) -> Result<Kernel, SnapshotError> {
        Kernel::restore_placed(bytes, None)
    }

    /// [`Kernel::restore`] into a state whose full-precision vectors live in `store`
    /// ([`Kernel::place_vectors`]), decoded straight there: they are never all on the heap.
    pub fn restore_placed(
        bytes: &[u8],
        store: Option<Arc<dyn ChunkStore>>,
    ) -> Result<Kernel, SnapshotError> {
        let (info, body) = verify(bytes)?;
        let kernel = Kernel::decode_placed(body, info.seq, info.chain_hash, store)
            .map_err(SnapshotError::Decode)?;
        if kernel.state_hash() != info.state_hash {
            return Err(SnapshotError::StateHashMismatch);
        }
        Ok(kernel)
    }
}

/// Checks a snapshot's framing and checksum; returns its header and body.
pub fn verify(bytes: &[u8]) -> Result<(SnapshotInfo, &[u8]), SnapshotError> {
    let mut r = Reader::new(bytes);
    let head = |e: DecodeError| match e {
        DecodeError::UnexpectedEnd => SnapshotError::Truncated,
        other => SnapshotError::Decode(other),
    };
    if r.take(8).map_err(head)? != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = r.u32().map_err(head)?;
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let seq = r.u64().map_err(head)?;
    let chain_hash = r.hash().map_err(head)?;
    let state_hash = r.hash().map_err(head)?;
    let len = r.u64().map_err(head)?;
    if len.checked_add(32) != Some(r.remaining() as u64) {
        return Err(SnapshotError::Truncated);
    }
    let split = bytes.len() - 32;
    if *blake3::hash(&bytes[..split]).as_bytes() != bytes[split..] {
        return Err(SnapshotError::ChecksumMismatch);
    }
    Ok((
        SnapshotInfo {
            seq,
            chain_hash,
            state_hash,
        },
        &bytes[HEADER_BYTES..split],
    ))
}
