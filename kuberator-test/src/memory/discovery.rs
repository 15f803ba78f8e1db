//! What `kubectl` needs beyond the resources: version, health, discovery, OpenAPI, and
//! server-side tables for `kubectl get`.

use std::collections::BTreeMap;

use http::Response;
use serde_json::Value;
use serde_json::json;

use super::Inner;
use super::body;
use super::body::ResponseBody;
use super::handler::json_response;
use super::resources;
use super::resources::ResourceType;

/// The Kubernetes version the in-memory server says it is.
pub(crate) const VERSION: (&str, &str) = ("1", "34");

/// Answers the paths that are not resources, or `None` for a resource path.
pub(crate) fn non_resource(inner: &Inner, path: &str, accept: &str) -> Option<Response<ResponseBody>> {
    let _ = accept;
    let path = path.trim_end_matches('/');
    let types = inner.state.lock().expect("state lock").types.clone();
    let response = match path {
        "/version" => json_response(
            200,
            &json!({
                "major": VERSION.0,
                "minor": VERSION.1,
                "gitVersion": format!("v{}.{}.0-kuberator-in-memory", VERSION.0, VERSION.1),
                "gitCommit": "",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "none",
                "compiler": "rustc",
                "platform": "linux/amd64",
            }),
        ),
        "/healthz" | "/livez" | "/readyz" => Response::builder()
            .status(200)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body::full(b"ok".to_vec()))
            .expect("a valid response"),
        "/api" => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        "/apis" => json_response(200, &group_list(&types)),
        "/openapi/v2" => json_response(
            200,
            &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.34.0"}, "paths": {}, "definitions": {}}),
        ),
        "/openapi/v3" => json_response(200, &openapi_root(&types)),
        _ => {
            if let Some(group_version) = path.strip_prefix("/openapi/v3/") {
                return Some(json_response(200, &openapi_document(&types, group_version)));
            }
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let (group, version) = match segments.as_slice() {
                ["api", version] => ("", *version),
                ["apis", group, version] => (*group, *version),
                ["apis", group] => {
                    let list = group_list(&types);
                    let found = list["groups"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|entry| entry["name"] == *group)
                        .cloned();
                    return Some(match found {
                        Some(mut entry) => {
                            entry["kind"] = json!("APIGroup");
                            entry["apiVersion"] = json!("v1");
                            json_response(200, &entry)
                        }
                        None => super::handler::page_not_found(),
                    });
                }
                _ => return None,
            };
            let served: Vec<&ResourceType> = types
                .iter()
                .filter(|resource| resource.group == group && resource.version == version)
                .collect();
            if served.is_empty() {
                return Some(super::handler::page_not_found());
            }
            let group_version = served[0].api_version();
            let entries: Vec<Value> =
                served.iter().flat_map(|resource| resources::discovery_entries(resource)).collect();
            json_response(
                200,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}),
            )
        }
    };
    Some(response)
}

fn group_list(types: &[ResourceType]) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for resource in types.iter().filter(|resource| !resource.group.is_empty()) {
        let versions = groups.entry(&resource.group).or_default();
        if !versions.contains(&resource.version.as_str()) {
            versions.push(&resource.version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| json!({"groupVersion": format!("{group}/{version}"), "version": version}))
                .collect();
            json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn openapi_root(types: &[ResourceType]) -> Value {
    let mut paths = serde_json::Map::new();
    for resource in types {
        let path = resource.group_version_path();
        paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}")}));
    }
    json!({"paths": paths})
}

/// A small OpenAPI v3 document for one group version: every resource's paths, with the
/// `fieldValidation` parameter that tells `kubectl` the server validates fields itself.
fn openapi_document(types: &[ResourceType], group_version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for resource in types {
        let prefix = resource.group_version_path();
        if prefix != group_version {
            continue;
        }
        let schema_name = format!(
            "{}.{}.{}",
            if resource.group.is_empty() { "core" } else { &resource.group },
            resource.version,
            resource.kind
        );
        let gvk = json!([{"group": resource.group, "version": resource.version, "kind": resource.kind}]);
        let mut schema = resource
            .schema
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        schema["x-kubernetes-group-version-kind"] = gvk.clone();
        schemas.insert(schema_name.clone(), schema);
        let reference = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}});
        let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let operation = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", resource.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk[0],
                "parameters": [field_validation],
                "requestBody": reference,
                "responses": {"200": reference},
            })
        };
        let namespace_part = if resource.namespaced { "/namespaces/{namespace}" } else { "" };
        paths.insert(
            format!("/{prefix}{namespace_part}/{}/{{name}}", resource.plural),
            json!({"get": operation("get"), "put": operation("put"), "patch": operation("patch"), "delete": operation("delete")}),
        );
        paths.insert(
            format!("/{prefix}{namespace_part}/{}", resource.plural),
            json!({"post": operation("post"), "get": operation("list")}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// `5s`, `3m`, `2h`, `4d`: how tables show ages.
fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<jiff::Timestamp>() else { return "<unknown>".into() };
    let seconds = (jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7200 => format!("{}m", seconds / 60),
        7200..172_800 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `[0]`, `[*]` and
/// `[?(@.key=="value")]`.
pub(crate) fn json_path(object: &Value, path: &str) -> Vec<Value> {
    let mut current = vec![object.clone()];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}').trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let field = &after[..end];
            current = current.iter().filter_map(|value| value.get(field).cloned()).collect();
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else { break };
            let inside = &after[..end];
            rest = &after[end + 1..];
            current = if inside == "*" {
                current.iter().flat_map(|value| value.as_array().cloned().unwrap_or_default()).collect()
            } else if let Ok(index) = inside.parse::<usize>() {
                current.iter().filter_map(|value| value.get(index).cloned()).collect()
            } else if let Some(filter) =
                inside.strip_prefix("?(@.").and_then(|filter| filter.strip_suffix(')'))
            {
                let (key, wanted) = filter.split_once("==").unwrap_or((filter, ""));
                let wanted = wanted.trim().trim_matches('"').trim_matches('\'');
                current
                    .iter()
                    .flat_map(|value| value.as_array().cloned().unwrap_or_default())
                    .filter(|item| item[key.trim()].as_str() == Some(wanted) || item[key.trim()] == wanted)
                    .collect()
            } else {
                Vec::new()
            };
        } else {
            break;
        }
    }
    current
}

/// A `meta.k8s.io/v1` Table of `objects`, as `kubectl get` asks for.
pub(crate) fn table(
    resource: &ResourceType,
    objects: &[Value],
    version: &str,
    include_object: bool,
) -> Value {
    let mut definitions = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let custom_columns = resource.custom && !resource.columns.is_empty();
    if custom_columns {
        for column in &resource.columns {
            definitions.push(json!({
                "name": column["name"],
                "type": column["type"],
                "format": column.get("format").cloned().unwrap_or(json!("")),
                "description": column.get("description").cloned().unwrap_or(json!("")),
                "priority": column.get("priority").cloned().unwrap_or(json!(0)),
            }));
        }
    } else {
        definitions.push(json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            if custom_columns {
                for column in &resource.columns {
                    let found = json_path(object, column["jsonPath"].as_str().unwrap_or_default());
                    let cell = match found.first() {
                        None => Value::Null,
                        Some(Value::String(text)) if column["type"] == "date" => json!(age(text)),
                        Some(value) => value.clone(),
                    };
                    cells.push(cell);
                }
            } else {
                cells.push(json!(age(object["metadata"]["creationTimestamp"].as_str().unwrap_or_default())));
            }
            let shown = if include_object {
                object.clone()
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
            };
            json!({"cells": cells, "object": shown})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": version},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}
