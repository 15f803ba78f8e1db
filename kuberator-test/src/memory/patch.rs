//! Patches: JSON merge (RFC 7386), JSON (RFC 6902), strategic merge for the built-in kinds,
//! and server-side apply with its field ownership (`managedFields`).

use std::collections::BTreeSet;

use serde_json::Map;
use serde_json::Value;
use serde_json::json;

/// A field path, as `managedFields` names it: `f:spec`, `f:replicas`.
pub(crate) type Path = Vec<String>;

/// RFC 7386.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let fields = target.as_object_mut().expect("made an object");
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The key a strategic merge patch merges a list of objects by, per field name.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |key: &str| items.iter().all(|item| item.get(key).is_some());
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            Some("name")
        }
        "volumeMounts" => Some("mountPath"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" if has("port") => Some("port"),
        _ => None,
    }
}

/// A strategic merge patch, for the built-in kinds: lists the Kubernetes types merge by key
/// are merged by it, `$patch: delete` removes an item, `finalizers` is a set, directives
/// `kubectl` sends (`$setElementOrder`, `$retainKeys`) are accepted and ignored.
pub(crate) fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let fields = target.as_object_mut().expect("made an object");
    for (key, value) in patch {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(gone)) = (fields.get_mut(list), value) {
                items.retain(|item| !gone.contains(item));
            }
            continue;
        }
        match value {
            Value::Null => {
                fields.remove(key);
            }
            Value::Array(patch_items) => {
                let current = fields.get(key).and_then(Value::as_array).cloned();
                let merged = match current {
                    Some(current) if key == "finalizers" => {
                        let mut merged = current;
                        for item in patch_items {
                            if !merged.contains(item) {
                                merged.push(item.clone());
                            }
                        }
                        merged
                    }
                    Some(current) => match merge_key(key, patch_items) {
                        Some(merge_key) => merge_list(current, patch_items, merge_key),
                        None => patch_items.clone(),
                    },
                    None => patch_items
                        .iter()
                        .filter(|item| item.get("$patch").and_then(Value::as_str) != Some("delete"))
                        .cloned()
                        .collect(),
                };
                fields.insert(key.clone(), Value::Array(merged));
            }
            Value::Object(_) => strategic(fields.entry(key.clone()).or_insert(Value::Null), value),
            other => {
                fields.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_list(mut current: Vec<Value>, patch: &[Value], key: &str) -> Vec<Value> {
    for item in patch {
        let position = current.iter().position(|existing| existing.get(key) == item.get(key));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(index), true) => {
                current.remove(index);
            }
            (Some(index), false) => strategic(&mut current[index], item),
            (None, true) => {}
            (None, false) => current.push(item.clone()),
        }
    }
    current
}

/// The leaf paths of `value` that field ownership tracks: every scalar, every list (lists
/// are atomic here), every empty object.
pub(crate) fn leaves(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (key, child) in fields {
                prefix.push(format!("f:{key}"));
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

/// The fields of an object that ownership tracks: everything but `apiVersion`, `kind`, the
/// server's metadata and (per `part`) the status or everything but the status.
pub(crate) fn tracked(object: &Value, part: Part) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let Some(fields) = object.as_object() else { return out };
    for (key, child) in fields {
        let keep = match part {
            Part::Main => key != "apiVersion" && key != "kind" && key != "status",
            Part::Status => key == "status",
            Part::Everything => key != "apiVersion" && key != "kind",
        };
        if !keep {
            continue;
        }
        if key == "metadata" {
            for tracked_key in ["labels", "annotations", "ownerReferences", "finalizers"] {
                if let Some(child) = child.get(tracked_key) {
                    let mut prefix = vec!["f:metadata".to_string(), format!("f:{tracked_key}")];
                    leaves(child, &mut prefix, &mut out);
                }
            }
            continue;
        }
        let mut prefix = vec![format!("f:{key}")];
        leaves(child, &mut prefix, &mut out);
    }
    out
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The main resource of a kind with a status subresource: all but the status.
    Main,
    /// The `/status` subresource.
    Status,
    /// A kind without a status subresource.
    Everything,
}

pub(crate) fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for segment in path {
        current = current.get(segment.strip_prefix("f:").unwrap_or(segment))?;
    }
    Some(current)
}

fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut current = object;
    for segment in parents {
        match current.get_mut(segment.strip_prefix("f:").unwrap_or(segment)) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(fields) = current.as_object_mut() {
        fields.remove(last.strip_prefix("f:").unwrap_or(last));
    }
}

