//! The OpenAPI 3.1 document of the API, generated from [`ROUTES`] and the wire types' JSON
//! schemas (draft 2020-12, OpenAPI 3.1's own dialect), so it cannot drift from what the node
//! serves.

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::routes::{Access, Body, Route, ROUTES};
use crate::wire::ErrorBody;

const SCHEMAS: &str = "#/components/schemas";

/// The document, stating `version` as the API's version.
pub fn document(version: &str) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = SCHEMAS.into();
            s.meta_schema = None;
        })
        .into_generator();
    let error = generator.subschema_for::<ErrorBody>();
    let mut paths = Map::new();
    for route in ROUTES {
        let op = operation(route, &mut generator, &error);
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        item[route.method.name()] = op;
    }
    let schemas: Map<String, Value> = generator.take_definitions(true);
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Valori",
            "version": version,
            "description": "A deterministic vector database and knowledge graph. Every write \
                is an event in an ordered log; the same log gives the same state hash on every \
                machine. Writes are answered once their event is durable. Errors are \
                {code, message} with 4xx for the caller's mistakes and 5xx for the server's. \
                When the node has API keys configured, reads need the read-only or the \
                read-write key and writes the read-write key, presented as \
                `Authorization: Bearer <key>`, `x-api-key` or `api-key`.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer <key>"},
                "x_api_key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "api_key": {"type": "apiKey", "in": "header", "name": "api-key"},
            },
        },
    });
    bound_integers(&mut doc);
    doc
}

/// The magnitude no distance reaches: 2^76 (exact as a double).
const DISTANCE_BOUND: f64 = 75_557_863_725_914_323_419_136.0;

