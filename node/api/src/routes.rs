//! Every route of the HTTP API with its types. The node's router serves exactly these (a test
//! walks the table against a running node), `/openapi.json` is generated from them, and the
//! gRPC service names a method for each or says why it has none.

use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::memory::*;
use crate::wire::*;

/// The schema of a type, registered with a generator.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// HTTP methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
}

impl Method {
    /// The lower-case name (as OpenAPI keys it).
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }
}

/// Which key a route needs when the node has keys configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// None: health, readiness, metrics and this description.
    Public,
    /// The read-only or the read-write key.
    Read,
    /// The read-write key.
    Write,
}

/// A request or response body.
#[derive(Clone, Copy)]
pub enum Body {
    /// No body.
    None,
    /// `application/json` of this schema.
    Json(SchemaFn),
    /// `application/octet-stream` (a snapshot file).
    Bytes,
    /// `text/plain`.
    Text,
}

/// A refusal a route documents besides the caller's plain mistakes: one that a request valid
/// by the schema can still get, because of the node's state (a vector of another dimension
/// than its collection's) or its configuration (`--max-batch`).
#[derive(Clone, Copy, Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The error's stable code.
    pub code: &'static str,
    /// When it happens.
    pub when: &'static str,
}

/// One route.
#[derive(Clone, Copy)]
pub struct Route {
    /// Its method.
    pub method: Method,
    /// Its path; `{name}` is a collection name, `{id}` an unsigned 64-bit id, `{field}` a
    /// payload field path.
    pub path: &'static str,
    /// A unique name of the operation (OpenAPI's `operationId`).
    pub operation: &'static str,
    /// What it does, in one line.
    pub summary: &'static str,
    /// The key it needs.
    pub access: Access,
    /// The struct its query string decodes into, if it takes one.
    pub query: Option<SchemaFn>,
    /// Its request body.
    pub request: Body,
    /// The status of a successful answer.
    pub status: u16,
    /// The body of a successful answer.
    pub response: Body,
    /// What a schema-valid request can still be refused with (every write route can also be
    /// refused 403 `read_only_follower` on a follower; see the OpenAPI document).
    pub refusals: &'static [Refusal],
}

const fn route(
    method: Method,
    path: &'static str,
    operation: &'static str,
    summary: &'static str,
    access: Access,
) -> Route {
    Route {
        method,
        path,
        operation,
        summary,
        access,
        query: None,
        request: Body::None,
        status: 200,
        response: Body::None,
        refusals: &[],
    }
}

const fn refusal(status: u16, code: &'static str, when: &'static str) -> Refusal {
    Refusal { status, code, when }
}

impl Route {
    const fn query(mut self, q: SchemaFn) -> Route {
        self.query = Some(q);
        self
    }
    const fn takes(mut self, body: Body) -> Route {
        self.request = body;
        self
    }
    const fn gives(mut self, status: u16, body: Body) -> Route {
        self.status = status;
        self.response = body;
        self
    }
    const fn refuses(mut self, refusals: &'static [Refusal]) -> Route {
        self.refusals = refusals;
        self
    }

    /// The names of the path's parameters, in order.
    pub fn path_params(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }
}

const NO_COLLECTION: Refusal =
    refusal(404, "collection_not_found", "the collection does not exist");
