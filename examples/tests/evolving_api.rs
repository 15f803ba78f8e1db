//! Issue 26, items 3, 6 and 7: the example whose API grows from v1alpha1 to v1, on the real
//! control plane (the in-memory server calls no webhooks): a Volume stored as v1alpha1 read as
//! v1, a v1 Volume read and changed through v1alpha1 without losing its tier, a default and a
//! refusal from the operator's methods, the storage version migration, cleanup.
#![allow(missing_docs)]

#[allow(dead_code, unreachable_pub)]
#[path = "../evolving_api.rs"]
mod evolving_api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolving_api_demo() {
    let (client, namespace) = kuberator_test::test_env("evolving").await;
    evolving_api::demo(client.clone(), &namespace).await.unwrap();
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