/// States every integer's range as the node parses it: a `format` of `uint64` (or another
/// width) says what the server's type holds, but only `minimum` and `maximum` bind a client
/// (or a generator of test data) to it. Without them a schema-valid sequence number beyond
/// u64 would be refused.
fn bound_integers(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let is_integer = |t: Option<&Value>| match t {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if is_integer(o.get("type")) {
                let range: Option<(Value, Value)> = match o.get("format").and_then(Value::as_str) {
                    Some("uint8") => Some((0.into(), u8::MAX.into())),
                    Some("uint16") => Some((0.into(), u16::MAX.into())),
                    Some("uint32") => Some((0.into(), u32::MAX.into())),
                    Some("uint64") => Some((0.into(), u64::MAX.into())),
                    Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                    Some("int64") => Some((i64::MIN.into(), i64::MAX.into())),
                    // A distance: exact sums of at most 4096 products of Q16.16 raw
                    // values, never beyond 2^76 in magnitude (the kernel's `distance`).
                    Some("int128") => Some(((-DISTANCE_BOUND).into(), DISTANCE_BOUND.into())),
                    _ => None,
                };
                if let Some((min, max)) = range {
                    o.entry("minimum").or_insert(min);
                    o.entry("maximum").or_insert(max);
                }
            }
            for child in o.values_mut() {
                bound_integers(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn operation(
    route: &Route,
    generator: &mut schemars::SchemaGenerator,
    error: &schemars::Schema,
) -> Value {
    let mut op = json!({
        "operationId": route.operation,
        "summary": route.summary,
    });
    let mut params: Vec<Value> = route
        .path_params()
        .map(|p| {
            let schema = match p {
                "id" => json!({"type": "integer", "format": "uint64", "minimum": 0, "maximum": u64::MAX}),
                _ => json!({"type": "string"}),
            };
            json!({"name": p, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    if let Some(query) = route.query {
        let reference = query(generator);
        let name = reference
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(SCHEMAS).map(|n| n.trim_start_matches('/')))
            .expect("a query is a named struct")
            .to_string();
        let definition = generator.definitions()[&name].clone();
        let required: Vec<&str> = definition
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = definition.get("properties").and_then(Value::as_object) {
            for (prop, schema) in props {
                let mut schema = not_null(schema.clone());
                let description = schema.as_object_mut().and_then(|s| s.remove("description"));
                let mut p = json!({
                    "name": prop, "in": "query",
                    "required": required.contains(&prop.as_str()),
                    "schema": schema,
                });
                if let Some(d) = description {
                    p["description"] = d;
                }
                params.push(p);
            }
        }
    }
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    match route.request {
        Body::None => {}
        Body::Json(schema) => {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema(generator)}},
            })
        }
        Body::Bytes => {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/octet-stream": {"schema": {}}},
            })
        }
        Body::Text => unreachable!("no route takes plain text"),
    }
    let success = match route.response {
        Body::None => json!({"description": "done"}),
        Body::Json(schema) => json!({
            "description": "success",
            "content": {"application/json": {"schema": schema(generator)}},
        }),
        Body::Bytes => json!({
            "description": "the file",
            "content": {"application/octet-stream": {"schema": {}}},
        }),
        Body::Text => json!({
            "description": "success",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }),
    };
    let failure = |what: &str| {
        json!({
            "description": what,
            "content": {"application/json": {"schema": error}},
        })
    };
    let mut responses = json!({
        route.status.to_string(): success,
        "4XX": failure("the caller's mistake; nothing changed"),
        "5XX": failure("the server's trouble (503: failed, fenced, busy, not ready or shutting down)"),
    });
    // Refusals a schema-valid request can still get, by status.
    let mut refusals: Vec<(u16, String)> = route
        .refusals
        .iter()
        .map(|r| (r.status, format!("`{}`: {}", r.code, r.when)))
        .collect();
    if route.access == Access::Write {
        refusals.push((
            403,
            "`forbidden`: a read-only key; `read_only_follower`: the node is a follower (the message names its leader)".into(),
        ));
    }
    let mut by_status: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for (status, why) in refusals {
        by_status.entry(status).or_default().push(why);
    }
    for (status, whys) in by_status {
        responses[status.to_string()] = failure(&format!("{}; nothing changed", whys.join("; ")));
    }
    op["responses"] = responses;
    op["security"] = match route.access {
        Access::Public => json!([]),
        // `{}`: a node without configured keys takes requests without one.
        Access::Read | Access::Write => {
            json!([{"bearer": []}, {"x_api_key": []}, {"api_key": []}, {}])
        }
    };
    op["x-valori-access"] = json!(match route.access {
        Access::Public => "public",
        Access::Read => "read",
        Access::Write => "write",
    });
    op
}

/// A query parameter's schema without the `null` an `Option` adds: a query string can only
/// leave a parameter out.
fn not_null(mut schema: Value) -> Value {
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            schema["type"] = types[0].clone();
        }
    }
    if let Some(Value::Array(any)) = schema.get("anyOf") {
        let rest: Vec<&Value> = any.iter().filter(|s| s["type"] != "null").collect();
        if let [only] = rest[..] {
            let mut out = only.clone();
            if let Some(d) = schema.get("description") {
                out["description"] = d.clone();
            }
            return out;
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").expect("local ref");
                &doc["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    #[test]
    fn every_route_is_described_with_types() {
        let doc = document("test");
        assert_eq!(doc["openapi"], "3.1.0");
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.name()];
            assert_eq!(
                op["operationId"],
                r.operation,
                "{} {}",
                r.method.name(),
                r.path
            );
            for p in r.path_params() {
                let param = op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == p)
                    .unwrap_or_else(|| panic!("{}: no parameter {p}", r.path));
                let ty = &param["schema"]["type"];
                assert_eq!(
                    ty,
                    if p == "id" { "integer" } else { "string" },
                    "{}",
                    r.path
                );
            }
            let ok = &op["responses"][r.status.to_string()];
            assert!(ok.is_object(), "{}: no {} response", r.path, r.status);
            for class in ["4XX", "5XX"] {
                let e = &op["responses"][class]["content"]["application/json"]["schema"];
                let e = resolve(&doc, e);
                assert_eq!(e["required"], json!(["code", "message"]), "{}", r.path);
            }
            if let Body::Json(_) = r.response {
                let s = &ok["content"]["application/json"]["schema"];
                assert!(
                    s.get("$ref").is_some() || r.path == "/openapi.json",
                    "{}",
                    r.path
                );
            }
        }
    }

    #[test]
    fn query_parameters_are_typed() {
        let doc = document("test");
        let log = &doc["paths"]["/v1/log"]["get"]["parameters"];
        let limit = log
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["type"], "integer");
        assert_eq!(limit["schema"]["maximum"], 10_000);
        assert_eq!(limit["required"], false);
        let neighbors = &doc["paths"]["/v1/graph/nodes/{id}/neighbors"]["get"]["parameters"];
        let direction = neighbors
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "direction")
            .unwrap();
        let s = direction["schema"].to_string();
        assert!(s.contains("Direction"), "{s}");
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let doc = document("test");
        let s = &doc["components"]["schemas"]["SearchRequest"];
        assert_eq!(s["additionalProperties"], false, "{s}");
        assert_eq!(s["properties"]["k"]["maximum"], 10_000);
        assert_eq!(s["required"], json!(["vector"]));
    }

    #[test]
    fn every_integer_is_bounded_as_the_node_parses_it() {
        let doc = document("test");
        let mut unbounded = Vec::new();
        fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
            match v {
                Value::Object(o) => {
                    let integer = o.get("type").is_some_and(|t| {
                        t == "integer"
                            || t.as_array().is_some_and(|a| a.contains(&json!("integer")))
                    });
                    if integer && (o.get("minimum").is_none() || o.get("maximum").is_none()) {
                        out.push(at.to_string());
                    }
                    for (k, c) in o {
                        walk(c, &format!("{at}/{k}"), out);
                    }
                }
                Value::Array(a) => {
                    for (i, c) in a.iter().enumerate() {
                        walk(c, &format!("{at}/{i}"), out);
                    }
                }
                _ => {}
            }
        }
        walk(&doc, "", &mut unbounded);
        assert_eq!(unbounded, Vec::<String>::new());
        let seq = &doc["components"]["schemas"]["StateQuery"]["properties"]["seq"];
        assert_eq!(seq["maximum"], json!(u64::MAX), "{seq}");
        let id = &doc["paths"]["/v1/graph/nodes/{id}"]["get"]["parameters"][0]["schema"];
        assert_eq!(id["maximum"], json!(u64::MAX), "{id}");
    }

    #[test]
    fn state_dependent_refusals_are_documented_on_their_operations() {
        let doc = document("test");
        let described = |path: &str, method: &str, status: &str| {
            doc["paths"][path][method]["responses"][status]["description"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let insert = described("/v1/collections/{name}/records", "post", "400");
        assert!(insert.contains("dimension_mismatch"), "{insert}");
        let follower = described("/v1/collections/{name}/records", "post", "403");
        assert!(follower.contains("read_only_follower"), "{follower}");
        let restore = described("/v1/snapshots/restore", "post", "400");
        assert!(restore.contains("invalid_snapshot"), "{restore}");
        let role = described("/v1/role", "put", "409");
        assert!(role.contains("stale_epoch"), "{role}");
        // A read route documents no follower refusal.
        assert_eq!(described("/v1/collections", "get", "403"), "");
        // Every documented refusal has the error body.
        for r in ROUTES {
            for refusal in r.refusals {
                let schema = &doc["paths"][r.path][r.method.name()]["responses"]
                    [refusal.status.to_string()]["content"]["application/json"]["schema"];
                assert_eq!(
                    resolve(&doc, schema)["required"],
                    json!(["code", "message"])
                );
            }
        }
    }

    #[test]
    fn a_role_request_states_that_a_follower_names_its_leader() {
        let doc = document("test");
        let s = &doc["components"]["schemas"]["SetRole"];
        assert_eq!(s["if"]["properties"]["role"]["const"], "follower", "{s}");
        assert_eq!(s["then"]["required"], json!(["leader_url"]), "{s}");
        assert_eq!(s["else"]["properties"]["leader_url"]["type"], "null", "{s}");
    }
}
