//! The gRPC methods: each a translation onto the [`Service`] operation of its HTTP route.

use std::pin::Pin;

use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use valori_api as api;
use valori_api::memory::Named;

use super::convert::{
    backup_info, collection, collection_info, record_in, replication_reply, restore_reply,
    role_reply, snapshot_info, state_reply, u16_param,
};
use super::memory::{
    filter_in, hit_out, include_in, named, payload_in, records_out, search_in, target_in,
};
use super::pb;
use super::pb::valori_server::Valori;
use crate::blocking;
use crate::error::{NodeError, StorageError};
use crate::limits::{GRPC_LOG_STREAM_BUFFER, REPLICATION_PAGE, SNAPSHOT_CHUNK_BYTES};
use crate::service::{parse_direction, parse_metric, Access, Heard, RecordIn, Service};

/// The gRPC service of a node.
pub struct Grpc {
    service: Service,
}

impl Grpc {
    /// The methods of `service` (served behind [`super::Authorized`]).
    pub fn new(service: Service) -> Grpc {
        Grpc { service }
    }
}

/// What the call's key allows, as [`super::Authorized`] decided it.
fn granted<T>(req: &Request<T>) -> Result<Access, Status> {
    req.extensions().get::<Access>().copied().ok_or_else(|| {
        Status::from(NodeError::Internal(
            "a call reached its method without authorization".into(),
        ))
    })
}

