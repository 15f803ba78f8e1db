//! Validation and defaulting webhooks from your operator's own methods, served over HTTPS with
//! certificates the operator makes and renews itself.
//!
//! # Expected flow
//!
//! Check what a schema rule can check with a rule (`x-kubernetes-validations`, see the guide's
//! [Evolving an API](crate::guide::evolving)); write a webhook for the rest: a check that reads
//! other objects, a default computed from several fields. Name the methods in the attribute
//! and write them next to your handlers:
//!
//! ```ignore
//! #[derive(Operator)]
//! #[kuberator(resource = Volume, webhooks = [validate, set_defaults])]
//! struct VolumeOperator;
//!
//! impl VolumeOperator {
//!     async fn validate(&self, change: Change<'_, Volume>, ctx: &Ctx<Self>) -> Result<(), Rejection> {
//!         match change {
//!             Change::Create { new } | Change::Update { new, .. } if new.spec.replicas > 9 => {
//!                 Err(Rejection::new("replicas must be at most 9"))
//!             }
//!             _ => Ok(()),
//!         }
//!     }
//!
//!     async fn set_defaults(&self, volume: &mut Volume, ctx: &Ctx<Self>) -> Result<(), Rejection> {
//!         volume.spec.tier.get_or_insert_with(|| "standard".to_owned());
//!         Ok(())
//!     }
//! }
//! ```
//!
//! The derived operator's `run` serves them on `--webhook-address` (default `0.0.0.0:9443`),
//! writes the CA bundle into its webhook configurations at start and whenever the CA changes,
//! and `manifests` prints the configurations, the Service in front of the port and the RBAC.
//! A user whose change is refused sees your message in `kubectl`'s answer:
//!
//! ```text
//! Error from server (Forbidden): error when creating "volume.yaml": admission webhook
//! "validate.volumes.example.com" denied the request: replicas must be at most 9
//! ```
//!
//! # What is decided for you, and why
//!
//! | setting | value | why |
//! | --- | --- | --- |
//! | rules | the operator's own kind only, its main resource (not `/status`) | a webhook never stands in the way of anything else in the cluster |
//! | `failurePolicy` | `Fail` | when the operator is down, a change waits for it: an object that was never validated or defaulted is never stored (while the operator is down it does not reconcile either) |
//! | `timeoutSeconds` | 10 | the API server's default; your method has 9 s, then the change is refused with a message that says so |
//! | `sideEffects` | `None` | your methods must not write: a dry run (`kubectl apply --dry-run=server`) calls them too |
//! | `matchPolicy` | `Equivalent`, rules for the reconciled version only | a change made through another version of the kind is converted to the reconciled one and checked too: your methods see one type |
//! | `namespaceSelector` | the namespaces the operator watches; all when it watches all | objects it does not reconcile are not its to refuse |
//! | `reinvocationPolicy` | `Never` | defaults are set once, after which other mutating webhooks may run |
//! | operations | `validate`: CREATE, UPDATE, DELETE; `set_defaults`: CREATE, UPDATE | |
//!
//! Two updates never reach `validate`, so that an object stored before a rule existed can
//! always be let go: one that leaves everything but `metadata` and `status` as it was (a
//! finalizer removed, a label changed), and any update of an object being deleted. The latter
//! does not reach `set_defaults` either. A default is sent as a JSON patch of what your method
//! changed, nothing else: fields your type does not know are kept as they are.
//!
//! # What a caller can make the port hold
//!
//! The port is reachable by whoever reaches the Pod. Besides the bounds every Kuberator port
//! has (256 connections, 10 s for a TLS handshake and for a request's headers, 16 KiB of
//! headers, 90 s idle), an admission review's body is at most 8 MiB (an update carries the
//! object and the old object, each at most the API server's 3 MiB request limit), a conversion
//! review's at most 32 MiB (a list read through another version unpaged, larger than that,
//! fails: page it, as kubectl does), each must arrive within 10 s, and the bodies held at once
//! come to at most 64 MiB (each counted at its declared length); more wait for room. The port
//! answers only `POST` to its own paths.

