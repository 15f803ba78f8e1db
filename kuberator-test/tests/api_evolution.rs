//! Issue 26, item 1, CEL first: validation rules (one across fields), a transition rule and a
//! default, written on the spec type with kube's derive attributes, are enforced by the real
//! API server, and a user sees the rule's message where they act: in `kubectl`'s answer and in
//! the client's error. (The in-memory server does not evaluate CEL; IN_MEMORY.md says so.)

use kube::Api;
use kube::api::Patch;
use kube::api::PatchParams;
use kuberator::prelude::*;
use kuberator_test::ControlPlane;

/// A volume: its storage class is fixed at creation, its replicas bounded by its maximum.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug)]
#[kube(group = "cel.kuberator.dev", version = "v1", kind = "Volume", namespaced)]
#[x_kube(validation = Rule::new("self.replicas <= self.maxReplicas").message("replicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
struct VolumeSpec {
    /// Fixed once created: a transition rule compares it with the stored value.
    #[x_kube(validation = Rule::new("self == oldSelf").message("storageClass is immutable; create a new Volume instead"))]
    storage_class: String,
    replicas: i32,
    max_replicas: i32,
    /// `standard` unless given: the API server fills it in.
    #[serde(default = "standard")]
    tier: String,
}

fn standard() -> String {
    "standard".to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cel_rules_and_defaults_on_the_spec_type_are_enforced_by_the_api_server() {
    let control_plane = ControlPlane::shared().await.unwrap();
    let client = control_plane.client().await.unwrap();
    kuberator_test::install_crd::<Volume>(&client).await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, "cel").await.unwrap();
    let volumes: Api<Volume> = Api::namespaced(client.clone(), &namespace);

    // Across fields: refused, with the rule's message, as `kubectl apply` prints it.
    let file = std::env::temp_dir().join(format!("cel-{namespace}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: cel.kuberator.dev/v1\nkind: Volume\nmetadata:\n  name: too-many\n  namespace: {namespace}\n\
             spec:\n  storageClass: fast\n  replicas: 5\n  maxReplicas: 3\n"
        ),
    )
    .unwrap();
    let refused = control_plane.run_kubectl(&["apply", "-f", &file.to_string_lossy()]).await.unwrap_err();
    let _ = std::fs::remove_file(&file);
    let said = refused.to_string();
    assert!(said.contains("replicas must not exceed maxReplicas"), "{said}");
    assert!(said.contains("too-many"), "the answer names the object: {said}");

    // The default: filled in by the API server (the apply leaves `tier` out).
    let data = serde_json::json!({
        "apiVersion": "cel.kuberator.dev/v1", "kind": "Volume", "metadata": {"name": "data"},
        "spec": {"storageClass": "fast", "replicas": 1, "maxReplicas": 3},
    });
    volumes.patch("data", &PatchParams::apply("cel-test"), &Patch::Apply(&data)).await.unwrap();
    let stored = volumes.get("data").await.unwrap();
    assert_eq!(stored.spec.tier, "standard");

    // The transition rule: the storage class cannot change, the replicas can.
    let change = |spec: serde_json::Value| Patch::Merge(serde_json::json!({ "spec": spec }));
    let error = volumes
        .patch("data", &PatchParams::default(), &change(serde_json::json!({"storageClass": "slow"})))
        .await
        .unwrap_err();
    let said = error.to_string();
    assert!(said.contains("storageClass is immutable; create a new Volume instead"), "{said}");
    let scaled = volumes
        .patch("data", &PatchParams::default(), &change(serde_json::json!({"replicas": 3})))
        .await
        .unwrap();
    assert_eq!((scaled.spec.replicas, scaled.spec.storage_class.as_str()), (3, "fast"));

    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
