//! Requests: the REST paths of the Kubernetes API, each verb with the real server's rules.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http::Request;
use http::Response;
use http::StatusCode;
use http_body_util::BodyExt as _;
use serde_json::Value;
use serde_json::json;

use super::Inner;
use super::Verb;
use super::body;
use super::body::ResponseBody;
use super::discovery;
use super::patch;
use super::patch::Part;
use super::patch::Writer;
use super::protobuf;
use super::resources;
use super::resources::ResourceType;
use super::schema;
use super::selectors::FieldSelector;
use super::selectors::LabelSelector;
use super::selectors::Scope;
use super::status;
use super::status::ApiError;
use super::store;
use super::store::Key;
use super::store::State;
use super::store::Watcher;
use super::store::key_of;
use super::store::present;

/// The query string, decoded.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(text: Option<&str>) -> Self {
        let decode = |part: &str| -> String {
            let bytes = part.replace('+', " ").into_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut index = 0;
            while index < bytes.len() {
                if bytes[index] == b'%'
                    && index + 2 < bytes.len()
                    && let Ok(byte) =
                        u8::from_str_radix(&String::from_utf8_lossy(&bytes[index + 1..index + 3]), 16)
                {
                    out.push(byte);
                    index += 3;
                    continue;
                }
                out.push(bytes[index]);
                index += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        Query(
            text.unwrap_or_default()
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(key), decode(value))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// Where a request goes.
#[derive(Debug)]
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let owned = |segment: Option<&&str>| segment.map(|segment| (*segment).to_string());
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && (rest[2] == "status" || rest[2] == "finalize"));
    let target = if namespaced {
        Target {
            group: group.into(),
            version: version.into(),
            namespace: Some(rest[1].to_string()),
            plural: rest[2].into(),
            name: owned(rest.get(3)),
            subresource: owned(rest.get(4)),
        }
    } else {
        Target {
            group: group.into(),
            version: version.into(),
            namespace: None,
            plural: (*rest.first()?).to_string(),
            name: owned(rest.get(1)),
            subresource: owned(rest.get(2)),
        }
    };
    Some(target)
}

/// Answers one request, whatever its body type: the in-process service and the HTTPS
/// server both come in here.
pub(crate) async fn handle_request<B: hyper::body::Body>(
    inner: Arc<Inner>,
    request: Request<B>,
) -> Response<ResponseBody> {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
    handle(inner, Request::from_parts(parts, bytes)).await
}

