//! What an Event says: [`EventData`] and its [`Reason`].

use std::borrow::Cow;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

/// The API's limit on an Event's note, in bytes.
pub(crate) const NOTE_LIMIT: usize = 1024;
/// The API's limit on an Event's reason and action, in bytes.
pub(crate) const REASON_LIMIT: usize = 128;

/// Why an Event was emitted: a short `UpperCamelCase` word such as `Provisioned`, shown in
/// the `REASON` column of `kubectl events`.
///
/// Implement it on an enum of your reasons; `&'static str` and `String` implement it too.
pub trait Reason: Send + Sync {
    /// The reason as the API stores it.
    fn as_str(&self) -> &str;

    /// What the operator did or failed to do (`events.k8s.io/v1` `action`); the reason unless
    /// overridden.
    fn action(&self) -> &str {
        self.as_str()
    }
}

impl Reason for &'static str {
    fn as_str(&self) -> &str {
        self
    }
}

impl Reason for String {
    fn as_str(&self) -> &str {
        self
    }
}

/// One Event: its type, reason and note, and optionally an action and a related object.
#[derive(Debug, Clone)]
pub struct EventData<R> {
    /// `Normal` or `Warning`.
    pub type_: EventType,
    /// Why it happened.
    pub reason: R,
    /// A human-readable description, cut to 1024 bytes when published.
    pub note: String,
    /// What was done; [`Reason::action`] when `None`.
    pub action: Option<String>,
    /// Another object involved, shown as the Event's `related` object.
    pub related: Option<ObjectReference>,
}

impl<R: Reason> EventData<R> {
    /// A `Normal` Event: something went as intended.
    pub fn normal(reason: R, note: impl Into<String>) -> Self {
        Self::new(EventType::Normal, reason, note)
    }

    /// A `Warning` Event: something needs a person's attention.
    pub fn warning(reason: R, note: impl Into<String>) -> Self {
        Self::new(EventType::Warning, reason, note)
    }

    fn new(type_: EventType, reason: R, note: impl Into<String>) -> Self {
        Self { type_, reason, note: note.into(), action: None, related: None }
    }

    /// Sets the action.
    #[must_use]
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// Sets the related object.
    #[must_use]
    pub fn with_related(mut self, related: ObjectReference) -> Self {
        self.related = Some(related);
        self
    }

    /// The action to publish.
    pub(crate) fn action(&self) -> &str {
        self.action.as_deref().unwrap_or_else(|| self.reason.action())
    }
}

/// `text` cut to at most `limit` bytes at a character boundary, ending in `…` when cut.
pub(crate) fn truncate(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    const MARK: &str = "…";
    let mut end = limit - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{MARK}", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept() {
        assert!(matches!(truncate("fine", NOTE_LIMIT), Cow::Borrowed("fine")));
        let exact = "x".repeat(NOTE_LIMIT);
        assert_eq!(truncate(&exact, NOTE_LIMIT), exact);
    }

    #[test]
    fn long_notes_are_cut_to_the_limit_at_a_char_boundary() {
        let long = "é".repeat(700); // 1400 bytes of two-byte characters
        let cut = truncate(&long, NOTE_LIMIT);
        assert!(cut.len() <= NOTE_LIMIT, "{} bytes", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.len() > NOTE_LIMIT - 4, "cut no more than needed: {} bytes", cut.len());
    }

    #[test]
    fn the_action_defaults_to_the_reason() {
        let event = EventData::warning("QuotaExceeded", "no room");
        assert_eq!(event.action(), "QuotaExceeded");
        assert_eq!(event.with_action("Provision").action(), "Provision");
    }
}
