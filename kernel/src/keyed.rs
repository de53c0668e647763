//! What the agent-memory API adds to a collection: record keys, JSON payloads, documents and
//! payload indexes; upserts, writes by target, and filtered reads.
//!
//! A key names a record across versions: the u64 id names one version and is never reused.
//! Payload indexes are derived from the declared `(field, kind)` pairs (the declarations are
//! state, the postings are rebuilt on decode); they decide how fast a filter runs, never what
//! it returns.
//!
//! State encoding: a collection that uses none of this encodes exactly as before; when any
//! collection of a state does, the state is written in format 2 and every collection appends
//! [`Collection::encode_extras`] after its index.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{DecodeError, Reader, Sink};
use crate::collection::{Build, Collection, Hit, FILTER_SCAN_MAX};
use crate::error::Error;
use crate::event::{IndexKind, KeyedRecord, PayloadMode, Target, UpsertMode};
use crate::exec::Executor;
use crate::filter::{check_record_key, scalars_at, Condition, Filter, Match, Subject};
use crate::hnsw::SearchScratch;
use crate::limits::*;
use crate::payload::{self, Payload, Value};

/// A payload index: live slots by the values a field holds, each list ascending.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct PayloadIndex {
    pub(crate) kind: IndexKind,
    pub(crate) postings: BTreeMap<Value, Vec<u32>>,
}

impl PayloadIndex {
    fn holds(kind: IndexKind, v: &Value) -> bool {
        matches!(
            (kind, v),
            (IndexKind::Keyword, Value::String(_))
                | (IndexKind::Integer, Value::Int(_))
                | (IndexKind::Bool, Value::Bool(_))
        )
    }

    fn add(&mut self, field: &str, id: u64, p: &Payload) {
        let kind = self.kind;
        let postings = &mut self.postings;
        scalars_at(Some(p), field, &mut |v| {
            if Self::holds(kind, v) {
                let list = postings.entry(v.clone()).or_default();
                if let Err(i) = list.binary_search(&(id as u32)) {
                    list.insert(i, id as u32);
                }
            }
        });
    }

    fn remove(&mut self, field: &str, id: u64, p: &Payload) {
        let kind = self.kind;
        let postings = &mut self.postings;
        scalars_at(Some(p), field, &mut |v| {
            if Self::holds(kind, v) {
                if let Some(list) = postings.get_mut(v) {
                    if let Ok(i) = list.binary_search(&(id as u32)) {
                        list.remove(i);
                    }
                    if list.is_empty() {
                        postings.remove(v);
                    }
                }
            }
        });
    }
}

/// Keys, payloads, documents and payload indexes of a collection's live records.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct Extras {
    pub(crate) keys: BTreeMap<String, u64>,
    pub(crate) key_of: BTreeMap<u64, String>,
    pub(crate) payloads: BTreeMap<u64, Payload>,
    pub(crate) documents: BTreeMap<u64, String>,
    pub(crate) indexes: BTreeMap<String, PayloadIndex>,
}

impl Extras {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.payloads.is_empty()
            && self.documents.is_empty()
            && self.indexes.is_empty()
    }

    /// Drops what a deleted record had.
    pub(crate) fn forget(&mut self, id: u64) {
        if let Some(key) = self.key_of.remove(&id) {
            self.keys.remove(&key);
        }
        self.set_payload(id, None);
        self.documents.remove(&id);
    }

    fn set_key(&mut self, id: u64, key: &str) {
        self.keys.insert(key.into(), id);
        self.key_of.insert(id, key.into());
    }

    /// Replaces a record's payload (an empty one is none), keeping the indexes in step.
    pub(crate) fn set_payload(&mut self, id: u64, p: Option<Payload>) {
        if let Some(old) = self.payloads.remove(&id) {
            for (field, index) in &mut self.indexes {
                index.remove(field, id, &old);
            }
        }
        if let Some(p) = p.filter(|p| !p.is_empty()) {
            for (field, index) in &mut self.indexes {
                index.add(field, id, &p);
            }
            self.payloads.insert(id, p);
        }
    }

    fn set_document(&mut self, id: u64, d: Option<String>) {
        match d {
            Some(d) => {
                self.documents.insert(id, d);
            }
            None => {
                self.documents.remove(&id);
            }
        }
    }

    pub(crate) fn memory_bytes(&self) -> u64 {
        let keys: usize = self.keys.keys().map(|k| 2 * (k.capacity() + 64)).sum();
        let payloads: usize = self
            .payloads
            .values()
            .map(|p| 48 + 2 * payload::encoded_len(p) as usize)
            .sum();
        let documents: usize = self.documents.values().map(|d| d.capacity() + 48).sum();
        let indexes: usize = self
            .indexes
            .values()
            .map(|i| {
                i.postings
                    .values()
                    .map(|l| l.capacity() * 4 + 64)
                    .sum::<usize>()
            })
            .sum();
        (keys + payloads + documents + indexes) as u64
    }
}