/// Answers one request.
async fn handle(inner: Arc<Inner>, request: Request<Bytes>) -> Response<ResponseBody> {
    let (parts, bytes) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    let header = |name: &str| {
        parts.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_string()
    };
    let accept = header("accept");

    if let Some(response) = discovery::non_resource(&inner, &path, &accept) {
        return response;
    }
    let Some(target) = parse_target(&path) else {
        return page_not_found();
    };
    let Some(resource) =
        inner.state.lock().expect("state lock").resource(&target.group, &target.version, &target.plural)
    else {
        return page_not_found();
    };
    if target.namespace.is_some() && !resource.namespaced {
        return page_not_found();
    }
    let verb = match (&parts.method, target.name.is_some()) {
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if query.flag("watch") => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => {
            return error(&ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    // Faults name a resource as RBAC does: `widgets`, or `widgets/status`.
    let faulted = match &target.subresource {
        Some(subresource) => format!("{}/{subresource}", resource.plural),
        None => resource.plural.clone(),
    };
    if let Some(failure) =
        inner.faults_for(verb, &faulted, target.name.as_deref(), target.namespace.as_deref()).await
    {
        return error(&failure);
    }
    if let Some(subresource) = &target.subresource
        && !(subresource == "status" && resource.status)
    {
        return error(&ApiError::no_such_resource());
    }
    let part = match (&target.subresource, resource.status) {
        (Some(_), _) => Part::Status,
        (None, true) => Part::Main,
        (None, false) => Part::Everything,
    };
    let user_agent = header("user-agent");
    let manager =
        query.get("fieldManager").map(str::to_string).unwrap_or_else(|| manager_from_agent(&user_agent));
    let request = Call {
        resource: &resource,
        namespace: target.namespace.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
        part,
        query: &query,
        manager,
        api_version: resource.api_version(),
        now: store::timestamp(),
    };

    let outcome =
        match verb {
            Verb::Get | Verb::Any => get(&inner, &request),
            Verb::List => return list(&inner, &request, &accept),
            Verb::Watch => return watch(&inner, &request),
            Verb::Create => parse_object(&header("content-type"), &bytes)
                .and_then(|object| create(&inner, &request, object)),
            Verb::Update => parse_object(&header("content-type"), &bytes)
                .and_then(|object| update(&inner, &request, object)),
            Verb::Patch => patch(&inner, &request, &header("content-type"), &bytes),
            Verb::Delete => delete(&inner, &request, &bytes),
            Verb::DeleteCollection => delete_collection(&inner, &request, &bytes),
        };
    if let Some(delay) = inner.answer_delay(verb, target.name.as_deref()) {
        tokio::time::sleep(delay).await;
    }
    match outcome {
        Ok((code, value)) => {
            if accept.contains("as=Table") && matches!(verb, Verb::Get) {
                return json_response(code, &discovery::table(&resource, &[value], "", true));
            }
            json_response(code, &value)
        }
        Err(failure) => error(&failure),
    }
}

/// The field manager the real server names a client by: its user agent up to the first `/`.
fn manager_from_agent(agent: &str) -> String {
    let prefix = agent.split('/').next().unwrap_or_default();
    if prefix.is_empty() { "unknown".into() } else { prefix.chars().take(128).collect() }
}

struct Call<'a> {
    resource: &'a ResourceType,
    namespace: String,
    name: String,
    part: Part,
    query: &'a Query,
    manager: String,
    /// The resource's `apiVersion`, as field ownership records it.
    api_version: String,
    now: String,
}

impl Call<'_> {
    fn dry_run(&self) -> bool {
        self.query.get("dryRun") == Some("All")
    }

    /// This request's field manager, writing `part` (forcing conflicts if `force`).
    fn writer(&self, part: Part, force: bool) -> Writer<'_> {
        Writer {
            manager: &self.manager,
            api_version: &self.api_version,
            subresource: (self.part == Part::Status).then_some("status"),
            time: &self.now,
            force,
            part,
        }
    }
}

pub(crate) fn json_response(code: u16, value: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(body::full(serde_json::to_vec(value).expect("JSON values serialize")))
        .expect("a valid response")
}

/// What the real server answers for a path it does not serve: text, not a `Status`.
pub(crate) fn page_not_found() -> Response<ResponseBody> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body::full(b"404 page not found\n".to_vec()))
        .expect("a valid response")
}

pub(crate) fn error(failure: &ApiError) -> Response<ResponseBody> {
    json_response(failure.code, &failure.body())
}

/// The object of a create or update: JSON or YAML, or protobuf for the built-in kinds
/// kubectl's `create` subcommands send that way (see [`protobuf`]).
fn parse_object(content_type: &str, bytes: &Bytes) -> Result<Value, ApiError> {
    if content_type.split(';').next().map(str::trim) != Some(protobuf::MEDIA_TYPE) {
        return parse_body(bytes);
    }
    protobuf::decode(bytes).map_err(|unreadable| match unreadable {
        protobuf::Unreadable::Malformed(_) => {
            ApiError::bad_request(format!("the object provided is unrecognized: {unreadable}"))
        }
        _ => ApiError::new(415, "UnsupportedMediaType", unreadable.to_string()),
    })
}

fn parse_body(bytes: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .or_else(|_| serde_yaml_ng::from_slice(bytes))
        .map_err(|error| ApiError::bad_request(format!("the object provided is unrecognized: {error}")))
}

fn get(inner: &Inner, call: &Call<'_>) -> Result<(u16, Value), ApiError> {
    let state = inner.state.lock().expect("state lock");
    let object = state
        .get(&call.resource.storage, &call.namespace, &call.name)
        .ok_or_else(|| ApiError::not_found(call.resource, &call.name))?;
    Ok((200, present(call.resource, object)))
}

