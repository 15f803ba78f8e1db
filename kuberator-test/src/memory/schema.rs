//! A CRD's structural schema: pruning, defaulting and validation of the common keywords, in
//! the order the real server runs them (prune, default, validate) and with its messages.

use serde_json::Map;
use serde_json::Value;

/// Prunes unknown fields and defaults missing ones, in place. `metadata`, `apiVersion` and
/// `kind` at the root are the server's and are left alone.
pub(crate) fn prune_and_default(schema: &Value, object: &mut Value) {
    if let Value::Object(fields) = object {
        for (key, value) in fields.iter_mut() {
            if ["metadata", "apiVersion", "kind"].contains(&key.as_str()) {
                continue;
            }
            if let Some(property) = schema["properties"].get(key) {
                walk(property, value);
            }
        }
        if !preserves_unknown(schema) {
            let properties = schema["properties"].as_object();
            fields.retain(|key, _| {
                ["metadata", "apiVersion", "kind"].contains(&key.as_str())
                    || properties.is_some_and(|properties| properties.contains_key(key))
            });
        }
        apply_defaults(schema, fields);
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
}

fn apply_defaults(schema: &Value, fields: &mut Map<String, Value>) {
    if let Some(properties) = schema["properties"].as_object() {
        for (key, property) in properties {
            if let Some(default) = property.get("default")
                && !fields.contains_key(key)
            {
                let mut value = default.clone();
                walk(property, &mut value);
                fields.insert(key.clone(), value);
            }
        }
    }
}

fn walk(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if schema["x-kubernetes-embedded-resource"] == Value::Bool(true)
                || schema.get("properties").is_some()
            {
                for (key, child) in fields.iter_mut() {
                    if let Some(property) = schema["properties"].get(key) {
                        walk(property, child);
                    }
                }
                // Nulls of fields that are not nullable are dropped, as the real server does.
                fields.retain(|key, child| {
                    !(child.is_null() && schema["properties"][key]["nullable"] != Value::Bool(true))
                });
                if !preserves_unknown(schema) {
                    let embedded = schema["x-kubernetes-embedded-resource"] == Value::Bool(true);
                    let properties = schema["properties"].as_object();
                    fields.retain(|key, _| {
                        (embedded && ["metadata", "apiVersion", "kind"].contains(&key.as_str()))
                            || properties.is_some_and(|properties| properties.contains_key(key))
                    });
                }
                apply_defaults(schema, fields);
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in fields.values_mut() {
                    walk(additional, child);
                }
            } else if !preserves_unknown(schema) && schema["type"] == "object" {
                fields.clear();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    walk(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Validates `object` against `schema`: `(field path, message)` for each violation.
pub(crate) fn validate(schema: &Value, object: &Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if let Value::Object(fields) = object {
        for (key, property) in schema["properties"].as_object().into_iter().flatten() {
            if ["metadata", "apiVersion", "kind"].contains(&key.as_str()) {
                continue;
            }
            if let Some(value) = fields.get(key) {
                check(property, value, key, &mut errors);
            }
        }
        required(schema, fields, "", &mut errors);
    }
    errors
}

fn required(schema: &Value, fields: &Map<String, Value>, path: &str, errors: &mut Vec<(String, String)>) {
    for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if !fields.contains_key(name) {
            let field = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
            errors.push((field, "Required value".into()));
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<(String, String)>) {
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errors.push((
                path.into(),
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !matches!(type_name(value), "integer" | "string") {
            errors.push((
                path.into(),
                format!("Invalid value: {}: {path} in body must be of type integer-or-string", shown(value)),
            ));
        }
        return;
    }
    if let Some(expected) = schema["type"].as_str() {
        let actual = type_name(value);
        let fits = actual == expected || (expected == "number" && actual == "integer");
        if !fits {
            errors.push((
                path.into(),
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
                ),
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push((
            path.into(),
            format!("Unsupported value: {value}: supported values: {}", listed.join(", ")),
        ));
    }
    if let Some(number) = value.as_f64() {
        if let Some(minimum) = schema["minimum"].as_f64() {
            let exclusive = schema["exclusiveMinimum"] == Value::Bool(true);
            if number < minimum || (exclusive && number == minimum) {
                let relation = if exclusive { "greater than" } else { "greater than or equal to" };
                errors.push((
                    path.into(),
                    format!(
                        "Invalid value: {value}: {path} in body should be {relation} {}",
                        schema["minimum"]
                    ),
                ));
            }
        }
        if let Some(maximum) = schema["maximum"].as_f64() {
            let exclusive = schema["exclusiveMaximum"] == Value::Bool(true);
            if number > maximum || (exclusive && number == maximum) {
                let relation = if exclusive { "less than" } else { "less than or equal to" };
                errors.push((
                    path.into(),
                    format!(
                        "Invalid value: {value}: {path} in body should be {relation} {}",
                        schema["maximum"]
                    ),
                ));
            }
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if let Some(min) = schema["minLength"].as_u64()
            && length < min
        {
            errors.push((
                path.into(),
                format!("Invalid value: {value}: {path} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = schema["maxLength"].as_u64()
            && length > max
        {
            errors.push((path.into(), format!("Too long: may not be more than {max} bytes")));
        }
        if let Some(pattern) = schema["pattern"].as_str()
            && let Ok(regex) = regex::Regex::new(pattern)
            && !regex.is_match(text)
        {
            errors.push((
                path.into(),
                format!("Invalid value: {value}: {path} in body should match '{pattern}'"),
            ));
        }
    }
    match value {
        Value::Object(fields) => {
            for (key, child) in fields {
                let child_path = format!("{path}.{key}");
                if let Some(property) = schema["properties"].get(key) {
                    check(property, child, &child_path, errors);
                } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    check(additional, child, &child_path, errors);
                }
            }
            required(schema, fields, path, errors);
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                errors.push((
                    path.into(),
                    format!(
                        "Invalid value: {}: {path} in body should have at least {min} items",
                        items.len()
                    ),
                ));
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && (items.len() as u64) > max
            {
                errors
                    .push((path.into(), format!("Too many: {}: must have at most {max} items", items.len())));
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{index}]"), errors);
                }
            }
        }
        _ => {}
    }
}