type GrpcResult<T> = Result<Response<T>, Status>;
type GrpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Valori for Grpc {
    async fn create_collection(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> GrpcResult<pb::SeqReply> {
        let r = req.into_inner();
        let index = if r.flat {
            api::IndexConfig::Flat
        } else {
            let h = r.hnsw.unwrap_or_default();
            api::IndexConfig::Hnsw {
                m: u16_param(h.m, "m")?,
                ef_construction: u16_param(h.ef_construction, "ef_construction")?,
                ef_search: u16_param(h.ef_search, "ef_search")?,
            }
        };
        let seq = self
            .service
            .create_collection(api::CreateCollection {
                name: r.name,
                dimension: r.dimension,
                metric: Some(parse_metric(&r.metric)?),
                index: Some(index),
            })
            .await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn list_collections(
        &self,
        _: Request<pb::Empty>,
    ) -> GrpcResult<pb::ListCollectionsReply> {
        let list = self.service.collections().await?;
        Ok(Response::new(pb::ListCollectionsReply {
            collections: list.collections.into_iter().map(collection_info).collect(),
            seq: list.seq,
        }))
    }

    async fn get_collection(
        &self,
        req: Request<pb::CollectionName>,
    ) -> GrpcResult<pb::CollectionInfo> {
        let info = self.service.collection(req.into_inner().name).await?;
        Ok(Response::new(collection_info(info)))
    }

    async fn drop_collection(&self, req: Request<pb::CollectionName>) -> GrpcResult<pb::SeqReply> {
        let seq = self.service.drop_collection(req.into_inner().name).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn insert(&self, req: Request<pb::InsertRequest>) -> GrpcResult<pb::InsertReply> {
        let r = req.into_inner();
        let record = r
            .record
            .ok_or_else(|| Status::from(NodeError::BadRequest("record is required".into())))?;
        let done = self
            .service
            .insert(collection(r.collection), vec![record_in(record)], false)
            .await?;
        Ok(Response::new(pb::InsertReply {
            ids: done.ids,
            seq: done.seq,
        }))
    }

    async fn insert_batch(
        &self,
        req: Request<pb::InsertBatchRequest>,
    ) -> GrpcResult<pb::InsertReply> {
        let r = req.into_inner();
        let records: Vec<RecordIn> = r.records.into_iter().map(record_in).collect();
        let done = self
            .service
            .insert(collection(r.collection), records, true)
            .await?;
        Ok(Response::new(pb::InsertReply {
            ids: done.ids,
            seq: done.seq,
        }))
    }

    async fn get(&self, req: Request<pb::RecordKey>) -> GrpcResult<pb::RecordReply> {
        let r = req.into_inner();
        let out = self.service.get(collection(r.collection), r.id).await?;
        Ok(Response::new(pb::RecordReply {
            id: out.id,
            vector: out.vector,
            tag: out.tag,
            metadata: out.metadata,
            seq: out.seq,
        }))
    }

    async fn delete(&self, req: Request<pb::RecordKey>) -> GrpcResult<pb::SeqReply> {
        let r = req.into_inner();
        let seq = self.service.delete(collection(r.collection), r.id).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn search(&self, req: Request<pb::SearchRequest>) -> GrpcResult<pb::SearchReply> {
        let mut r = req.into_inner();
        let name = collection(std::mem::take(&mut r.collection));
        let found = self.service.search(name, search_in(r)?).await?;
        Ok(Response::new(pb::SearchReply {
            results: found.hits.into_iter().map(hit_out).collect(),
            seq: found.seq,
            chain_hash: found.hashes.map(|(c, _)| hex::encode(c)),
            state_hash: found.hashes.map(|(_, s)| hex::encode(s)),
        }))
    }

    async fn upsert(&self, req: Request<pb::UpsertRequest>) -> GrpcResult<pb::UpsertReply> {
        let r = req.into_inner();
        let records = r
            .records
            .into_iter()
            .enumerate()
            .map(|(i, rec)| {
                let at = format!("records[{i}].payload");
                Ok(api::UpsertRecord {
                    payload: rec
                        .payload
                        .as_ref()
                        .map(|p| payload_in(Some(p), &at))
                        .transpose()?,
                    key: rec.key,
                    vector: rec.vector,
                    tag: rec.tag,
                    document: rec.document,
                    metadata: rec.metadata.as_deref().map(crate::service::b64),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let done = self
            .service
            .upsert(
                collection(r.collection),
                api::Upsert {
                    records,
                    mode: named(&r.mode)?,
                },
            )
            .await?;
        Ok(Response::new(pb::UpsertReply {
            ids: done.ids,
            seq: done.seq,
        }))
    }

    async fn get_records(
        &self,
        req: Request<pb::GetRecordsRequest>,
    ) -> GrpcResult<pb::RecordsReply> {
        use pb::get_records_request::By;
        let r = req.into_inner();
        let (keys, ids) = match r.by {
            Some(By::Keys(k)) => (Some(k.values), None),
            Some(By::Ids(i)) => (None, Some(i.values)),
            None => (None, None),
        };
        let got = self
            .service
            .get_records(
                collection(r.collection),
                api::GetRecords {
                    keys,
                    ids,
                    include: include_in(r.include.as_ref()),
                },
            )
            .await?;
        Ok(Response::new(pb::RecordsReply {
            records: records_out(got.records)?,
            missing: got
                .missing
                .into_iter()
                .map(|m| pb::Missing {
                    item: Some(match m {
                        api::Missing::Key(k) => pb::missing::Item::Key(k),
                        api::Missing::Id(i) => pb::missing::Item::Id(i),
                    }),
                })
                .collect(),
            seq: got.seq,
        }))
    }

    async fn scroll(&self, req: Request<pb::ScrollRequest>) -> GrpcResult<pb::ScrollReply> {
        let r = req.into_inner();
        let page = self
            .service
            .scroll(
                collection(r.collection),
                api::Scroll {
                    filter: filter_in(r.filter.as_ref())?,
                    limit: r.limit.unwrap_or(api::limits::DEFAULT_SCROLL_PAGE),
                    cursor: r.cursor,
                    include: include_in(r.include.as_ref()),
                },
            )
            .await?;
        Ok(Response::new(pb::ScrollReply {
            records: records_out(page.records)?,
            next_cursor: page.next_cursor,
            seq: page.seq,
        }))
    }

    async fn count(&self, req: Request<pb::CountRequest>) -> GrpcResult<pb::CountReply> {
        let r = req.into_inner();
        let c = self
            .service
            .count(
                collection(r.collection),
                api::Count {
                    filter: filter_in(r.filter.as_ref())?,
                },
            )
            .await?;
        Ok(Response::new(pb::CountReply {
            count: c.count,
            seq: c.seq,
        }))
    }

    async fn delete_records(
        &self,
        req: Request<pb::DeleteRecordsRequest>,
    ) -> GrpcResult<pb::DeletedReply> {
        let r = req.into_inner();
        let (keys, ids, filter) = target_in(r.target.as_ref())?;
        let d = self
            .service
            .delete_records(
                collection(r.collection),
                api::DeleteRecords {
                    keys,
                    ids,
                    filter,
                    max_affected: r.max_affected,
                },
            )
            .await?;
        Ok(Response::new(pb::DeletedReply {
            deleted: d.deleted,
            seq: d.seq,
        }))
    }

    async fn set_payload(
        &self,
        req: Request<pb::SetPayloadRequest>,
    ) -> GrpcResult<pb::UpdatedReply> {
        let r = req.into_inner();
        let (keys, ids, filter) = target_in(r.target.as_ref())?;
        let u = self
            .service
            .set_payload(
                collection(r.collection),
                api::SetPayload {
                    keys,
                    ids,
                    filter,
                    payload: payload_in(r.payload.as_ref(), "payload")?,
                    mode: named(&r.mode)?,
                    max_affected: r.max_affected,
                },
            )
            .await?;
        Ok(Response::new(pb::UpdatedReply {
            updated: u.updated,
            seq: u.seq,
        }))
    }

    async fn delete_payload_keys(
        &self,
        req: Request<pb::DeletePayloadKeysRequest>,
    ) -> GrpcResult<pb::UpdatedReply> {
        let r = req.into_inner();
        let (keys, ids, filter) = target_in(r.target.as_ref())?;
        let u = self
            .service
            .delete_payload_keys(
                collection(r.collection),
                api::DeletePayloadKeys {
                    keys,
                    ids,
                    filter,
                    fields: r.fields,
                    max_affected: r.max_affected,
                },
            )
            .await?;
        Ok(Response::new(pb::UpdatedReply {
            updated: u.updated,
            seq: u.seq,
        }))
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> GrpcResult<pb::SearchBatchReply> {
        let r = req.into_inner();
        let name = collection(r.collection);
        let searches = r
            .searches
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                if !s.collection.is_empty() && s.collection != name {
                    return Err(Status::from(NodeError::BadRequest(format!(
                        "searches[{i}]: collection {:?} is not the batch's {name:?}",
                        s.collection
                    ))));
                }
                search_in(s)
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let found = self
            .service
            .search_batch(name, api::SearchBatch { searches })
            .await?;
        Ok(Response::new(pb::SearchBatchReply {
            results: found
                .results
                .into_iter()
                .map(|hits| pb::BatchHits {
                    results: hits.into_iter().map(hit_out).collect(),
                })
                .collect(),
            seq: found.seq,
        }))
    }

    async fn list_payload_indexes(
        &self,
        req: Request<pb::CollectionName>,
    ) -> GrpcResult<pb::PayloadIndexesReply> {
        let list = self
            .service
            .payload_indexes(collection(req.into_inner().name))
            .await?;
        Ok(Response::new(pb::PayloadIndexesReply {
            indexes: list
                .indexes
                .into_iter()
                .map(|i| pb::PayloadIndex {
                    field: i.field,
                    kind: i.kind.name().into(),
                })
                .collect(),
            seq: list.seq,
        }))
    }

    async fn create_payload_index(
        &self,
        req: Request<pb::CreatePayloadIndexRequest>,
    ) -> GrpcResult<pb::SeqReply> {
        let r = req.into_inner();
        let kind = api::memory::IndexKind::parse(&r.kind)
            .map_err(|e| Status::from(NodeError::BadRequest(e)))?;
        let seq = self
            .service
            .create_payload_index(
                collection(r.collection),
                api::PayloadIndex {
                    field: r.field,
                    kind,
                },
            )
            .await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn drop_payload_index(
        &self,
        req: Request<pb::DropPayloadIndexRequest>,
    ) -> GrpcResult<pb::SeqReply> {
        let r = req.into_inner();
        let seq = self
            .service
            .drop_payload_index(collection(r.collection), r.field)
            .await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn create_node(
        &self,
        req: Request<pb::CreateNodeRequest>,
    ) -> GrpcResult<pb::CreatedReply> {
        let r = req.into_inner();
        let record = r.record.map(|l| api::RecordRef {
            collection: l.collection,
            id: l.id,
            key: l.key,
        });
        let c = self
            .service
            .create_node(r.kind, record, r.properties)
            .await?;
        Ok(Response::new(pb::CreatedReply {
            id: c.id,
            seq: c.seq,
        }))
    }

    async fn get_node(&self, req: Request<pb::Id>) -> GrpcResult<pb::NodeReply> {
        let id = req.into_inner().id;
        let n = self.service.node(id).await?;
        Ok(Response::new(pb::NodeReply {
            id,
            kind: n.kind,
            record: n.record.map(|r| pb::RecordLink {
                collection: r.collection,
                id: r.id,
                key: r.key,
            }),
            properties: n.properties,
        }))
    }

    async fn delete_node(&self, req: Request<pb::Id>) -> GrpcResult<pb::SeqReply> {
        let seq = self.service.delete_node(req.into_inner().id).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn create_edge(
        &self,
        req: Request<pb::CreateEdgeRequest>,
    ) -> GrpcResult<pb::CreatedReply> {
        let r = req.into_inner();
        let c = self
            .service
            .create_edge(api::CreateEdge {
                from: r.from,
                to: r.to,
                kind: r.kind,
            })
            .await?;
        Ok(Response::new(pb::CreatedReply {
            id: c.id,
            seq: c.seq,
        }))
    }

    async fn get_edge(&self, req: Request<pb::Id>) -> GrpcResult<pb::EdgeReply> {
        let id = req.into_inner().id;
        let e = self.service.edge(id).await?;
        Ok(Response::new(pb::EdgeReply {
            id,
            from: e.from,
            to: e.to,
            kind: e.kind,
        }))
    }

    async fn delete_edge(&self, req: Request<pb::Id>) -> GrpcResult<pb::SeqReply> {
        let seq = self.service.delete_edge(req.into_inner().id).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn neighbors(
        &self,
        req: Request<pb::NeighborsRequest>,
    ) -> GrpcResult<pb::NeighborsReply> {
        let r = req.into_inner();
        let found = self
            .service
            .neighbors(r.id, parse_direction(&r.direction)?, r.kinds)
            .await?;
        Ok(Response::new(pb::NeighborsReply {
            neighbors: found
                .neighbors
                .into_iter()
                .map(|n| pb::Neighbor {
                    node: n.node,
                    edge: n.edge,
                    kind: n.kind,
                    direction: n.direction.name().into(),
                })
                .collect(),
            seq: found.seq,
        }))
    }

    async fn traverse(&self, req: Request<pb::TraverseRequest>) -> GrpcResult<pb::TraverseReply> {
        let r = req.into_inner();
        let t = self
            .service
            .traverse(api::TraverseRequest {
                start: r.start,
                max_depth: r.max_depth,
                kinds: r.kinds,
                direction: Some(parse_direction(&r.direction)?),
            })
            .await?;
        Ok(Response::new(pb::TraverseReply {
            nodes: t
                .nodes
                .into_iter()
                .map(|v| pb::Visit {
                    node: v.node,
                    depth: v.depth,
                })
                .collect(),
            truncated: t.truncated,
            seq: t.seq,
        }))
    }

    async fn get_state(&self, req: Request<pb::StateRequest>) -> GrpcResult<pb::StateReply> {
        let r = req.into_inner();
        let s = self.service.state_with(r.seq, r.state_hash).await?;
        Ok(Response::new(state_reply(s)))
    }

    type ReadLogStream = GrpcStream<pb::LogEntry>;

    async fn read_log(&self, req: Request<pb::LogRequest>) -> GrpcResult<Self::ReadLogStream> {
        let access = granted(&req)?;
        let md = req.metadata();
        let heard = Heard::from_headers(|name| md.get(name).and_then(|v| v.to_str().ok()))?;
        let r = req.into_inner();
        if r.limit == Some(0) {
            return Err(NodeError::BadRequest("limit must be at least 1".into()).into());
        }
        let service = self.service.clone();
        service.hello(access, heard, r.from).await?;
        // The end is fixed when the call begins, so the stream ends.
        let head = service.log_head()?;
        let last = match r.limit {
            Some(n) => r.from.saturating_add(n - 1).min(head),
            None => head,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(GRPC_LOG_STREAM_BUFFER);
        tokio::spawn(async move {
            let mut from = r.from;
            while from <= last {
                let svc = service.clone();
                let page = blocking(move || svc.log_page_blocking(from, REPLICATION_PAGE)).await;
                let entries = match page {
                    Ok(p) if p.entries.is_empty() => break,
                    Ok(p) => p.entries,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                for e in entries {
                    if e.seq > last {
                        return;
                    }
                    from = e.seq + 1;
                    let entry = pb::LogEntry {
                        seq: e.seq,
                        chain_hash: e.chain.to_vec(),
                        event: e.event,
                        epoch: e.epoch,
                    };
                    if tx.send(Ok(entry)).await.is_err() {
                        return; // the client went away
                    }
                }
            }
        });
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn replication_status(
        &self,
        _: Request<pb::Empty>,
    ) -> GrpcResult<pb::ReplicationStatusReply> {
        let s = self.service.replication_status()?;
        Ok(Response::new(replication_reply(s)))
    }

    async fn create_snapshot(&self, _: Request<pb::Empty>) -> GrpcResult<pb::SnapshotInfo> {
        Ok(Response::new(snapshot_info(
            self.service.create_snapshot().await?,
        )))
    }

    async fn create_backup(&self, _: Request<pb::Empty>) -> GrpcResult<pb::BackupInfo> {
        Ok(Response::new(backup_info(
            self.service.create_backup().await?,
        )))
    }

    async fn list_backups(&self, _: Request<pb::Empty>) -> GrpcResult<pb::ListBackupsReply> {
        let b = self.service.backups().await?;
        Ok(Response::new(pb::ListBackupsReply {
            destination: b.destination,
            backups: b.backups.into_iter().map(backup_info).collect(),
            reaches: b.reaches,
            shipping: Some(pb::LogShipping {
                enabled: b.shipping.enabled,
                interval_s: b.shipping.interval_s,
                shipped_through: b.shipping.shipped_through,
                lag_events: b.shipping.lag_events,
                shipped_at: b.shipping.shipped_at,
                error: b.shipping.error,
            }),
            last_error: b.last_error,
        }))
    }

    async fn list_snapshots(&self, _: Request<pb::Empty>) -> GrpcResult<pb::ListSnapshotsReply> {
        Ok(Response::new(pb::ListSnapshotsReply {
            snapshots: self
                .service
                .snapshots()?
                .into_iter()
                .map(snapshot_info)
                .collect(),
        }))
    }

    type DownloadSnapshotStream = GrpcStream<pb::Chunk>;

    async fn download_snapshot(
        &self,
        req: Request<pb::Id>,
    ) -> GrpcResult<Self::DownloadSnapshotStream> {
        let id = req.into_inner().id;
        let (file, _) = self.service.open_snapshot(id).await?;
        let chunks = tokio_util::io::ReaderStream::with_capacity(file, SNAPSHOT_CHUNK_BYTES)
            .map_ok(|data| pb::Chunk {
                data: data.to_vec(),
            })
            .map_err(move |e| {
                Status::from(NodeError::from(StorageError::new(
                    format!("reading snapshot {id}"),
                    e,
                )))
            });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn restore_snapshot(
        &self,
        req: Request<Streaming<pb::Chunk>>,
    ) -> GrpcResult<pb::RestoreReply> {
        let chunks = req.into_inner().map(|c| {
            c.map(|c| c.data)
                .map_err(|s| NodeError::BadRequest(format!("reading the stream: {}", s.message())))
        });
        Ok(Response::new(restore_reply(
            self.service.restore(chunks).await?,
        )))
    }

    async fn get_role(&self, req: Request<pb::Empty>) -> GrpcResult<pb::RoleReply> {
        // A node checking this one names the epoch it has seen, as over HTTP.
        let access = granted(&req)?;
        let md = req.metadata();
        let heard = Heard::from_headers(|name| md.get(name).and_then(|v| v.to_str().ok()))?;
        Ok(Response::new(role_reply(
            self.service.role(access, heard).await?,
        )))
    }

    async fn set_role(&self, req: Request<pb::SetRoleRequest>) -> GrpcResult<pb::RoleReply> {
        let md = req.metadata();
        let heard = Heard::from_headers(|name| md.get(name).and_then(|v| v.to_str().ok()))?;
        let r = req.into_inner();
        let role = match r.role.as_str() {
            "leader" => api::Role::Leader,
            "follower" => api::Role::Follower,
            other => {
                return Err(NodeError::BadRequest(format!(
                    "unknown role {other:?}: use leader or follower"
                ))
                .into())
            }
        };
        let info = self
            .service
            .set_role(
                api::SetRole {
                    role,
                    epoch: r.epoch,
                    leader_url: r.leader_url,
                    heal: r.heal,
                },
                heard,
            )
            .await?;
        Ok(Response::new(role_reply(info)))
    }

    // Public, as `/healthz` and `/readyz` are over HTTP.
    async fn health(&self, _: Request<pb::Empty>) -> GrpcResult<pb::HealthReply> {
        let why = self.service.not_ready();
        Ok(Response::new(pb::HealthReply {
            live: true,
            ready: why.is_none(),
            reason: why.unwrap_or_default(),
        }))
    }
}