/// The request's namespace (none for all) and selectors.
fn scope(call: &Call<'_>) -> Result<Scope, ApiError> {
    Ok(Scope {
        namespace: Some(call.namespace.clone()).filter(|namespace| !namespace.is_empty()),
        labels: LabelSelector::parse(call.query.get("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(
            call.query.get("fieldSelector").unwrap_or_default(),
            &call.resource.storage,
        )?,
        shards: match call.query.get("shardSelector").filter(|selector| !selector.is_empty()) {
            None => None,
            Some(selector) => Some(
                kuberator::shard::ShardRange::parse(selector)
                    .map_err(|error| ApiError::new(500, "", format!("invalid shard selector: {error}")))?,
            ),
        },
    })
}

static NO_OBJECTS: std::collections::BTreeMap<Key, Value> = std::collections::BTreeMap::new();

/// The objects of the request's kind, in the order the real server lists them.
fn stored<'a>(state: &'a State, call: &Call<'_>) -> impl Iterator<Item = &'a Value> + 'a {
    state.objects.get(&call.resource.storage).into_iter().flat_map(|objects| objects.values())
}

fn list(inner: &Inner, call: &Call<'_>, accept: &str) -> Response<ResponseBody> {
    let outcome = (|| {
        let scope = scope(call)?;
        let state = inner.state.lock().expect("state lock");
        let limit =
            call.query.get("limit").and_then(|limit| limit.parse::<usize>().ok()).filter(|limit| *limit > 0);
        // A continued list reads the snapshot of its first page's version, as etcd gives it.
        let (start, version) = match call.query.get("continue").filter(|token| !token.is_empty()) {
            Some(token) => {
                let (start, version) = decode_continue(token, &state)?;
                (Some(start), version)
            }
            None => (None, state.resource_version),
        };
        let snapshot = if version == state.resource_version {
            std::borrow::Cow::Borrowed(state.objects.get(&call.resource.storage).unwrap_or(&NO_OBJECTS))
        } else {
            std::borrow::Cow::Owned(state.snapshot(&call.resource.storage, version))
        };
        let after = start.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let all: Vec<&Value> = snapshot
            .range((after, std::ops::Bound::Unbounded))
            .map(|(_, object)| object)
            .filter(|object| scope.selects(object))
            .collect();
        let taken: Vec<Value> = all
            .iter()
            .take(limit.unwrap_or(usize::MAX))
            .map(|object| present(call.resource, object))
            .collect();
        let mut metadata = json!({"resourceVersion": version.to_string()});
        // The real server (1.36) echoes the selector in typed lists only: a custom resource's
        // list is filtered but says nothing.
        if let Some(shards) = scope.shards.as_ref().filter(|_| !call.resource.custom) {
            metadata["shardInfo"] = json!({"selector": shards.selector()});
        }
        if let Some(limit) = limit
            && all.len() > limit
        {
            let last = Key::of(taken.last().expect("limit > 0"));
            metadata["continue"] = json!(encode_continue(&last, version));
            metadata["remainingItemCount"] = json!(all.len() - limit);
        }
        if accept.contains("as=Table") {
            return Ok(discovery::table(
                call.resource,
                &taken,
                &state.resource_version.to_string(),
                call.query.get("includeObject") == Some("Object"),
            ));
        }
        Ok(json!({
            "kind": format!("{}List", call.resource.kind),
            "apiVersion": call.resource.api_version(),
            "metadata": metadata,
            "items": taken,
        }))
    })();
    match outcome {
        Ok(list) => json_response(200, &list),
        Err(failure) => error(&failure),
    }
}

fn encode_continue(key: &Key, version: u64) -> String {
    use base64::Engine as _;
    let token =
        json!({"v": "meta.k8s.io/v1", "rv": version, "start": format!("{}/{}", key.namespace, key.name)});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

fn decode_continue(token: &str, state: &State) -> Result<(Key, u64), ApiError> {
    use base64::Engine as _;
    let invalid = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| invalid())?;
    let token: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let version = token["rv"].as_u64().ok_or_else(invalid)?;
    if version < state.oldest_watchable {
        return Err(ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        ));
    }
    let start = token["start"].as_str().ok_or_else(invalid)?;
    let (namespace, name) = start.split_once('/').ok_or_else(invalid)?;
    Ok((Key::new(namespace, name), version))
}