const DIMENSION: Refusal = refusal(
    400,
    "dimension_mismatch",
    "a vector's dimension differs from the collection's",
);
const ZERO_VECTOR: Refusal = refusal(
    400,
    "zero_vector",
    "a vector is all zeros and the collection's metric is cosine",
);
const NO_RECORD: Refusal = refusal(404, "record_not_found", "the record does not exist");
const NO_NODE: Refusal = refusal(404, "node_not_found", "a node named does not exist");
const KIND_BYTES: Refusal = refusal(
    400,
    "invalid_kind",
    "a kind label of up to 128 characters is longer than 128 bytes in UTF-8",
);
const RESPONSE_BYTES: Refusal = refusal(
    400,
    "limit_exceeded",
    "the answer would be larger than the node's --max-response-bytes",
);
const INSERTS: &[Refusal] = &[NO_COLLECTION, DIMENSION, ZERO_VECTOR];
const INSERTS_DEFAULT: &[Refusal] = &[DIMENSION, ZERO_VECTOR];
const BATCHES: &[Refusal] = &[
    NO_COLLECTION,
    DIMENSION,
    ZERO_VECTOR,
    refusal(
        400,
        "limit_exceeded",
        "the batch has more records than the node's --max-batch",
    ),
];
const BATCHES_DEFAULT: &[Refusal] = &[
    DIMENSION,
    ZERO_VECTOR,
    refusal(
        400,
        "limit_exceeded",
        "the batch has more records than the node's --max-batch",
    ),
];
const INVALID_FILTER: Refusal = refusal(
    400,
    "invalid_filter",
    "a filter's condition is not one the API knows, names a bad key path, or exceeds a bound the schema cannot state (depth 8, 64 conditions in all)",
);
const SEARCHES: &[Refusal] = &[
    NO_COLLECTION,
    DIMENSION,
    ZERO_VECTOR,
    RESPONSE_BYTES,
    INVALID_FILTER,
];
const INVALID_PAYLOAD: Refusal = refusal(
    400,
    "invalid_payload",
    "a payload holds an integer beyond 64 bits, is larger than 64 KiB encoded or deeper than 16 levels",
);
const INVALID_KEY: Refusal = refusal(
    400,
    "invalid_key",
    "a key of up to 512 characters is longer than 512 bytes in UTF-8",
);
const TOO_LARGE: Refusal = refusal(
    400,
    "too_large",
    "a document or metadata is larger than 64 KiB",
);
const BAD_TARGET: Refusal = refusal(
    400,
    "bad_request",
    "the request names none or more than one of keys, ids and filter",
);
const TOO_MANY: Refusal = refusal(
    400,
    "too_many_affected",
    "more records match than max_affected allows",
);
const UPSERTS: &[Refusal] = &[
    NO_COLLECTION,
    DIMENSION,
    ZERO_VECTOR,
    INVALID_PAYLOAD,
    INVALID_KEY,
    TOO_LARGE,
    refusal(400, "duplicate_key", "a key appears twice in the batch"),
    refusal(409, "key_exists", "mode insert_only and a key exists"),
    refusal(
        404,
        "key_not_found",
        "mode update_only and a key does not exist",
    ),
    refusal(
        400,
        "limit_exceeded",
        "the batch has more records than the node's --max-batch",
    ),
];
const TARGETED: &[Refusal] = &[
    NO_COLLECTION,
    INVALID_FILTER,
    BAD_TARGET,
    TOO_MANY,
    INVALID_KEY,
];
const PAYLOAD_WRITES: &[Refusal] = &[
    NO_COLLECTION,
    INVALID_FILTER,
    BAD_TARGET,
    TOO_MANY,
    INVALID_KEY,
    INVALID_PAYLOAD,
];
const READS: &[Refusal] = &[NO_COLLECTION, INVALID_FILTER, RESPONSE_BYTES];

