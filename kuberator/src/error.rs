//! The error type that handlers return and that the runtime reports.
//!
//! # Expected flow
//!
//! Handlers return [`Result<Action>`](Result). `?` converts `kube::Error` into
//! [`Error::Kube`] and `anyhow::Error` into [`Error::Anyhow`]; [`Error::other`] takes any
//! other error. A derived operator's handlers may also return `Result<Action, E>` for any
//! `std::error::Error` (or `anyhow::Result<Action>`), so `?` works on every error with no
//! wrapping; the runtime converts with [`Error::other`]. Code written for the trait-level API
//! can keep its `From<YourError> for kuberator::error::Error`, wrapping into
//! [`Error::Anyhow`].
//!
//! # Guarantees
//!
//! - Every variant that concerns one object names it as `Kind namespace/name`, so a log line
//!   or an Event is enough to find the object with `kubectl`.
//! - Wrapped errors are kept as [`source`](std::error::Error::source); [`Error::report`]
//!   renders the whole chain on one line, each error once, which is what logs, Events and
//!   status errors show.
//!
//! # Caveats
//!
//! [`Error::report`] prints every error of the chain. An error type whose message already
//! prints its source (`#[error("storage failed: {0}")] Storage(#[source] io::Error)`) shows
//! that source twice; write `#[error("storage failed")]` instead, as the Rust API guidelines
//! advise. kube's own errors print their direct source, and the report knows that.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt::Write as _;

/// A `Result` whose error is Kuberator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reconciling an object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from your own code, wrapped with [`anyhow`].
    ///
    /// Convert your error type into this variant with a `From` implementation:
    /// `KubeError::Anyhow(anyhow::anyhow!(error))`.
    #[error(transparent)]
    Anyhow(anyhow::Error),

    /// An error that retrying cannot fix (an invalid spec, say): reported like any other,
    /// but the object is not retried until it changes. Build it with [`Error::terminal`].
    #[error(transparent)]
    Terminal(anyhow::Error),

    /// A call to the Kubernetes API failed.
    ///
    /// API errors are boxed here and below so that `Error`, and every `Result` that carries
    /// it, stays small enough to return in registers' worth of memory.
    #[error("Kubernetes API call failed")]
    Kube(#[source] Box<kube::Error>),

    /// `handle_apply` returned an error for an object.
    #[error("handle_apply failed for {object}")]
    ApplyFailed {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// What `handle_apply` returned.
        #[source]
        source: Box<Error>,
    },

    /// `handle_cleanup` returned an error; the finalizer stays on the object and cleanup is
    /// retried.
    #[error("handle_cleanup failed for {object}; the finalizer stays until cleanup succeeds")]
    CleanupFailed {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// What `handle_cleanup` returned.
        #[source]
        source: Box<Error>,
    },

    /// The API server refused to apply a child ([`Children::apply`](crate::children::Children::apply)).
    #[error("applying {child}, a child of {parent}, failed")]
    ApplyChild {
        /// The child, as `Kind namespace/name`.
        child: String,
        /// The parent.
        parent: String,
        /// The API server's answer.
        #[source]
        source: Box<kube::Error>,
    },

    /// A child of that name exists and is controlled by another object, so the parent cannot
    /// own it.
    #[error(
        "{child} is controlled by {owner}, so {parent} cannot own it; give the child another name, \
         or delete {child} so that it is made again"
    )]
    ChildOwnedByOther {
        /// The child, as `Kind namespace/name`.
        child: String,
        /// The parent that wanted it.
        parent: Box<str>,
        /// Its controller, as its ownerReference names it.
        owner: Box<str>,
    },

    /// Deleting (or listing) children that the parent no longer wants failed.
    #[error("pruning {child}, no longer wanted by {parent}, failed")]
    PruneChild {
        /// The child (or the kind of children listed).
        child: String,
        /// The parent.
        parent: String,
        /// The API server's answer.
        #[source]
        source: Box<kube::Error>,
    },

    /// An object cannot be a child of this parent.
    #[error("{child} cannot be a child of {parent}: {why}")]
    InvalidChild {
        /// The child, as `Kind namespace/name`.
        child: String,
        /// The parent.
        parent: Box<str>,
        /// Why, and what to change.
        why: &'static str,
    },

    /// A handler asked for referenced objects of a kind the operator does not reference.
    #[error(
        "{parent} asked for the {kind} it references, but {kind} is not among the referenced kinds ({referenced}); \
         add it to `references(...)` in #[kuberator(...)] (or to the `References` of the controller)"
    )]
    NotReferenced {
        /// The kind asked for.
        kind: String,
        /// The parent, as `Kind namespace/name`.
        parent: Box<str>,
        /// The kinds referenced, comma-separated.
        referenced: String,
    },

    /// Referenced objects were asked for outside a running controller: nothing caches them.
    #[error(
        "{parent} asked for the {kind} it references, but no controller runs to watch and cache {kind}; \
         read it with the client instead outside a running controller"
    )]
    NoCache {
        /// The kind asked for.
        kind: String,
        /// The parent, as `Kind namespace/name`.
        parent: Box<str>,
    },

    /// A handler panicked. The panic was caught: the object is retried like after an error,
    /// and every other object keeps reconciling.
    #[error("a handler panicked while reconciling {object}: {message}")]
    Panicked {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The panic's message.
        message: String,
    },

    /// A reconcile ran longer than its timeout: it was cancelled, and is retried with the
    /// object's backoff.
    #[error(
        "reconciling {object} took longer than {after:?}, so it was cancelled and will be retried; if it \
         needs longer, raise `reconcile_timeout_seconds` (or --reconcile-timeout)"
    )]
    ReconcileTimedOut {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The timeout.
        after: std::time::Duration,
    },

    /// Adding the finalizer to an object failed, so `handle_apply` did not run yet.
    #[error("could not add finalizer `{finalizer}` to {object}")]
    AddFinalizer {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The finalizer name.
        finalizer: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },

    /// Cleanup succeeded but removing the finalizer failed; the removal is retried, and
    /// cleanup does not run again (see [`Finalize`](crate::Finalize)'s guarantees).
    #[error(
        "could not remove finalizer `{finalizer}` from {object}; its cleanup already ran and will not run \
         again, only the removal is retried"
    )]
    RemoveFinalizer {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The finalizer name.
        finalizer: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },

    /// The finalizer name is not one Kubernetes accepts.
    #[error(
        "finalizer `{finalizer}` on {object} is not valid: use a qualified name such as \
         `mycrds.example.com/finalizer`"
    )]
    InvalidFinalizer {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The finalizer name.
        finalizer: String,
    },

    /// The object has no `metadata.name`.
    #[error("a {kind} object has no metadata.name")]
    UnnamedObject {
        /// The object's kind.
        kind: String,
    },

    /// A namespaced object has no `metadata.namespace`.
    #[error("{kind} {name} has no metadata.namespace, but {kind} is namespaced")]
    MissingNamespace {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
    },

    /// A `Strict` API provider was asked for a namespace it was not given at start.
    #[error(
        "namespace `{namespace}` is not cached by this Strict API provider (cached: {cached}); \
         add it to the namespaces given to the provider, or use CachingStrategy::Adhoc or \
         CachingStrategy::Extendable"
    )]
    UncachedNamespace {
        /// The namespace that was asked for.
        namespace: String,
        /// The namespaces the provider was built with, comma separated.
        cached: String,
    },

    /// Writing the status subresource of an object failed.
    #[error("could not update the status of {object}")]
    UpdateStatus {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },

    /// A status value could not be serialized to JSON.
    #[error("could not serialize the status of {object}")]
    SerializeStatus {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// Publishing an Event failed.
    #[error("could not publish {reason} Event for {object}")]
    PublishEvent {
        /// The object the Event is about, as `Kind namespace/name`.
        object: String,
        /// The Event's reason.
        reason: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(Box::new(error))
    }
}

