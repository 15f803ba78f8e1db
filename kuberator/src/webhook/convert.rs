//! Versions of one kind, converted through the version the operator reconciles (the hub, also
//! the storage version) with the user's `From`/`TryFrom` impls.

use std::fmt::Display;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Conversion between `Self` and the hub `R`, both ways: what `versions = [...]` needs of each
/// version it lists. Implemented for every `V` with `R: TryFrom<V>` and `V: TryFrom<R>`
/// (`From` gives both), whose errors display.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is listed in `versions = [...]` but does not convert to and from `{R}`",
    label = "needs `impl From<{Self}> for {R}` and `impl From<{R}> for {Self}` (or `TryFrom`, with an error that implements Display)",
    note = "the operator reconciles `{R}` and stores it; every other version is converted through it"
)]
pub trait ConvertsWith<R> {
    /// `self` as the hub.
    ///
    /// # Errors
    ///
    /// The user's conversion error, as text.
    fn to_hub(self) -> Result<R, String>;
    /// `hub` as `Self`.
    ///
    /// # Errors
    ///
    /// The user's conversion error, as text.
    fn from_hub(hub: R) -> Result<Self, String>
    where
        Self: Sized;
}

impl<R, V> ConvertsWith<R> for V
where
    R: TryFrom<V>,
    <R as TryFrom<V>>::Error: Display,
    V: TryFrom<R>,
    <V as TryFrom<R>>::Error: Display,
{
    fn to_hub(self) -> Result<R, String> {
        R::try_from(self).map_err(|error| error.to_string())
    }

    fn from_hub(hub: R) -> Result<Self, String> {
        V::try_from(hub).map_err(|error| error.to_string())
    }
}

/// Another version of the kind `R`, served next to it and converted through it.
#[cfg_attr(not(feature = "server"), allow(dead_code, reason = "only the webhook port converts"))]
pub struct Version<R> {
    version: String,
    crd: fn() -> CustomResourceDefinition,
    to_hub: fn(Value) -> Result<R, String>,
    from_hub: fn(R) -> Result<Value, String>,
}

impl<R> std::fmt::Debug for Version<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version").field("version", &self.version).finish_non_exhaustive()
    }
}

impl<R> Version<R> {
    /// The version `V` (a type of kube's `CustomResource` derive for the same group and kind).
    pub fn of<V>() -> Self
    where
        V: Resource<DynamicType = ()> + CustomResourceExt + Serialize + DeserializeOwned + ConvertsWith<R>,
    {
        Self {
            version: V::version(&()).into_owned(),
            crd: V::crd,
            to_hub: |value| {
                let typed: V = serde_json::from_value(value).map_err(|error| error.to_string())?;
                typed.to_hub()
            },
            from_hub: |hub| {
                let typed = V::from_hub(hub)?;
                serde_json::to_value(typed).map_err(|error| error.to_string())
            },
        }
    }

    /// Its name, such as `v1alpha1`.
    pub fn name(&self) -> &str {
        &self.version
    }

    /// Its CRD, as kube's derive makes it (one version).
    pub fn crd(&self) -> CustomResourceDefinition {
        (self.crd)()
    }
}

#[cfg(feature = "server")]
/// Converts `object` to `desired` (a version name) through the hub `R`; its metadata stays as
/// it was, as the API server requires.
pub(crate) fn convert<R>(object: &Value, desired: &str, versions: &[Version<R>]) -> Result<Value, String>
where
    R: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    let group = R::group(&());
    let api_version =
        |version: &str| if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    let from = object["apiVersion"].as_str().unwrap_or_default();
    let hub = R::version(&());
    if from == api_version(desired) {
        return Ok(object.clone());
    }
    let find = |name: &str| {
        versions.iter().find(|version| api_version(&version.version) == name || version.version == name)
    };
    let hubbed: R = if from == api_version(&hub) {
        serde_json::from_value(object.clone()).map_err(|error| format!("reading it as {from}: {error}"))?
    } else {
        let version = find(from).ok_or_else(|| format!("{from} is not a version this operator converts"))?;
        (version.to_hub)(object.clone()).map_err(|error| format!("converting {from} to {hub}: {error}"))?
    };
    let mut converted = if desired == hub {
        serde_json::to_value(&hubbed).map_err(|error| error.to_string())?
    } else {
        let version =
            find(desired).ok_or_else(|| format!("{desired} is not a version this operator converts"))?;
        (version.from_hub)(hubbed).map_err(|error| format!("converting {hub} to {desired}: {error}"))?
    };
    converted["apiVersion"] = Value::String(api_version(desired));
    // The metadata stays as it was, but for what the API server lets a conversion change: its
    // labels and annotations (where a field the other version lacks can be kept).
    let mut metadata = object["metadata"].clone();
    for field in ["labels", "annotations"] {
        match converted["metadata"].get(field) {
            Some(value) if !value.is_null() => metadata[field] = value.clone(),
            _ => {
                if let Some(map) = metadata.as_object_mut() {
                    map.remove(field);
                }
            }
        }
    }
    converted["metadata"] = metadata;
    Ok(converted)
}