fn watch(inner: &Arc<Inner>, call: &Call<'_>) -> Response<ResponseBody> {
    let outcome = (|| {
        let mut scope = scope(call)?;
        if !call.name.is_empty() {
            scope.fields =
                FieldSelector::parse(&format!("metadata.name={}", call.name), &call.resource.storage)?;
        }
        let initial_events = call.query.flag("sendInitialEvents");
        let bookmarks = call.query.flag("allowWatchBookmarks");
        if initial_events && call.query.get("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::new(
                422,
                "Invalid",
                "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        let version = call.query.get("resourceVersion").unwrap_or_default();
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let mut state = inner.state.lock().expect("state lock");
        let watcher = Watcher {
            storage: call.resource.storage.clone(),
            scope,
            resource: call.resource.clone(),
            sender: sender.clone(),
        };
        let from_scratch = initial_events || version.is_empty() || version == "0";
        if from_scratch {
            for object in stored(&state, call) {
                if watcher.scope.selects(object) {
                    let _ = sender.send(json!({"type": "ADDED", "object": present(call.resource, object)}));
                }
            }
            if initial_events {
                let mut bookmark = bookmark(call.resource, state.resource_version);
                bookmark["object"]["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                let _ = sender.send(bookmark);
            }
        } else {
            let since: u64 = version
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {version}")))?;
            if since < state.oldest_watchable {
                let gone =
                    ApiError::gone(format!("too old resource version: {since} ({})", state.oldest_watchable));
                let _ = sender.send(json!({"type": "ERROR", "object": gone.body()}));
                drop(sender);
                return Ok(body::watch_stream(inner, receiver, None, None));
            }
            for change in state.history.iter().filter(|change| change.resource_version > since) {
                if let Some(event) = watcher.event_for(change) {
                    let _ = sender.send(event);
                }
            }
        }
        state.watchers.push(watcher);
        drop(state);
        let timeout = call
            .query
            .get("timeoutSeconds")
            .and_then(|seconds| seconds.parse().ok())
            .map(Duration::from_secs);
        let ticks = bookmarks.then(|| (call.resource.clone(), sender));
        Ok(body::watch_stream(inner, receiver, timeout, ticks))
    })();
    match outcome {
        Ok(stream) => stream,
        Err(failure) => error(&failure),
    }
}

pub(crate) fn bookmark(resource: &ResourceType, version: u64) -> Value {
    json!({"type": "BOOKMARK", "object": {
        "kind": resource.kind,
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": version.to_string()},
    }})
}

fn check_kind(call: &Call<'_>, object: &Value) -> Result<(), ApiError> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    if kind.is_empty() || api_version.is_empty() {
        return Err(ApiError::bad_request("Object 'Kind' is missing in the request body"));
    }
    if kind != call.resource.kind || api_version != call.resource.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            call.resource.api_version()
        )));
    }
    Ok(())
}

/// Checks a name as the real server does, for namespaces (labels) and everything else
/// (subdomains).
fn check_name(call: &Call<'_>, name: &str) -> Result<(), ApiError> {
    let label = call.resource.storage == store::NAMESPACES;
    let part_ok = |part: &str| {
        !part.is_empty()
            && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    };
    let ok = if label {
        name.len() <= 63 && part_ok(name)
    } else {
        name.len() <= 253 && name.split('.').all(part_ok)
    };
    if ok {
        return Ok(());
    }
    let message = if label {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    } else {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    };
    Err(ApiError::invalid(call.resource, name, &[("metadata.name".into(), message)]))
}

/// Puts the namespace of the request into the object, or refuses a different one.
fn place(call: &Call<'_>, object: &mut Value) -> Result<(), ApiError> {
    if call.resource.namespaced {
        match object["metadata"]["namespace"].as_str() {
            Some(namespace) if !namespace.is_empty() && namespace != call.namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => object["metadata"]["namespace"] = json!(call.namespace),
        }
    } else if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("namespace");
    }
    Ok(())
}

/// Prunes, defaults and validates a custom resource against its CRD's schema.
fn conform(call: &Call<'_>, object: &mut Value) -> Result<(), ApiError> {
    if let Some(schema) = &call.resource.schema {
        schema::prune_and_default(schema, object);
        let errors = schema::validate(schema, object);
        if !errors.is_empty() {
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            return Err(ApiError::invalid(call.resource, &name, &errors));
        }
    }
    if call.resource.storage == store::CRDS {
        let expected = format!(
            "{}.{}",
            object["spec"]["names"]["plural"].as_str().unwrap_or_default(),
            object["spec"]["group"].as_str().unwrap_or_default()
        );
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if name != expected {
            return Err(ApiError::invalid(
                call.resource,
                &name,
                &[(
                    "metadata.name".into(),
                    format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
                )],
            ));
        }
    }
    Ok(())
}

fn stored_shape(call: &Call<'_>, object: Value) -> Value {
    if call.resource.group == "events.k8s.io" { store::rename_event_fields(object, true) } else { object }
}