impl From<anyhow::Error> for Error {
    fn from(error: anyhow::Error) -> Self {
        Error::Anyhow(error)
    }
}

impl Error {
    /// The error and all its sources on one line, outermost first, separated by `: `.
    ///
    /// ```
    /// use kuberator::error::Error;
    ///
    /// let error = Error::ApplyFailed {
    ///     object: "MyCrd default/demo".into(),
    ///     source: Box::new(Error::Anyhow(anyhow::anyhow!("bucket quota exceeded"))),
    /// };
    /// assert_eq!(
    ///     error.report(),
    ///     "handle_apply failed for MyCrd default/demo: bucket quota exceeded"
    /// );
    /// ```
    #[must_use]
    pub fn report(&self) -> String {
        report(self)
    }

    /// Any error as a Kuberator error: a Kuberator error as it is, a `kube::Error` as
    /// [`Error::Kube`], anything else (a `std::error::Error`, an `anyhow::Error`, a message)
    /// as [`Error::Anyhow`], with its chain of sources kept.
    ///
    /// ```
    /// use kuberator::error::Error;
    ///
    /// let io = std::io::Error::other("disk full");
    /// assert_eq!(Error::other(io).report(), "disk full");
    /// let terminal = Error::other(anyhow::Error::new(Error::terminal(anyhow::anyhow!("bad spec"))));
    /// assert!(terminal.is_terminal());
    /// ```
    pub fn other<E>(error: E) -> Self
    where
        E: Into<Box<dyn StdError + Send + Sync + 'static>> + 'static,
    {
        // An anyhow::Error is looked into as anyhow sees it: the error it was made from,
        // through any context added since.
        let mut error = Some(error);
        if let Some(anyhow) = (&mut error as &mut dyn Any).downcast_mut::<Option<anyhow::Error>>() {
            let anyhow = anyhow.take().expect("taken once");
            return match anyhow.downcast::<Error>() {
                Ok(error) => error,
                Err(anyhow) => match anyhow.downcast::<kube::Error>() {
                    Ok(error) => Error::Kube(Box::new(error)),
                    Err(anyhow) => Error::Anyhow(anyhow),
                },
            };
        }
        let boxed = error.take().expect("taken once").into();
        let boxed = match boxed.downcast::<Error>() {
            Ok(error) => return *error,
            Err(boxed) => boxed,
        };
        match boxed.downcast::<kube::Error>() {
            Ok(error) => Error::Kube(error),
            Err(boxed) => Error::Anyhow(anyhow::Error::from_boxed(boxed)),
        }
    }