#[cfg(feature = "server")]
/// The answer to a ConversionReview's `request`: every object converted, or the first failure.
pub(crate) fn review<R>(request: &Value, versions: &[Version<R>]) -> Value
where
    R: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    let uid = request["uid"].clone();
    let desired = request["desiredAPIVersion"].as_str().unwrap_or_default();
    let desired = desired.rsplit('/').next().unwrap_or_default();
    let objects = request["objects"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut converted = Vec::with_capacity(objects.len());
    for object in objects {
        match convert(object, desired, versions) {
            Ok(done) => converted.push(done),
            Err(error) => {
                let name = object["metadata"]["name"].as_str().unwrap_or("(no name)");
                let namespace =
                    object["metadata"]["namespace"].as_str().map(|ns| format!("{ns}/")).unwrap_or_default();
                let message = format!("{} {namespace}{name}: {error}", R::kind(&()));
                tracing::warn!("conversion failed: {message}");
                return answer(
                    serde_json::json!({"uid": uid, "result": {"status": "Failure", "message": message}}),
                );
            }
        }
    }
    answer(serde_json::json!({"uid": uid, "result": {"status": "Success"}, "convertedObjects": converted}))
}

#[cfg(feature = "server")]
fn answer(response: Value) -> Value {
    let mut review = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview"});
    review["response"] = response;
    review
}

