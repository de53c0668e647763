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
    json!({
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
    })
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
                "id" => json!({"type": "integer", "format": "uint64", "minimum": 0}),
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
    op["responses"] = json!({
        route.status.to_string(): success,
        "4XX": failure("the caller's mistake; nothing changed"),
        "5XX": failure("the server's trouble (503: failed, not ready or shutting down)"),
    });
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
}
