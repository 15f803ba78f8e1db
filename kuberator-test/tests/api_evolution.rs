//! Issue 26, item 1, CEL first: validation rules (one across fields), a transition rule and a
//! default, written on the spec type with kube's derive attributes, are enforced by the real
//! API server, and a user sees the rule's message where they act: in `kubectl`'s answer and in
//! the client's error. (The in-memory server does not evaluate CEL; IN_MEMORY.md says so.)

use kube::Api;
use kube::api::Patch;
use kube::api::PatchParams;
use std::time::Duration;

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

/// A volume whose checks need code: a rule on its name, and a tier computed from its size.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "hooks.kuberator.dev", version = "v1", kind = "Disk", namespaced)]
struct DiskSpec {
    size_gib: i32,
    tier: Option<String>,
}

#[derive(kuberator::Operator)]
#[kuberator(resource = Disk, finalizer = "disks.hooks.kuberator.dev/cleanup", webhooks = [validate, set_defaults])]
struct DiskOperator;

impl DiskOperator {
    async fn handle_apply(&self, _disk: Arc<Disk>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _disk: Arc<Disk>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }

    async fn validate(&self, change: Change<'_, Disk>, _ctx: &Ctx<Self>) -> Result<(), Rejection> {
        if change.new_object().is_some_and(|new| new.labels().contains_key("slow")) {
            // Longer than the API server waits: the operator answers first, with a reason.
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        match change {
            Change::Create { new } | Change::Update { new, .. } if new.spec.size_gib > 100 => Err(
                Rejection::new(format!("sizeGib {} is over the 100 GiB a Disk may have", new.spec.size_gib)),
            ),
            Change::Delete { old } if old.labels().contains_key("protected") => {
                Err("this Disk is protected: remove its `protected` label first".into())
            }
            _ => Ok(()),
        }
    }

    async fn set_defaults(&self, disk: &mut Disk, _ctx: &Ctx<Self>) -> Result<(), Rejection> {
        let tier = if disk.spec.size_gib >= 50 { "large" } else { "small" };
        disk.spec.tier.get_or_insert_with(|| tier.to_owned());
        Ok(())
    }
}

/// A port nothing listens on now, for the webhook URL the configurations name.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Issue 26, items 2, 4 and 6: kube-apiserver calls the operator's `validate` and
/// `set_defaults` over HTTPS on loopback; the user's message is in `kubectl`'s answer; the
/// default is stored; the certificate and its CA are renewed while calls go on (each call after
/// the first ones expired proves the API server trusts what is served now); with the port
/// down, changes are refused (`failurePolicy: Fail`) until it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_calls_the_operators_webhooks_and_trusts_its_renewed_certificates() {
    use kuberator::webhook::Certificates;
    use kuberator::webhook::Endpoint;
    use kuberator::webhook::Webhooks;

