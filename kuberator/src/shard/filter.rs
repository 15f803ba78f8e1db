//! A replica's range applied to a watch: by the API server where it honours `shardSelector`,
//! and always here too, with the same hash, so that what a replica caches is identical either
//! way.

use kube::Api;
use kube::Client;
use kube::api::ListParams;

use super::ShardRange;

/// The range a process's watches of sharded kinds are filtered by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ShardFilter {
    pub(crate) range: ShardRange,
    /// Ask the API server to filter, when it honours the selector.
    pub(crate) server_side: bool,
}

impl ShardFilter {
    /// Whether an object with this uid and namespace is this replica's.
    pub(crate) fn admits(&self, uid: Option<&str>, namespace: Option<&str>) -> bool {
        self.range.contains(uid, namespace)
    }
}

/// `client`, with `shardSelector=<selector>` added to every GET (the lists and watches of the
/// one `Api` it is used for).
pub(crate) fn with_selector(client: Client, selector: &str) -> Client {
    let query = format!("shardSelector={}", encode(selector));
    let namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |mut request: http::Request<kube::client::Body>| {
        let client = client.clone();
        if request.method() == http::Method::GET {
            let uri = request.uri().to_string();
            let joined = if uri.contains('?') { format!("{uri}&{query}") } else { format!("{uri}?{query}") };
            if let Ok(uri) = joined.parse() {
                *request.uri_mut() = uri;
            }
        }
        async move { client.send(request).await }
    });
    Client::new(service, namespace)
}

/// Whether the API server filters lists and watches by `shardSelector` (Kubernetes 1.36 or
/// later with the `ShardedListAndWatch` feature gate on): asked with a list of at most one
/// Lease in `namespace` (which the sharded operator may list anyway), since the server echoes
/// the selector in `metadata.shardInfo` of typed lists only, not of custom resources'.
///
/// # Errors
///
/// When the list fails.
pub(crate) async fn server_filters(client: Client, namespace: &str) -> Result<bool, kube::Error> {
    let selector = ShardRange::all(super::ShardKey::Uid).selector();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(with_selector(client, &selector), namespace);
    // A full list: a metadata-only one (PartialObjectMetadataList) does not carry shardInfo.
    let list = leases.list(&ListParams::default().limit(1)).await?;
    Ok(list.metadata.shard_info.is_some_and(|info| !info.selector.is_empty()))
}

/// `text` as a query value: unreserved characters as they are, the rest percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn selectors_are_percent_encoded() {
        assert_eq!(
            super::encode("shardRange(object.metadata.uid, '0x0', '0x1') || x"),
            "shardRange%28object.metadata.uid%2C%20%270x0%27%2C%20%270x1%27%29%20%7C%7C%20x"
        );
    }
}
