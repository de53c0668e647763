//! One way in: each route's declared access in `valori_api::ROUTES` is what a request gets,
//! over HTTP and gRPC alike, without a key, with the read-only key and with the read-write key;
//! and what a transport used to decide for itself (a follower's epoch on the role and log
//! routes) is decided once, the same on both.

mod common;

use common::Node;
use valori_api::{Access, ROUTES};
use valori_node::grpc::{pb, HTTP_ROUTES};

const WRITE_KEY: &str = "write-key";
const READ_KEY: &str = "read-key";

/// What a request presenting `key` to a route declaring `access` must get: `Some(code)` for a
/// refusal (401 `unauthorized`, 403 `forbidden`), `None` for "let through" (whatever the
/// operation then answers to an empty request).
fn expected(access: Access, key: Option<&str>) -> Option<&'static str> {
    match (access, key) {
        (Access::Public, _) => None,
        (_, None) => Some("unauthorized"),
        (Access::Write, Some(READ_KEY)) => Some("forbidden"),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_grants_what_it_declares_over_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &["--api-key", WRITE_KEY, "--read-api-key", READ_KEY],
    );
    valori_node::use_ring_for_tls();
    let http = reqwest::Client::new();
    let mut checked = 0;
    for route in ROUTES {
        let path = route
            .path
            .replace("{name}", "nothing_here")
            .replace("{id}", "12345");
        for key in [None, Some(READ_KEY), Some(WRITE_KEY)] {
            let method =
                reqwest::Method::from_bytes(route.method.name().to_uppercase().as_bytes()).unwrap();
            let mut req = http.request(method, format!("{}{path}", node.url));
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let what = format!(
                "HTTP {} {} with {key:?}: {status} {text}",
                route.method.name(),
                route.path
            );
            match expected(route.access, key) {
                Some(code) => {
                    let body: serde_json::Value = serde_json::from_str(&text).expect(&what);
                    assert_eq!(body["code"], code, "{what}");
                    assert_eq!(
                        status,
                        if code == "forbidden" { 403 } else { 401 },
                        "{what}"
                    );
                }
                None => assert!(!matches!(status, 401 | 403), "{what}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * 3);

    // gRPC: every method, called with an empty message (every request message decodes from
    // no bytes), answers as its paired routes declare.
    let channel = tonic::transport::Channel::from_shared(node.grpc_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for (operation, method) in HTTP_ROUTES {
        let Ok(method) = method else { continue };
        let access = ROUTES
            .iter()
            .find(|r| r.operation == *operation)
            .unwrap()
            .access;
        for key in [None, Some(READ_KEY), Some(WRITE_KEY)] {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.unwrap();
            let mut req = tonic::Request::new(());
            if let Some(k) = key {
                req.metadata_mut().insert("x-api-key", k.parse().unwrap());
            }
            let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!(
                "/valori.v1.Valori/{method}"
            ))
            .unwrap();
            let answer = grpc
                .unary::<(), (), _>(req, path, tonic_prost::ProstCodec::default())
                .await;
            let what = format!("gRPC {method} ({operation}) with {key:?}: {answer:?}");
            let refused = answer.as_ref().err().and_then(|s| match s.code() {
                tonic::Code::Unauthenticated => Some("unauthorized"),
                tonic::Code::PermissionDenied => Some("forbidden"),
                _ => None,
            });
            assert_eq!(refused, expected(access, key), "{what}");
            if let Some(code) = refused {
                let s = answer.unwrap_err();
                assert_eq!(
                    s.metadata()
                        .get("valori-code")
                        .and_then(|v| v.to_str().ok()),
                    Some(code),
                    "{what}"
                );
            }
        }
    }
}

/// A node checking a leader names the epoch it has seen; only a key that may write fences the
/// leader with it, over HTTP `GET /v1/role` and gRPC `GetRole` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_route_heeds_an_epoch_from_a_write_key_on_both_transports() {
    use pb::valori_client::ValoriClient;
    for transport in ["http", "grpc"] {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(
            dir.path(),
            &["--api-key", WRITE_KEY, "--read-api-key", READ_KEY],
        );
        let role_with = |key: &'static str, epoch: &'static str| {
            let node_url = node.url.clone();
            let grpc_url = node.grpc_url.clone();
            async move {
                if transport == "http" {
                    valori_node::use_ring_for_tls();
                    let resp = reqwest::Client::new()
                        .get(format!("{node_url}/v1/role"))
                        .header("x-api-key", key)
                        .header(valori_api::EPOCH_HEADER, epoch)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let body: serde_json::Value = resp.json().await.unwrap();
                    (
                        status,
                        body["seen_epoch"].as_u64(),
                        body["code"].as_str().map(String::from),
                    )
                } else {
                    let mut c = ValoriClient::connect(grpc_url).await.unwrap();
                    let mut req = tonic::Request::new(pb::Empty {});
                    req.metadata_mut().insert("x-api-key", key.parse().unwrap());
                    req.metadata_mut()
                        .insert(valori_api::EPOCH_HEADER, epoch.parse().unwrap());
                    match c.get_role(req).await {
                        Ok(r) => (200, Some(r.into_inner().seen_epoch), None),
                        Err(s) => (
                            if s.code() == tonic::Code::InvalidArgument {
                                400
                            } else {
                                500
                            },
                            None,
                            s.metadata()
                                .get("valori-code")
                                .and_then(|v| v.to_str().ok())
                                .map(String::from),
                        ),
                    }
                }
            }
        };
        // A read-only key names a high epoch: heard, not heeded.
        assert_eq!(
            role_with(READ_KEY, "7").await,
            (200, Some(1), None),
            "{transport}"
        );
        // Not a number: refused on both transports, whoever sends it.
        assert_eq!(
            role_with(READ_KEY, "seven").await,
            (400, None, Some("bad_request".into())),
            "{transport}"
        );
        // The write key's epoch fences the leader.
        assert_eq!(
            role_with(WRITE_KEY, "7").await,
            (200, Some(7), None),
            "{transport}"
        );
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{}/v1/collections", node.url))
            .header("x-api-key", WRITE_KEY)
            .json(&serde_json::json!({"name": "v", "dimension": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503, "{transport}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "fenced", "{transport}: {v}");
        let ready = http
            .get(format!("{}/readyz", node.url))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status().as_u16(), 503, "{transport}");
    }
}

/// A follower's epoch that is not a number is refused on the log route, over HTTP and gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_epoch_on_the_log_route_is_refused_on_both_transports() {
    use pb::valori_client::ValoriClient;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    valori_node::use_ring_for_tls();
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/log?from=1", node.url))
        .header(valori_api::FOLLOWER_HEADER, "f1")
        .header(valori_api::EPOCH_HEADER, "1e9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad_request", "{body}");

    let mut c = ValoriClient::connect(node.grpc_url.clone()).await.unwrap();
    let mut req = tonic::Request::new(pb::LogRequest {
        from: 1,
        limit: None,
    });
    req.metadata_mut()
        .insert(valori_api::FOLLOWER_HEADER, "f1".parse().unwrap());
    req.metadata_mut()
        .insert(valori_api::EPOCH_HEADER, "1e9".parse().unwrap());
    let e = c.read_log(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(
        e.metadata()
            .get("valori-code")
            .and_then(|v| v.to_str().ok()),
        Some("bad_request")
    );
    // Nobody was recorded as a follower.
    let status: serde_json::Value = reqwest::get(format!("{}/v1/replication", node.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["followers"], serde_json::json!([]), "{status}");
}