    let control_plane = ControlPlane::shared().await.unwrap();
    let client = control_plane.client().await.unwrap();
    kuberator_test::install_crd::<Disk>(&client).await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, "hooks").await.unwrap();
    let disks: Api<Disk> = Api::namespaced(client.clone(), &namespace);
    let mut settings = DiskOperator::settings();
    settings.namespaces = vec![namespace.clone()];
    let reconciler = DiskOperator.into_reconciler_with(client.clone(), settings);
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let name = format!("disks-{namespace}");
    // Short lives: the serving certificate is renewed every 2 s, the CA every 6 s.
    let webhooks = || {
        Webhooks::new(name.clone(), Endpoint::Url(format!("https://{address}")))
            .certificates(
                Certificates::shared(namespace.clone(), "disks-webhook-ca")
                    .validity(Duration::from_secs(9), Duration::from_secs(3)),
            )
            .with(&reconciler)
    };
    let server = webhooks().serve(address, client.clone()).await.unwrap();

    // Refused, with the method's message, as `kubectl apply` prints it.
    let file = std::env::temp_dir().join(format!("disk-{namespace}.yaml"));
    let manifest = |name: &str, size: i32| {
        format!(
            "apiVersion: hooks.kuberator.dev/v1\nkind: Disk\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
             spec:\n  size_gib: {size}\n"
        )
    };
    std::fs::write(&file, manifest("huge", 500)).unwrap();
    let refused = control_plane.run_kubectl(&["apply", "-f", &file.to_string_lossy()]).await.unwrap_err();
    let said = refused.to_string();
    assert!(
        said.contains(
            "admission webhook \"validate.disks.hooks.kuberator.dev\" denied the request: sizeGib 500 is over the \
             100 GiB a Disk may have"
        ),
        "{said}"
    );

    // Defaulted: the tier computed from the size is stored.
    std::fs::write(&file, manifest("big", 60)).unwrap();
    control_plane.run_kubectl(&["apply", "-f", &file.to_string_lossy()]).await.unwrap();
    assert_eq!(disks.get("big").await.unwrap().spec.tier.as_deref(), Some("large"));

    // Calls go on across two renewals of the CA and several of the serving certificate; each
    // answer is the operator's, never a TLS failure.
    let started = std::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(14) {
        let disk = serde_json::json!({
            "apiVersion": "hooks.kuberator.dev/v1", "kind": "Disk",
            "metadata": {"name": format!("disk-{calls}")}, "spec": {"size_gib": 10},
        });
        let created = disks
            .create(&Default::default(), &serde_json::from_value(disk).unwrap())
            .await
            .unwrap_or_else(|error| panic!("call {calls} after {:?}: {error}", started.elapsed()));
        assert_eq!(created.spec.tier.as_deref(), Some("small"));
        calls += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let resize = |size: i32| Patch::Merge(serde_json::json!({"spec": {"size_gib": size}}));
    let said = disks.patch("big", &PatchParams::default(), &resize(101)).await.unwrap_err().to_string();
    assert!(said.contains("sizeGib 101 is over the 100 GiB"), "still the operator's answer: {said}");

    // A deletion the method refuses; a label change is never asked about.
    let labelled = Patch::Merge(serde_json::json!({"metadata": {"labels": {"protected": "yes"}}}));
    disks.patch("big", &PatchParams::default(), &labelled).await.unwrap();
    let refused = control_plane.run_kubectl(&["delete", "disk", "big", "-n", &namespace]).await.unwrap_err();
    assert!(refused.to_string().contains("this Disk is protected"), "{refused}");

    // A method that takes too long: refused before the API server gives up, saying why.
    let slow = serde_json::json!({
        "apiVersion": "hooks.kuberator.dev/v1", "kind": "Disk",
        "metadata": {"name": "slow", "labels": {"slow": "yes"}}, "spec": {"size_gib": 1},
    });
    let started = std::time::Instant::now();
    let refused =
        disks.create(&Default::default(), &serde_json::from_value(slow).unwrap()).await.unwrap_err();
    let said = refused.to_string();
    assert!(said.contains("the operator's `validate` did not answer within 9 s; try again"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // The port down: changes wait for it, with the API server's reason.
    drop(server);
    let said = disks.patch("big", &PatchParams::default(), &resize(7)).await.unwrap_err().to_string();
    assert!(said.contains("failed calling webhook"), "{said}");
    let server = webhooks().serve(address, client.clone()).await.unwrap();
    let unlabelled = Patch::Merge(serde_json::json!({"metadata": {"labels": {"protected": null}}}));
    disks.patch("big", &PatchParams::default(), &unlabelled).await.unwrap();
    disks.delete("big", &Default::default()).await.unwrap();

    drop(server);

    // What `manifests` prints for it, the Service and the configurations included, is what the
    // real API server accepts (a server-side dry run: nothing is left behind).
    use kuberator::operator::manifests;
    let workload = manifests::Workload {
        image: "registry.example/disk-operator:1".to_owned(),
        replicas: 2,
        metrics_port: 8443,
        health_port: 8081,
        webhook_port: 9443,
        resources: manifests::Resources::default(),
    };
    let mut settings = DiskOperator::settings();
    settings.namespaces = vec![namespace.clone()];
    let printed =
        manifests::manifests::<Disk>(&settings, &manifests::Placement::new(&settings, &namespace), &workload);
    let kinds: Vec<&str> = printed.iter().filter_map(|object| object["kind"].as_str()).collect();
    for kind in ["Service", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Deployment"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    std::fs::write(&file, manifests::to_yaml(&printed)).unwrap();
    let applied =
        control_plane.run_kubectl(&["apply", "--dry-run=server", "-f", &file.to_string_lossy()]).await;
    let said = applied.unwrap();
    assert!(
        said.contains("validatingwebhookconfiguration.admissionregistration.k8s.io/disk-operator"),
        "{said}"
    );
    let _ = std::fs::remove_file(&file);
    for plural in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"] {
        control_plane.run_kubectl(&["delete", plural, &name]).await.unwrap();
    }
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

/// Whether the port at `address` serves a certificate for 127.0.0.1 that `bundle` (PEM) vouches
/// for: the check the API server makes before it calls a webhook.
async fn trusted(address: std::net::SocketAddr, bundle: &[u8]) -> bool {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(bundle) {
        roots.add(certificate.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(address.ip().into());
    connector.connect(name, stream).await.is_ok()
}

/// Issue 26, item 4, with replicas: two replicas of one operator keep their CA in one Secret, so
/// the one CA bundle in the configuration (whichever replica wrote it last) vouches for the
/// certificate each serves; a port with a CA of its own is not trusted by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_ca_through_their_secret() {
    use kuberator::webhook::Certificates;
    use kuberator::webhook::Endpoint;
    use kuberator::webhook::Webhooks;

    let control_plane = ControlPlane::shared().await.unwrap();
    let client = control_plane.client().await.unwrap();
    kuberator_test::install_crd::<Disk>(&client).await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, "replicas").await.unwrap();
    let mut settings = DiskOperator::settings();
    settings.namespaces = vec![namespace.clone()];
    let reconciler = DiskOperator.into_reconciler_with(client.clone(), settings);
    let name = format!("disks-{namespace}");
    let replica = |certificates: Certificates| {
        let address: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let webhooks = Webhooks::new(name.clone(), Endpoint::Url(format!("https://{address}")))
            .certificates(certificates)
            .with(&reconciler);
        let client = client.clone();
        async move { (address, webhooks.serve(address, client).await.unwrap()) }
    };
    let shared = || Certificates::shared(namespace.clone(), "disks-webhook-ca");
    let (first, _first) = replica(shared()).await;
    let (second, _second) = replica(shared()).await;

    let configurations: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(client.clone());
    let written = configurations.get(&name).await.unwrap();
    let bundle = written.webhooks.unwrap()[0].client_config.ca_bundle.clone().unwrap().0;
    assert!(trusted(first, &bundle).await, "the first replica's certificate");
    assert!(trusted(second, &bundle).await, "the second replica's certificate");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets.get("disks-webhook-ca").await.unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["ca.crt"].0, bundle, "the bundle is the Secret's CA");

    let (alone, _alone) = replica(Certificates::generated()).await;
    let written = configurations.get(&name).await.unwrap();
    let own = written.webhooks.unwrap()[0].client_config.ca_bundle.clone().unwrap().0;
    assert!(!trusted(first, &own).await, "a CA of its own does not vouch for the others");
    assert!(trusted(alone, &own).await);

    for plural in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"] {
        control_plane.run_kubectl(&["delete", plural, &name]).await.unwrap();
    }
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