    /// An error that retrying cannot fix: the object is not retried until it changes.
    ///
    /// ```
    /// # use kube::runtime::controller::Action;
    /// fn check(size: u32) -> kuberator::Result<Action> {
    ///     if size > 100 {
    ///         return Err(kuberator::Error::terminal(anyhow::anyhow!("size {size} is over the quota of 100")));
    ///     }
    ///     Ok(Action::await_change())
    /// }
    /// assert!(check(500).unwrap_err().is_terminal());
    /// ```
    pub fn terminal(error: impl Into<anyhow::Error>) -> Self {
        Error::Terminal(error.into())
    }

    /// Whether this error, or the handler error it wraps, is [terminal](Error::terminal).
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        match self {
            Error::Terminal(_) => true,
            Error::ApplyFailed { source, .. } | Error::CleanupFailed { source, .. } => source.is_terminal(),
            _ => false,
        }
    }

    /// The reason of the `Warning` Event that reports this error as a failed reconcile.
    pub(crate) fn event_reason(&self) -> &'static str {
        self.classify().0
    }

    /// The `kind` label of `kuberator_reconcile_errors_total` for this error.
    pub(crate) fn metric_kind(&self) -> &'static str {
        self.classify().1
    }

    /// Event reason and metric kind, in one table so the two cannot drift apart.
    fn classify(&self) -> (&'static str, &'static str) {
        match self {
            Error::ApplyFailed { .. } => ("ApplyFailed", "apply"),
            Error::ReconcileTimedOut { .. } => ("ReconcileTimedOut", "timeout"),
            Error::CleanupFailed { .. } => ("CleanupFailed", "cleanup"),
            Error::Panicked { .. } => ("ReconcilePanicked", "panic"),
            Error::RemoveFinalizer { .. } => ("FinalizerRemovalFailed", "finalizer"),
            Error::AddFinalizer { .. } | Error::InvalidFinalizer { .. } => ("ReconcileFailed", "finalizer"),
            Error::UpdateStatus { .. } | Error::SerializeStatus { .. } => ("ReconcileFailed", "status"),
            Error::UncachedNamespace { .. } | Error::MissingNamespace { .. } => {
                ("ReconcileFailed", "namespace")
            }
            Error::Kube(_) => ("ReconcileFailed", "api"),
            Error::ApplyChild { .. } => ("ChildApplyFailed", "child"),
            Error::ChildOwnedByOther { .. } => ("ChildConflict", "child"),
            Error::PruneChild { .. } => ("ChildPruneFailed", "child"),
            Error::InvalidChild { .. } => ("InvalidChild", "child"),
            Error::NotReferenced { .. } | Error::NoCache { .. } => ("ReconcileFailed", "reference"),
            _ => ("ReconcileFailed", "other"),
        }
    }
}

/// Renders an error and its sources on one line, outermost first, each once.
///
/// kube's errors print their direct source in their own message (`ApiError: {0}`), so after
/// one of them the next message is left out and the chain goes on from there.
pub(crate) fn report(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut embeds_next = prints_its_source(error);
    let mut current = error.source();
    while let Some(source) = current {
        if !embeds_next {
            let _ = write!(out, ": {source}");
        }
        embeds_next = prints_its_source(source);
        current = source.source();
    }
    out
}

