//! `#[derive(Operator)]` for Kuberator.
//!
//! **Not implemented yet.** This crate exports no macro today; it is a placeholder in the
//! workspace so that the runtime crate's layout is final. Until the derive lands, write the
//! `Context`, `Finalize` and `Reconcile` implementations by hand as the `kuberator` crate
//! documentation shows.
