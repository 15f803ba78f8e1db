//! Status helpers: conditions ([`Condition`], [`Conditions`], the `Ready` condition a derived
//! operator maintains), the observed-generation pattern ([`ObserveGeneration`]) and errors in
//! status ([`AsStatusError`], [`WithStatusError`]; also at the crate root, where the seed put
//! them).
//!
//! # One status write per reconcile
//!
//! In a derived operator whose status has `conditions`, what `handle_apply` writes to its
//! object's status (`Ctx::update_status`, or the repository's `update_status`; merged in order
//! when it writes several times) is written together with `Ready` and the conditions it set,
//! in one merge patch when it returns; nothing when the object already holds all of it. A new
//! object costs two writes (the finalizer, the status), a change of its spec one. `Ready=True`
//! is never written before the handler returned.
//!
//! Inside `handle_apply`, a status write therefore returns before it reaches the API server,
//! and a write the API server refuses fails the reconcile (`Ready=False`, with the reason)
//! instead of the call. A status meant to show progress during a long handler (a
//! `Provisioning` phase) shows when the handler returns: return `Action::requeue(...)`
//! between steps to show each. Cleanups, trait-level operators and statuses without
//! `conditions` write at once, as called.

pub(crate) mod conditions;

pub use self::conditions::Condition;
pub use self::conditions::Conditions;
pub use self::conditions::READY;

/// A status that records the generation of the spec it describes.
///
/// # Expected flow
///
/// Implement [`ObserveGeneration`] on your status type and write it with
/// [`Finalize::update_status`](crate::Finalize::update_status): Kuberator sets the observed
/// generation to the object's `metadata.generation` before it patches `/status`, so readers
/// can tell whether the status describes the current spec.
///
/// To report a failure in status, implement [`AsStatusError`] on your error type and
/// [`WithStatusError`] on your status type, then call
/// [`Finalize::update_status_with_error`](crate::Finalize::update_status_with_error).
///
/// # Caveats
///
/// [`ObserveGeneration::add`] and [`WithStatusError::add`] share a name. A status type that
/// implements both needs the trait named to call either by hand:
/// `ObserveGeneration::add(&mut status, 3)`.
///
/// # Example
///
/// ```
/// use kuberator::ObserveGeneration;
///
/// #[derive(Default)]
/// struct MyStatus {
///     observed_generation: Option<i64>,
/// }
///
/// impl ObserveGeneration for MyStatus {
///     fn add(&mut self, observed_generation: i64) {
///         self.observed_generation = Some(observed_generation);
///     }
/// }
///
/// let mut status = MyStatus::default();
/// status.add(4);
/// assert_eq!(status.observed_generation, Some(4));
/// ```
pub trait ObserveGeneration {
    /// Stores `observed_generation`, the object's `metadata.generation` at the time the status
    /// was computed.
    fn add(&mut self, observed_generation: i64);

    /// Stores the generation in `meta` (an object's `metadata`), if it has one.
    fn with_observed_gen(&mut self, meta: &kube::api::ObjectMeta) {
        if let Some(generation) = meta.generation {
            self.add(generation);
        }
    }
}

/// Converts your error into the error type your status carries.
///
/// `E` is the status error: a serializable type that appears under `.status` of the object.
pub trait AsStatusError<E> {
    /// The status error to show for this error.
    fn as_status_error(&self) -> E;
}

/// A status that can carry an error of type `E`, produced from errors of type `A`.
///
/// `A` is your error type (it implements [`AsStatusError<E>`]); the parameter ties the two
/// together so that [`Finalize::update_status_with_error`](crate::Finalize::update_status_with_error)
/// accepts only errors your status knows how to show.
pub trait WithStatusError<A, E>
where
    A: AsStatusError<E>,
{
    /// Stores the status error.
    fn add(&mut self, error: E);

    /// Stores the status error that `error` shows as.
    fn with_status_error(&mut self, error: &A) {
        self.add(error.as_status_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq)]
    struct Status {
        observed_generation: Option<i64>,
        error: Option<String>,
    }

    enum MyError {
        NotFound,
    }

    impl AsStatusError<String> for MyError {
        fn as_status_error(&self) -> String {
            match self {
                MyError::NotFound => "resource not found".into(),
            }
        }
    }

    impl ObserveGeneration for Status {
        fn add(&mut self, observed_generation: i64) {
            self.observed_generation = Some(observed_generation);
        }
    }

    impl WithStatusError<MyError, String> for Status {
        fn add(&mut self, error: String) {
            self.error = Some(error);
        }
    }

    #[test]
    fn a_status_can_observe_a_generation_and_carry_an_error() {
        let mut status = Status::default();
        ObserveGeneration::add(&mut status, 7);
        WithStatusError::<MyError, String>::add(&mut status, MyError::NotFound.as_status_error());
        assert_eq!(status, Status { observed_generation: Some(7), error: Some("resource not found".into()) });

        let mut status = Status::default();
        let meta = kube::api::ObjectMeta { generation: Some(3), ..Default::default() };
        status.with_observed_gen(&meta);
        status.with_status_error(&MyError::NotFound);
        assert_eq!(status, Status { observed_generation: Some(3), error: Some("resource not found".into()) });
    }
}
