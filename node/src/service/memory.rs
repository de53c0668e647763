//! The agent-memory operations: upsert by key, get, scroll, count, writes by target, batch
//! search and payload indexes. Payloads and filters are translated once, by
//! [`valori_api::memory`]; the kernel decides everything else when the event applies.

use valori_api as api;
use valori_api::memory::{filter_from_wire, payload_from_json, payload_to_json, Include};
use valori_kernel::{
    Applied, Collection, Event, Filter, Fixed, IndexKind, Kernel, KeyedRecord, PayloadMode, Target,
    UpsertMode,
};

use super::convert::{base64_len, record_vector, ResponseSize};
use super::records::search_state;
use super::Service;
use crate::error::NodeError;

/// Bytes a record takes in JSON besides its vector, payload, document and metadata.
const RECORD_BYTES: usize = 96;

fn bad(message: String) -> NodeError {
    NodeError::BadRequest(message)
}

/// The kernel filter of an optional wire filter (the empty filter when absent).
pub fn filter_of(f: Option<&api::memory::Filter>) -> Result<Filter, NodeError> {
    match f {
        None => Ok(Filter::default()),
        Some(f) => filter_from_wire(f).map_err(|reason| {
            NodeError::Kernel(valori_kernel::Error::InvalidFilter {
                at: "filter".into(),
                reason,
            })
        }),
    }
}

/// The one target a write names: keys, ids or a filter.
fn target_of(
    keys: Option<Vec<String>>,
    ids: Option<Vec<u64>>,
    filter: Option<&api::memory::Filter>,
) -> Result<Target, NodeError> {
    match (keys, ids, filter) {
        (Some(keys), None, None) => Ok(Target::Keys(keys)),
        (None, Some(ids), None) => Ok(Target::Ids(ids)),
        (None, None, Some(f)) => Ok(Target::Filter(filter_of(Some(f))?)),
        _ => Err(bad(
            "name exactly one of keys, ids and filter (a filter of {} names every record)".into(),
        )),
    }
}

fn invalid_payload(at: String, reason: String) -> NodeError {
    NodeError::Kernel(valori_kernel::Error::InvalidPayload { at, reason })
}

/// Which parts of a record an answer carries.
#[derive(Clone, Copy, Default)]
pub struct Parts {
    vector: bool,
    payload: bool,
    document: bool,
    /// Metadata (which searches also give with `with_metadata`).
    pub metadata: bool,
}

impl Parts {
    /// Whether any part is asked for.
    pub fn any(&self) -> bool {
        self.vector || self.payload || self.document || self.metadata
    }

    /// The parts `include` names, or the default ones (payload and document).
    pub fn of(include: Option<&[Include]>, default: &[Include]) -> Parts {
        let mut p = Parts::default();
        for i in include.unwrap_or(default) {
            match i {
                Include::Vector => p.vector = true,
                Include::Payload => p.payload = true,
                Include::Document => p.document = true,
                Include::Metadata => p.metadata = true,
            }
        }
        p
    }
}

/// A live record as an answer carries it, counting its size against the response limit.
pub fn memory_record(
    c: &Collection,
    id: u64,
    parts: Parts,
    size: &mut ResponseSize,
) -> Result<api::MemoryRecord, NodeError> {
    let r = c
        .get(id)
        .ok_or_else(|| NodeError::Internal(format!("record {id} vanished from a read")))?;
    record_parts(&r, parts, size)
}

/// A record as an answer carries it, counting its size against the response limit.
pub fn record_parts(
    r: &valori_kernel::Record<'_>,
    parts: Parts,
    size: &mut ResponseSize,
) -> Result<api::MemoryRecord, NodeError> {
    let id = r.id;
    let vector = parts.vector.then(|| {
        r.vector
            .iter()
            .map(|&x| Fixed(x).to_f64())
            .collect::<Vec<_>>()
    });
    let payload = parts
        .payload
        .then(|| r.payload.map(payload_to_json).unwrap_or_default());
    let document = parts.document.then(|| r.document.map(String::from));
    let metadata = parts.metadata.then(|| r.metadata.map(super::convert::b64));
    size.add(
        RECORD_BYTES
            + r.key.map_or(0, str::len)
            + vector.as_ref().map_or(0, |v| v.len() * 24)
            + r.payload
                .map_or(0, |p| 2 * valori_kernel::payload::encoded_len(p) as usize)
            + document
                .as_ref()
                .map_or(0, |d| d.as_ref().map_or(0, |d| 2 * d.len()))
            + r.metadata.map_or(0, |m| base64_len(m.len())),
    )?;
    Ok(api::MemoryRecord {
        id,
        key: r.key.map(String::from),
        tag: r.tag,
        vector,
        payload,
        document,
        metadata,
    })
}

