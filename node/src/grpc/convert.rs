//! Protobuf messages to and from the service's types.

use tonic::Status;
use valori_api as api;
use valori_kernel::limits::DEFAULT_COLLECTION;

use super::pb;
use crate::error::NodeError;
use crate::service::{RecordIn, Restored, StateAt};
use crate::store::SnapshotFile;

/// A collection's name: the default collection when empty.
pub fn collection(name: String) -> String {
    if name.is_empty() {
        DEFAULT_COLLECTION.into()
    } else {
        name
    }
}

/// An HNSW parameter, which the proto carries as a `uint32`.
pub fn u16_param(v: Option<u32>, what: &str) -> Result<Option<u16>, Status> {
    v.map(|x| {
        u16::try_from(x)
            .map_err(|_| Status::from(NodeError::BadRequest(format!("{what} {x} is too large"))))
    })
    .transpose()
}

pub fn record_in(r: pb::Record) -> RecordIn {
    RecordIn {
        vector: r.vector,
        tag: r.tag,
        metadata: r.metadata,
    }
}

pub fn collection_info(c: api::CollectionInfo) -> pb::CollectionInfo {
    let (index, hnsw) = match c.index {
        api::IndexInfo::Flat => ("flat", None),
        api::IndexInfo::Hnsw {
            m,
            ef_construction,
            ef_search,
        } => (
            "hnsw",
            Some(pb::HnswIndex {
                m: Some(m.into()),
                ef_construction: Some(ef_construction.into()),
                ef_search: Some(ef_search.into()),
            }),
        ),
    };
    pb::CollectionInfo {
        name: c.name,
        dimension: c.dimension,
        metric: c.metric.name().into(),
        index: index.into(),
        records: c.records,
        next_id: c.next_id,
        hnsw,
    }
}

/// A backed-up snapshot as the gRPC API gives it.
pub fn backup_info(b: valori_api::BackupInfo) -> pb::BackupInfo {
    pb::BackupInfo {
        seq: b.seq,
        chain_hash: b.chain_hash,
        state_hash: b.state_hash,
        bytes: b.bytes,
        started: b.started,
        finished: b.finished,
    }
}

/// A snapshot file as the gRPC API gives it.
pub fn snapshot_info(f: SnapshotFile) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        id: f.seq,
        seq: f.seq,
        bytes: f.bytes,
        path: f.path.display().to_string(),
    }
}

pub fn state_reply(s: StateAt) -> pb::StateReply {
    pb::StateReply {
        seq: s.seq,
        chain_hash: hex::encode(s.chain_hash),
        state_hash: s.state_hash.map(hex::encode).unwrap_or_default(),
        epoch: s.epoch,
    }
}

pub fn restore_reply(r: Restored) -> pb::RestoreReply {
    pb::RestoreReply {
        state: Some(state_reply(r.state)),
        snapshot: Some(snapshot_info(r.snapshot)),
    }
}

pub fn role_reply(r: api::RoleInfo) -> pb::RoleReply {
    pb::RoleReply {
        role: r.role.name().into(),
        epoch: r.epoch,
        leader_url: r.leader_url,
        seq: r.seq,
        seen_epoch: r.seen_epoch,
        writable: r.writable,
        last_epoch: r.last_epoch,
        diverged: r.diverged,
        heal: r.heal,
    }
}

pub fn replication_reply(s: api::ReplicationStatus) -> pb::ReplicationStatusReply {
    pb::ReplicationStatusReply {
        seq: s.seq,
        followers: s
            .followers
            .into_iter()
            .map(|f| pb::FollowerStatus {
                name: f.name,
                confirmed_seq: f.confirmed_seq,
                lag_events: f.lag_events,
                seconds_since_seen: f.seconds_since_seen,
                diverged: f.diverged,
            })
            .collect(),
    }
}