fn overlaps(left: &[String], right: &[String]) -> bool {
    left.starts_with(right) || right.starts_with(left)
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone)]
pub(crate) struct Managed {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) subresource: Option<String>,
    pub(crate) api_version: String,
    pub(crate) time: String,
    pub(crate) fields: BTreeSet<Path>,
}

fn decode_fields(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(fields) = value.as_object() else { return };
    if (fields.is_empty() || fields.contains_key(".")) && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (key, child) in fields {
        if key == "." {
            continue;
        }
        prefix.push(key.clone());
        decode_fields(child, prefix, out);
        prefix.pop();
    }
}

fn encode_fields(fields: &BTreeSet<Path>) -> Value {
    let mut root = Value::Object(Map::new());
    for path in fields {
        let mut current = &mut root;
        for segment in path {
            current = current
                .as_object_mut()
                .expect("objects all the way")
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

/// The `managedFields` of `object`, decoded.
pub(crate) fn managed(object: &Value) -> Vec<Managed> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let mut fields = BTreeSet::new();
            decode_fields(&entry["fieldsV1"], &mut Vec::new(), &mut fields);
            Managed {
                manager: entry["manager"].as_str().unwrap_or_default().into(),
                operation: entry["operation"].as_str().unwrap_or_default().into(),
                subresource: entry["subresource"].as_str().map(str::to_string),
                api_version: entry["apiVersion"].as_str().unwrap_or_default().into(),
                time: entry["time"].as_str().unwrap_or_default().into(),
                fields,
            }
        })
        .collect()
}

/// Writes `entries` back as `metadata.managedFields`, dropping the ones that own nothing.
pub(crate) fn store_managed(object: &mut Value, entries: &[Managed]) {
    let encoded: Vec<Value> = entries
        .iter()
        .filter(|entry| !entry.fields.is_empty())
        .map(|entry| {
            let mut value = json!({
                "manager": entry.manager,
                "operation": entry.operation,
                "apiVersion": entry.api_version,
                "time": entry.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode_fields(&entry.fields),
            });
            if let Some(subresource) = &entry.subresource {
                value["subresource"] = json!(subresource);
            }
            value
        })
        .collect();
    if encoded.is_empty() {
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("managedFields");
        }
    } else {
        object["metadata"]["managedFields"] = Value::Array(encoded);
    }
}

/// Who writes, for which version and subresource, when, which part of the object it may
/// change, and (for an apply) whether it forces conflicts.
pub(crate) struct Writer<'a> {
    pub(crate) manager: &'a str,
    pub(crate) api_version: &'a str,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) time: &'a str,
    pub(crate) force: bool,
    pub(crate) part: Part,
}