/// Records a filter may match: a superset drawn from an index (`checked: false`: each must
/// still be tested), or every match (`checked: true`). Ascending slots.
struct Candidates {
    slots: Vec<u32>,
    checked: bool,
}

fn payload_error(at: String, e: payload::PayloadError) -> Error {
    Error::InvalidPayload {
        at,
        reason: alloc::format!("{e}"),
    }
}

fn check_field(field: &str) -> Result<(), Error> {
    if field.is_empty()
        || field.len() > MAX_FILTER_KEY_BYTES as usize
        || field.split('.').any(str::is_empty)
    {
        return Err(Error::InvalidFilter {
            at: "field".into(),
            reason: alloc::format!(
                "a field is a path of non-empty segments separated by '.', 1 to {MAX_FILTER_KEY_BYTES} bytes; got {field:?}"
            ),
        });
    }
    Ok(())
}

impl Collection {
    /// The live id of a key.
    pub fn id_of(&self, key: &str) -> Option<u64> {
        self.extras.keys.get(key).copied()
    }

    /// Declared payload indexes: (field, kind), by field.
    pub fn payload_indexes(&self) -> impl Iterator<Item = (&str, IndexKind)> {
        self.extras
            .indexes
            .iter()
            .map(|(f, i)| (f.as_str(), i.kind))
    }

