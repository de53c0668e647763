//! # valori-api
//!
//! The one schema of Valori's HTTP API: every request and response body ([`wire`]), the route
//! table ([`routes::ROUTES`]) and the OpenAPI document generated from both
//! ([`openapi::document`]). The node serves with these types, its followers read their
//! leader with them, the Python client and the operator speak them; none of those defines a body
//! of its own. The crate has no I/O and no server runtime.
//!
//! Conventions of the API: bodies are JSON; vectors are arrays of numbers converted exactly to
//! Q16.16 (a component that is not finite or out of range is refused); metadata, node
//! properties and log events are base64 strings; hashes are 64 lowercase hex digits; errors are
//! [`wire::ErrorBody`] with 4xx for the caller's mistakes and 5xx for the server's.

pub mod limits;
pub mod memory;
pub mod openapi;
pub mod routes;
pub mod wire;

pub use memory::{
    BatchHits, Count, Counted, DeletePayloadKeys, DeleteRecords, Deleted, GetRecords, Include,
    MemoryRecord, Missing, PayloadIndex, PayloadIndexes, Records, Scroll, ScrollPage, SearchBatch,
    SearchBatchResults, SetPayload, Updated, Upsert, UpsertRecord, Upserted,
};
pub use routes::{Access, Route, ROUTES};
pub use wire::*;

/// The request headers that may carry an API key, in the order they are consulted:
/// `Authorization: Bearer <key>`, then `x-api-key: <key>`, then `api-key: <key>` (as Qdrant's
/// clients send it).
pub const KEY_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// The header a follower names itself with when it reads its leader's log.
pub const FOLLOWER_HEADER: &str = "x-valori-follower";
/// The header in which a follower tells the node it reads from the highest epoch it has seen:
/// a leader that learns of a higher epoch than its own is fenced.
pub const EPOCH_HEADER: &str = "x-valori-epoch";
/// The header in which a follower states its chain hash (hex) at the sequence number before
/// the `from` it asks for: its proof that it holds the leader's history up to there, which a
/// synchronous write counts as a confirmation.
pub const CHAIN_HEADER: &str = "x-valori-chain";

/// The header in which an arbiter names itself when it raises a node's epoch (`GET /v1/role`
/// naming an epoch) or gives it a role (`PUT /v1/role`): the node refuses an epoch another
/// arbiter claimed there (409 `epoch_claimed`), so two arbiters that chose the same epoch at
/// once cannot both act with it. The operator's replicas share one name (its Lease and the
/// cluster's status already order them); each run of the one-shot `failover` command has its
/// own.
pub const ARBITER_HEADER: &str = "x-valori-arbiter";

/// The API key a request presents, given a lookup of its headers by lower-case name: the
/// first of `Authorization: Bearer <key>`, `x-api-key` and `api-key` that is present. An
/// `Authorization` header of another scheme (say, a proxy's `Basic`) is passed over, not taken
/// for a key.
pub fn presented_key<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    if let Some(key) = header(KEY_HEADERS[0]).and_then(|v| v.strip_prefix("Bearer ")) {
        return Some(key.trim());
    }
    KEY_HEADERS[1..]
        .iter()
        .find_map(|h| header(h).map(str::trim))
}

#[cfg(test)]
mod tests {
    use super::presented_key;

    fn check(headers: &[(&str, &str)], expected: Option<&str>) {
        let got = presented_key(|name| headers.iter().find(|(h, _)| *h == name).map(|(_, v)| *v));
        assert_eq!(got, expected, "{headers:?}");
    }

    #[test]
    fn keys_are_read_from_every_header_in_order() {
        check(&[], None);
        check(&[("authorization", "Bearer k1")], Some("k1"));
        check(&[("authorization", "Bearer  k1 ")], Some("k1"));
        check(&[("x-api-key", "k2")], Some("k2"));
        check(&[("api-key", "k3")], Some("k3"));
        check(
            &[
                ("authorization", "Bearer k1"),
                ("x-api-key", "k2"),
                ("api-key", "k3"),
            ],
            Some("k1"),
        );
        check(&[("x-api-key", "k2"), ("api-key", "k3")], Some("k2"));
        // Another scheme is not a key: the other headers are consulted.
        check(
            &[("authorization", "Basic dXNlcg=="), ("x-api-key", "k2")],
            Some("k2"),
        );
        check(&[("authorization", "Basic dXNlcg==")], None);
        check(&[("authorization", "bearer k1")], None);
    }
}