/// What the real server does to a new Secret: `type` defaults to `Opaque`, and `stringData`
/// is written into `data` (base64), which it overrides.
fn secret_defaults(call: &Call<'_>, object: &mut Value) {
    use base64::Engine as _;
    if !call.resource.group.is_empty() || call.resource.plural != "secrets" {
        return;
    }
    if object["type"].as_str().is_none_or(str::is_empty) {
        object["type"] = json!("Opaque");
    }
    let Some(Value::Object(strings)) = object.as_object_mut().and_then(|object| object.remove("stringData"))
    else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (key, value) in strings {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or_default());
        object["data"][key] = json!(encoded);
    }
}

fn create(inner: &Inner, call: &Call<'_>, object: Value) -> Result<(u16, Value), ApiError> {
    let mut state = inner.state.lock().expect("state lock");
    create_in(&mut state, call, object, None)
}

/// Creates `object`; `applied` is the field ownership of a create by server-side apply.
fn create_in(
    state: &mut State,
    call: &Call<'_>,
    object: Value,
    applied: Option<Value>,
) -> Result<(u16, Value), ApiError> {
    check_kind(call, &object)?;
    let mut object = object;
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    place(call, &mut object)?;
    secret_defaults(call, &mut object);

    if call.resource.namespaced {
        let namespaces = state.resource("", "v1", "namespaces").expect("built in");
        match state.get(store::NAMESPACES, "", &call.namespace) {
            None => return Err(ApiError::not_found(&namespaces, &call.namespace)),
            Some(namespace) if namespace["metadata"]["deletionTimestamp"].is_string() => {
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                    call.resource.qualified(),
                    object["metadata"]["name"].as_str().unwrap_or_default(),
                    call.namespace
                )));
            }
            Some(_) => {}
        }
    }
    if call.resource.review {
        return Ok((201, review(call.resource, object)));
    }
    let name = match object["metadata"]["name"].as_str().filter(|name| !name.is_empty()) {
        Some(name) => name.to_string(),
        None => match object["metadata"]["generateName"].as_str().filter(|prefix| !prefix.is_empty()) {
            Some(prefix) => {
                let prefix = prefix.to_string();
                let mut name = format!("{prefix}{}", store::name_suffix());
                while state.get(&call.resource.storage, &call.namespace, &name).is_some() {
                    name = format!("{prefix}{}", store::name_suffix());
                }
                name
            }
            None => {
                return Err(ApiError::invalid(
                    call.resource,
                    "",
                    &[("metadata.name".into(), "Required value: name or generateName is required".into())],
                ));
            }
        },
    };
    check_name(call, &name)?;
    object["metadata"]["name"] = json!(name);
    if state.get(&call.resource.storage, &call.namespace, &name).is_some() {
        return Err(ApiError::already_exists(call.resource, &name));
    }
    let mut object = stored_shape(call, object);
    store::initialize(call.resource, &mut object, Some(&call.now));
    if call.resource.status
        && call.resource.storage != store::NAMESPACES
        && let Some(fields) = object.as_object_mut()
    {
        fields.remove("status");
    }
    conform(call, &mut object)?;
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("managedFields");
    }
    match applied {
        Some(managed) => object["metadata"]["managedFields"] = managed,
        None => patch::record_update(&json!({}), &mut object, &call.writer(Part::Everything, false)),
    }
    if call.resource.storage == store::CRDS {
        establish(&mut object);
    }
    if call.dry_run() {
        return Ok((201, present(call.resource, &object)));
    }
    Ok(commit(state, call, object, 201))
}

/// Stores `object`, serves a CRD's resources, runs the controllers, and answers with it.
fn commit(state: &mut State, call: &Call<'_>, object: Value, code: u16) -> (u16, Value) {
    if call.resource.storage == store::CRDS {
        register(state, &object);
    }
    let stored = state.commit_put(call.resource, object);
    state.settle(&call.now);
    (code, present(call.resource, &stored))
}

/// What a TokenReview or SubjectAccessReview answers: with no authentication here, tokens
/// are not recognised and every access is allowed.
fn review(resource: &ResourceType, mut object: Value) -> Value {
    object["status"] = match resource.kind.as_str() {
        "TokenReview" => {
            json!({"authenticated": false, "error": "the in-memory server does not authenticate tokens"})
        }
        _ => json!({"allowed": true, "reason": "the in-memory server authorizes every request"}),
    };
    object
}

