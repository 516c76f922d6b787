//! Shared support for integration tests.
//!
//! Integration tests run against a real control plane (kube-apiserver + etcd built from their Go
//! modules by `scripts/cluster`), never a Kubernetes mock. Use it from a test binary with
//!
//! ```ignore
//! #[path = "../support/mod.rs"]
//! mod support;
//! ```
//!
//! and start with [`cluster()`].

// Each test binary uses a different subset of the helpers.
#![allow(dead_code, unused_imports)]

mod cluster;
mod operator;

pub use cluster::{
    cluster, private_cluster, repo_root, wait_for, wait_for_value, Cluster, KubectlOutput,
    TestNamespace,
};
pub use operator::{credential_leak, free_port, Operator};
