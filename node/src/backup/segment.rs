//! Shipped log segments: a run of consecutive log entries as one object.
//!
//! Layout (integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `VALORISG` |
//! | 4 | format version ([`SEGMENT_FORMAT_VERSION`]) |
//! | 4 | number of entries `n` (at least 1) |
//! | n times | sequence number (8), epoch (8), chain hash after the entry (32), event length (4), the event's canonical bytes |
//! | 32 | blake3 of everything above |
//!
//! The object's name ([`SegmentName`]) repeats the first and last sequence numbers and the
//! chain hash after the last entry, so a restore finds the segments it needs, and checks that
//! they join, by listing alone. Decoding checks the framing, the checksum, that the entries
//! are consecutive and that they agree with the name; the chain hashes themselves are checked
//! by replaying the events (a restore recomputes each one).

use valori_kernel::Hash;

use crate::store::Entry;

/// First bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"VALORISG";
/// Version of the segment layout.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// File name extension of segments.
const EXT: &str = ".vseg";

/// What a segment's object name says: `<first, 20 digits>-<last, 20 digits>-<chain hash after
/// last, hex>.vseg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    /// Sequence number of its first entry.
    pub first: u64,
    /// Sequence number of its last entry.
    pub last: u64,
    /// Chain hash after its last entry.
    pub chain: Hash,
}

impl SegmentName {
    /// The object's file name.
    pub fn file_name(&self) -> String {
        format!(
            "{:020}-{:020}-{}{EXT}",
            self.first,
            self.last,
            hex::encode(self.chain)
        )
    }

    /// Reads a segment's file name; `None` for anything else.
    pub fn parse(name: &str) -> Option<SegmentName> {
        let stem = name.strip_suffix(EXT)?;
        let mut parts = stem.splitn(3, '-');
        let first: u64 = parts.next()?.parse().ok()?;
        let last: u64 = parts.next()?.parse().ok()?;
        let chain_hex = parts.next()?;
        let mut chain = [0u8; 32];
        hex::decode_to_slice(chain_hex, &mut chain).ok()?;
        (first >= 1 && first <= last).then_some(SegmentName { first, last, chain })
    }
}

/// Encodes consecutive entries as a segment. Panics on an empty slice (a segment holds at least
/// one entry) or on entries that are not consecutive: both are the caller's bug.
pub fn encode(entries: &[Entry]) -> (SegmentName, Vec<u8>) {
    let first = entries.first().expect("a segment holds at least one entry");
    let last = entries.last().expect("non-empty");
    assert!(
        entries.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
        "a segment's entries are consecutive"
    );
    let size = 16 + 32 + entries.iter().map(|e| 52 + e.event.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.seq.to_le_bytes());
        out.extend_from_slice(&e.epoch.to_le_bytes());
        out.extend_from_slice(&e.chain);
        out.extend_from_slice(&(e.event.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.event);
    }
    let checksum = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&checksum);
    let name = SegmentName {
        first: first.seq,
        last: last.seq,
        chain: last.chain,
    };
    (name, out)
}

/// Why a segment's bytes were refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// Wrong magic or version, or shorter or longer than its entries say.
    #[error("not a segment this node reads: {0}")]
    Framing(&'static str),
    /// The checksum does not match: the bytes were damaged.
    #[error("checksum mismatch (the object is damaged)")]
    Checksum,
    /// The entries are not those the name announces.
    #[error("its entries do not match its name: {0}")]
    Name(String),
}

/// Decodes and checks a segment against the name it was stored under.
pub fn decode(name: &SegmentName, bytes: &[u8]) -> Result<Vec<Entry>, SegmentError> {
    if bytes.len() < 16 + 32 {
        return Err(SegmentError::Framing("too short"));
    }
    if bytes[..8] != SEGMENT_MAGIC {
        return Err(SegmentError::Framing("bad magic"));
    }
    let split = bytes.len() - 32;
    if *blake3::hash(&bytes[..split]).as_bytes() != bytes[split..] {
        return Err(SegmentError::Checksum);
    }
    let body = &bytes[..split];
    let u32_at = |at: usize| -> Result<u32, SegmentError> {
        body.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or(SegmentError::Framing("truncated"))
    };
    let u64_at = |at: usize| -> Result<u64, SegmentError> {
        body.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or(SegmentError::Framing("truncated"))
    };
    if u32_at(8)? != SEGMENT_FORMAT_VERSION {
        return Err(SegmentError::Framing("unsupported version"));
    }
    let count = u32_at(12)? as usize;
    let mut entries = Vec::with_capacity(count.min(1 << 16));
    let mut at = 16;
    for _ in 0..count {
        let seq = u64_at(at)?;
        let epoch = u64_at(at + 8)?;
        let chain: Hash = body
            .get(at + 16..at + 48)
            .ok_or(SegmentError::Framing("truncated"))?
            .try_into()
            .expect("32 bytes");
        let len = u32_at(at + 48)? as usize;
        let event = body
            .get(at + 52..at + 52 + len)
            .ok_or(SegmentError::Framing("truncated"))?
            .to_vec();
        at += 52 + len;
        entries.push(Entry {
            seq,
            chain,
            event,
            epoch,
        });
    }
    if at != body.len() {
        return Err(SegmentError::Framing("bytes after the last entry"));
    }
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Err(SegmentError::Framing("no entries"));
    };
    if first.seq != name.first || last.seq != name.last || last.chain != name.chain {
        return Err(SegmentError::Name(format!(
            "it holds {}..={} ending in chain hash {}",
            first.seq,
            last.seq,
            hex::encode(last.chain)
        )));
    }
    if let Some(w) = entries.windows(2).find(|w| w[0].seq + 1 != w[1].seq) {
        return Err(SegmentError::Name(format!(
            "sequence number {} follows {}",
            w[1].seq, w[0].seq
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(from: u64, n: u64) -> Vec<Entry> {
        (from..from + n)
            .map(|seq| Entry {
                seq,
                chain: [seq as u8; 32],
                event: vec![seq as u8; seq as usize % 7],
                epoch: seq / 3,
            })
            .collect()
    }

    #[test]
    fn segments_round_trip_and_name_what_they_hold() {
        let es = entries(5, 9);
        let (name, bytes) = encode(&es);
        assert_eq!((name.first, name.last, name.chain), (5, 13, [13; 32]));
        assert_eq!(SegmentName::parse(&name.file_name()), Some(name));
        assert_eq!(decode(&name, &bytes).unwrap(), es);
    }

    #[test]
    fn damaged_or_misnamed_segments_are_refused() {
        let (name, bytes) = encode(&entries(1, 4));
        for i in [0, 9, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode(&name, &bad).is_err(), "flipped byte {i} accepted");
        }
        assert_eq!(
            decode(&name, &bytes[..bytes.len() - 1]),
            Err(SegmentError::Checksum)
        );
        let other = SegmentName { last: 5, ..name };
        assert!(matches!(decode(&other, &bytes), Err(SegmentError::Name(_))));
        let other = SegmentName {
            chain: [0; 32],
            ..name
        };
        assert!(matches!(decode(&other, &bytes), Err(SegmentError::Name(_))));
    }

    #[test]
    fn only_segment_names_parse() {
        for bad in [
            "00000000000000000001-00000000000000000002.vseg",
            "00000000000000000003-00000000000000000002-"
                .to_string()
                .as_str(),
            "snapshot.vsnap",
            "",
        ] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
        let zero = SegmentName {
            first: 0,
            last: 1,
            chain: [0; 32],
        };
        assert_eq!(SegmentName::parse(&zero.file_name()), None);
    }
}
