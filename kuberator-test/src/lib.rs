//! Testing toolkit for Kuberator operators.
//!
//! **Not implemented yet.** This crate exports nothing today. It will start a real
//! `kube-apiserver` and `etcd` (built by `control-plane/`) for integration tests.
