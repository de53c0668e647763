//! The gRPC API (tonic), generated from `proto/valori.proto`. Each call translates to the same
//! [`Service`] operation as its HTTP route ([`HTTP_ROUTES`] pairs them, and a test holds the
//! pairing), so both give identical results; errors carry the matching gRPC status code and
//! the HTTP API's error code in the `valori-code` metadata.

use std::pin::Pin;

use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use valori_api as api;
use valori_kernel::limits::DEFAULT_COLLECTION;

use crate::error::NodeError;
use crate::limits::{DEFAULT_K, REPLICATION_PAGE};
use crate::service::{
    blocking, parse_direction, parse_metric, Access, FollowerHello, Keys, RecordIn, Service,
};

/// Generated protobuf types and service stubs.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("valori.v1");
}

use pb::valori_server::{Valori, ValoriServer};
use tonic::service::interceptor::InterceptedService;

/// Every HTTP route (by its `valori_api::ROUTES` operation) and the gRPC method that does the
/// same, or why there is none. A test fails when a route or a method has no partner here.
pub const HTTP_ROUTES: &[(&str, Result<&str, &str>)] = &[
    ("create_collection", Ok("CreateCollection")),
    ("list_collections", Ok("ListCollections")),
    ("get_collection", Ok("GetCollection")),
    ("drop_collection", Ok("DropCollection")),
    ("insert", Ok("Insert")),
    ("insert_batch", Ok("InsertBatch")),
    ("get_record", Ok("Get")),
    ("delete_record", Ok("Delete")),
    ("search", Ok("Search")),
    // The default collection is an empty collection name over gRPC.
    ("insert_default", Ok("Insert")),
    ("insert_batch_default", Ok("InsertBatch")),
    ("get_record_default", Ok("Get")),
    ("delete_record_default", Ok("Delete")),
    ("search_default", Ok("Search")),
    ("create_node", Ok("CreateNode")),
    ("get_node", Ok("GetNode")),
    ("delete_node", Ok("DeleteNode")),
    ("neighbors", Ok("Neighbors")),
    ("create_edge", Ok("CreateEdge")),
    ("get_edge", Ok("GetEdge")),
    ("delete_edge", Ok("DeleteEdge")),
    ("traverse", Ok("Traverse")),
    ("get_state", Ok("GetState")),
    ("replication_status", Ok("ReplicationStatus")),
    ("read_log", Ok("ReadLog")),
    ("get_role", Ok("GetRole")),
    ("set_role", Ok("SetRole")),
    ("create_snapshot", Ok("CreateSnapshot")),
    ("list_snapshots", Ok("ListSnapshots")),
    ("download_snapshot", Ok("DownloadSnapshot")),
    ("restore_snapshot", Ok("RestoreSnapshot")),
    ("healthz", Ok("Health")),
    ("readyz", Ok("Health")),
    ("metrics", Err("Prometheus scrapes metrics over HTTP")),
    (
        "openapi",
        Err("the proto file is the gRPC API's description"),
    ),
];

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let code = match e.status() {
            400 | 413 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::NotFound,
            409 if matches!(e, NodeError::StaleEpoch { .. }) => tonic::Code::FailedPrecondition,
            409 => tonic::Code::AlreadyExists,
            502 | 503 => tonic::Code::Unavailable,
            _ => tonic::Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        if let Ok(v) = e.code().parse() {
            status.metadata_mut().insert("valori-code", v);
        }
        status
    }
}

/// The gRPC service of a node.
pub struct Grpc {
    service: Service,
    keys: Keys,
}

impl Grpc {
    /// A tonic server for `service`, checking the same keys as HTTP.
    /// A tonic server for `service`, checking the same keys as HTTP. The key is checked by an
    /// interceptor before a message is decoded (a request without a valid key costs the node
    /// nothing), and no message above `max_message_bytes` (the HTTP body limit) is decoded.
    pub fn server(
        service: Service,
        keys: Keys,
        max_message_bytes: usize,
    ) -> InterceptedService<ValoriServer<Grpc>, impl tonic::service::Interceptor + Clone> {
        let checked = keys.clone();
        let interceptor = move |req: Request<()>| -> Result<Request<()>, Status> {
            let md = req.metadata();
            checked.check_headers(|name| md.get(name).and_then(|v| v.to_str().ok()))?;
            Ok(req)
        };
        InterceptedService::new(
            ValoriServer::new(Grpc { service, keys }).max_decoding_message_size(max_message_bytes),
            interceptor,
        )
    }

    fn access<T>(&self, req: &Request<T>) -> Result<Access, Status> {
        let md = req.metadata();
        Ok(self
            .keys
            .check_headers(|name| md.get(name).and_then(|v| v.to_str().ok()))?)
    }

    fn check<T>(&self, req: &Request<T>, write: bool) -> Result<(), Status> {
        match self.access(req)? {
            Access::Read if write => Err(NodeError::Forbidden.into()),
            _ => Ok(()),
        }
    }
}

fn collection(name: String) -> String {
    if name.is_empty() {
        DEFAULT_COLLECTION.into()
    } else {
        name
    }
}