impl Service {
    /// Writes records by key, all or nothing.
    pub async fn upsert(
        &self,
        collection: String,
        req: api::Upsert,
    ) -> Result<api::Upserted, NodeError> {
        self.writable()?;
        let max = self.settings.max_batch;
        if req.records.len() > max {
            return Err(NodeError::Limit {
                what: "records in a batch",
                value: req.records.len() as u64,
                max: max as u64,
            });
        }
        let records = req
            .records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("records[{i}]");
                Ok(KeyedRecord {
                    vector: record_vector(i, &r.vector, true)?,
                    tag: r.tag,
                    payload: r
                        .payload
                        .as_ref()
                        .map(|p| payload_from_json(p, &format!("{at}.payload")))
                        .transpose()
                        .map_err(|reason| invalid_payload(at.clone(), reason))?,
                    document: r.document,
                    metadata: r
                        .metadata
                        .map(|m| super::convert::unb64(&format!("{at}.metadata"), &m))
                        .transpose()?,
                    key: r.key,
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        let mode = match req.mode {
            api::memory::UpsertMode::Upsert => UpsertMode::Upsert,
            api::memory::UpsertMode::InsertOnly => UpsertMode::InsertOnly,
            api::memory::UpsertMode::UpdateOnly => UpsertMode::UpdateOnly,
        };
        let c = self
            .write(Event::Upsert {
                collection,
                mode,
                records,
            })
            .await?;
        match c.applied {
            Applied::Upserted { ids } => Ok(api::Upserted { ids, seq: c.seq }),
            other => Err(NodeError::Internal(format!(
                "an upsert applied as {other:?}"
            ))),
        }
    }

    async fn targeted(&self, event: Event) -> Result<(u64, u64), NodeError> {
        let c = self.write(event).await?;
        match c.applied {
            Applied::Affected(n) => Ok((n, c.seq)),
            other => Err(NodeError::Internal(format!(
                "a write by target applied as {other:?}"
            ))),
        }
    }

    /// Deletes records by keys, ids or a filter.
    pub async fn delete_records(
        &self,
        collection: String,
        req: api::DeleteRecords,
    ) -> Result<api::Deleted, NodeError> {
        self.writable()?;
        let target = target_of(req.keys, req.ids, req.filter.as_ref())?;
        let (deleted, seq) = self
            .targeted(Event::DeleteRecords {
                collection,
                target,
                max_affected: req.max_affected,
            })
            .await?;
        Ok(api::Deleted { deleted, seq })
    }

    /// Merges into or replaces records' payloads.
    pub async fn set_payload(
        &self,
        collection: String,
        req: api::SetPayload,
    ) -> Result<api::Updated, NodeError> {
        self.writable()?;
        let target = target_of(req.keys, req.ids, req.filter.as_ref())?;
        let payload = payload_from_json(&req.payload, "payload")
            .map_err(|reason| invalid_payload("payload".into(), reason))?;
        let (updated, seq) = self
            .targeted(Event::SetPayload {
                collection,
                target,
                payload,
                mode: match req.mode {
                    api::memory::PayloadMode::Merge => PayloadMode::Merge,
                    api::memory::PayloadMode::Replace => PayloadMode::Replace,
                },
                max_affected: req.max_affected,
            })
            .await?;
        Ok(api::Updated { updated, seq })
    }

    /// Removes top-level payload keys from records.
    pub async fn delete_payload_keys(
        &self,
        collection: String,
        req: api::DeletePayloadKeys,
    ) -> Result<api::Updated, NodeError> {
        self.writable()?;
        let target = target_of(req.keys, req.ids, req.filter.as_ref())?;
        let (updated, seq) = self
            .targeted(Event::DeletePayloadKeys {
                collection,
                target,
                keys: req.fields,
                max_affected: req.max_affected,
            })
            .await?;
        Ok(api::Updated { updated, seq })
    }

    /// Declares a payload index.
    pub async fn create_payload_index(
        &self,
        collection: String,
        req: api::PayloadIndex,
    ) -> Result<u64, NodeError> {
        let kind = match req.kind {
            api::memory::IndexKind::Keyword => IndexKind::Keyword,
            api::memory::IndexKind::Integer => IndexKind::Integer,
            api::memory::IndexKind::Bool => IndexKind::Bool,
        };
        let c = self
            .write(Event::CreatePayloadIndex {
                collection,
                field: req.field,
                kind,
            })
            .await?;
        Ok(c.seq)
    }

    /// Removes a payload index.
    pub async fn drop_payload_index(
        &self,
        collection: String,
        field: String,
    ) -> Result<u64, NodeError> {
        Ok(self
            .write(Event::DropPayloadIndex { collection, field })
            .await?
            .seq)
    }

    /// A collection's payload indexes.
    pub async fn payload_indexes(
        &self,
        collection: String,
    ) -> Result<api::PayloadIndexes, NodeError> {
        self.off_thread(move |s| s.payload_indexes_blocking(&collection))
            .await
    }

    /// [`Service::payload_indexes`] on the caller's thread (embedded callers).
    pub fn payload_indexes_blocking(
        &self,
        collection: &str,
    ) -> Result<api::PayloadIndexes, NodeError> {
        let kernel = self.engine.read()?;
        let c = collection_of(&kernel, collection)?;
        Ok(api::PayloadIndexes {
            indexes: c
                .payload_indexes()
                .map(|(field, kind)| api::PayloadIndex {
                    field: field.into(),
                    kind: match kind {
                        IndexKind::Keyword => api::memory::IndexKind::Keyword,
                        IndexKind::Integer => api::memory::IndexKind::Integer,
                        IndexKind::Bool => api::memory::IndexKind::Bool,
                    },
                })
                .collect(),
            seq: kernel.seq(),
        })
    }

    /// Records by keys or ids, in the order asked.
    pub async fn get_records(
        &self,
        collection: String,
        req: api::GetRecords,
    ) -> Result<api::Records, NodeError> {
        self.off_thread(move |s| s.get_records_blocking(&collection, &req))
            .await
    }

    /// [`Service::get_records`] on the caller's thread (embedded callers).
    pub fn get_records_blocking(
        &self,
        collection: &str,
        req: &api::GetRecords,
    ) -> Result<api::Records, NodeError> {
        let kernel = self.engine.read()?;
        records_state(&kernel, collection, req, self.settings.max_response_bytes)
    }

    /// A page of records by ascending id.
    pub async fn scroll(
        &self,
        collection: String,
        req: api::Scroll,
    ) -> Result<api::ScrollPage, NodeError> {
        self.off_thread(move |s| s.scroll_blocking(&collection, &req))
            .await
    }

    /// [`Service::scroll`] on the caller's thread (embedded callers).
    pub fn scroll_blocking(
        &self,
        collection: &str,
        req: &api::Scroll,
    ) -> Result<api::ScrollPage, NodeError> {
        let filter = filter_of(req.filter.as_ref())?;
        let after = req
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<u64>()
                    .map_err(|_| bad(format!("cursor {c:?} is not one a scroll returned")))
            })
            .transpose()?;
        if req.limit == 0 || req.limit > api::limits::MAX_SCROLL_PAGE {
            return Err(NodeError::Limit {
                what: "scroll limit",
                value: u64::from(req.limit),
                max: u64::from(api::limits::MAX_SCROLL_PAGE),
            });
        }
        let parts = Parts::of(req.include.as_deref(), api::memory::DEFAULT_INCLUDE);
        let kernel = self.engine.read()?;
        let c = collection_of(&kernel, collection)?;
        let (ids, more) = c.scroll(&filter, after, req.limit as usize);
        let mut size = ResponseSize::new(self.settings.max_response_bytes);
        let next_cursor = if more {
            ids.last().map(u64::to_string)
        } else {
            None
        };
        let records = ids
            .into_iter()
            .map(|id| memory_record(c, id, parts, &mut size))
            .collect::<Result<_, _>>()?;
        Ok(api::ScrollPage {
            records,
            next_cursor,
            seq: kernel.seq(),
        })
    }