/// A CRD's status as the real server sets it once the names are accepted.
fn establish(crd: &mut Value) {
    let now = store::timestamp();
    let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    let storage_version = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|version| version["storage"] == true)
        .map(|version| version["name"].clone())
        .unwrap_or(Value::Null);
    crd["status"] = json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": crd["spec"]["names"].clone(),
        "storedVersions": [storage_version],
    });
    let finalizers = crd["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
    let cleanup = json!("customresourcecleanup.apiextensions.k8s.io");
    if !finalizers.contains(&cleanup) {
        let mut finalizers = finalizers;
        finalizers.push(cleanup);
        crd["metadata"]["finalizers"] = Value::Array(finalizers);
    }
}

fn register(state: &mut State, crd: &Value) {
    let defined = resources::from_crd(crd);
    if let Some(first) = defined.first() {
        let storage = first.storage.clone();
        state.types.retain(|resource| resource.storage != storage);
    }
    state.types.extend(defined);
}

/// The object in a PUT or an apply must be the one the URL names.
fn check_body_name(call: &Call<'_>, object: &Value) -> Result<(), ApiError> {
    let body_name = object["metadata"]["name"].as_str().unwrap_or_default();
    if body_name != call.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            call.name
        )));
    }
    Ok(())
}

/// A write that names a resourceVersion must name the current one: `409 Conflict` otherwise.
fn check_version(call: &Call<'_>, object: &Value, old: &Value) -> Result<(), ApiError> {
    match object["metadata"]["resourceVersion"].as_str().filter(|version| !version.is_empty()) {
        Some(version) if Some(version) != old["metadata"]["resourceVersion"].as_str() => {
            Err(ApiError::conflict(call.resource, &call.name))
        }
        _ => Ok(()),
    }
}

fn update(inner: &Inner, call: &Call<'_>, object: Value) -> Result<(u16, Value), ApiError> {
    check_kind(call, &object)?;
    check_body_name(call, &object)?;
    let mut object = object;
    place(call, &mut object)?;
    let mut state = inner.state.lock().expect("state lock");
    let old = state
        .get(&call.resource.storage, &call.namespace, &call.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(call.resource, &call.name))?;
    check_version(call, &object, &old)?;
    if !call.resource.unconditional_update
        && object["metadata"]["resourceVersion"].as_str().is_none_or(str::is_empty)
    {
        return Err(ApiError::invalid(
            call.resource,
            &call.name,
            &[(
                "metadata.resourceVersion".into(),
                "Invalid value: 0: must be specified for an update".into(),
            )],
        ));
    }
    let object = stored_shape(call, object);
    write(&mut state, call, &old, object, Record::Update)
}

/// How a write's field ownership is recorded.
#[derive(Clone, Copy)]
enum Record {
    /// Already computed (server-side apply).
    Applied,
    /// An update by the request's manager.
    Update,
}