fn u16_param(v: Option<u32>, what: &str) -> Result<Option<u16>, Status> {
    v.map(|x| {
        u16::try_from(x)
            .map_err(|_| Status::from(NodeError::BadRequest(format!("{what} {x} is too large"))))
    })
    .transpose()
}

fn record_in(r: pb::Record) -> RecordIn {
    RecordIn {
        vector: r.vector,
        tag: r.tag,
        metadata: r.metadata,
    }
}

fn collection_info(c: api::CollectionInfo) -> pb::CollectionInfo {
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

fn snapshot_info(f: crate::store::SnapshotFile) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        id: f.seq,
        seq: f.seq,
        bytes: f.bytes,
        path: f.path.display().to_string(),
    }
}

fn state_reply(s: crate::service::StateAt) -> pb::StateReply {
    pb::StateReply {
        seq: s.seq,
        chain_hash: hex::encode(s.chain_hash),
        state_hash: s.state_hash.map(hex::encode).unwrap_or_default(),
        epoch: s.epoch,
    }
}

fn role_reply(r: api::RoleInfo) -> pb::RoleReply {
    pb::RoleReply {
        role: r.role.name().into(),
        epoch: r.epoch,
        leader_url: r.leader_url,
        seq: r.seq,
        seen_epoch: r.seen_epoch,
        writable: r.writable,
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;
type GrpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Log entries the reading task may run ahead of the client.
const LOG_STREAM_BUFFER: usize = 256;

#[tonic::async_trait]
impl Valori for Grpc {
    async fn create_collection(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> GrpcResult<pb::SeqReply> {
        self.check(&req, true)?;
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
        req: Request<pb::Empty>,
    ) -> GrpcResult<pb::ListCollectionsReply> {
        self.check(&req, false)?;
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
        self.check(&req, false)?;
        let info = self.service.collection(req.into_inner().name).await?;
        Ok(Response::new(collection_info(info)))
    }

    async fn drop_collection(&self, req: Request<pb::CollectionName>) -> GrpcResult<pb::SeqReply> {
        self.check(&req, true)?;
        let seq = self.service.drop_collection(req.into_inner().name).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn insert(&self, req: Request<pb::InsertRequest>) -> GrpcResult<pb::InsertReply> {
        self.check(&req, true)?;
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
        self.check(&req, true)?;
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
        self.check(&req, false)?;
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
        self.check(&req, true)?;
        let r = req.into_inner();
        let seq = self.service.delete(collection(r.collection), r.id).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn search(&self, req: Request<pb::SearchRequest>) -> GrpcResult<pb::SearchReply> {
        self.check(&req, false)?;
        let r = req.into_inner();
        let found = self
            .service
            .search(
                collection(r.collection),
                api::SearchRequest {
                    vector: r.vector,
                    k: r.k.unwrap_or(DEFAULT_K),
                    tag: r.tag,
                    ef: r.ef,
                    with_metadata: r.with_metadata,
                },
            )
            .await?;
        let results = found
            .hits
            .into_iter()
            .map(|h| pb::Hit {
                id: h.id,
                distance: h.distance.to_string(),
                score: crate::service::score(h.distance),
                tag: h.tag,
                metadata: h.metadata.flatten(),
            })
            .collect();
        Ok(Response::new(pb::SearchReply {
            results,
            seq: found.seq,
        }))
    }

    async fn create_node(
        &self,
        req: Request<pb::CreateNodeRequest>,
    ) -> GrpcResult<pb::CreatedReply> {
        self.check(&req, true)?;
        let r = req.into_inner();
        let record = r.record.map(|l| api::RecordRef {
            collection: l.collection,
            id: l.id,
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
        self.check(&req, false)?;
        let id = req.into_inner().id;
        let n = self.service.node(id).await?;
        Ok(Response::new(pb::NodeReply {
            id,
            kind: n.kind,
            record: n.record.map(|r| pb::RecordLink {
                collection: r.collection,
                id: r.id,
            }),
            properties: n.properties,
        }))
    }

    async fn delete_node(&self, req: Request<pb::Id>) -> GrpcResult<pb::SeqReply> {
        self.check(&req, true)?;
        let seq = self.service.delete_node(req.into_inner().id).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn create_edge(
        &self,
        req: Request<pb::CreateEdgeRequest>,
    ) -> GrpcResult<pb::CreatedReply> {
        self.check(&req, true)?;
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
        self.check(&req, false)?;
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
        self.check(&req, true)?;
        let seq = self.service.delete_edge(req.into_inner().id).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn neighbors(
        &self,
        req: Request<pb::NeighborsRequest>,
    ) -> GrpcResult<pb::NeighborsReply> {
        self.check(&req, false)?;
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
        self.check(&req, false)?;
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
        self.check(&req, false)?;
        let want = req.into_inner().seq;
        let service = self.service.clone();
        let s = blocking(move || service.state_at(want)).await?;
        Ok(Response::new(state_reply(s)))
    }

    type ReadLogStream = GrpcStream<pb::LogEntry>;

    async fn read_log(&self, req: Request<pb::LogRequest>) -> GrpcResult<Self::ReadLogStream> {
        // Only a reader that may write can fence this node with an epoch (as over HTTP).
        let may_fence = self.access(&req)? == Access::Write;
        let md = req.metadata();
        let value = |name: &str| md.get(name).and_then(|v| v.to_str().ok()).map(String::from);
        let hello = value(api::FOLLOWER_HEADER).map(|name| FollowerHello {
            name,
            epoch: value(api::EPOCH_HEADER)
                .filter(|_| may_fence)
                .and_then(|e| e.parse().ok()),
            chain: value(api::CHAIN_HEADER),
        });
        let r = req.into_inner();
        let service = self.service.clone();
        if let Some(hello) = hello {
            service.hello(r.from, hello).await?;
        }
        // The end is fixed when the call begins, so the stream ends.
        let head = service.engine.seq()?;
        let last = match r.limit {
            Some(0) => return Err(NodeError::BadRequest("limit must be at least 1".into()).into()),
            Some(n) => r.from.saturating_add(n - 1).min(head),
            None => head,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(LOG_STREAM_BUFFER);
        tokio::spawn(async move {
            let mut from = r.from;
            while from <= last {
                let svc = service.clone();
                let page = blocking(move || svc.log_page(from, REPLICATION_PAGE)).await;
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
        req: Request<pb::Empty>,
    ) -> GrpcResult<pb::ReplicationStatusReply> {
        self.check(&req, false)?;
        let s = self.service.replication_status()?;
        Ok(Response::new(pb::ReplicationStatusReply {
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
        }))
    }

    async fn create_snapshot(&self, req: Request<pb::Empty>) -> GrpcResult<pb::SnapshotInfo> {
        self.check(&req, true)?;
        Ok(Response::new(snapshot_info(
            self.service.engine.snapshot().await?,
        )))
    }

    async fn list_snapshots(&self, req: Request<pb::Empty>) -> GrpcResult<pb::ListSnapshotsReply> {
        self.check(&req, false)?;
        Ok(Response::new(pb::ListSnapshotsReply {
            snapshots: self
                .service
                .engine
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
        self.check(&req, false)?;
        let (file, _) = self.service.open_snapshot(req.into_inner().id).await?;
        let chunks = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map_ok(|data| pb::Chunk {
                data: data.to_vec(),
            })
            .map_err(|e| Status::from(NodeError::Storage(format!("reading snapshot: {e}"))));
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn restore_snapshot(
        &self,
        req: Request<Streaming<pb::Chunk>>,
    ) -> GrpcResult<pb::RestoreReply> {
        self.check(&req, true)?;
        let chunks = req.into_inner().map(|c| {
            c.map(|c| c.data)
                .map_err(|s| NodeError::BadRequest(format!("reading the stream: {}", s.message())))
        });
        let f = self.service.restore(chunks).await?;
        let service = self.service.clone();
        let s = blocking(move || service.state_at(None)).await?;
        Ok(Response::new(pb::RestoreReply {
            state: Some(state_reply(s)),
            snapshot: Some(snapshot_info(f)),
        }))
    }

    async fn get_role(&self, req: Request<pb::Empty>) -> GrpcResult<pb::RoleReply> {
        self.check(&req, false)?;
        Ok(Response::new(role_reply(self.service.role_info()?)))
    }

    async fn set_role(&self, req: Request<pb::SetRoleRequest>) -> GrpcResult<pb::RoleReply> {
        self.check(&req, true)?;
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
            .set_role(api::SetRole {
                role,
                epoch: r.epoch,
                leader_url: r.leader_url,
            })
            .await?;
        Ok(Response::new(role_reply(info)))
    }

    // Health needs no key over HTTP; over gRPC the interceptor asks for one when keys are
    // configured (it cannot tell methods apart), so a probe uses HTTP `/healthz`.
    async fn health(&self, _: Request<pb::Empty>) -> GrpcResult<pb::HealthReply> {
        let why = self.service.engine.not_ready();
        Ok(Response::new(pb::HealthReply {
            live: true,
            ready: why.is_none(),
            reason: why.unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::HTTP_ROUTES;

    #[test]
    fn every_http_route_has_a_grpc_method_and_every_method_a_route() {
        let routes: BTreeSet<&str> = valori_api::ROUTES.iter().map(|r| r.operation).collect();
        let paired: BTreeSet<&str> = HTTP_ROUTES.iter().map(|(op, _)| *op).collect();
        assert_eq!(
            routes, paired,
            "HTTP routes and their gRPC pairing differ: add the route to HTTP_ROUTES"
        );
        assert_eq!(
            paired.len(),
            HTTP_ROUTES.len(),
            "an operation is paired twice"
        );

        let proto = include_str!("../proto/valori.proto");
        let methods: BTreeSet<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect();
        let used: BTreeSet<&str> = HTTP_ROUTES.iter().filter_map(|(_, m)| m.ok()).collect();
        for m in &used {
            assert!(methods.contains(m), "{m} is not a method of valori.proto");
        }
        assert_eq!(
            methods, used,
            "a gRPC method has no HTTP route: pair it in HTTP_ROUTES"
        );
    }
}
