//! The knowledge graph: nodes with a kind label, an optional record link and optional property
//! bytes, and directed typed edges between them.
//!
//! Every query answers in a fixed order: neighbours by (neighbour id, edge id), traversal
//! breadth-first with each level's nodes discovered in that same neighbour order. Ids are
//! assigned by counters that only grow, so an id is never reused.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use crate::event::RecordRef;

/// A graph node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Node {
    /// Kind label.
    pub kind: String,
    /// Optional link to a record. The link is weak: deleting the record (or dropping its
    /// collection) leaves it in place, and resolving it then finds nothing.
    pub record: Option<RecordRef>,
    /// Optional property bytes.
    pub properties: Option<Vec<u8>>,
}

/// A directed edge.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Edge {
    /// Source node id.
    pub from: u64,
    /// Target node id.
    pub to: u64,
    /// Kind label.
    pub kind: String,
}

/// Which edges of a node a query follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// Edges leaving the node.
    Out,
    /// Edges entering the node.
    In,
    /// Both.
    Both,
}

/// One neighbour of a node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Neighbor {
    /// The node at the other end.
    pub node: u64,
    /// The edge that leads there.
    pub edge: u64,
    /// That edge's kind.
    pub kind: String,
    /// Whether the edge leaves the queried node.
    pub outgoing: bool,
}

/// The result of a bounded traversal.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Traversal {
    /// Visited nodes with their depth (the start node at depth 0), breadth-first.
    pub nodes: Vec<(u64, u32)>,
    /// Whether the traversal stopped at the node limit before exhausting `max_depth`.
    pub truncated: bool,
}

/// Nodes, edges and the adjacency indexes derived from them.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Graph {
    pub(crate) next_node: u64,
    pub(crate) next_edge: u64,
    pub(crate) nodes: BTreeMap<u64, Node>,
    pub(crate) edges: BTreeMap<u64, Edge>,
    /// (from, to, edge id): derived from `edges`, never encoded.
    outgoing: BTreeSet<(u64, u64, u64)>,
    /// (to, from, edge id): derived from `edges`, never encoded.
    incoming: BTreeSet<(u64, u64, u64)>,
}

impl Graph {
    /// A node by id.
    pub fn node(&self, id: u64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// An edge by id.
    pub fn edge(&self, id: u64) -> Option<&Edge> {
        self.edges.get(&id)
    }

    /// Number of nodes.
    pub fn node_count(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// Number of edges.
    pub fn edge_count(&self) -> u64 {
        self.edges.len() as u64
    }

    pub(crate) fn add_node(&mut self, node: Node) -> u64 {
        let id = self.next_node;
        self.next_node += 1;
        self.nodes.insert(id, node);
        id
    }

    pub(crate) fn insert_node_with_id(&mut self, id: u64, node: Node) {
        self.nodes.insert(id, node);
    }

    pub(crate) fn add_edge(&mut self, edge: Edge) -> u64 {
        let id = self.next_edge;
        self.next_edge += 1;
        self.insert_edge_with_id(id, edge);
        id
    }

    pub(crate) fn insert_edge_with_id(&mut self, id: u64, edge: Edge) {
        self.outgoing.insert((edge.from, edge.to, id));
        self.incoming.insert((edge.to, edge.from, id));
        self.edges.insert(id, edge);
    }

    pub(crate) fn remove_edge(&mut self, id: u64) {
        if let Some(e) = self.edges.remove(&id) {
            self.outgoing.remove(&(e.from, e.to, id));
            self.incoming.remove(&(e.to, e.from, id));
        }
    }

    pub(crate) fn remove_node(&mut self, id: u64) {
        let touching: BTreeSet<u64> = self
            .outgoing
            .range((id, 0, 0)..=(id, u64::MAX, u64::MAX))
            .chain(self.incoming.range((id, 0, 0)..=(id, u64::MAX, u64::MAX)))
            .map(|&(_, _, e)| e)
            .collect();
        for e in touching {
            self.remove_edge(e);
        }
        self.nodes.remove(&id);
    }

    /// Neighbours of `node` along edges in `direction` whose kind is in `kinds` (all kinds when
    /// empty), ordered by (neighbour id, edge id, outgoing before incoming).
    pub fn neighbors(&self, node: u64, direction: Direction, kinds: &[String]) -> Vec<Neighbor> {
        let mut out = Vec::new();
        let range = (node, 0, 0)..=(node, u64::MAX, u64::MAX);
        let mut collect = |set: &BTreeSet<(u64, u64, u64)>, outgoing: bool| {
            for &(_, other, edge) in set.range(range.clone()) {
                let kind = &self.edges[&edge].kind;
                if kinds.is_empty() || kinds.iter().any(|k| k == kind) {
                    out.push(Neighbor {
                        node: other,
                        edge,
                        kind: kind.clone(),
                        outgoing,
                    });
                }
            }
        };
        if direction != Direction::In {
            collect(&self.outgoing, true);
        }
        if direction != Direction::Out {
            collect(&self.incoming, false);
        }
        if direction == Direction::Both {
            out.sort_by_key(|n| (n.node, n.edge, !n.outgoing));
        }
        out
    }

    /// Breadth-first traversal from `start` up to `max_depth` edges away, following edges in
    /// `direction` whose kind is in `kinds` (all when empty), visiting at most `max_nodes`
    /// nodes. Each node appears once, at its smallest depth.
    pub fn traverse(
        &self,
        start: u64,
        max_depth: u32,
        direction: Direction,
        kinds: &[String],
        max_nodes: u32,
    ) -> Traversal {
        let mut nodes = Vec::new();
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::new();
        if !self.nodes.contains_key(&start) || max_nodes == 0 {
            return Traversal {
                nodes,
                truncated: false,
            };
        }
        seen.insert(start);
        queue.push_back((start, 0u32));
        while let Some((node, depth)) = queue.pop_front() {
            nodes.push((node, depth));
            if depth == max_depth {
                continue;
            }
            for n in self.neighbors(node, direction, kinds) {
                if seen.contains(&n.node) {
                    continue;
                }
                if seen.len() as u64 >= u64::from(max_nodes) {
                    // Drain what is already queued (it is within the limit), then stop.
                    nodes.extend(queue.drain(..));
                    return Traversal {
                        nodes,
                        truncated: true,
                    };
                }
                seen.insert(n.node);
                queue.push_back((n.node, depth + 1));
            }
        }
        Traversal {
            nodes,
            truncated: false,
        }
    }
}