use Access::{Public, Read, Write};
use Method::{Delete, Get, Post, Put};

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    route(Post, "/v1/collections", "create_collection", "Create a collection", Write)
        .takes(Body::Json(schema::<CreateCollection>))
        .gives(201, Body::Json(schema::<Seq>))
        .refuses(&[refusal(409, "collection_exists", "a collection of that name exists")]),
    route(Get, "/v1/collections", "list_collections", "List collections", Read)
        .gives(200, Body::Json(schema::<CollectionList>)),
    route(Get, "/v1/collections/{name}", "get_collection", "Describe a collection", Read)
        .gives(200, Body::Json(schema::<CollectionInfo>))
        .refuses(&[NO_COLLECTION]),
    route(Delete, "/v1/collections/{name}", "drop_collection", "Drop a collection and its records", Write)
        .gives(200, Body::Json(schema::<Seq>))
        .refuses(&[NO_COLLECTION]),
    route(Post, "/v1/collections/{name}/records", "insert", "Insert a record", Write)
        .takes(Body::Json(schema::<NewRecord>))
        .gives(200, Body::Json(schema::<Inserted>))
        .refuses(INSERTS),
    route(Post, "/v1/collections/{name}/records/batch", "insert_batch", "Insert records atomically: all or none", Write)
        .takes(Body::Json(schema::<Batch>))
        .gives(200, Body::Json(schema::<BatchInserted>))
        .refuses(BATCHES),
    route(Get, "/v1/collections/{name}/records/{id}", "get_record", "Get a record", Read)
        .gives(200, Body::Json(schema::<Record>))
        .refuses(&[NO_COLLECTION, NO_RECORD]),
    route(Delete, "/v1/collections/{name}/records/{id}", "delete_record", "Delete a record", Write)
        .gives(200, Body::Json(schema::<Seq>))
        .refuses(&[NO_COLLECTION, NO_RECORD]),
    route(Post, "/v1/collections/{name}/search", "search", "Search a collection: nearest first, ties by id", Read)
        .takes(Body::Json(schema::<SearchRequest>))
        .gives(200, Body::Json(schema::<SearchResults>))
        .refuses(SEARCHES),
    route(Post, "/v1/collections/{name}/records/upsert", "upsert", "Write records by key, all or nothing, in order: an unchanged vector keeps its id", Write)
        .takes(Body::Json(schema::<Upsert>))
        .gives(200, Body::Json(schema::<Upserted>))
        .refuses(UPSERTS),
    route(Post, "/v1/collections/{name}/records/get", "get_records", "Get records by keys or ids, in the order asked; the missing are listed", Read)
        .takes(Body::Json(schema::<GetRecords>))
        .gives(200, Body::Json(schema::<Records>))
        .refuses(&[NO_COLLECTION, BAD_TARGET, RESPONSE_BYTES]),
    route(Post, "/v1/collections/{name}/records/scroll", "scroll", "Page through records by ascending id, optionally filtered", Read)
        .takes(Body::Json(schema::<Scroll>))
        .gives(200, Body::Json(schema::<ScrollPage>))
        .refuses(READS),
    route(Post, "/v1/collections/{name}/records/count", "count", "Count records, optionally filtered (exact)", Read)
        .takes(Body::Json(schema::<Count>))
        .gives(200, Body::Json(schema::<Counted>))
        .refuses(&[NO_COLLECTION, INVALID_FILTER]),
    route(Post, "/v1/collections/{name}/records/delete", "delete_records", "Delete records by keys, ids or a filter (missing keys and ids are ignored)", Write)
        .takes(Body::Json(schema::<DeleteRecords>))
        .gives(200, Body::Json(schema::<Deleted>))
        .refuses(TARGETED),
    route(Post, "/v1/collections/{name}/records/payload", "set_payload", "Merge into or replace the payload of records by keys, ids or a filter", Write)
        .takes(Body::Json(schema::<SetPayload>))
        .gives(200, Body::Json(schema::<Updated>))
        .refuses(PAYLOAD_WRITES),
    route(Post, "/v1/collections/{name}/records/payload/delete", "delete_payload_keys", "Remove top-level payload keys from records by keys, ids or a filter", Write)
        .takes(Body::Json(schema::<DeletePayloadKeys>))
        .gives(200, Body::Json(schema::<Updated>))
        .refuses(TARGETED),
    route(Post, "/v1/collections/{name}/search/batch", "search_batch", "Up to 256 searches answered from one state", Read)
        .takes(Body::Json(schema::<SearchBatch>))
        .gives(200, Body::Json(schema::<SearchBatchResults>))
        .refuses(SEARCHES),
    route(Get, "/v1/collections/{name}/indexes", "list_payload_indexes", "A collection's payload indexes", Read)
        .gives(200, Body::Json(schema::<PayloadIndexes>))
        .refuses(&[NO_COLLECTION]),
    route(Post, "/v1/collections/{name}/indexes", "create_payload_index", "Declare a payload index: filters on the field run faster, their answers do not change", Write)
        .takes(Body::Json(schema::<PayloadIndex>))
        .gives(200, Body::Json(schema::<Seq>))
        .refuses(&[
            NO_COLLECTION,
            refusal(409, "payload_index_exists", "the field has an index"),
            refusal(400, "invalid_filter", "the field is not a path of non-empty segments"),
            refusal(400, "too_large", "the collection has 32 payload indexes"),
        ]),
    route(Delete, "/v1/collections/{name}/indexes/{field}", "drop_payload_index", "Remove a payload index", Write)
        .gives(200, Body::Json(schema::<Seq>))
        .refuses(&[NO_COLLECTION, refusal(404, "payload_index_not_found", "the field has no index")]),
    route(Post, "/v1/records", "insert_default", "Insert a record into the default collection (created with the first vector's dimension)", Write)
        .takes(Body::Json(schema::<NewRecord>))
        .gives(200, Body::Json(schema::<Inserted>))
        .refuses(INSERTS_DEFAULT),
    route(Post, "/v1/records/batch", "insert_batch_default", "Insert records atomically into the default collection", Write)
        .takes(Body::Json(schema::<Batch>))
        .gives(200, Body::Json(schema::<BatchInserted>))
        .refuses(BATCHES_DEFAULT),
    route(Get, "/v1/records/{id}", "get_record_default", "Get a record of the default collection", Read)
        .gives(200, Body::Json(schema::<Record>))
        .refuses(&[NO_COLLECTION, NO_RECORD]),
    route(Delete, "/v1/records/{id}", "delete_record_default", "Delete a record of the default collection", Write)
        .gives(200, Body::Json(schema::<Seq>))
        .refuses(&[NO_COLLECTION, NO_RECORD]),
    route(Post, "/v1/search", "search_default", "Search the default collection", Read)
        .takes(Body::Json(schema::<SearchRequest>))
        .gives(200, Body::Json(schema::<SearchResults>))
        .refuses(SEARCHES),
    route(Post, "/v1/graph/nodes", "create_node", "Create a graph node", Write)
        .takes(Body::Json(schema::<CreateNode>))
        .gives(201, Body::Json(schema::<Created>))
        .refuses(&[
            KIND_BYTES,
            NO_COLLECTION,
            NO_RECORD,
            INVALID_KEY,
            refusal(404, "key_not_found", "a link by key names a key no record holds"),
            refusal(
                400,
                "bad_request",
                "a record link names both or neither of id and key",
            ),
        ]),
    route(Get, "/v1/graph/nodes/{id}", "get_node", "Get a graph node", Read)
        .gives(200, Body::Json(schema::<GraphNode>))
        .refuses(&[NO_NODE]),
    route(Delete, "/v1/graph/nodes/{id}", "delete_node", "Delete a node and its edges", Write)
        .gives(200, Body::Json(schema::<Seq>))
        .refuses(&[NO_NODE]),
    route(Get, "/v1/graph/nodes/{id}/neighbors", "neighbors", "A node's neighbours", Read)
        .query(schema::<NeighborsQuery>)
        .gives(200, Body::Json(schema::<Neighbors>))
        .refuses(&[
            NO_NODE,
            refusal(400, "limit_exceeded", "the kind filter names more than 64 distinct kinds"),
            RESPONSE_BYTES,
        ]),
    route(Post, "/v1/graph/edges", "create_edge", "Create an edge", Write)
        .takes(Body::Json(schema::<CreateEdge>))
        .gives(201, Body::Json(schema::<Created>))
        .refuses(&[KIND_BYTES, NO_NODE]),
    route(Get, "/v1/graph/edges/{id}", "get_edge", "Get an edge", Read)
        .gives(200, Body::Json(schema::<GraphEdge>))
        .refuses(&[refusal(404, "edge_not_found", "the edge does not exist")]),
    route(Delete, "/v1/graph/edges/{id}", "delete_edge", "Delete an edge", Write)
        .gives(200, Body::Json(schema::<Seq>))
        .refuses(&[refusal(404, "edge_not_found", "the edge does not exist")]),
    route(Post, "/v1/graph/traverse", "traverse", "Breadth-first traversal", Read)
        .takes(Body::Json(schema::<TraverseRequest>))
        .gives(200, Body::Json(schema::<Traversal>))
        .refuses(&[
            NO_NODE,
            refusal(400, "limit_exceeded", "the kind filter names more than 64 distinct kinds"),
        ]),
    route(Get, "/v1/state", "get_state", "Sequence number, chain hash and state hash (with seq: the chain hash at a past sequence number)", Read)
        .query(schema::<StateQuery>)
        .gives(200, Body::Json(schema::<State>))
        .refuses(&[
            refusal(404, "not_found", "seq is in the future, or no longer retained (neither in the log nor a snapshot)"),
            refusal(400, "limit_exceeded", "with state_hash: seq is more than --max-replay-events events past the nearest snapshot at or before it"),
        ]),
    route(Get, "/v1/replication", "replication_status", "On a leader: each follower's confirmed sequence number and lag", Read)
        .gives(200, Body::Json(schema::<ReplicationStatus>)),
    route(Get, "/v1/log", "read_log", "Retained log entries with their chain hashes, for replication, audits and replay", Read)
        .query(schema::<LogQuery>)
        .gives(200, Body::Json(schema::<LogPage>)),
    route(Get, "/v1/role", "get_role", "The node's role, epoch, leader and sequence number", Read)
        .gives(200, Body::Json(schema::<RoleInfo>)),
    route(Put, "/v1/role", "set_role", "Give the node a role with a higher epoch (the same epoch repeats the current assignment; a lower one is refused with 409)", Write)
        .takes(Body::Json(schema::<SetRole>))
        .gives(200, Body::Json(schema::<RoleInfo>))
        .refuses(&[refusal(409, "stale_epoch", "the epoch is below the highest the node has seen, or equal to its assignment's with another role or leader")]),
    route(Post, "/v1/snapshots", "create_snapshot", "Take a snapshot now", Write)
        .gives(201, Body::Json(schema::<SnapshotInfo>)),
    route(Get, "/v1/snapshots", "list_snapshots", "List snapshots", Read)
        .gives(200, Body::Json(schema::<SnapshotList>)),
    route(Get, "/v1/snapshots/{id}", "download_snapshot", "Download a snapshot file (it holds what the log gives a read key)", Read)
        .gives(200, Body::Bytes)
        .refuses(&[refusal(404, "not_found", "the node retains no snapshot at that sequence number")]),
    route(Post, "/v1/snapshots/restore", "restore_snapshot", "Replace the whole state with an uploaded snapshot file", Write)
        .takes(Body::Bytes)
        .gives(200, Body::Json(schema::<Restored>))
        .refuses(&[
            refusal(400, "invalid_snapshot", "the file is not a snapshot that verifies (magic, version, checksum, hashes)"),
            refusal(413, "payload_too_large", "the file is larger than 8 GiB"),
        ]),
    route(Post, "/v1/backups", "create_backup", "Take a snapshot and upload it to the backup destination now (on the leader)", Write)
        .gives(201, Body::Json(schema::<BackupInfo>))
        .refuses(&[
            refusal(409, "backup_not_configured", "the node was started without --backup-to"),
            refusal(502, "backup_failed", "the destination refused or failed the upload (unreachable, credentials refused)"),
        ]),
    route(Get, "/v1/backups", "list_backups", "The backup destination's snapshots, how far a restore reaches, and log shipping", Read)
        .gives(200, Body::Json(schema::<BackupList>))
        .refuses(&[
            refusal(409, "backup_not_configured", "the node was started without --backup-to"),
            refusal(502, "backup_failed", "the destination could not be listed"),
        ]),
    route(Get, "/healthz", "healthz", "Liveness: the process answers", Public)
        .gives(200, Body::Text),
    route(Get, "/readyz", "readyz", "Readiness: recovered and not failed (503 with the reason otherwise)", Public)
        .gives(200, Body::Text),
    route(Get, "/metrics", "metrics", "Prometheus metrics", Public)
        .gives(200, Body::Text),
    route(Get, "/openapi.json", "openapi", "This description", Public)
        .gives(200, Body::Json(schema::<serde_json::Value>)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_unique_and_paths_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for r in ROUTES {
            assert!(seen.insert(r.operation), "{} twice", r.operation);
            assert!(r.path.starts_with('/'), "{}", r.path);
            for p in r.path_params() {
                assert!(
                    matches!(p, "name" | "id" | "field"),
                    "{}: parameter {p}",
                    r.path
                );
            }
        }
        let mut pairs = std::collections::BTreeSet::new();
        for r in ROUTES {
            assert!(
                pairs.insert((r.method.name(), r.path)),
                "{} {} twice",
                r.method.name(),
                r.path
            );
        }
    }
}
