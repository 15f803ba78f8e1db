//! The real `kubectl` against both servers: `create namespace`, `create configmap`, `create
//! secret generic` and `create serviceaccount` (protobuf bodies), `apply --server-side`,
//! `get`, `describe`, `events`, `wait` and `delete`, with the same output from each.

use std::io::Write as _;

use kuberator_test::TestCluster;
use serde_json::json;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.kubectl.kuberator.dev
spec:
  group: kubectl.kuberator.dev
  names: {plural: gizmos, singular: gizmo, kind: Gizmo, shortNames: [gz]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().expect("a temporary file");
    file.write_all(text.as_bytes()).expect("written");
    file
}

/// Runs the flow on `cluster`; every output is checked as a user would read it.
async fn flow(cluster: &TestCluster) {
    kuberator_test::init_tracing();
    let client = cluster.client().await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, "kubectl").await.unwrap();
    let kubectl = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster
            .run_kubectl(&args)
            .await
            .unwrap_or_else(|error| panic!("on the {} server: {error}", cluster.kind()))
    };
    let args = |text: &str| -> Vec<String> { text.split_whitespace().map(str::to_string).collect() };

    // The commands a new user types first: kubectl sends these bodies as protobuf.
    let created = format!("{namespace}-created");
    assert_eq!(
        kubectl(args(&format!("create namespace {created}"))).await.trim(),
        format!("namespace/{created} created")
    );
    let creations = [
        ("create configmap settings --from-literal=mode=fast", "configmap/settings created"),
        ("create secret generic login --from-literal=password=s3cr3t", "secret/login created"),
        ("create serviceaccount robot", "serviceaccount/robot created"),
    ];
    for (command, said) in creations {
        assert_eq!(kubectl(args(&format!("{command} -n {created}"))).await.trim(), said, "{command}");
    }
    let read = |what: &str, path: &str| args(&format!("get {what} -n {created} -o jsonpath={{{path}}}"));
    assert_eq!(kubectl(read("configmap settings", ".data.mode")).await, "fast");
    assert_eq!(kubectl(read("secret login", ".data.password")).await, "czNjcjN0", "base64 of s3cr3t");
    assert_eq!(kubectl(read("secret login", ".type")).await, "Opaque");
    assert_eq!(kubectl(read("serviceaccount robot", ".metadata.name")).await, "robot");
    kuberator_test::delete_namespace(&client, &created).await.unwrap();

    let crd = file(CRD);
    let applied =
        kubectl(vec!["apply".into(), "--server-side".into(), "-f".into(), crd.path().display().to_string()])
            .await;
    assert_eq!(
        applied.trim(),
        "customresourcedefinition.apiextensions.k8s.io/gizmos.kubectl.kuberator.dev serverside-applied"
    );
    let established = "wait --for=condition=Established crd/gizmos.kubectl.kuberator.dev --timeout=60s";
    assert_eq!(
        kubectl(args(established)).await.trim(),
        "customresourcedefinition.apiextensions.k8s.io/gizmos.kubectl.kuberator.dev condition met"
    );

    let gizmo = file(&format!(
        "apiVersion: kubectl.kuberator.dev/v1\nkind: Gizmo\nmetadata:\n  name: one\n  namespace: {namespace}\nspec:\n  size: 3\n"
    ));
    // A CRD just established may take a moment to reach kubectl's discovery.
    let mut applied = String::new();
    for _ in 0..50 {
        let args = ["apply", "--server-side", "-f", &gizmo.path().display().to_string()];
        match cluster.run_kubectl(&args).await {
            Ok(output) => {
                applied = output;
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    assert_eq!(applied.trim(), "gizmo.kubectl.kuberator.dev/one serverside-applied");

    let table = kubectl(args(&format!("get gizmos -n {namespace}"))).await;
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "READY"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row, ["one", "3"], "{table}");
    assert_eq!(kubectl(args(&format!("get gz one -n {namespace} -o jsonpath={{.spec.size}}"))).await, "3");

    // Ready, as an operator would write it, and an Event about it.
    let gizmos = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &namespace,
        &kube::api::ApiResource {
            group: "kubectl.kuberator.dev".into(),
            version: "v1".into(),
            api_version: "kubectl.kuberator.dev/v1".into(),
            kind: "Gizmo".into(),
            plural: "gizmos".into(),
        },
    );
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Done", "message": "all good", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    gizmos
        .patch_status("one", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&status))
        .await
        .unwrap();
    let uid = gizmos.get("one").await.unwrap().metadata.uid.unwrap();
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(client.clone(), &namespace);
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "one.event"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "kubectl-test", "reportingInstance": "kubectl-test-1",
        "action": "Checking", "reason": "Polished", "type": "Normal", "note": "the gizmo shines",
        "regarding": {"apiVersion": "kubectl.kuberator.dev/v1", "kind": "Gizmo", "name": "one", "namespace": namespace, "uid": uid},
    }))
    .unwrap();
    events.create(&Default::default(), &event).await.unwrap();

    let waited =
        kubectl(args(&format!("wait --for=condition=Ready gizmo/one -n {namespace} --timeout=60s"))).await;
    assert_eq!(waited.trim(), "gizmo.kubectl.kuberator.dev/one condition met");
    let described = kubectl(args(&format!("describe gizmo one -n {namespace}"))).await;
    for line in ["Name:         one", "Kind:         Gizmo", "Size:  3", "Polished", "the gizmo shines"] {
        assert!(described.contains(line), "`kubectl describe` lacks {line:?}:\n{described}");
    }
    let listed = kubectl(args(&format!("events -n {namespace} --for gizmo/one"))).await;
    assert!(listed.contains("Polished") && listed.contains("the gizmo shines"), "{listed}");

    let deleted = kubectl(args(&format!("delete gizmo one -n {namespace} --wait=true"))).await;
    assert_eq!(
        deleted.trim(),
        format!("gizmo.kubectl.kuberator.dev \"one\" deleted from {namespace} namespace")
    );
    let missing = cluster
        .run_kubectl(
            &args(&format!("get gizmo one -n {namespace}")).iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
    let error = missing.expect_err("the gizmo is gone").to_string();
    assert!(
        error.contains("Error from server (NotFound): gizmos.kubectl.kuberator.dev \"one\" not found"),
        "{error}"
    );
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_on_the_in_memory_server() {
    flow(&TestCluster::in_memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_on_the_real_control_plane() {
    flow(&TestCluster::real().await.expect("the control plane must start (tests never skip)")).await;
}
