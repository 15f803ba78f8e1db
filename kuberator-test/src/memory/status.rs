//! The `Status` error bodies the real API server sends, with its codes, reasons and messages.

use serde_json::Value;
use serde_json::json;

use super::resources::ResourceType;

/// A failed request: what the server answers with a `Status` body.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Value,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: Value::Null }
    }

    fn with_details(mut self, resource: &ResourceType, name: &str) -> Self {
        let mut details = json!({ "name": name, "kind": resource.plural });
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        self.details = details;
        self
    }

    pub(crate) fn not_found(resource: &ResourceType, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", resource.qualified()))
            .with_details(resource, name)
    }

    pub(crate) fn no_such_resource() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    pub(crate) fn already_exists(resource: &ResourceType, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", resource.qualified()))
            .with_details(resource, name)
    }

    pub(crate) fn conflict(resource: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply \
                 your changes to the latest version and try again",
                resource.qualified()
            ),
        )
        .with_details(resource, name)
    }

    pub(crate) fn precondition(resource: &ResourceType, name: &str, what: &str) -> Self {
        let kind = if resource.group.is_empty() {
            resource.kind.clone()
        } else {
            format!("{}.{}", resource.kind, resource.group)
        };
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {kind} \"{name}\": {what}"))
            .with_details(resource, name)
    }

    pub(crate) fn apply_conflicts(
        resource: &ResourceType,
        name: &str,
        conflicts: &[(String, String)],
    ) -> Self {
        // Grouped by manager, as the real server words them.
        let mut managers: Vec<&str> = Vec::new();
        for (manager, _) in conflicts {
            if !managers.contains(&manager.as_str()) {
                managers.push(manager);
            }
        }
        let groups: Vec<String> = managers
            .iter()
            .map(|manager| {
                let fields: Vec<&str> = conflicts
                    .iter()
                    .filter(|(owner, _)| owner == manager)
                    .map(|(_, field)| field.as_str())
                    .collect();
                if fields.len() == 1 {
                    format!("conflict with \"{manager}\": {}", fields[0])
                } else {
                    format!("conflicts with \"{manager}\":\n- {}", fields.join("\n- "))
                }
            })
            .collect();
        let count = conflicts.len();
        let message = format!(
            "Apply failed with {count} conflict{}: {}",
            if count == 1 { "" } else { "s" },
            groups.join("\n")
        );
        let mut error = Self::new(409, "Conflict", message).with_details(resource, name);
        error.details["causes"] = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": field})
            })
            .collect();
        error
    }

    /// 422: `causes` are `(field, message)` pairs, as `field: message` in the text.
    pub(crate) fn invalid(resource: &ResourceType, name: &str, causes: &[(String, String)]) -> Self {
        let listed: Vec<String> =
            causes.iter().map(|(field, message)| format!("{field}: {message}")).collect();
        let joined = if listed.len() == 1 { listed[0].clone() } else { format!("[{}]", listed.join(", ")) };
        let kind = if resource.group.is_empty() {
            resource.kind.clone()
        } else {
            format!("{}.{}", resource.kind, resource.group)
        };
        let mut error = Self::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {joined}"));
        error.details = json!({ "name": name, "kind": resource.kind });
        if !resource.group.is_empty() {
            error.details["group"] = json!(resource.group);
        }
        error.details["causes"] = causes
            .iter()
            .map(
                |(field, message)| json!({"reason": "FieldValueInvalid", "message": message, "field": field}),
            )
            .collect();
        error
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub(crate) fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// The `Status` object.
    pub(crate) fn body(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        // A plain error inside the real server is a 500 with no reason.
        if self.reason.is_empty() {
            status.as_object_mut().map(|status| status.remove("reason"));
        }
        if !self.details.is_null() {
            status["details"] = self.details.clone();
        }
        status
    }
}

/// A `Status` of success, as some deletes return.
pub(crate) fn success(resource: &ResourceType, name: &str, uid: &Value) -> Value {
    let mut details = json!({ "name": name, "kind": resource.plural, "uid": uid });
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}
