//! What a derived operator's `manifests` subcommand prints is ready for `kubectl apply`: the
//! real kubectl applies it to the real API server, which accepts every object.

use std::io::Write as _;
use std::process::Command;
use std::process::Stdio;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kuberator_test::ControlPlane;

const OPERATOR: &str = env!("CARGO_BIN_EXE_baton-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_manifests_apply_with_kubectl() {
    let (client, namespace) = kuberator_test::test_env("manifests").await;
    let control_plane = ControlPlane::shared().await.unwrap();

    let printed = Command::new(OPERATOR)
        .args(["manifests", "--image", "registry.example/baton-operator:1.0", "--namespace", &namespace])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));

    // The kubectl built beside the control plane; on an existing cluster, the one on PATH.
    let kubectl = control_plane.kubectl().unwrap_or_else(|| "kubectl".into());
    let mut apply = Command::new(&kubectl)
        .args(["--kubeconfig", &control_plane.kubeconfig_path().to_string_lossy()])
        .args(["apply", "--server-side", "--force-conflicts", "--field-manager", "manifests-test", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("running {}: {error}", kubectl.display()));
    apply.stdin.take().unwrap().write_all(&printed.stdout).unwrap();
    let applied = apply.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&applied.stdout), String::from_utf8_lossy(&applied.stderr));
    assert!(applied.status.success(), "kubectl apply refused the manifests:\n{said}");
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/batons.test.kuberator.dev",
        "serviceaccount/baton-operator",
        "clusterrole.rbac.authorization.k8s.io/baton-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/baton-operator",
        "role.rbac.authorization.k8s.io/baton-operator-leader-election",
        "rolebinding.rbac.authorization.k8s.io/baton-operator-leader-election",
        "deployment.apps/baton-operator",
    ] {
        assert!(said.contains(&format!("{object} serverside-applied")), "{object} not applied:\n{said}");
    }

    // What the API server now holds is what the operator needs.
    let deployment =
        Api::<Deployment>::namespaced(client.clone(), &namespace).get("baton-operator").await.unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("baton-operator"));
    assert_eq!(pod.containers[0].image.as_deref(), Some("registry.example/baton-operator:1.0"));
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace).get("baton-operator").await.unwrap();
    let lease_role = Api::<Role>::namespaced(client.clone(), &namespace)
        .get("baton-operator-leader-election")
        .await
        .unwrap();
    assert_eq!(lease_role.rules.unwrap()[0].resources.as_deref(), Some(&["leases".to_owned()][..]));
    let binding = Api::<RoleBinding>::namespaced(client.clone(), &namespace)
        .get("baton-operator-leader-election")
        .await
        .unwrap();
    assert_eq!(binding.subjects.unwrap()[0].namespace.as_deref(), Some(namespace.as_str()));
    let role = Api::<ClusterRole>::all(client.clone()).get("baton-operator").await.unwrap();
    assert_eq!(role.rules.unwrap().len(), 3);
    let binding = Api::<ClusterRoleBinding>::all(client.clone()).get("baton-operator").await.unwrap();
    assert_eq!(binding.subjects.unwrap()[0].namespace.as_deref(), Some(namespace.as_str()));

    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
