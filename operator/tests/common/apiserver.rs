//! A mocked Kubernetes API server (the sanctioned mock: this machine has no apiserver), in the
//! `ApiServerVerifier` pattern of kube-rs's controller-rs: the operator's real `kube::Client`
//! talks to a `tower_test` mock service, and a task here answers every request it receives.
//! Instead of a fixed script of expected requests it keeps the objects (get, list with label
//! selectors, create, server-side apply, merge patch, replace with resourceVersion, delete), so
//! that scenarios can run many reconcile passes; and it records every request, so that tests
//! verify what the operator asked for and in which order.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// One request the operator made.
#[derive(Clone, Debug)]
pub struct Call {
    /// `GET`, `POST`, `PATCH`, `PUT`, `DELETE`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The content type of the body.
    pub content_type: String,
    /// The body (JSON), `null` when none.
    pub body: Value,
    /// Whether it created the object (a server-side apply of an object that did not exist,
    /// which the apiserver authorizes as `create` too).
    pub created: bool,
}

impl Call {
    /// The RBAC (group, resource, verbs) this request needs.
    pub fn permissions(&self) -> Vec<(String, String, String)> {
        let segs: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let (group, base) = if segs[0] == "api" {
            (String::new(), 3)
        } else {
            (segs[1].to_string(), 4)
        };
        // Namespaced paths: .../namespaces/{ns}/{resource}[/{name}[/{sub}]]; cluster-scoped
        // ones: .../{resource}[/{name}[/{sub}]].
        let rest = if segs.get(base - 1) == Some(&"namespaces") {
            &segs[base + 1..]
        } else {
            &segs[base - 1..]
        };
        let mut resource = rest[0].to_string();
        if let Some(sub) = rest.get(2) {
            resource = format!("{resource}/{sub}");
        }
        let watch = self.query.contains("watch=true");
        let verbs: Vec<&str> = match (self.method.as_str(), rest.len() > 1) {
            ("GET", true) => vec!["get"],
            ("GET", false) if watch => vec!["watch"],
            ("GET", false) => vec!["list"],
            ("POST", _) => vec!["create"],
            ("PATCH", _) if self.created => vec!["create", "patch"],
            ("PATCH", _) => vec!["patch"],
            ("PUT", _) => vec!["update"],
            ("DELETE", _) => vec!["delete"],
            (m, _) => vec![m],
        };
        verbs
            .into_iter()
            .map(|v| (group.clone(), resource.clone(), v.to_string()))
            .collect()
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    version: u64,
}

/// The mocked API server.
#[derive(Clone, Default)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        let v = v.trim_start_matches('=');
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn decode(q: &str) -> String {
    let mut out = Vec::new();
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&q[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| decode(v))
}

/// Splits a path into (collection, name, subresource): `/api/v1/namespaces/ns/pods/p/status`
/// is (`/api/v1/namespaces/ns/pods`, `p`, `status`).
fn parse(path: &str) -> (String, Option<String>, Option<String>) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let namespaced = |i: usize| segs.get(i) == Some(&"namespaces");
    let base = match (segs[0] == "api", namespaced(2), namespaced(3)) {
        (true, true, _) => 5,
        (true, false, _) => 3,
        (false, _, true) => 6,
        (false, _, false) => 4,
    };
    let collection = format!("/{}", segs[..base.min(segs.len())].join("/"));
    (
        collection,
        segs.get(base).map(|s| s.to_string()),
        segs.get(base + 1).map(|s| s.to_string()),
    )
}