    /// How many records match a filter.
    pub async fn count(
        &self,
        collection: String,
        req: api::Count,
    ) -> Result<api::Counted, NodeError> {
        self.off_thread(move |s| s.count_blocking(&collection, &req))
            .await
    }

    /// [`Service::count`] on the caller's thread (embedded callers).
    pub fn count_blocking(
        &self,
        collection: &str,
        req: &api::Count,
    ) -> Result<api::Counted, NodeError> {
        count_state(&*self.engine.read()?, collection, req)
    }

    /// Up to 256 searches, all from one state.
    pub async fn search_batch(
        &self,
        collection: String,
        req: api::SearchBatch,
    ) -> Result<super::BatchHits, NodeError> {
        self.off_thread(move |s| s.search_batch_blocking(&collection, &req))
            .await
    }

    /// [`Service::search_batch`] on the caller's thread (embedded callers).
    pub fn search_batch_blocking(
        &self,
        collection: &str,
        req: &api::SearchBatch,
    ) -> Result<super::BatchHits, NodeError> {
        if req.searches.is_empty() || req.searches.len() > api::limits::MAX_SEARCH_BATCH {
            return Err(NodeError::Limit {
                what: "searches in a batch",
                value: req.searches.len() as u64,
                max: api::limits::MAX_SEARCH_BATCH as u64,
            });
        }
        if let Some(i) = req
            .searches
            .iter()
            .position(|s| s.at_seq.is_some() || s.hashes)
        {
            return Err(bad(format!(
                "searches[{i}]: at_seq and hashes apply to a single search, not to a batch"
            )));
        }
        let kernel = self.engine.read()?;
        let mut size = ResponseSize::new(self.settings.max_response_bytes);
        let mut results = Vec::with_capacity(req.searches.len());
        for (i, search) in req.searches.iter().enumerate() {
            let hits =
                search_state(&kernel, collection, search, &mut size).map_err(|e| match e {
                    NodeError::BadRequest(m) => bad(format!("searches[{i}]: {m}")),
                    other => other,
                })?;
            results.push(hits);
        }
        Ok(super::BatchHits {
            results,
            seq: kernel.seq(),
        })
    }
}

