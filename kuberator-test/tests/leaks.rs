//! Nothing sensitive leaks into logs or Events: an operator process run as a ServiceAccount
//! (a bearer token in its kubeconfig) with every log level on, reconciling a good object and
//! one whose spec holds a secret in a field of the wrong type, and checking a scrape of its
//! `/metrics` that sends the token, never writes the token, a certificate, a key or the
//! secret. This binary relaxes the Baton CRD's schema (so the API
//! server accepts the wrong type), which is why it runs on a control plane of its own.

#![allow(clippy::print_stderr)]

mod support;

use std::time::Duration;

use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::DynamicObject;
use kube::api::PostParams;
use kuberator_test::ControlPlane;
use support::baton::Replica;

const SECRET: &str = "hunter2-this-must-never-be-logged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_certificate_key_or_field_value_in_any_log_line_or_event() {
    let test = support::baton::setup("leaks").await;
    let control_plane = ControlPlane::shared().await.unwrap();
    let client = test.client.clone();

    // Schema drift: the Baton spec accepts anything.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = crds.get("batons.test.kuberator.dev").await.unwrap();
    crd.metadata.managed_fields = None;
    support::accept_any_spec(&mut crd);
    crds.replace("batons.test.kuberator.dev", &PostParams::default(), &crd).await.unwrap();

    // The operator runs as a ServiceAccount, with a bearer token, as in a pod.
    let account = "leaky-operator";
    let token = kuberator_test::service_account_token(&client, &test.namespace, account).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("{}-{account}", test.namespace) },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
        "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": test.namespace }],
    }))
    .unwrap();
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    let kubeconfig = test.dir().join("kubeconfig");
    std::fs::write(&kubeconfig, control_plane.kubeconfig_with_token(&token).unwrap()).unwrap();

    let mut replica = Replica::spawn_secure(&test, "leaky", &kubeconfig, &["--log", "trace"]);
    replica.wait_ready().await;
    test.create("good").await;
    assert_eq!(test.reconciled_by("good", Duration::from_secs(30)).await, "leaky");
    // A scrape of /metrics with the token: the operator checks it with the API server.
    let (status, body) = kuberator_test::https_get(replica.metrics, "/metrics", Some(&token)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "test.kuberator.dev/v1",
        "kind": "Baton",
        "metadata": { "name": "bad", "namespace": test.namespace },
        "spec": { "note": "bad", "applySeconds": SECRET },
    }))
    .unwrap();
    test.batons.create(&PostParams::default(), &bad).await.unwrap();

    // The Event names the field and the type it wants, not the value.
    let note = test.event_note("bad", "DecodeFailed", &replica).await;
    assert!(note.contains("at `spec.applySeconds`: expected u64, found a string"), "{note}");
    assert!(!note.contains(SECRET), "the Event quotes the value: {note}");

    replica.signal("TERM");
    replica.exited(Duration::from_secs(30)).await;
    let log = replica.log();
    assert!(log.contains("TRACE"), "the log has trace lines:\n{log}");
    assert!(log.contains("at `spec.applySeconds`: expected u64, found a string"), "{log}");
    let kubeconfig = control_plane.kubeconfig();
    let credentials = [
        ("the bearer token", token.as_str()),
        // A distinctive middle part of each base64 blob in the kubeconfig: the CA, and the
        // admin's certificate and key.
        ("certificate-authority-data", middle_of(kubeconfig, "certificate-authority-data: ")),
        ("client-certificate-data", middle_of(kubeconfig, "client-certificate-data: ")),
        ("client-key-data", middle_of(kubeconfig, "client-key-data: ")),
        ("a PEM block", "-----BEGIN"),
        ("the secret field value", SECRET),
    ];
    for (what, text) in credentials {
        assert!(text.len() >= 10, "{what}: nothing to look for");
        assert!(!log.contains(text), "the log holds {what}");
    }
    eprintln!(
        "leaks: {} log lines at trace level, none with a credential or the secret",
        log.lines().count()
    );

    bindings.delete(&binding.metadata.name.clone().unwrap(), &Default::default()).await.unwrap();
    drop(replica);
    test.cleanup().await;
}

/// 40 characters from the middle of the value after `key` on its line.
fn middle_of<'a>(text: &'a str, key: &str) -> &'a str {
    let value = text.lines().find_map(|line| line.trim().strip_prefix(key)).unwrap_or_default();
    let middle = value.len() / 2;
    value.get(middle..middle + 40).unwrap_or_default()
}
