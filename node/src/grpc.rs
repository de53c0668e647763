//! The gRPC API (tonic), generated from `proto/valori.proto`. Each call translates to the same
//! [`Service`] operation as its HTTP route, so both give identical results; errors carry the
//! matching gRPC status code and the HTTP API's error code in the `valori-code` metadata.

use tonic::{Request, Response, Status};
use valori_kernel::limits::DEFAULT_COLLECTION;
use valori_kernel::IndexSpec;

use crate::error::NodeError;
use crate::service::{Access, IndexIn, Keys, RecordIn, Service};

/// Generated protobuf types and service stubs.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("valori.v1");
}

use pb::valori_server::{Valori, ValoriServer};

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let code = match e.status() {
            400 | 413 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::NotFound,
            409 => tonic::Code::AlreadyExists,
            503 => tonic::Code::Unavailable,
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
    pub fn server(service: Service, keys: Keys) -> ValoriServer<Grpc> {
        ValoriServer::new(Grpc { service, keys }).max_decoding_message_size(usize::MAX)
    }

    fn check<T>(&self, req: &Request<T>, write: bool) -> Result<(), Status> {
        let md = req.metadata();
        let key = md
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .or_else(|| md.get("x-api-key").and_then(|v| v.to_str().ok()));
        match self.keys.check(key)? {
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

fn collection_info(c: &valori_kernel::Collection) -> pb::CollectionInfo {
    let s = c.spec();
    pb::CollectionInfo {
        name: s.name.clone(),
        dimension: s.dimension,
        metric: s.metric.name().into(),
        index: match s.index {
            IndexSpec::Flat => "flat".into(),
            IndexSpec::Hnsw(p) => format!(
                "hnsw(m={},ef_construction={},ef_search={})",
                p.m, p.ef_construction, p.ef_search
            ),
        },
        records: c.len(),
        next_id: c.next_id(),
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

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Valori for Grpc {
    async fn create_collection(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> R<pb::SeqReply> {
        self.check(&req, true)?;
        let r = req.into_inner();
        let index = if r.flat {
            IndexIn::Flat
        } else {
            let h = r.hnsw.unwrap_or_default();
            IndexIn::Hnsw {
                m: u16_param(h.m, "m")?,
                ef_construction: u16_param(h.ef_construction, "ef_construction")?,
                ef_search: u16_param(h.ef_search, "ef_search")?,
            }
        };
        let seq = self
            .service
            .create_collection(r.name, r.dimension, Some(&r.metric), index)
            .await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn list_collections(&self, req: Request<pb::Empty>) -> R<pb::ListCollectionsReply> {
        self.check(&req, false)?;
        let k = self.service.engine.read()?;
        Ok(Response::new(pb::ListCollectionsReply {
            collections: k.collections().map(collection_info).collect(),
            seq: k.seq(),
        }))
    }

    async fn get_collection(&self, req: Request<pb::CollectionName>) -> R<pb::CollectionInfo> {
        self.check(&req, false)?;
        let name = req.into_inner().name;
        let k = self.service.engine.read()?;
        let c = k.collection(&name).ok_or(NodeError::Kernel(
            valori_kernel::Error::CollectionNotFound { name },
        ))?;
        Ok(Response::new(collection_info(c)))
    }

    async fn drop_collection(&self, req: Request<pb::CollectionName>) -> R<pb::SeqReply> {
        self.check(&req, true)?;
        let seq = self.service.drop_collection(req.into_inner().name).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn insert(&self, req: Request<pb::InsertRequest>) -> R<pb::InsertReply> {
        self.check(&req, true)?;
        let r = req.into_inner();
        let record = r
            .record
            .ok_or_else(|| Status::from(NodeError::BadRequest("record is required".into())))?;
        let (ids, seq) = self
            .service
            .insert(collection(r.collection), vec![record_in(record)], false)
            .await?;
        Ok(Response::new(pb::InsertReply { ids, seq }))
    }

    async fn insert_batch(&self, req: Request<pb::InsertBatchRequest>) -> R<pb::InsertReply> {
        self.check(&req, true)?;
        let r = req.into_inner();
        let records: Vec<RecordIn> = r.records.into_iter().map(record_in).collect();
        let (ids, seq) = self
            .service
            .insert(collection(r.collection), records, true)
            .await?;
        Ok(Response::new(pb::InsertReply { ids, seq }))
    }

    async fn get(&self, req: Request<pb::RecordKey>) -> R<pb::RecordReply> {
        self.check(&req, false)?;
        let r = req.into_inner();
        let out = self.service.get(&collection(r.collection), r.id)?;
        Ok(Response::new(pb::RecordReply {
            id: out.id,
            vector: out.vector,
            tag: out.tag,
            metadata: out.metadata,
            seq: out.seq,
        }))
    }

    async fn delete(&self, req: Request<pb::RecordKey>) -> R<pb::SeqReply> {
        self.check(&req, true)?;
        let r = req.into_inner();
        let seq = self.service.delete(collection(r.collection), r.id).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn search(&self, req: Request<pb::SearchRequest>) -> R<pb::SearchReply> {
        self.check(&req, false)?;
        let r = req.into_inner();
        let (hits, seq) = self
            .service
            .search(
                collection(r.collection),
                r.vector,
                r.k.unwrap_or(10),
                r.tag,
                r.ef,
                r.with_metadata,
            )
            .await?;
        let results = hits
            .into_iter()
            .map(|h| pb::Hit {
                id: h.id,
                distance: h.distance.to_string(),
                score: crate::service::score(h.distance),
                tag: h.tag,
                metadata: h.metadata.flatten(),
            })
            .collect();
        Ok(Response::new(pb::SearchReply { results, seq }))
    }

    async fn create_node(&self, req: Request<pb::CreateNodeRequest>) -> R<pb::CreatedReply> {
        self.check(&req, true)?;
        let r = req.into_inner();
        let (id, seq) = self
            .service
            .create_node(r.kind, r.record.map(|l| (l.collection, l.id)), r.properties)
            .await?;
        Ok(Response::new(pb::CreatedReply { id, seq }))
    }

    async fn get_node(&self, req: Request<pb::Id>) -> R<pb::NodeReply> {
        self.check(&req, false)?;
        let id = req.into_inner().id;
        let n = self.service.node(id)?;
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

    async fn delete_node(&self, req: Request<pb::Id>) -> R<pb::SeqReply> {
        self.check(&req, true)?;
        let seq = self.service.delete_node(req.into_inner().id).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn create_edge(&self, req: Request<pb::CreateEdgeRequest>) -> R<pb::CreatedReply> {
        self.check(&req, true)?;
        let r = req.into_inner();
        let (id, seq) = self.service.create_edge(r.from, r.to, r.kind).await?;
        Ok(Response::new(pb::CreatedReply { id, seq }))
    }

    async fn get_edge(&self, req: Request<pb::Id>) -> R<pb::EdgeReply> {
        self.check(&req, false)?;
        let id = req.into_inner().id;
        let e = self.service.edge(id)?;
        Ok(Response::new(pb::EdgeReply {
            id,
            from: e.from,
            to: e.to,
            kind: e.kind,
        }))
    }

    async fn delete_edge(&self, req: Request<pb::Id>) -> R<pb::SeqReply> {
        self.check(&req, true)?;
        let seq = self.service.delete_edge(req.into_inner().id).await?;
        Ok(Response::new(pb::SeqReply { seq }))
    }

    async fn neighbors(&self, req: Request<pb::NeighborsRequest>) -> R<pb::NeighborsReply> {
        self.check(&req, false)?;
        let r = req.into_inner();
        let (list, seq) = self.service.neighbors(r.id, Some(&r.direction), &r.kinds)?;
        Ok(Response::new(pb::NeighborsReply {
            neighbors: list
                .into_iter()
                .map(|(node, edge, kind, outgoing)| pb::Neighbor {
                    node,
                    edge,
                    kind,
                    direction: if outgoing { "out" } else { "in" }.into(),
                })
                .collect(),
            seq,
        }))
    }

    async fn traverse(&self, req: Request<pb::TraverseRequest>) -> R<pb::TraverseReply> {
        self.check(&req, false)?;
        let r = req.into_inner();
        let (nodes, truncated, seq) = self
            .service
            .traverse(r.start, r.max_depth, r.kinds, Some(&r.direction))
            .await?;
        Ok(Response::new(pb::TraverseReply {
            nodes: nodes
                .into_iter()
                .map(|(node, depth)| pb::Visit { node, depth })
                .collect(),
            truncated,
            seq,
        }))
    }

    async fn get_state(&self, req: Request<pb::StateRequest>) -> R<pb::StateReply> {
        self.check(&req, false)?;
        let want = req.into_inner().seq;
        let engine = self.service.engine.clone();
        let reply = crate::service::blocking(move || {
            let s = engine.state()?;
            match want {
                None => Ok(pb::StateReply {
                    seq: s.seq,
                    chain_hash: hex::encode(s.chain_hash),
                    state_hash: hex::encode(s.state_hash),
                }),
                Some(seq) if seq > s.seq => Err(NodeError::NotFound(format!(
                    "sequence number {seq} is in the future (current is {})",
                    s.seq
                ))),
                Some(seq) => Ok(pb::StateReply {
                    seq,
                    chain_hash: hex::encode(engine.chain_at(seq)?),
                    state_hash: if seq == s.seq {
                        hex::encode(s.state_hash)
                    } else {
                        String::new()
                    },
                }),
            }
        })
        .await?;
        Ok(Response::new(reply))
    }

    async fn create_snapshot(&self, req: Request<pb::Empty>) -> R<pb::SnapshotInfo> {
        self.check(&req, true)?;
        Ok(Response::new(snapshot_info(
            self.service.engine.snapshot().await?,
        )))
    }

    async fn list_snapshots(&self, req: Request<pb::Empty>) -> R<pb::ListSnapshotsReply> {
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
}