/// The common end of update and patch: the server's rules for what a write may change.
fn write(
    state: &mut State,
    call: &Call<'_>,
    old: &Value,
    mut new: Value,
    record: Record,
) -> Result<(u16, Value), ApiError> {
    // The server keeps its own metadata.
    for key in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "name",
        "namespace",
    ] {
        match old["metadata"].get(key) {
            Some(value) => new["metadata"][key] = value.clone(),
            None => {
                if let Some(metadata) = new["metadata"].as_object_mut() {
                    metadata.remove(key);
                }
            }
        }
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    match call.part {
        Part::Status => {
            let status = new.get("status").cloned();
            let managed = new["metadata"]["managedFields"].clone();
            new = old.clone();
            match status {
                Some(status) => new["status"] = status,
                None => {
                    if let Some(fields) = new.as_object_mut() {
                        fields.remove("status");
                    }
                }
            }
            if matches!(record, Record::Applied) {
                new["metadata"]["managedFields"] = managed;
            }
        }
        Part::Main => match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(fields) = new.as_object_mut() {
                    fields.remove("status");
                }
            }
        },
        Part::Everything => {}
    }
    if call.resource.storage == store::NAMESPACES {
        new["spec"] = old["spec"].clone();
        if call.part != Part::Status {
            new["status"] = old["status"].clone();
        }
    }
    conform(call, &mut new)?;

    let deleting = old["metadata"]["deletionTimestamp"].is_string();
    if deleting {
        let before = old["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        let added: Vec<String> = new["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|finalizer| !before.contains(finalizer))
            .map(|finalizer| format!("{finalizer}"))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                call.resource,
                &call.name,
                &[(
                    "metadata.finalizers".into(),
                    format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        added.join(", ")
                    ),
                )],
            ));
        }
    }
    if call.resource.generation && call.part != Part::Status {
        let content = |object: &Value| -> Value {
            let mut object = object.clone();
            if let Some(fields) = object.as_object_mut() {
                fields.remove("metadata");
                if call.resource.status {
                    fields.remove("status");
                }
            }
            object
        };
        if content(old) != content(&new) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(generation + 1);
        }
    }
    if matches!(record, Record::Update) {
        let part = if call.part == Part::Status { Part::Status } else { Part::Everything };
        new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
        if new["metadata"]["managedFields"].is_null()
            && let Some(metadata) = new["metadata"].as_object_mut()
        {
            metadata.remove("managedFields");
        }
        patch::record_update(old, &mut new, &call.writer(part, false));
    }
    if new == *old {
        return Ok((200, present(call.resource, old)));
    }
    if deleting && !store::has_finalizers(&new) {
        if call.dry_run() {
            return Ok((200, present(call.resource, &new)));
        }
        let removed = state.commit_remove(&call.resource.storage, &call.namespace, &call.name);
        new["metadata"]["resourceVersion"] =
            removed.map(|object| object["metadata"]["resourceVersion"].clone()).unwrap_or_default();
        state.settle(&call.now);
        return Ok((200, present(call.resource, &new)));
    }
    if call.dry_run() {
        return Ok((200, present(call.resource, &new)));
    }
    Ok(commit(state, call, new, 200))
}

fn patch(
    inner: &Inner,
    call: &Call<'_>,
    content_type: &str,
    bytes: &Bytes,
) -> Result<(u16, Value), ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let is_apply = media == "application/apply-patch+yaml";
    if media == "application/strategic-merge-patch+json" && call.resource.custom {
        return Err(ApiError::unsupported_media_type(media));
    }
    if !matches!(
        media,
        "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/apply-patch+yaml"
    ) {
        return Err(ApiError::unsupported_media_type(media));
    }
    let body = parse_body(bytes)?;
    let mut state = inner.state.lock().expect("state lock");
    let old = state.get(&call.resource.storage, &call.namespace, &call.name).cloned();
    if is_apply {
        if call.query.get("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        check_kind(call, &body)?;
        check_body_name(call, &body)?;
        let mut config = stored_shape(call, body);
        place(call, &mut config)?;
        let applier = call.writer(call.part, call.query.flag("force"));
        let Some(old) = old else {
            if call.part == Part::Status {
                return Err(ApiError::not_found(call.resource, &call.name));
            }

            let mut created = patch::apply(&json!({}), &config, &applier)
                .map_err(|conflicts| ApiError::apply_conflicts(call.resource, &call.name, &conflicts))?;
            let managed = created["metadata"]["managedFields"].clone();
            created["apiVersion"] = json!(call.api_version);
            created["kind"] = json!(call.resource.kind);
            let (code, object) = create_in(&mut state, call, created, Some(managed))?;
            return Ok((code, object));
        };
        check_version(call, &config, &old)?;
        let applied = patch::apply(&old, &config, &applier)
            .map_err(|conflicts| ApiError::apply_conflicts(call.resource, &call.name, &conflicts))?;
        return write(&mut state, call, &old, applied, Record::Applied);
    }
    let old = old.ok_or_else(|| ApiError::not_found(call.resource, &call.name))?;
    let mut new = present(call.resource, &old);
    match media {
        "application/merge-patch+json" => patch::merge(&mut new, &body),
        "application/strategic-merge-patch+json" => patch::strategic(&mut new, &body),
        _ => {
            let operations: json_patch::Patch = serde_json::from_value(body)
                .map_err(|error| ApiError::bad_request(format!("the JSON patch is not valid: {error}")))?;
            for operation in &operations.0 {
                // As the real server's JSON patch library does: testing a missing path for
                // `null` succeeds.
                if let json_patch::PatchOperation::Test(test) = operation
                    && test.value.is_null()
                    && new.pointer(test.path.as_str()).is_none()
                {
                    continue;
                }
                json_patch::patch(&mut new, std::slice::from_ref(operation)).map_err(|error| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the server rejected our request due to an error in our request: {error}"),
                    )
                })?;
            }
        }
    }
    check_version(call, &new, &old)?;
    let new = stored_shape(call, new);
    write(&mut state, call, &old, new, Record::Update)
}