/// Server-side apply of `config` onto `live` (an empty object when creating). Returns the
/// new object, or the conflicts `(manager, field)` when another manager owns a field with a
/// different value and `force` is off.
pub(crate) fn apply(live: &Value, config: &Value, who: &Writer<'_>) -> Result<Value, Vec<(String, String)>> {
    let applied = tracked(config, who.part);
    let mut entries = managed(live);
    let mut conflicts = Vec::new();
    for entry in &mut entries {
        if entry.manager == who.manager && entry.operation == "Apply" {
            continue;
        }
        if entry.subresource.as_deref() != who.subresource {
            continue;
        }
        let contested: Vec<Path> = entry
            .fields
            .iter()
            .filter(|owned| {
                applied.iter().any(|path| {
                    let deeper = if path.len() >= owned.len() { path } else { *owned };
                    overlaps(path, owned) && value_at(live, deeper) != value_at(config, deeper)
                })
            })
            .cloned()
            .collect();
        if contested.is_empty() {
            continue;
        }
        if who.force {
            entry.fields.retain(|owned| !contested.contains(owned));
        } else {
            for path in contested {
                let shown: String =
                    path.iter().map(|segment| format!(".{}", segment.trim_start_matches("f:"))).collect();
                conflicts.push((entry.manager.clone(), shown));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }

    let mut result = live.clone();
    let previous = entries
        .iter()
        .find(|entry| {
            entry.manager == who.manager
                && entry.operation == "Apply"
                && entry.subresource.as_deref() == who.subresource
        })
        .map(|entry| entry.fields.clone())
        .unwrap_or_default();
    for removed in previous.difference(&applied) {
        let owned_elsewhere = entries.iter().any(|entry| {
            !(entry.manager == who.manager && entry.operation == "Apply")
                && entry.fields.iter().any(|owned| overlaps(owned, removed))
        });
        if !owned_elsewhere {
            remove_at(&mut result, removed);
        }
    }
    apply_merge(&mut result, config);

    entries.retain(|entry| {
        !(entry.manager == who.manager
            && entry.operation == "Apply"
            && entry.subresource.as_deref() == who.subresource)
    });
    entries.push(Managed {
        manager: who.manager.into(),
        operation: "Apply".into(),
        subresource: who.subresource.map(str::to_string),
        api_version: who.api_version.into(),
        time: who.time.into(),
        fields: applied,
    });
    store_managed(&mut result, &entries);
    Ok(result)
}

/// Deep merge of an applied configuration: objects merge, everything else replaces.
fn apply_merge(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(target), Value::Object(config)) => {
            for (key, value) in config {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        apply_merge(existing, value);
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, config) => *target = config.clone(),
    }
}

/// Records an update (create, PUT or a non-apply patch) by `manager`: the fields it changed
/// become its own and stop being anyone else's; fields that went away stop being owned.
pub(crate) fn record_update(old: &Value, new: &mut Value, who: &Writer<'_>) {
    let Writer { manager, api_version, subresource, time, part, .. } = *who;
    let before = tracked(old, part);
    let after = tracked(new, part);
    let changed: BTreeSet<Path> =
        after.iter().filter(|path| value_at(old, path) != value_at(new, path)).cloned().collect();
    let mut entries = managed(old);
    for entry in &mut entries {
        entry
            .fields
            .retain(|owned| !changed.contains(owned) && (after.contains(owned) || !before.contains(owned)));
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|entry| {
            entry.manager == manager
                && entry.operation == "Update"
                && entry.subresource.as_deref() == subresource
        }) {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = time.into();
            }
            None => entries.push(Managed {
                manager: manager.into(),
                operation: "Update".into(),
                subresource: subresource.map(str::to_string),
                api_version: api_version.into(),
                time: time.into(),
                fields: changed,
            }),
        }
    }
    store_managed(new, &entries);
}

/// Owners per field.
#[cfg(test)]
fn owners(object: &Value) -> std::collections::BTreeMap<Path, Vec<String>> {
    let mut owners = std::collections::BTreeMap::<Path, Vec<String>>::new();
    for entry in managed(object) {
        for path in entry.fields {
            owners.entry(path).or_default().push(entry.manager.clone());
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applier(manager: &str, force: bool) -> Writer<'_> {
        Writer { manager, api_version: "v1", subresource: None, time: "t", force, part: Part::Everything }
    }

    #[test]
    fn apply_conflicts_only_on_a_different_value_and_force_takes_the_field() {
        let live = apply(&json!({}), &json!({"spec": {"a": 1, "b": 2}}), &applier("one", false)).unwrap();
        let same = apply(&live, &json!({"spec": {"a": 1}}), &applier("two", false)).unwrap();
        assert_eq!(owners(&same)[&vec!["f:spec".to_string(), "f:a".to_string()]], vec!["one", "two"]);
        let conflicts = apply(&live, &json!({"spec": {"a": 5}}), &applier("two", false)).unwrap_err();
        assert_eq!(conflicts, vec![("one".to_string(), ".spec.a".to_string())]);
        let forced = apply(&live, &json!({"spec": {"a": 5}}), &applier("two", true)).unwrap();
        assert_eq!(forced["spec"], json!({"a": 5, "b": 2}));
        assert_eq!(owners(&forced)[&vec!["f:spec".to_string(), "f:a".to_string()]], vec!["two"]);
    }

    #[test]
    fn a_field_dropped_from_the_applied_config_is_removed_unless_someone_else_owns_it() {
        let live = apply(&json!({}), &json!({"spec": {"a": 1, "b": 2}}), &applier("one", false)).unwrap();
        let shrunk = apply(&live, &json!({"spec": {"a": 1}}), &applier("one", false)).unwrap();
        assert_eq!(shrunk["spec"], json!({"a": 1}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_finalizers_as_a_set() {
        let mut target = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "x", "image": "1"}, {"name": "y", "image": "1"}]}});
        strategic(
            &mut target,
            &json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "y", "image": "2"}, {"name": "x", "$patch": "delete"}]}}),
        );
        assert_eq!(target["spec"]["containers"], json!([{"name": "y", "image": "2"}]));
        assert_eq!(target["metadata"]["finalizers"], json!(["a", "b"]));
    }
}
