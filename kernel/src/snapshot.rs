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

use alloc::vec::Vec;
use core::fmt;

use crate::codec::{DecodeError, Reader, Sink};
use crate::kernel::{Hash, Kernel};

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

impl Kernel {
    /// Encodes the whole state as a snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut body = Vec::new();
        self.encode_state(&mut body);
        let state_hash = *blake3::hash(&body).as_bytes();
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len() + 32);
        out.put(&SNAPSHOT_MAGIC);
        out.put_u32(SNAPSHOT_FORMAT_VERSION);
        out.put_u64(self.seq());
        out.put(&self.chain_hash());
        out.put(&state_hash);
        out.put_u64(body.len() as u64);
        out.put(&body);
        let checksum = *blake3::hash(&out).as_bytes();
        out.put(&checksum);
        out
    }

    /// Restores a state from [`Kernel::snapshot`]'s output.
    pub fn restore(bytes: &[u8]) -> Result<Kernel, SnapshotError> {
        let (info, body) = verify(bytes)?;
        let kernel =
            Kernel::decode_state(body, info.seq, info.chain_hash).map_err(SnapshotError::Decode)?;
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
