//! What a derived operator's `manifests` subcommand prints is ready for `kubectl apply`: the
//! real kubectl applies it to the real API server, which accepts every object, and a
//! namespace that enforces the `restricted` Pod Security Standard accepts it without a
//! warning.

use std::io::Write as _;
use std::process::Command;
use std::process::Stdio;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Patch;
use kube::api::PatchParams;

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

    let (applied, said) = kubectl_apply(
        control_plane,
        &["apply", "--server-side", "--force-conflicts", "--field-manager", "manifests-test", "-f", "-"],
        &printed.stdout,
    );
    assert!(applied, "kubectl apply refused the manifests:\n{said}");
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

/// Runs the real `kubectl` (the one built beside the control plane; on an existing cluster,
/// the one on `PATH`) with `args` and `input` on its standard input; returns whether it
/// succeeded and everything it printed, warnings included.
fn kubectl_apply(control_plane: &ControlPlane, args: &[&str], input: &[u8]) -> (bool, String) {
    let kubectl = control_plane.kubectl().unwrap_or_else(|| "kubectl".into());
    let mut apply = Command::new(&kubectl)
        .args(["--kubeconfig", &control_plane.kubeconfig_path().to_string_lossy()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("running {}: {error}", kubectl.display()));
    apply.stdin.take().unwrap().write_all(input).unwrap();
    let applied = apply.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&applied.stdout), String::from_utf8_lossy(&applied.stderr));
    (applied.status.success(), said)
}

/// In a namespace that enforces and warns on the `restricted` Pod Security Standard, a
/// server-side dry run of everything `manifests` prints passes with no warning; the same
/// Deployment without its security context draws the API server's warning, so the check is
/// real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_deployment_passes_the_restricted_pod_security_standard() {
    let (client, namespace) = kuberator_test::test_env("restricted").await;
    let control_plane = ControlPlane::shared().await.unwrap();
    let labels = serde_json::json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    } } });
    Api::<Namespace>::all(client.clone())
        .patch(&namespace, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();

    let printed = Command::new(OPERATOR)
        .args(["manifests", "--image", "registry.example/baton-operator:1.0", "--namespace", &namespace])
        .args(["--cpu-limit", "250m", "--memory-limit", "128Mi"])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let dry_run =
        ["apply", "--server-side", "--dry-run=server", "--field-manager", "manifests-test", "-f", "-"];
    let (applied, said) = kubectl_apply(control_plane, &dry_run, &printed.stdout);
    assert!(applied, "the API server refused the manifests:\n{said}");
    assert!(said.contains("deployment.apps/baton-operator serverside-applied (server dry run)"), "{said}");
    assert!(!said.contains("Warning"), "the API server warned:\n{said}");
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(
        text.contains("cpu: 250m") && text.contains("memory: 128Mi"),
        "the flags reach the limits:\n{text}"
    );

    // The control: the printed Deployment without its security contexts.
    let deployment = text.split("\n---\n").find(|document| document.contains("kind: Deployment")).unwrap();
    let mut deployment: serde_json::Value = serde_yaml_ng::from_str(deployment).unwrap();
    let pod = &mut deployment["spec"]["template"]["spec"];
    pod.as_object_mut().unwrap().remove("securityContext");
    pod["containers"][0].as_object_mut().unwrap().remove("securityContext");
    let (_, said) =
        kubectl_apply(control_plane, &dry_run, serde_json::to_string(&deployment).unwrap().as_bytes());
    assert!(said.contains("Warning: would violate PodSecurity \"restricted:latest\""), "{said}");

    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
