//! The service's results as wire types: bytes become base64, hashes hex.

use valori_api as api;

use crate::error::NodeError;
use crate::service::{hit_to_wire, Hits, LogPageOut, RecordIn, RecordOut, Restored, StateAt};
use crate::store::SnapshotFile;

pub use crate::service::{b64, unb64};

/// A record as sent, with its metadata decoded.
pub fn record_in(r: api::NewRecord) -> Result<RecordIn, NodeError> {
    Ok(RecordIn {
        vector: r.vector,
        tag: r.tag,
        metadata: r.metadata.map(|m| unb64("metadata", &m)).transpose()?,
    })
}

/// A stored record.
pub fn record(r: RecordOut) -> api::Record {
    api::Record {
        id: r.id,
        vector: r.vector,
        tag: r.tag,
        metadata: r.metadata.as_deref().map(b64),
        seq: r.seq,
    }
}

/// Search results.
pub fn hits(h: Hits) -> api::SearchResults {
    api::SearchResults {
        results: h.hits.into_iter().map(hit_to_wire).collect(),
        seq: h.seq,
        chain_hash: h.hashes.map(|(c, _)| hex::encode(c)),
        state_hash: h.hashes.map(|(_, s)| hex::encode(s)),
    }
}

/// A state at a sequence number.
pub fn state(s: StateAt) -> api::State {
    api::State {
        seq: s.seq,
        chain_hash: hex::encode(s.chain_hash),
        state_hash: s.state_hash.map(hex::encode),
        epoch: s.epoch,
    }
}

/// A page of the log.
pub fn log_page(page: LogPageOut) -> api::LogPage {
    let entries: Vec<api::LogEntry> = page
        .entries
        .into_iter()
        .map(|e| api::LogEntry {
            seq: e.seq,
            chain_hash: hex::encode(e.chain),
            event: b64(&e.event),
            epoch: e.epoch,
        })
        .collect();
    api::LogPage {
        next: entries.last().map(|e| e.seq + 1),
        entries,
        first_retained: page.first_retained,
        head: page.head,
        epoch: page.epoch,
        history: page.history,
    }
}

/// What a restore installed and the state it left.
pub fn restored(r: Restored) -> api::Restored {
    api::Restored {
        seq: r.state.seq,
        chain_hash: hex::encode(r.state.chain_hash),
        state_hash: r.state.state_hash.map(hex::encode).unwrap_or_default(),
        snapshot: snapshot(r.snapshot),
    }
}

/// A snapshot file.
pub fn snapshot(f: SnapshotFile) -> api::SnapshotInfo {
    api::SnapshotInfo {
        id: f.seq,
        seq: f.seq,
        bytes: f.bytes,
        path: f.path.display().to_string(),
    }
}

/// A graph node.
pub fn node(id: u64, n: crate::service::NodeOut) -> api::GraphNode {
    api::GraphNode {
        id,
        kind: n.kind,
        record: n.record,
        properties: n.properties.as_deref().map(b64),
    }
}
