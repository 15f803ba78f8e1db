//! An object that does not decode must not stall the controller. This binary relaxes the
//! Probe CRD's schema (so the API server accepts a `spec.message` that is a number), which
//! is why it runs on a control plane of its own.

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::CustomResourceExt;
use kube::ResourceExt;
use kube::api::ApiResource;
use kube::api::DynamicObject;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kuberator::Reconcile;
use kuberator_test::Background;
use kuberator_test::events_for;
use support::Probe;
use support::ProbeSpec;
use support::wait_observed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_does_not_decode_is_reported_and_the_others_go_on() {
    let client = kuberator_test::admin_client().await;

    // The Probe CRD, with a spec the API server does not check: schema drift, as when a
    // newer CRD version is installed under an older operator.
    let mut crd = Probe::crd();
    support::accept_any_spec(&mut crd);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(&crd.name_any(), &PatchParams::apply("undecodable-test").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    kuberator_test::wait_for(&crds, &crd.name_any(), Duration::from_secs(30), "the CRD", |crd| {
        crd.and_then(|crd| crd.status.as_ref()?.conditions.as_ref()).is_some_and(|conditions| {
            conditions.iter().any(|c| c.type_ == "Established" && c.status == "True")
        })
    })
    .await
    .unwrap();

    let namespace = kuberator_test::test_namespace(&client, "undecodable").await.unwrap();
    let test = support::Setup {
        client: client.clone(),
        namespace: namespace.clone(),
        api: Api::namespaced(client.clone(), &namespace),
    };
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    // Written through the dynamic API: `applyMillis` is a string (a secret, say), the
    // operator's type wants a number.
    let resource = ApiResource::erase::<Probe>(&());
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let mut bad = DynamicObject::new("drifted", &resource);
    let secret = "hunter2-must-not-be-logged";
    bad.data = serde_json::json!({ "spec": { "message": "drifted", "applyMillis": secret } });
    let bad = dynamic.create(&PostParams::default(), &bad).await.unwrap();
    let mut bad_as_probe = Probe::new("drifted", ProbeSpec::default());
    bad_as_probe.metadata = bad.metadata.clone();

    test.create("fine", ProbeSpec { message: "still works".into(), ..ProbeSpec::default() }).await;
    let fine = wait_observed(&test.api, "fine").await;
    assert_eq!(fine.status.unwrap().message.as_deref(), Some("still works"));

    // Reported once, as a Warning Event on the object, with the field's path and the type it
    // wants, never the value.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let warning = loop {
        let events = events_for(&client, &bad_as_probe).await.unwrap();
        if let Some(event) = events.into_iter().find(|e| e.reason.as_deref() == Some("DecodeFailed")) {
            break event;
        }
        assert!(std::time::Instant::now() < deadline, "no DecodeFailed event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.unwrap();
    assert!(note.starts_with(&format!("Probe {namespace}/drifted does not match")), "{note}");
    assert!(note.contains("at `spec.applyMillis`: expected u64, found a string"), "{note}");
    assert!(!note.contains(secret), "the Event quotes the value: {note}");
    assert!(!journal.lock().unwrap().applies.contains_key("drifted"), "it was never handed to a handler");
    assert!(dynamic.get("drifted").await.unwrap().finalizers().is_empty(), "nor given our finalizer");

    // Fixed, it is reconciled like any other.
    let fix = serde_json::json!({ "spec": { "message": "fixed", "applyMillis": 0 } });
    dynamic.patch("drifted", &PatchParams::default(), &Patch::Merge(&fix)).await.unwrap();
    let fixed = wait_observed(&test.api, "drifted").await;
    assert_eq!(fixed.status.unwrap().message.as_deref(), Some("fixed"));

    // Broken again, then deleted: the finalizer holds it, cleanup cannot run, and the Event
    // says so with the command that releases it, which works as printed.
    let drift = serde_json::json!({ "spec": { "message": 7 } });
    dynamic.patch("drifted", &PatchParams::default(), &Patch::Merge(&drift)).await.unwrap();
    dynamic.delete("drifted", &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let note = loop {
        let events = events_for(&client, &bad_as_probe).await.unwrap();
        let deleting = events.into_iter().find(|e| e.reason.as_deref() == Some("DecodeFailedWhileDeleting"));
        let deleting = deleting.and_then(|e| e.note);
        if let Some(note) = deleting {
            break note;
        }
        assert!(std::time::Instant::now() < deadline, "no DecodeFailedWhileDeleting event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(note.contains("its cleanup cannot run while it does not decode"), "{note}");
    assert!(
        note.contains(&format!(
            "Fix it with `kubectl edit probes.test.kuberator.dev drifted -n {namespace}`"
        )),
        "{note}"
    );
    let command =
        note.split('`').find(|part| part.starts_with("kubectl patch")).expect("the release command");
    assert!(command.contains(support::FINALIZER), "{command}");
    let args: Vec<String> = shell_words(command.trim_start_matches("kubectl "));
    let control_plane = kuberator_test::ControlPlane::shared().await.unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    control_plane.run_kubectl(&args).await.unwrap();
    kuberator_test::wait_for(&dynamic, "drifted", Duration::from_secs(30), "drifted to go", |d| d.is_none())
        .await
        .unwrap();

    operator.stop(Duration::from_secs(30)).await;
    test.cleanup().await;
}

/// `command` split as a shell would: on spaces, with single-quoted parts kept whole.
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in command.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => words.extend((!current.is_empty()).then(|| std::mem::take(&mut current))),
            c => current.push(c),
        }
    }
    words.extend((!current.is_empty()).then_some(current));
    words
}