/// Rewrites every stored object of `R` so that it is stored in `R`'s version, then records in
/// the CRD's `status.storedVersions` that only that version is stored: what to run after
/// `R`'s version became the storage version, before a version that was stored is dropped from
/// the CRD (the API server refuses to drop a version still listed there).
///
/// Each object is written back unchanged (a `PUT` of what was read, as raw JSON, so nothing the
/// type does not know is lost); the API server encodes it in the storage version. An object
/// changed or deleted since it was listed needs nothing: the change stored it anew. Returns how
/// many objects were rewritten. The caller needs `list` and `update` on the kind and `patch` on
/// `customresourcedefinitions/status`.
///
/// # Errors
///
/// The first refused call; objects already rewritten stay rewritten, and running it again is
/// harmless.
pub async fn migrate_storage<R>(client: &kube::Client) -> Result<usize, kube::Error>
where
    R: Resource<DynamicType = ()> + CustomResourceExt,
{
    use kube::api::Api;
    use kube::api::ApiResource;
    use kube::api::DynamicObject;
    use kube::api::ListParams;
    use kube::api::Patch;
    use kube::api::PatchParams;
    use kube::api::PostParams;

    let resource = ApiResource::erase::<R>(&());
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let mut params = ListParams::default().limit(500);
    let mut rewritten = 0;
    loop {
        let page = all.list(&params).await?;
        for object in &page.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let api: Api<DynamicObject> = match &object.metadata.namespace {
                Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            match api.replace(&name, &PostParams::default(), object).await {
                Ok(_) => rewritten += 1,
                Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let stored = serde_json::json!({"status": {"storedVersions": [R::version(&())]}});
    crds.patch_status(R::crd_name(), &PatchParams::default(), &Patch::Merge(&stored)).await?;
    Ok(rewritten)
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use kube::CustomResource;
    use kube::ResourceExt as _;
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    mod v1alpha1 {
        use super::*;

        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
        #[kube(group = "example.com", version = "v1alpha1", kind = "Archive", namespaced)]
        pub(super) struct ArchiveSpec {
            pub(super) size: i32,
        }
    }

    mod v1 {
        use super::*;

        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
        #[kube(group = "example.com", version = "v1", kind = "Archive", namespaced)]
        pub(super) struct ArchiveSpec {
            pub(super) capacity: i32,
            pub(super) tier: String,
        }
    }

    impl From<v1alpha1::Archive> for v1::Archive {
        fn from(old: v1alpha1::Archive) -> Self {
            let tier = old.annotations().get("tier").cloned().unwrap_or_else(|| "standard".to_owned());
            let mut new = v1::Archive::new("", v1::ArchiveSpec { capacity: old.spec.size, tier });
            new.metadata = old.metadata;
            new.metadata.annotations.get_or_insert_default().remove("tier");
            new
        }
    }

    impl TryFrom<v1::Archive> for v1alpha1::Archive {
        type Error = String;

        fn try_from(new: v1::Archive) -> Result<Self, String> {
            if new.spec.capacity < 0 {
                return Err(format!("capacity {} is negative", new.spec.capacity));
            }
            let mut old = v1alpha1::Archive::new("", v1alpha1::ArchiveSpec { size: new.spec.capacity });
            old.metadata = new.metadata;
            old.metadata.annotations.get_or_insert_default().insert("tier".to_owned(), new.spec.tier);
            Ok(old)
        }
    }

    fn versions() -> Vec<Version<v1::Archive>> {
        vec![Version::of::<v1alpha1::Archive>()]
    }

    #[test]
    fn each_object_is_converted_through_the_hub_both_ways_keeping_its_metadata() {
        let stored = json!({
            "apiVersion": "example.com/v1", "kind": "Archive",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"},
            "spec": {"capacity": 5, "tier": "premium"},
        });
        let old = convert(&stored, "v1alpha1", &versions()).unwrap();
        assert_eq!(old["apiVersion"], "example.com/v1alpha1");
        assert_eq!(old["spec"], json!({"size": 5}));
        assert_eq!(old["metadata"]["uid"], "u-1");
        assert_eq!(old["metadata"]["resourceVersion"], "7");
        assert_eq!(
            old["metadata"]["annotations"],
            json!({"tier": "premium"}),
            "kept where the old version can"
        );
        let back = convert(&old, "v1", &versions()).unwrap();
        assert_eq!(back["spec"], stored["spec"], "the round trip loses nothing");
        assert_eq!(back["metadata"]["annotations"], json!({}));
        assert_eq!(convert(&stored, "v1", &versions()).unwrap(), stored, "already there: unchanged");
    }

    #[test]
    fn a_failed_conversion_names_the_object_and_the_users_reason() {
        let request = json!({
            "uid": "r-1", "desiredAPIVersion": "example.com/v1alpha1",
            "objects": [
                {"apiVersion": "example.com/v1", "kind": "Archive", "metadata": {"name": "fine", "namespace": "ns"},
                 "spec": {"capacity": 1, "tier": "standard"}},
                {"apiVersion": "example.com/v1", "kind": "Archive", "metadata": {"name": "bad", "namespace": "ns"},
                 "spec": {"capacity": -1, "tier": "standard"}},
            ],
        });
        let answered = review(&request, &versions());
        assert_eq!(answered["kind"], "ConversionReview");
        assert_eq!(answered["response"]["uid"], "r-1");
        assert_eq!(answered["response"]["result"]["status"], "Failure");
        assert_eq!(
            answered["response"]["result"]["message"],
            "Archive ns/bad: converting v1 to v1alpha1: capacity -1 is negative"
        );
        let request = json!({"uid": "r-2", "desiredAPIVersion": "example.com/v1alpha1",
            "objects": [request["objects"][0].clone()]});
        let answered = review(&request, &versions());
        assert_eq!(answered["response"]["result"]["status"], "Success");
        assert_eq!(answered["response"]["convertedObjects"][0]["spec"], json!({"size": 1}));
        let unknown = json!({"apiVersion": "example.com/v2", "metadata": {"name": "x"}});
        let error = convert(&unknown, "v1", &versions()).unwrap_err();
        assert_eq!(error, "example.com/v2 is not a version this operator converts");
    }
}