impl ApiServer {
    /// A server and a client of it.
    pub fn start() -> (ApiServer, Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = ApiServer::default();
        let s = server.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("the client sends JSON")
                };
                let call = Call {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or("").to_string(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                    body,
                    created: false,
                };
                let (code, reply) = s.answer(call);
                send.send_response(
                    Response::builder()
                        .status(StatusCode::from_u16(code).unwrap())
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            }
        });
        (server, Client::new(service, "default"))
    }

    fn answer(&self, mut call: Call) -> (u16, Value) {
        let mut st = self.state.lock().unwrap();
        let (collection, name, _) = parse(&call.path);
        call.created = call.method == "PATCH"
            && call.content_type.starts_with("application/apply-patch")
            && name.is_some_and(|n| !st.objects.contains_key(&format!("{collection}/{n}")));
        st.calls.push(call.clone());
        let call = &call;
        st.version += 1;
        let version = st.version.to_string();
        let (collection, name, sub) = parse(&call.path);
        let key = name.as_ref().map(|n| format!("{collection}/{n}"));
        match (call.method.as_str(), key) {
            ("GET", None) => {
                let selector = query_param(&call.query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| {
                        k.strip_prefix(&format!("{collection}/"))
                            .is_some_and(|rest| !rest.contains('/'))
                    })
                    .map(|(_, v)| v.clone())
                    .filter(|v| labels_match(v, &selector))
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": version}, "items": items}),
                )
            }
            ("GET", Some(k)) => match st.objects.get(&k) {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound", format!("{k} not found")),
            },
            ("POST", None) => {
                let mut obj = call.body.clone();
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                let k = format!("{collection}/{name}");
                if st.objects.contains_key(&k) {
                    return status(409, "AlreadyExists", format!("{k} exists"));
                }
                stamp(&mut obj, &version, None);
                st.objects.insert(k, obj.clone());
                (201, obj)
            }
            ("PATCH", Some(k)) => {
                let existing = st.objects.get(&k).cloned();
                let apply = call.content_type.starts_with("application/apply-patch");
                // A resourceVersion in an applied object is a precondition, as the apiserver
                // treats it: the object must not have changed since it was read.
                if let (true, Some(old), Some(want)) = (
                    apply,
                    existing.as_ref(),
                    call.body["metadata"]["resourceVersion"].as_str(),
                ) {
                    if old["metadata"]["resourceVersion"].as_str() != Some(want) {
                        return status(409, "Conflict", format!("{k} was changed"));
                    }
                }
                let obj = match (existing, apply, sub.as_deref()) {
                    (None, true, None) => {
                        let mut o = call.body.clone();
                        stamp(&mut o, &version, None);
                        o
                    }
                    (None, _, _) => return status(404, "NotFound", format!("{k} not found")),
                    // Server-side apply by the one field manager: what it applies replaces
                    // what it applied before (fields it leaves out are removed); the status
                    // and the server's metadata stay.
                    (Some(old), true, None) => {
                        // As the apiserver: a StatefulSet's spec may change only in some fields.
                        if collection.ends_with("/statefulsets") {
                            let fixed = |o: &Value| {
                                let mut spec = o["spec"].clone();
                                if let Some(m) = spec.as_object_mut() {
                                    for f in [
                                        "replicas",
                                        "ordinals",
                                        "template",
                                        "updateStrategy",
                                        "persistentVolumeClaimRetentionPolicy",
                                        "minReadySeconds",
                                    ] {
                                        m.remove(f);
                                    }
                                }
                                spec
                            };
                            if fixed(&old) != fixed(&call.body) {
                                return status(
                                    422,
                                    "Invalid",
                                    format!(
                                        "{k} is invalid: spec: Forbidden: updates to statefulset \
                                         spec for fields other than 'replicas', 'ordinals', \
                                         'template', 'updateStrategy', \
                                         'persistentVolumeClaimRetentionPolicy' and \
                                         'minReadySeconds' are forbidden"
                                    ),
                                );
                            }
                        }
                        let mut o = call.body.clone();
                        for f in ["status"] {
                            if let Some(v) = old.get(f) {
                                o[f] = v.clone();
                            }
                        }
                        let spec_changed = old.get("spec") != o.get("spec");
                        stamp(&mut o, &version, Some((&old, spec_changed)));
                        o
                    }
                    (Some(_), true, Some(other)) if other != "status" => {
                        return status(404, "NotFound", format!("no subresource {other}"))
                    }
                    (Some(mut old), true, Some(_)) => {
                        old["status"] = call.body["status"].clone();
                        old["metadata"]["resourceVersion"] = json!(version);
                        old
                    }
                    (Some(mut old), false, _) => {
                        merge(&mut old, &call.body);
                        old["metadata"]["resourceVersion"] = json!(version);
                        old
                    }
                };
                st.objects.insert(k, obj.clone());
                (200, obj)
            }
            ("PUT", Some(k)) => {
                let Some(old) = st.objects.get(&k).cloned() else {
                    return status(404, "NotFound", format!("{k} not found"));
                };
                if call.body["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", format!("{k} was changed"));
                }
                let mut o = call.body.clone();
                stamp(&mut o, &version, Some((&old, false)));
                st.objects.insert(k, o.clone());
                (200, o)
            }
            ("DELETE", Some(k)) => match st.objects.remove(&k) {
                Some(o) => (200, o),
                None => status(404, "NotFound", format!("{k} not found")),
            },
            _ => status(
                405,
                "MethodNotAllowed",
                format!("{} {}", call.method, call.path),
            ),
        }
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The object at `path` (`/api/v1/namespaces/ns/pods/p`).
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Puts an object at `path` as a client (or a controller of the cluster) would.
    pub fn put(&self, path: &str, mut obj: Value) {
        let mut st = self.state.lock().unwrap();
        st.version += 1;
        let v = st.version.to_string();
        let old = st.objects.get(path).cloned();
        let changed = old.as_ref().map(|o| o.get("spec") != obj.get("spec"));
        stamp(&mut obj, &v, old.as_ref().zip(changed));
        st.objects.insert(path.to_string(), obj);
    }

    /// Changes the object at `path` with a merge patch.
    pub fn patch(&self, path: &str, patch: Value) {
        let mut obj = self.get(path).expect("the object exists");
        merge(&mut obj, &patch);
        self.put(path, obj);
    }

    /// Removes the object at `path`.
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.remove(path)
    }

    /// The objects under collection `prefix`.
    pub fn list(&self, prefix: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(&format!("{prefix}/"))
                    .is_some_and(|r| !r.contains('/'))
            })
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// As the API server stores a Secret: `stringData` folded into `data`, base64-encoded.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine as _;
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        for (k, v) in sd {
            let b64 = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""));
            obj["data"][k] = json!(b64);
        }
    }
}

/// Sets what the server owns in an object's metadata: uid, creation time, resourceVersion,
/// and generation (bumped when the spec changed).
fn stamp(obj: &mut Value, version: &str, old: Option<(&Value, bool)>) {
    fold_string_data(obj);
    let m = &mut obj["metadata"];
    match old {
        None => {
            m["uid"] = json!(format!("uid-{version}"));
            m["creationTimestamp"] = json!("2026-11-28T00:00:00Z");
            m["generation"] = json!(1);
        }
        Some((old, changed)) => {
            for f in ["uid", "creationTimestamp"] {
                m[f] = old["metadata"][f].clone();
            }
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            m["generation"] = json!(if changed { g + 1 } else { g });
        }
    }
    m["resourceVersion"] = json!(version);
}