fn delete_options(call: &Call<'_>, bytes: &Bytes) -> Result<Value, ApiError> {
    let mut options = if bytes.is_empty() { json!({}) } else { parse_body(bytes)? };
    if let Some(policy) = call.query.get("propagationPolicy") {
        options["propagationPolicy"] = json!(policy);
    }
    Ok(options)
}

fn delete(inner: &Inner, call: &Call<'_>, bytes: &Bytes) -> Result<(u16, Value), ApiError> {
    let options = delete_options(call, bytes)?;
    let mut state = inner.state.lock().expect("state lock");
    let old = state
        .get(&call.resource.storage, &call.namespace, &call.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(call.resource, &call.name))?;
    let preconditions = &options["preconditions"];
    if let Some(uid) = preconditions["uid"].as_str()
        && Some(uid) != old["metadata"]["uid"].as_str()
    {
        return Err(ApiError::precondition(
            call.resource,
            &call.name,
            &format!(
                "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                old["metadata"]["uid"].as_str().unwrap_or_default()
            ),
        ));
    }
    if let Some(version) = preconditions["resourceVersion"].as_str()
        && Some(version) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::precondition(
            call.resource,
            &call.name,
            &format!(
                "the ResourceVersion in the precondition ({version}) does not match the ResourceVersion in record ({}). The object might have been modified",
                old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
            ),
        ));
    }
    let (code, object) = delete_one(&mut state, call, &old, &options);
    if !call.dry_run() {
        state.settle(&call.now);
    }
    Ok((code, object))
}

/// Deletes one object as DELETE does: marks it while finalizers (or the namespace
/// controller) hold it, removes it otherwise.
fn delete_one(state: &mut State, call: &Call<'_>, old: &Value, options: &Value) -> (u16, Value) {
    let mut marked = old.clone();
    let policy_finalizer = match options["propagationPolicy"].as_str() {
        Some("Orphan") => Some("orphan"),
        Some("Foreground") => Some("foregroundDeletion"),
        _ if options["orphanDependents"] == true => Some("orphan"),
        _ => None,
    };
    let deleting = old["metadata"]["deletionTimestamp"].is_string();
    if let Some(finalizer) = policy_finalizer
        && !deleting
    {
        let mut finalizers = marked["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        if !finalizers.contains(&json!(finalizer)) {
            finalizers.push(json!(finalizer));
        }
        marked["metadata"]["finalizers"] = Value::Array(finalizers);
    }
    let namespace = call.resource.storage == store::NAMESPACES;
    if namespace || store::has_finalizers(&marked) {
        if deleting {
            return (200, present(call.resource, old));
        }
        store::mark_deleted(&mut marked, &call.now);
        if namespace {
            marked["status"]["phase"] = json!("Terminating");
        }
        if call.dry_run() {
            return (200, present(call.resource, &marked));
        }
        let stored = state.commit_put(call.resource, marked);
        return (200, present(call.resource, &stored));
    }
    let (namespace_name, name) = key_of(old);
    let removed = if call.dry_run() {
        old.clone()
    } else {
        state.commit_remove(&call.resource.storage, &namespace_name, &name).unwrap_or_else(|| old.clone())
    };
    if call.resource.returns_deleted {
        (200, present(call.resource, &removed))
    } else {
        (200, status::success(call.resource, &name, &removed["metadata"]["uid"]))
    }
}

fn delete_collection(inner: &Inner, call: &Call<'_>, bytes: &Bytes) -> Result<(u16, Value), ApiError> {
    let options = delete_options(call, bytes)?;
    let scope = scope(call)?;
    let mut state = inner.state.lock().expect("state lock");
    let chosen: Vec<Value> = stored(&state, call).filter(|object| scope.selects(object)).cloned().collect();
    let mut items = Vec::new();
    for old in &chosen {
        let (_, object) = delete_one(&mut state, call, old, &options);
        items.push(if object["kind"] == "Status" { present(call.resource, old) } else { object });
    }
    if !call.dry_run() {
        state.settle(&call.now);
    }
    Ok((
        200,
        json!({
            "kind": format!("{}List", call.resource.kind),
            "apiVersion": call.resource.api_version(),
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        }),
    ))
}
