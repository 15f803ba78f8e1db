//! A replica's range applied to a watch: by the API server where it honours `shardSelector`,
//! and always here too, with the same hash, so that what a replica caches is identical either
//! way.

use std::fmt::Debug;

use kube::Api;
use kube::Client;
use kube::Resource;
use kube::api::ListParams;
use serde::de::DeserializeOwned;

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

/// Whether the API server filters `api`'s lists by its selector: it echoes the selector in
/// the list's `metadata.shardInfo` when it does (Kubernetes 1.36 with the
/// `ShardedListAndWatch` feature gate on).
///
/// # Errors
///
/// When the probe's list fails.
pub(crate) async fn honoured<K>(api: &Api<K>) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = api.list_metadata(&ListParams::default().limit(1)).await?;
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