/// A collection of a state, or `collection_not_found`.
pub fn collection_of<'k>(kernel: &'k Kernel, name: &str) -> Result<&'k Collection, NodeError> {
    kernel.collection(name).ok_or_else(|| {
        NodeError::Kernel(valori_kernel::Error::CollectionNotFound { name: name.into() })
    })
}

/// Records of a state by keys or ids, in the order asked; the answer at most `max_bytes`.
pub fn records_state(
    kernel: &Kernel,
    collection: &str,
    req: &api::GetRecords,
    max_bytes: usize,
) -> Result<api::Records, NodeError> {
    let parts = Parts::of(req.include.as_deref(), api::memory::DEFAULT_INCLUDE);
    let c = collection_of(kernel, collection)?;
    let mut size = ResponseSize::new(max_bytes);
    let mut records = Vec::new();
    let mut missing = Vec::new();
    match (&req.keys, &req.ids) {
        (Some(keys), None) => {
            for k in keys {
                match c.id_of(k) {
                    Some(id) => records.push(memory_record(c, id, parts, &mut size)?),
                    None => missing.push(api::Missing::Key(k.clone())),
                }
            }
        }
        (None, Some(ids)) => {
            for &id in ids {
                if c.contains(id) {
                    records.push(memory_record(c, id, parts, &mut size)?);
                } else {
                    missing.push(api::Missing::Id(id));
                }
            }
        }
        _ => return Err(bad("name exactly one of keys and ids".into())),
    }
    Ok(api::Records {
        records,
        missing,
        seq: kernel.seq(),
    })
}

/// How many records of a state match a filter.
pub fn count_state(
    kernel: &Kernel,
    collection: &str,
    req: &api::Count,
) -> Result<api::Counted, NodeError> {
    let filter = filter_of(req.filter.as_ref())?;
    let c = collection_of(kernel, collection)?;
    Ok(api::Counted {
        count: c.count(&filter),
        seq: kernel.seq(),
    })
}
