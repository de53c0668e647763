//! The gRPC API (tonic), generated from `proto/valori.proto`. Each call translates to the same
//! [`Service`] operation as its HTTP route ([`HTTP_ROUTES`] pairs them, and a test holds the
//! pairing), so both give identical results; errors carry the matching gRPC status code and
//! the HTTP API's error code in the `valori-code` metadata. The key a call needs is the access
//! its paired route declares in [`valori_api::ROUTES`]: [`Authorized`] asks the service before
//! any message is decoded, as the HTTP router's middleware does.

mod convert;
mod memory;
mod service;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use tonic::codegen::{http, BoxFuture, Context, Poll, Service as TowerService};
use tonic::server::NamedService;
use tonic::Status;
use valori_api as api;

use crate::error::NodeError;
use crate::service::Service;
pub use service::Grpc;

/// Generated protobuf types and service stubs.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("valori.v1");
}

use pb::valori_server::ValoriServer;

/// Every HTTP route (by its `valori_api::ROUTES` operation) and the gRPC method that does the
/// same, or why there is none. A test fails when a route or a method has no partner here, or
/// when two routes of one method declare different access.
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
    ("upsert", Ok("Upsert")),
    ("get_records", Ok("GetRecords")),
    ("scroll", Ok("Scroll")),
    ("count", Ok("Count")),
    ("delete_records", Ok("DeleteRecords")),
    ("set_payload", Ok("SetPayload")),
    ("delete_payload_keys", Ok("DeletePayloadKeys")),
    ("search_batch", Ok("SearchBatch")),
    ("list_payload_indexes", Ok("ListPayloadIndexes")),
    ("create_payload_index", Ok("CreatePayloadIndex")),
    ("drop_payload_index", Ok("DropPayloadIndex")),
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
    ("create_backup", Ok("CreateBackup")),
    ("list_backups", Ok("ListBackups")),
    ("healthz", Ok("Health")),
    ("readyz", Ok("Health")),
    ("metrics", Err("Prometheus scrapes metrics over HTTP")),
    (
        "openapi",
        Err("the proto file is the gRPC API's description"),
    ),
];

/// The access each gRPC method needs: its paired routes' declared access.
pub fn method_access() -> BTreeMap<&'static str, api::Access> {
    HTTP_ROUTES
        .iter()
        .filter_map(|(op, method)| {
            let method = method.ok()?;
            let route = api::ROUTES.iter().find(|r| r.operation == *op)?;
            Some((method, route.access))
        })
        .collect()
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let code = match e.status() {
            400 | 413 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::NotFound,
            409 if matches!(
                e,
                NodeError::StaleEpoch { .. } | NodeError::EpochClaimed { .. }
            ) =>
            {
                tonic::Code::FailedPrecondition
            }
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

/// The tonic server of `service`. No message above `max_message_bytes` (the HTTP body limit)
/// is decoded, and none before [`Authorized`] has let its call through.
pub fn server(service: Service, max_message_bytes: usize) -> Authorized<ValoriServer<Grpc>> {
    Authorized {
        inner: ValoriServer::new(Grpc::new(service.clone()))
            .max_decoding_message_size(max_message_bytes),
        service,
        methods: Arc::new(method_access()),
    }
}

/// Authorizes each call before the inner server sees it: the method's declared access against
/// the key in its metadata, decided by [`Service::authorize`]. What the key allows goes to the
/// method as a request extension; a refused call is answered with its status and costs the
/// node no decoding.
#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    service: Service,
    methods: Arc<BTreeMap<&'static str, api::Access>>,
}

impl<S: NamedService> NamedService for Authorized<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> TowerService<http::Request<B>> for Authorized<S>
where
    S: TowerService<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        // An unknown method is passed on to be answered `unimplemented`.
        if let Some(&needs) = self.methods.get(method) {
            let headers = req.headers();
            let key = api::presented_key(|n| headers.get(n).and_then(|v| v.to_str().ok()));
            match self.service.authorize(needs, key) {
                Ok(access) => {
                    req.extensions_mut().insert(access);
                }
                Err(e) => {
                    let refused = Status::from(e).into_http();
                    return Box::pin(async move { Ok(refused) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{method_access, HTTP_ROUTES};

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

        let proto = include_str!("../../proto/valori.proto");
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

    #[test]
    fn the_routes_of_one_method_declare_the_same_access() {
        let access = method_access();
        for (op, method) in HTTP_ROUTES {
            let Ok(method) = method else { continue };
            let route = valori_api::ROUTES
                .iter()
                .find(|r| r.operation == *op)
                .expect("paired with a route");
            assert_eq!(
                access[method], route.access,
                "{method} serves {op} and another route with different access"
            );
        }
    }
}