    /// What a filter sees of a live record.
    pub(crate) fn subject(&self, id: u64) -> Subject<'_> {
        Subject {
            id,
            key: self.extras.key_of.get(&id).map(String::as_str),
            tag: self.tags.get(id as usize),
            payload: self.extras.payloads.get(&id),
        }
    }

    /// Whether a live record matches a filter.
    pub fn matches(&self, id: u64, filter: &Filter) -> bool {
        self.contains(id) && filter.matches(&self.subject(id))
    }

    /// Validates an upsert without changing anything.
    pub(crate) fn check_upsert(
        &self,
        mode: UpsertMode,
        records: &[KeyedRecord],
    ) -> Result<(), Error> {
        crate::collection::check_batch_len(records.len())?;
        let mut seen = BTreeSet::new();
        let mut new_slots = 0u64;
        for (i, rec) in records.iter().enumerate() {
            check_record_key(&rec.key)?;
            if !seen.insert(rec.key.as_str()) {
                return Err(Error::DuplicateKey {
                    key: rec.key.clone(),
                });
            }
            crate::collection::check_metadata(rec.metadata.as_deref())?;
            if let Some(d) = &rec.document {
                if d.len() > MAX_DOCUMENT_BYTES as usize {
                    return Err(Error::TooLarge {
                        what: "document",
                        len: d.len() as u64,
                        max: u64::from(MAX_DOCUMENT_BYTES),
                    });
                }
            }
            if let Some(p) = &rec.payload {
                payload::check(p)
                    .map_err(|e| payload_error(alloc::format!("record {i} ({:?})", rec.key), e))?;
            }
            // Dimension and direction, as an insert checks them.
            let stored = self.stored_form(&rec.vector, i as u32)?;
            match self.id_of(&rec.key) {
                Some(id) => {
                    if mode == UpsertMode::InsertOnly {
                        return Err(Error::KeyExists {
                            key: rec.key.clone(),
                        });
                    }
                    if *self.slot(id) != *stored {
                        new_slots += 1;
                    }
                }
                None => {
                    if mode == UpsertMode::UpdateOnly {
                        return Err(Error::KeyNotFound {
                            key: rec.key.clone(),
                        });
                    }
                    new_slots += 1;
                }
            }
        }
        if self.next_id + new_slots > u64::from(u32::MAX) {
            return Err(Error::IdsExhausted);
        }
        Ok(())
    }

    /// Applies a validated upsert; returns each record's id, in order.
    pub(crate) fn upsert<E: Executor>(
        &mut self,
        records: &[KeyedRecord],
        build: Build<'_, E>,
    ) -> Vec<u64> {
        let first = self.next_id;
        let mut ids = Vec::with_capacity(records.len());
        for rec in records {
            let stored = self
                .stored_form(&rec.vector, 0)
                .expect("record was validated before apply");
            let id = match self.id_of(&rec.key) {
                Some(old) if *self.slot(old) == *stored => {
                    self.retag(old, rec.tag);
                    match &rec.metadata {
                        Some(m) => {
                            self.metadata.insert(old, m.clone());
                        }
                        None => {
                            self.metadata.remove(&old);
                        }
                    }
                    old
                }
                old => {
                    if let Some(old) = old {
                        self.remove(old);
                    }
                    let id = self.push_stored(&stored, rec.tag, rec.metadata.clone());
                    self.extras.set_key(id, &rec.key);
                    id
                }
            };
            self.extras.set_payload(id, rec.payload.clone());
            self.extras.set_document(id, rec.document.clone());
            ids.push(id);
        }
        if self.next_id > first {
            self.index_from(first, build);
        }
        ids
    }

    /// Changes a live record's tag, keeping the tag postings in step.
    fn retag(&mut self, id: u64, tag: u64) {
        let old = self.tags.get(id as usize);
        if old == tag {
            return;
        }
        if let Some(list) = self.postings.get_mut(&old) {
            if let Ok(i) = list.binary_search(&(id as u32)) {
                list.remove(i);
            }
            if list.is_empty() {
                self.postings.remove(&old);
            }
        }
        let list = self.postings.entry(tag).or_default();
        if let Err(i) = list.binary_search(&(id as u32)) {
            list.insert(i, id as u32);
        }
        self.tags.set(id as usize, tag);
    }

    /// Checks a target's shape (key lengths, list sizes, filter bounds).
    pub(crate) fn check_target(target: &Target) -> Result<(), Error> {
        let len = match target {
            Target::Keys(keys) => {
                for k in keys {
                    check_record_key(k)?;
                }
                keys.len()
            }
            Target::Ids(ids) => ids.len(),
            Target::Filter(f) => return f.check(),
        };
        if len > MAX_TARGET_ITEMS as usize {
            return Err(Error::TooLarge {
                what: "target (keys or ids)",
                len: len as u64,
                max: u64::from(MAX_TARGET_ITEMS),
            });
        }
        Ok(())
    }

    /// The live ids a target names, ascending, each once.
    pub fn resolve(&self, target: &Target) -> Vec<u64> {
        let mut ids: Vec<u64> = match target {
            Target::Keys(keys) => keys.iter().filter_map(|k| self.id_of(k)).collect(),
            Target::Ids(ids) => ids
                .iter()
                .copied()
                .filter(|&id| self.contains(id))
                .collect(),
            Target::Filter(f) => return self.filtered(f),
        };
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// A payload write's result for one record.
    pub(crate) fn written_payload(&self, id: u64, p: &Payload, mode: PayloadMode) -> Payload {
        match mode {
            PayloadMode::Replace => p.clone(),
            PayloadMode::Merge => {
                let mut merged = self.extras.payloads.get(&id).cloned().unwrap_or_default();
                merged.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
                merged
            }
        }
    }

    /// Checks that a payload write leaves every record's payload within bounds.
    pub(crate) fn check_set_payload(
        &self,
        ids: &[u64],
        p: &Payload,
        mode: PayloadMode,
    ) -> Result<(), Error> {
        payload::check(p).map_err(|e| payload_error("payload".into(), e))?;
        if mode == PayloadMode::Merge {
            for &id in ids {
                payload::check(&self.written_payload(id, p, mode))
                    .map_err(|e| payload_error(alloc::format!("record {id}, merged"), e))?;
            }
        }
        Ok(())
    }

    /// Writes a payload to records.
    pub(crate) fn set_payload(&mut self, ids: &[u64], p: &Payload, mode: PayloadMode) {
        for &id in ids {
            let written = self.written_payload(id, p, mode);
            self.extras.set_payload(id, Some(written));
        }
    }

    /// Removes top-level payload keys from records; returns how many changed.
    pub(crate) fn delete_payload_keys(&mut self, ids: &[u64], keys: &[String]) -> u64 {
        let mut changed = 0;
        for &id in ids {
            let Some(p) = self.extras.payloads.get(&id) else {
                continue;
            };
            if !keys.iter().any(|k| p.contains_key(k)) {
                continue;
            }
            let mut p = p.clone();
            for k in keys {
                p.remove(k);
            }
            self.extras.set_payload(id, Some(p));
            changed += 1;
        }
        changed
    }

    /// Checks a payload index declaration.
    pub(crate) fn check_create_index(&self, field: &str) -> Result<(), Error> {
        check_field(field)?;
        if self.extras.indexes.contains_key(field) {
            return Err(Error::PayloadIndexExists {
                field: field.into(),
            });
        }
        if self.extras.indexes.len() >= MAX_PAYLOAD_INDEXES as usize {
            return Err(Error::TooLarge {
                what: "payload indexes",
                len: self.extras.indexes.len() as u64 + 1,
                max: u64::from(MAX_PAYLOAD_INDEXES),
            });
        }
        Ok(())
    }

    /// Declares a payload index and builds it over the live records.
    pub(crate) fn create_index(&mut self, field: &str, kind: IndexKind) {
        let mut index = PayloadIndex {
            kind,
            postings: BTreeMap::new(),
        };
        for (&id, p) in &self.extras.payloads {
            index.add(field, id, p);
        }
        self.extras.indexes.insert(field.into(), index);
    }

    /// Checks that a payload index exists.
    pub(crate) fn check_drop_index(&self, field: &str) -> Result<(), Error> {
        if self.extras.indexes.contains_key(field) {
            Ok(())
        } else {
            Err(Error::PayloadIndexNotFound {
                field: field.into(),
            })
        }
    }

    /// Removes a payload index.
    pub(crate) fn drop_index(&mut self, field: &str) {
        self.extras.indexes.remove(field);
    }

    /// Slots one `must` condition narrows a filter to, from an index, if it can.
    fn narrowed_by(&self, c: &Condition) -> Option<Vec<u32>> {
        let union = |lists: &mut dyn Iterator<Item = &Vec<u32>>| {
            let mut slots: Vec<u32> = lists.flat_map(|l| l.iter().copied()).collect();
            slots.sort_unstable();
            slots.dedup();
            slots
        };
        match c {
            Condition::Match { key, matcher } => {
                let index = self.extras.indexes.get(key.as_str())?;
                let values: &[Value] = match matcher {
                    Match::Value(v) => core::slice::from_ref(v),
                    Match::Any(vs) => vs,
                    Match::Except(_) => return None,
                };
                // A value of another type than the index holds is not in it: no narrowing.
                if !values.iter().all(|v| PayloadIndex::holds(index.kind, v)) {
                    return None;
                }
                Some(union(
                    &mut values.iter().filter_map(|v| index.postings.get(v)),
                ))
            }
            Condition::Tag(tags) => {
                Some(union(&mut tags.iter().filter_map(|t| self.postings.get(t))))
            }
            Condition::HasId(ids) => {
                let mut slots: Vec<u32> = ids
                    .iter()
                    .filter(|&&id| self.contains(id))
                    .map(|&id| id as u32)
                    .collect();
                slots.sort_unstable();
                slots.dedup();
                Some(slots)
            }
            Condition::HasKey(keys) => {
                let mut slots: Vec<u32> = keys
                    .iter()
                    .filter_map(|k| self.id_of(k))
                    .map(|id| id as u32)
                    .collect();
                slots.sort_unstable();
                slots.dedup();
                Some(slots)
            }
            Condition::Nested(f) if f.should.is_empty() && f.must_not.is_empty() => f
                .must
                .iter()
                .filter_map(|c| self.narrowed_by(c))
                .min_by_key(Vec::len),
            _ => None,
        }
    }

    /// The records a filter may match: the smallest list any indexed `must` condition gives,
    /// else every match found by testing each live record.
    fn candidates(&self, filter: &Filter) -> Candidates {
        if filter.is_empty() {
            return Candidates {
                slots: self.ids().map(|id| id as u32).collect(),
                checked: true,
            };
        }
        match filter
            .must
            .iter()
            .filter_map(|c| self.narrowed_by(c))
            .min_by_key(Vec::len)
        {
            Some(slots) => {
                // A filter of exactly that one condition needs no further test.
                let checked = filter.must.len() == 1
                    && filter.should.is_empty()
                    && filter.must_not.is_empty()
                    && !matches!(filter.must[0], Condition::Nested(_));
                Candidates { slots, checked }
            }
            None => Candidates {
                slots: self
                    .ids()
                    .filter(|&id| filter.matches(&self.subject(id)))
                    .map(|id| id as u32)
                    .collect(),
                checked: true,
            },
        }
    }

    /// Every live id the filter matches, ascending.
    pub fn filtered(&self, filter: &Filter) -> Vec<u64> {
        let c = self.candidates(filter);
        c.slots
            .into_iter()
            .map(u64::from)
            .filter(|&id| c.checked || filter.matches(&self.subject(id)))
            .collect()
    }

    /// How many live records the filter matches (exact).
    pub fn count(&self, filter: &Filter) -> u64 {
        if filter.is_empty() {
            return self.len();
        }
        let c = self.candidates(filter);
        if c.checked {
            return c.slots.len() as u64;
        }
        c.slots
            .iter()
            .filter(|&&s| filter.matches(&self.subject(u64::from(s))))
            .count() as u64
    }

    /// Up to `limit` live ids the filter matches, ascending, all above `after`; and whether
    /// more may follow. An id never changes while its record is unchanged, so paging by the
    /// last id visits every unchanged record exactly once.
    pub fn scroll(&self, filter: &Filter, after: Option<u64>, limit: usize) -> (Vec<u64>, bool) {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::with_capacity(limit.min(1024));
        let take = |id: u64, out: &mut Vec<u64>| -> bool {
            if out.len() == limit {
                return false;
            }
            out.push(id);
            true
        };
        if filter.is_empty() {
            for id in (start..self.next_id()).filter(|&id| self.contains(id)) {
                if !take(id, &mut out) {
                    return (out, true);
                }
            }
            return (out, false);
        }
        let c = self.candidates(filter);
        let from = c.slots.partition_point(|&s| u64::from(s) < start);
        for &s in &c.slots[from..] {
            let id = u64::from(s);
            if (c.checked || filter.matches(&self.subject(id))) && !take(id, &mut out) {
                return (out, true);
            }
        }
        (out, false)
    }

    /// The `k` nearest live records the filter matches, ordered by (distance, id): never a
    /// record it does not match, and never fewer than `min(k, matches)`. Few matches (at most
    /// [`FILTER_SCAN_MAX`]), `exact`, or a walk that comes back short are answered by an exact
    /// scan of the matches.
    pub fn search_filtered(
        &self,
        query: &[i32],
        k: usize,
        ef: Option<usize>,
        filter: &Filter,
        exact: bool,
        scratch: &mut SearchScratch,
    ) -> Vec<Hit> {
        if filter.is_empty() && !exact {
            return self.search(query, k, ef, None, scratch);
        }
        let c = self.candidates(filter);
        let scan = |c: &Candidates| {
            self.search_among(
                query,
                k,
                c.slots
                    .iter()
                    .map(|&s| u64::from(s))
                    .filter(|&id| c.checked || filter.matches(&self.subject(id))),
            )
        };
        if exact || self.index.is_none() || c.slots.len() as u64 <= FILTER_SCAN_MAX {
            return scan(&c);
        }
        let mut member = alloc::vec![false; self.next_id() as usize];
        for &s in &c.slots {
            member[s as usize] = true;
        }
        let accept = |s: u32| {
            member[s as usize]
                && self.is_live(s as usize)
                && (c.checked || filter.matches(&self.subject(u64::from(s))))
        };
        // At least k matches exist when the candidates are exact; otherwise a walk that finds
        // fewer than k may have missed some, and the scan decides.
        let need = if c.checked { k.min(c.slots.len()) } else { k };
        self.walk_index(query, k, ef, &accept, need, scratch)
            .unwrap_or_else(|| scan(&c))
    }

    /// Appends keys, payloads, documents and payload index declarations (state format 2).
    pub(crate) fn encode_extras(&self, out: &mut impl Sink) {
        let e = &self.extras;
        out.put_u32(e.indexes.len() as u32);
        for (field, index) in &e.indexes {
            out.put_bytes(field.as_bytes());
            out.put_u8(index.kind.tag());
        }
        out.put_u64(e.key_of.len() as u64);
        for (id, key) in &e.key_of {
            out.put_u64(*id);
            out.put_bytes(key.as_bytes());
        }
        out.put_u64(e.payloads.len() as u64);
        for (id, p) in &e.payloads {
            out.put_u64(*id);
            payload::encode(p, out);
        }
        out.put_u64(e.documents.len() as u64);
        for (id, d) in &e.documents {
            out.put_u64(*id);
            out.put_bytes(d.as_bytes());
        }
    }

    /// Decodes [`Collection::encode_extras`]'s output onto a decoded collection, checking that
    /// every id is live and ascending, keys are unique and payloads canonical and non-empty.
    pub(crate) fn decode_extras(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        let n = r.count("payload indexes", MAX_PAYLOAD_INDEXES, 5)?;
        let mut declared = Vec::new();
        for _ in 0..n {
            let field = r.string("index field", MAX_FILTER_KEY_BYTES)?;
            let kind = IndexKind::from_tag(r.u8()?)?;
            if declared
                .last()
                .is_some_and(|(last, _): &(String, _)| *last >= field)
            {
                return Err(DecodeError::Invalid("payload indexes out of order"));
            }
            declared.push((field, kind));
        }
        let ids = |r: &mut Reader<'_>, last: &mut Option<u64>, c: &Collection| {
            let id = r.u64()?;
            if !c.contains(id) || last.is_some_and(|l| l >= id) {
                return Err(DecodeError::Invalid(
                    "extras of a dead record or out of order",
                ));
            }
            *last = Some(id);
            Ok(id)
        };
        let keys = r.u64()?;
        if keys.saturating_mul(13) > r.remaining() as u64 {
            return Err(DecodeError::UnexpectedEnd);
        }
        let mut last = None;
        for _ in 0..keys {
            let id = ids(r, &mut last, self)?;
            let key = r.string("record key", MAX_KEY_BYTES)?;
            if key.is_empty() || self.extras.keys.contains_key(&key) {
                return Err(DecodeError::Invalid("record key empty or repeated"));
            }
            self.extras.set_key(id, &key);
        }
        let payloads = r.u64()?;
        if payloads.saturating_mul(12) > r.remaining() as u64 {
            return Err(DecodeError::UnexpectedEnd);
        }
        let mut last = None;
        for _ in 0..payloads {
            let id = ids(r, &mut last, self)?;
            let p = payload::decode(r)?;
            if p.is_empty() {
                return Err(DecodeError::Invalid("empty payload stored"));
            }
            self.extras.payloads.insert(id, p);
        }
        let documents = r.u64()?;
        if documents.saturating_mul(12) > r.remaining() as u64 {
            return Err(DecodeError::UnexpectedEnd);
        }
        let mut last = None;
        for _ in 0..documents {
            let id = ids(r, &mut last, self)?;
            let d = r.string("document", MAX_DOCUMENT_BYTES)?;
            self.extras.documents.insert(id, d);
        }
        for (field, kind) in declared {
            self.create_index(&field, kind);
        }
        Ok(())
    }
}
