//! Each example operator, end to end against the real control plane: the demo its README
//! line runs (create, reconcile, delete, cleanup), with the operator in the background, in
//! a namespace of the test's own.
#![allow(missing_docs)]

use std::time::Duration;

use kube::Api;
use kuberator::Reconcile;
use kuberator_test::Background;

#[allow(dead_code, unreachable_pub)]
#[path = "../basic_operator.rs"]
mod basic_operator;

#[allow(dead_code, unreachable_pub)]
#[path = "../with_status.rs"]
mod with_status;

#[allow(dead_code, unreachable_pub)]
#[path = "../error_handling.rs"]
mod error_handling;

/// A client and a namespace of this test's own.
async fn setup(prefix: &str) -> (kube::Client, String) {
    let (client, namespace) = kuberator_test::test_env(prefix).await;
    (client, namespace)
}

const STOP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_operator_demo() {
    let (client, namespace) = setup("demo").await;
    kuberator_test::install_crd::<basic_operator::Greeting>(&client).await.unwrap();
    let operator = Background::spawn({
        let (client, namespace) = (client.clone(), namespace.clone());
        move |shutdown| basic_operator::reconciler(client, &namespace).start(Some(shutdown))
    });
    let api = Api::namespaced(client.clone(), &namespace);
    kuberator_examples::demo(&api, basic_operator::sample(&namespace), basic_operator::reconciled)
        .await
        .unwrap();
    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_status_demo() {
    let (client, namespace) = setup("demo").await;
    kuberator_test::install_crd::<with_status::Echo>(&client).await.unwrap();
    let operator = Background::spawn({
        let (client, namespace) = (client.clone(), namespace.clone());
        move |shutdown| with_status::reconciler(client, &namespace).start_concurrent(Some(4), Some(shutdown))
    });
    let api: Api<with_status::Echo> = Api::namespaced(client.clone(), &namespace);
    kuberator_examples::demo(&api, with_status::sample(&namespace), with_status::reconciled).await.unwrap();
    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_handling_demo() {
    let (client, namespace) = setup("demo").await;
    kuberator_test::install_crd::<error_handling::Bucket>(&client).await.unwrap();
    let operator = Background::spawn({
        let (client, namespace) = (client.clone(), namespace.clone());
        move |shutdown| error_handling::reconciler(client, &namespace).start(Some(shutdown))
    });
    let api: Api<error_handling::Bucket> = Api::namespaced(client.clone(), &namespace);
    let sample = error_handling::sample(&namespace);
    kuberator_examples::demo(&api, sample.clone(), error_handling::reconciled).await.unwrap();

    let events = kuberator_test::events_for(&client, &sample).await.unwrap();
    assert!(
        events.iter().any(|event| event.reason.as_deref() == Some("ApplyFailed")
            && event
                .note
                .as_deref()
                .is_some_and(|note| note.contains("asks for 500 GiB but the quota is 100 GiB"))),
        "a Warning Event explains the failure: {events:#?}"
    );
    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