#[cfg(feature = "server")]
mod admission;
#[cfg(feature = "server")]
mod certs;
#[cfg(feature = "server")]
mod config;
mod convert;
#[cfg(feature = "server")]
mod server;

#[cfg(feature = "server")]
pub(crate) use self::admission::Admission;
#[cfg(feature = "server")]
pub(crate) use self::admission::Admit;
#[cfg(feature = "server")]
pub use self::certs::Certificates;
#[cfg(feature = "server")]
pub use self::certs::DEFAULT_CA_VALIDITY;
#[cfg(feature = "server")]
pub use self::certs::DEFAULT_SERVING_VALIDITY;
#[cfg(feature = "server")]
pub use self::config::Endpoint;
#[cfg(feature = "server")]
pub(crate) use self::config::Hooked;
#[cfg(feature = "server")]
pub(crate) use self::config::configurations;
pub use self::convert::ConvertsWith;
pub use self::convert::Version;
pub use self::convert::migrate_storage;
#[cfg(feature = "server")]
pub use self::server::WebhookError;
#[cfg(feature = "server")]
pub use self::server::WebhookServer;
#[cfg(feature = "server")]
pub use self::server::Webhooks;

#[cfg(feature = "server")]
/// The Service in front of the webhook port of the process `name`, as `manifests` prints it.
pub(crate) fn service_name(name: &str) -> String {
    format!("{name}-webhook")
}

#[cfg(feature = "server")]
/// The Secret the replicas of the process `name` share their webhook CA in.
pub(crate) fn ca_secret_name(name: &str) -> String {
    format!("{name}-webhook-ca")
}

/// The change a validating webhook is asked about.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a, R> {
    /// `new` is about to be created.
    Create {
        /// The object, as it would be stored (defaults set).
        new: &'a R,
    },
    /// `old` is about to become `new`. Only updates that change more than `metadata` and
    /// `status`, of objects not being deleted, are asked about.
    Update {
        /// As stored now.
        old: &'a R,
        /// As it would be stored.
        new: &'a R,
    },
    /// `old` is about to be deleted (or marked for deletion, when it has finalizers).
    Delete {
        /// As stored now.
        old: &'a R,
    },
}

impl<'a, R> Change<'a, R> {
    /// The object as it would be after the change: `None` for a deletion.
    pub fn new_object(&self) -> Option<&'a R> {
        match self {
            Change::Create { new } | Change::Update { new, .. } => Some(new),
            Change::Delete { .. } => None,
        }
    }

    /// The object as stored before the change: `None` for a creation.
    pub fn old_object(&self) -> Option<&'a R> {
        match self {
            Change::Update { old, .. } | Change::Delete { old } => Some(old),
            Change::Create { .. } => None,
        }
    }
}

/// Why a webhook refuses a change: the message the user sees, in `kubectl`'s answer after
/// `admission webhook "..." denied the request: `.
///
/// Errors of your own (`?` on a client call, say) become a rejection that says the check
/// could not be made; the error is logged in full, and the user sees its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    message: String,
}

impl Rejection {
    /// Refuses the change with `message`: say what is wrong and what to write instead.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// The message the user sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn failed(error: &dyn std::fmt::Display) -> Self {
        Self::new(format!("the check could not be made: {error}"))
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<kube::Error> for Rejection {
    fn from(error: kube::Error) -> Self {
        Self::failed(&error)
    }
}

impl From<crate::Error> for Rejection {
    fn from(error: crate::Error) -> Self {
        Self::failed(&error)
    }
}

impl From<anyhow::Error> for Rejection {
    fn from(error: anyhow::Error) -> Self {
        Self::failed(&format!("{error:#}"))
    }
}

impl From<String> for Rejection {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Rejection {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}
