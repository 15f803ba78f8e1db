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

#[allow(dead_code, unreachable_pub)]
#[path = "../derive_operator.rs"]
mod derive_operator;

#[allow(dead_code, unreachable_pub)]
#[path = "../database_operator.rs"]
mod database_operator;

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

/// The README's first example and `derive_operator` keep `Ready`: the real `kubectl wait`
/// returns once the Shout is reconciled. The operator watches `default`, its literal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_waits_for_a_shout_to_be_ready() {
    use kuberator::operator::Operator as _;

    let client = kuberator_test::admin_client().await;
    let cluster = kuberator_test::TestCluster::shared().await.unwrap();
    kuberator_test::install_crd::<derive_operator::Shout>(&client).await.unwrap();
    let operator = Background::spawn({
        let client = client.clone();
        move |shutdown| derive_operator::ShoutOperator.into_reconciler(client).start(Some(shutdown))
    });
    let shouts: Api<derive_operator::Shout> = Api::namespaced(client.clone(), "default");
    let spec = derive_operator::ShoutSpec { message: "wait for me".into() };
    shouts.create(&Default::default(), &derive_operator::Shout::new("waited", spec)).await.unwrap();

    let wait = ["wait", "--for=condition=Ready", "shout/waited", "-n", "default", "--timeout=60s"];
    let said = cluster.run_kubectl(&wait).await.unwrap();
    assert_eq!(said.trim(), "shout.kuberator.dev/waited condition met");
    let shout = shouts.get("waited").await.unwrap();
    assert_eq!(shout.status.unwrap().shouted.as_deref(), Some("WAIT FOR ME"));

    shouts.delete("waited", &Default::default()).await.unwrap();
    kuberator_test::wait_for(&shouts, "waited", Duration::from_secs(60), "waited to go", |s| s.is_none())
        .await
        .unwrap();
    operator.stop(STOP).await;
}

/// Two controllers in one process (`kuberator::Operators`), each reading what its objects
/// reference: the demo of `database_operator`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_operator_demo() {
    let (client, namespace) = setup("demo").await;
    kuberator_test::install_crd::<database_operator::Database>(&client).await.unwrap();
    kuberator_test::install_crd::<database_operator::Backup>(&client).await.unwrap();
    let operator = Background::spawn({
        let client = client.clone();
        move |shutdown| database_operator::operators().start(client, Some(shutdown))
    });
    database_operator::demo(client.clone(), &namespace).await.unwrap();
    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