/// Whether `error` is of a type whose message includes its direct source's. (Our variants
/// hold kube's errors boxed, so a source may be the `Box`.)
fn prints_its_source(error: &(dyn StdError + 'static)) -> bool {
    error.is::<kube::Error>()
        || error.is::<Box<kube::Error>>()
        || error.is::<kube::runtime::watcher::Error>()
        || error.is::<kube::runtime::controller::Error<Error, kube::runtime::watcher::Error>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_found() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("mycrds.example.com \"demo\" not found", "NotFound")
                .with_code(404)
                .boxed(),
        )
    }

    #[test]
    fn kube_errors_convert_with_question_mark() {
        fn call() -> Result<()> {
            Err(not_found())?;
            Ok(())
        }
        let error = call().unwrap_err();
        assert!(matches!(error, Error::Kube(_)));
        assert!(error.report().starts_with("Kubernetes API call failed: "));
        assert!(error.report().contains("mycrds.example.com \"demo\" not found"));
    }

    #[test]
    fn user_errors_wrap_into_anyhow_and_stay_transparent() {
        #[derive(Debug, thiserror::Error)]
        #[error("bucket {0} is gone")]
        struct BucketGone(String);

        impl From<BucketGone> for Error {
            fn from(error: BucketGone) -> Self {
                Error::Anyhow(anyhow::anyhow!(error))
            }
        }

        fn handler() -> Result<()> {
            Err(BucketGone("photos".into()))?;
            Ok(())
        }
        let error = handler().unwrap_err();
        assert_eq!(error.to_string(), "bucket photos is gone");
        assert!(matches!(error, Error::Anyhow(_)));
    }

    #[test]
    fn handler_failures_name_the_object_and_keep_the_cause() {
        let error = Error::CleanupFailed {
            object: "MyCrd team-a/demo".into(),
            source: Box::new(Error::Anyhow(anyhow::anyhow!("bucket photos is not empty"))),
        };
        assert_eq!(
            error.report(),
            "handle_cleanup failed for MyCrd team-a/demo; the finalizer stays until cleanup \
             succeeds: bucket photos is not empty"
        );
        assert!(StdError::source(&error).is_some());
    }

    #[test]
    fn uncached_namespace_says_what_to_do() {
        let error =
            Error::UncachedNamespace { namespace: "team-b".into(), cached: "default, production".into() };
        let message = error.to_string();
        assert!(message.contains("`team-b`"), "{message}");
        assert!(message.contains("default, production"), "{message}");
        assert!(message.contains("CachingStrategy::Adhoc"), "{message}");
    }

    #[test]
    fn terminal_errors_are_recognized_through_the_handler_wrapper() {
        let error = Error::ApplyFailed {
            object: "MyCrd default/demo".into(),
            source: Box::new(Error::terminal(anyhow::anyhow!("size 500 is over the quota"))),
        };
        assert!(error.is_terminal());
        assert_eq!(error.report(), "handle_apply failed for MyCrd default/demo: size 500 is over the quota");
        assert!(!Error::Anyhow(anyhow::anyhow!("flaky")).is_terminal());
    }

    #[test]
    fn every_error_of_a_chain_is_reported_once() {
        let error = Error::RemoveFinalizer {
            object: "MyCrd default/demo".into(),
            finalizer: "mycrds.example.com/finalizer".into(),
            source: Box::new(not_found()),
        };
        let report = error.report();
        assert_eq!(report.matches("not found").count(), 2, "message and Debug of the Status: {report}");
        assert!(report.starts_with(
            "could not remove finalizer `mycrds.example.com/finalizer` from MyCrd default/demo; its cleanup \
             already ran and will not run again, only the removal is retried: ApiError: "
        ));
        let terminal = Error::terminal(anyhow::anyhow!("size 500 is over the quota"));
        assert_eq!(terminal.report(), "size 500 is over the quota");
        let context =
            Error::Anyhow(anyhow::Error::new(std::io::Error::other("disk full")).context("writing"));
        assert_eq!(context.report(), "writing: disk full");
    }

    #[test]
    fn other_keeps_kuberator_and_kube_errors_and_wraps_the_rest() {
        assert!(matches!(Error::other(not_found()), Error::Kube(_)));
        let inner = Error::UnnamedObject { kind: "MyCrd".into() };
        assert!(matches!(Error::other(inner), Error::UnnamedObject { .. }));
        let wrapped = Error::other(anyhow::Error::new(std::io::Error::other("disk full")).context("writing"));
        assert!(matches!(wrapped, Error::Anyhow(_)));
        assert_eq!(wrapped.report(), "writing: disk full");
        assert_eq!(Error::other("plain message").report(), "plain message");
    }

    #[test]
    fn errors_stay_small() {
        assert!(size_of::<Error>() <= 64, "Error is {} bytes", size_of::<Error>());
    }

    #[test]
    fn status_errors_name_the_object() {
        let error =
            Error::UpdateStatus { object: "MyCrd default/demo".into(), source: Box::new(not_found()) };
        assert!(error.report().starts_with("could not update the status of MyCrd default/demo: "));
    }
}
