//! Canonical little-endian binary encoding shared by events, the state hash and snapshots.
//!
//! Rules: fixed-width little-endian integers, no `usize` anywhere, lengths as `u32` prefixes,
//! strings as UTF-8 bytes. Decoding never panics and never allocates more than the input could
//! describe: every length is checked against its limit and against the bytes that remain.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Where encoded bytes go: a buffer, or straight into a hasher.
pub trait Sink {
    /// Appends bytes.
    fn put(&mut self, bytes: &[u8]);

    /// Appends one byte.
    fn put_u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    /// Appends a little-endian `u32`.
    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    /// Appends a little-endian `u64`.
    fn put_u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    /// Appends a little-endian `i32`.
    fn put_i32(&mut self, v: i32) {
        self.put(&v.to_le_bytes());
    }
    /// Appends a `u32` length, then the bytes.
    fn put_bytes(&mut self, bytes: &[u8]) {
        // Callers enforce limits far below u32::MAX before anything is encoded.
        self.put_u32(bytes.len() as u32);
        self.put(bytes);
    }
    /// Appends an optional byte string: 0, or 1 followed by the bytes.
    fn put_opt_bytes(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.put_u8(0),
            Some(b) => {
                self.put_u8(1);
                self.put_bytes(b);
            }
        }
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for blake3::Hasher {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    UnexpectedEnd,
    /// Bytes were left after a complete value.
    TrailingBytes,
    /// The format version is not one this kernel reads.
    UnsupportedVersion(u32),
    /// An enum discriminant that names nothing.
    UnknownTag {
        /// What was being decoded.
        what: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// A length beyond its limit.
    TooLong {
        /// What was being decoded.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A value that breaks an invariant of the format (named).
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnexpectedEnd => f.write_str("input ends in the middle of a value"),
            DecodeError::TrailingBytes => f.write_str("bytes left over after the value"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            DecodeError::UnknownTag { what, tag } => write!(f, "unknown {what} tag {tag}"),
            DecodeError::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            DecodeError::TooLong { what, len, max } => {
                write!(f, "{what} length {len} exceeds the limit {max}")
            }
            DecodeError::Invalid(what) => write!(f, "invalid encoding: {what}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A cursor over encoded bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    /// Reads 32 raw bytes (a hash).
    pub fn hash(&mut self) -> Result<[u8; 32], DecodeError> {
        self.array()
    }

    /// Reads a `u32` count of items, each at least `min_item_bytes` long, refusing counts above
    /// `max` or counts the remaining input cannot hold (so no decoder over-allocates).
    pub fn count(
        &mut self,
        what: &'static str,
        max: u32,
        min_item_bytes: usize,
    ) -> Result<u32, DecodeError> {
        let n = self.u32()?;
        if n > max {
            return Err(DecodeError::TooLong {
                what,
                len: u64::from(n),
                max: u64::from(max),
            });
        }
        if (n as usize).saturating_mul(min_item_bytes) > self.remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(n)
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: u32) -> Result<&'a [u8], DecodeError> {
        let n = self.count(what, max, 1)?;
        self.take(n as usize)
    }

    /// Reads an optional byte string (see [`Sink::put_opt_bytes`]).
    pub fn opt_bytes(
        &mut self,
        what: &'static str,
        max: u32,
    ) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes(what, max)?.to_vec())),
            tag => Err(DecodeError::UnknownTag { what, tag }),
        }
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, what: &'static str, max: u32) -> Result<String, DecodeError> {
        let b = self.bytes(what, max)?;
        core::str::from_utf8(b)
            .map(String::from)
            .map_err(|_| DecodeError::InvalidUtf8)
    }
}
