//! The knowledge graph: nodes, edges, neighbours and traversal.

use valori_api as api;
use valori_kernel::{Applied, Event, Kernel, RecordRef};

use super::convert::{direction_from_wire, ResponseSize};
use super::{blocking, Service};
use crate::error::NodeError;

/// Bytes a neighbour takes in JSON besides its kind.
const NEIGHBOR_BYTES: usize = 80;

/// A graph node as a client sees it.
pub struct NodeOut {
    /// Kind label.
    pub kind: String,
    /// Its record link; a link by key carries the id of the record that holds the key now.
    pub record: Option<api::RecordRef>,
    /// Property bytes.
    pub properties: Option<Vec<u8>>,
}

/// The kernel's link of a new node's: exactly one of `id` and `key`.
fn link_from_wire(r: api::RecordRef) -> Result<RecordRef, NodeError> {
    match (r.id, r.key) {
        (Some(id), None) => Ok(RecordRef::Id {
            collection: r.collection,
            id,
        }),
        (None, Some(key)) => Ok(RecordRef::Key {
            collection: r.collection,
            key,
        }),
        _ => Err(NodeError::BadRequest(
            "a record link names exactly one of id and key".into(),
        )),
    }
}

/// A node's link as answers carry it (a link by key with the id it resolves to now).
fn link_to_wire(kernel: &Kernel, link: &RecordRef) -> api::RecordRef {
    match link {
        RecordRef::Id { collection, id } => api::RecordRef {
            collection: collection.clone(),
            id: Some(*id),
            key: None,
        },
        RecordRef::Key { collection, key } => api::RecordRef {
            collection: collection.clone(),
            id: kernel.linked_record(link),
            key: Some(key.clone()),
        },
    }
}

impl Service {
    /// Creates a graph node; returns its id and the sequence number.
    pub async fn create_node(
        &self,
        kind: String,
        record: Option<api::RecordRef>,
        properties: Option<Vec<u8>>,
    ) -> Result<api::Created, NodeError> {
        let c = self
            .write(Event::CreateNode {
                kind,
                record: record.map(link_from_wire).transpose()?,
                properties,
            })
            .await?;
        match c.applied {
            Applied::Node(id) => Ok(api::Created { id, seq: c.seq }),
            other => Err(NodeError::Internal(format!(
                "a node creation applied as {other:?}"
            ))),
        }
    }

    /// Creates an edge; returns its id and the sequence number.
    pub async fn create_edge(&self, req: api::CreateEdge) -> Result<api::Created, NodeError> {
        let c = self
            .write(Event::CreateEdge {
                from: req.from,
                to: req.to,
                kind: req.kind,
            })
            .await?;
        match c.applied {
            Applied::Edge(id) => Ok(api::Created { id, seq: c.seq }),
            other => Err(NodeError::Internal(format!(
                "an edge creation applied as {other:?}"
            ))),
        }
    }

    /// Deletes a node and its edges.
    pub async fn delete_node(&self, id: u64) -> Result<u64, NodeError> {
        Ok(self.write(Event::DeleteNode { id }).await?.seq)
    }

    /// Deletes an edge.
    pub async fn delete_edge(&self, id: u64) -> Result<u64, NodeError> {
        Ok(self.write(Event::DeleteEdge { id }).await?.seq)
    }

    /// A graph node, or `NodeNotFound`.
    pub async fn node(&self, id: u64) -> Result<NodeOut, NodeError> {
        self.off_thread(move |s| s.node_blocking(id)).await
    }

    /// [`Service::node`] on the caller's thread (embedded callers).
    pub fn node_blocking(&self, id: u64) -> Result<NodeOut, NodeError> {
        let kernel = self.engine.read()?;
        let node = kernel
            .graph()
            .node(id)
            .ok_or(valori_kernel::Error::NodeNotFound { id })?;
        Ok(NodeOut {
            kind: node.kind.clone(),
            record: node.record.as_ref().map(|l| link_to_wire(&kernel, l)),
            properties: node.properties.clone(),
        })
    }

    /// A graph edge, or `EdgeNotFound`.
    pub async fn edge(&self, id: u64) -> Result<valori_kernel::graph::Edge, NodeError> {
        self.off_thread(move |s| s.edge_blocking(id)).await
    }

    /// [`Service::edge`] on the caller's thread (embedded callers).
    pub fn edge_blocking(&self, id: u64) -> Result<valori_kernel::graph::Edge, NodeError> {
        let kernel = self.engine.read()?;
        let edge = kernel.graph().edge(id).cloned();
        Ok(edge.ok_or(valori_kernel::Error::EdgeNotFound { id })?)
    }

    /// Neighbours of a node, and the sequence number.
    pub async fn neighbors(
        &self,
        id: u64,
        direction: api::Direction,
        kinds: Vec<String>,
    ) -> Result<api::Neighbors, NodeError> {
        self.off_thread(move |s| s.neighbors_blocking(id, direction, &kinds))
            .await
    }

    /// [`Service::neighbors`] on the caller's thread (embedded callers).
    pub fn neighbors_blocking(
        &self,
        id: u64,
        direction: api::Direction,
        kinds: &[String],
    ) -> Result<api::Neighbors, NodeError> {
        let kinds = filter_kinds(kinds)?;
        let kernel = self.engine.read()?;
        let mut size = ResponseSize::new(self.settings.max_response_bytes);
        let mut neighbors = Vec::new();
        for n in kernel.neighbors(id, direction_from_wire(direction), &kinds)? {
            size.add(NEIGHBOR_BYTES + n.kind.len())?;
            neighbors.push(api::Neighbor {
                node: n.node,
                edge: n.edge,
                kind: n.kind,
                direction: if n.outgoing {
                    api::EdgeDirection::Out
                } else {
                    api::EdgeDirection::In
                },
            });
        }
        Ok(api::Neighbors {
            neighbors,
            seq: kernel.seq(),
        })
    }

    /// Breadth-first traversal. Runs on the caller's thread; see [`Service::traverse`].
    pub fn traverse_blocking(
        &self,
        req: &api::TraverseRequest,
    ) -> Result<api::Traversal, NodeError> {
        let kinds = filter_kinds(&req.kinds)?;
        let kernel = self.engine.read()?;
        let t = kernel.traverse(
            req.start,
            req.max_depth,
            direction_from_wire(req.direction.unwrap_or_default()),
            &kinds,
        )?;
        Ok(api::Traversal {
            nodes: t
                .nodes
                .into_iter()
                .map(|(node, depth)| api::Visit { node, depth })
                .collect(),
            truncated: t.truncated,
            seq: kernel.seq(),
        })
    }

    /// [`Service::traverse_blocking`] off the async threads.
    pub async fn traverse(&self, req: api::TraverseRequest) -> Result<api::Traversal, NodeError> {
        let service = self.clone();
        blocking(move || service.traverse_blocking(&req)).await
    }
}

/// The distinct kinds of an edge filter (each edge is compared with every one of them), at
/// most [`crate::limits::MAX_FILTER_KINDS`].
fn filter_kinds(kinds: &[String]) -> Result<Vec<String>, NodeError> {
    let mut distinct = kinds.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() > crate::limits::MAX_FILTER_KINDS {
        return Err(NodeError::Limit {
            what: "distinct edge kinds in a filter",
            value: distinct.len() as u64,
            max: crate::limits::MAX_FILTER_KINDS as u64,
        });
    }
    Ok(distinct)
}
