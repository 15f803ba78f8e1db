//! Each example operator, end to end against the real control plane: the demo its README
//! line runs (create, reconcile, delete, cleanup), with the operator in the background.
#![allow(missing_docs)]

use std::time::Duration;

use kube::Api;
use kuberator::Reconcile;
use kuberator_test::Background;
use kuberator_test::ControlPlane;

#[allow(dead_code, unreachable_pub)]
#[path = "../basic_operator.rs"]
mod basic_operator;

#[allow(dead_code, unreachable_pub)]
#[path = "../with_status.rs"]
mod with_status;

#[allow(dead_code, unreachable_pub)]
#[path = "../error_handling.rs"]
mod error_handling;

async fn client() -> kube::Client {
    kuberator_test::init_tracing();
    let control_plane =
        ControlPlane::shared().await.expect("the control plane must start (tests never skip)");
    control_plane.client().await.unwrap()
}

const STOP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_operator_demo() {
    let client = client().await;
    kuberator_examples::install_crd::<basic_operator::Greeting>(&client).await.unwrap();
    let operator = Background::spawn({
        let client = client.clone();
        |shutdown| basic_operator::reconciler(client).start(Some(shutdown))
    });
    let api = Api::namespaced(client.clone(), "default");
    kuberator_examples::demo(&api, basic_operator::sample(), basic_operator::reconciled).await.unwrap();
    operator.stop(STOP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_status_demo() {
    let client = client().await;
    kuberator_examples::install_crd::<with_status::Echo>(&client).await.unwrap();
    let operator = Background::spawn({
        let client = client.clone();
        |shutdown| with_status::reconciler(client).start_concurrent(Some(4), Some(shutdown))
    });
    let api: Api<with_status::Echo> = Api::namespaced(client.clone(), "default");
    kuberator_examples::demo(&api, with_status::sample(), with_status::reconciled).await.unwrap();
    operator.stop(STOP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_handling_demo() {
    let client = client().await;
    kuberator_examples::install_crd::<error_handling::Bucket>(&client).await.unwrap();
    let operator = Background::spawn({
        let client = client.clone();
        |shutdown| error_handling::reconciler(client).start(Some(shutdown))
    });
    let api: Api<error_handling::Bucket> = Api::namespaced(client.clone(), "default");
    let sample = error_handling::sample();
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
}
