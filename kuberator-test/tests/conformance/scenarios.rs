//! The scenarios: each states what the real API server does, exactly, and runs against
//! both servers.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::ensure;
use serde_json::Value;
use serde_json::json;

use super::harness::Ctx;
use super::harness::GROUP;
use super::harness::generation;
use super::harness::rv;
use super::harness::widget_body;

pub(crate) type Scenario = fn(Ctx) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        /// Every scenario, by name.
        pub(crate) fn all() -> Vec<(&'static str, Scenario)> {
            vec![$((stringify!($name), (|ctx| Box::pin($name(ctx))) as Scenario)),*]
        }
    };
}

scenarios![
    crd_is_established_with_accepted_names,
    crd_resource_is_in_discovery,
    schema_refuses_a_wrong_type,
    schema_refuses_a_missing_required_field,
    schema_refuses_a_value_outside_the_enum,
    schema_refuses_numbers_out_of_range,
    schema_refuses_a_string_too_long,
    schema_refuses_a_wrong_item_type,
    schema_defaults_missing_fields,
    schema_prunes_unknown_fields,
    schema_keeps_fields_under_preserve_unknown,
    schema_checks_additional_properties,
    schema_takes_an_integer_for_a_number,
    namespace_is_active_with_the_kubernetes_finalizer,
    create_in_a_missing_namespace_is_not_found,
    namespace_deletion_removes_its_objects,
    create_in_a_terminating_namespace_is_forbidden,
    get_of_a_missing_object_is_not_found,
    list_filters_by_label_equality,
    list_filters_by_label_sets,
    list_filters_by_field_name,
    list_refuses_an_unsupported_field_selector,
    list_pages_with_limit_and_continue,
    list_resource_version_is_at_least_every_item,
    list_across_namespaces,
    watch_sends_added_modified_deleted_in_order,
    watch_from_a_resource_version_replays_later_changes,
    watch_with_a_label_selector_sees_objects_enter_and_leave,
    watch_from_a_too_old_resource_version_is_gone,
    watch_with_initial_events_ends_them_with_a_bookmark,
    watch_initial_events_need_not_older_than,
    watch_by_name_sees_only_that_object,
    watch_of_one_namespace_sees_only_it,
    create_with_generate_name_appends_five_characters,
    create_sets_uid_timestamp_generation_and_version,
    create_of_an_existing_name_is_already_exists,
    create_without_a_name_is_invalid,
    create_with_an_invalid_name_is_invalid,
    create_drops_the_status_of_a_kind_with_a_status_subresource,
    create_with_another_namespace_in_the_body_is_a_bad_request,
    create_dry_run_stores_nothing,
    configmap_has_no_generation,
    update_with_a_stale_version_is_a_conflict,
    update_of_a_custom_resource_needs_a_version,
    update_of_a_configmap_without_a_version_is_unconditional,
    update_that_changes_nothing_keeps_the_version,
    spec_changes_bump_the_generation_and_metadata_changes_do_not,
    update_of_the_main_resource_ignores_the_status,
    update_with_another_name_in_the_body_is_a_bad_request,
    update_of_a_missing_object_is_not_found,
    merge_patch_changes_and_removes_fields,
    merge_patch_with_a_stale_version_is_a_conflict,
    json_patch_whose_test_fails_is_invalid,
    json_patch_testing_a_missing_list_for_null_succeeds,
    strategic_merge_patch_of_a_custom_resource_is_unsupported,
    strategic_merge_patch_merges_configmap_data,
    strategic_merge_patch_merges_containers_by_name,
    apply_creates_and_records_the_manager,
    apply_of_another_managers_field_conflicts_unless_forced,
    apply_of_the_same_value_shares_the_field,
    apply_removes_fields_the_manager_stopped_applying,
    apply_that_changes_nothing_keeps_the_version,
    apply_without_a_field_manager_is_refused,
    update_records_its_field_manager,
    status_patch_does_not_bump_the_generation,
    status_patch_ignores_the_spec,
    status_update_with_a_stale_version_is_a_conflict,
    status_of_a_kind_without_the_subresource_is_not_found,
    delete_of_an_object_with_a_finalizer_marks_it,
    removing_the_last_finalizer_deletes_the_object,
    no_new_finalizers_while_deleting,
    deleting_twice_changes_nothing,
    delete_of_a_missing_object_is_not_found,
    delete_with_a_wrong_uid_precondition_is_a_conflict,
    delete_returns_a_status_once_gone_and_the_object_while_finalizers_hold_it,
    delete_collection_deletes_what_the_selector_selects,
    garbage_collection_deletes_dependents_in_the_background,
    foreground_deletion_waits_for_the_dependents,
    orphan_deletion_keeps_the_dependents,
    events_k8s_io_events_read_back_as_core_events,
    core_events_select_by_reason_and_involved_object,
    leases_update_with_conflicts,
    cluster_scoped_objects_have_no_namespace,
    table_for_kubectl_get_has_the_printer_columns,
    crd_deletion_deletes_its_objects_then_itself,
    list_in_an_empty_namespace_is_empty,
    list_pages_after_the_first_are_a_snapshot_of_its_version,
    list_by_shard_range_splits_by_the_fnv_hash_of_the_uid,
    list_by_shard_range_of_the_namespace_takes_all_or_nothing,
    watch_by_shard_range_sees_only_its_objects,
    list_by_shard_range_of_a_built_in_kind_echoes_the_selector,
    list_refuses_a_malformed_shard_selector,
];

const SHORT: Duration = Duration::from_secs(10);

fn ensure_eq(left: &Value, right: &Value, what: &str) -> anyhow::Result<()> {
    ensure!(left == right, "{what}: {left} != {right}");
    Ok(())
}

async fn crd_is_established_with_accepted_names(c: Ctx) -> anyhow::Result<()> {
    let answer =
        c.get(&format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}")).await?;
    let crd = answer.ok()?;
    let conditions = crd["status"]["conditions"].as_array().cloned().unwrap_or_default();
    for wanted in ["Established", "NamesAccepted"] {
        ensure!(
            conditions.iter().any(|c| c["type"] == wanted && c["status"] == "True"),
            "{wanted} is not True: {conditions:?}"
        );
    }
    ensure_eq(&crd["status"]["acceptedNames"]["kind"], &json!("Widget"), "acceptedNames.kind")?;
    ensure_eq(&crd["status"]["storedVersions"], &json!(["v1"]), "storedVersions")
}

async fn crd_resource_is_in_discovery(c: Ctx) -> anyhow::Result<()> {
    let answer = c.get(&format!("/apis/{GROUP}/v1")).await?;
    let list = answer.ok()?;
    ensure_eq(&list["kind"], &json!("APIResourceList"), "kind")?;
    let resources = list["resources"].as_array().cloned().unwrap_or_default();
    let widgets =
        resources.iter().find(|r| r["name"] == "widgets").ok_or_else(|| anyhow::anyhow!("no widgets"))?;
    ensure_eq(&widgets["namespaced"], &json!(true), "namespaced")?;
    ensure_eq(&widgets["kind"], &json!("Widget"), "kind")?;
    ensure_eq(&widgets["shortNames"], &json!(["wd"]), "shortNames")?;
    ensure!(resources.iter().any(|r| r["name"] == "widgets/status"), "no widgets/status");
    let groups = c.get("/apis").await?;
    ensure!(
        groups.ok()?["groups"].as_array().is_some_and(|groups| groups.iter().any(|g| g["name"] == GROUP)),
        "the group is not in /apis"
    );
    Ok(())
}

async fn invalid_spec(c: &Ctx, spec: Value, needle: &str) -> anyhow::Result<()> {
    let answer = c.post(&c.widgets(), &widget_body("bad", spec, json!({}))).await?;
    answer.expect(422, "Invalid")?;
    ensure!(
        answer.message().starts_with("Widget.conformance.kuberator.dev \"bad\" is invalid"),
        "message: {}",
        answer.message()
    );
    ensure!(answer.message().contains(needle), "message {:?} lacks {needle:?}", answer.message());
    Ok(())
}

async fn schema_refuses_a_wrong_type(c: Ctx) -> anyhow::Result<()> {
    invalid_spec(
        &c,
        json!({"size": "big"}),
        "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
    )
    .await
}

async fn schema_refuses_a_missing_required_field(c: Ctx) -> anyhow::Result<()> {
    invalid_spec(&c, json!({"color": "red"}), "spec.size: Required value").await
}

async fn schema_refuses_a_value_outside_the_enum(c: Ctx) -> anyhow::Result<()> {
    invalid_spec(
        &c,
        json!({"size": 1, "color": "purple"}),
        "spec.color: Unsupported value: \"purple\": supported values: \"red\", \"green\", \"blue\"",
    )
    .await
}

async fn schema_refuses_numbers_out_of_range(c: Ctx) -> anyhow::Result<()> {
    invalid_spec(
        &c,
        json!({"size": -1}),
        "spec.size: Invalid value: -1: spec.size in body should be greater than or equal to 0",
    )
    .await?;
    invalid_spec(
        &c,
        json!({"size": 101}),
        "spec.size: Invalid value: 101: spec.size in body should be less than or equal to 100",
    )
    .await
}

async fn schema_refuses_a_string_too_long(c: Ctx) -> anyhow::Result<()> {
    invalid_spec(
        &c,
        json!({"size": 1, "title": "much too long for ten"}),
        "spec.title: Too long: may not be more than 10 bytes",
    )
    .await
}

async fn schema_refuses_a_wrong_item_type(c: Ctx) -> anyhow::Result<()> {
    invalid_spec(
        &c,
        json!({"size": 1, "tags": ["ok", 5]}),
        "spec.tags[1]: Invalid value: \"integer\": spec.tags[1] in body must be of type string: \"integer\"",
    )
    .await
}

async fn schema_defaults_missing_fields(c: Ctx) -> anyhow::Result<()> {
    let created = c.widget_with("defaults", json!({"size": 1, "nested": {}}), json!({})).await?;
    ensure_eq(&created["spec"]["color"], &json!("red"), "spec.color")?;
    ensure_eq(&created["spec"]["nested"], &json!({"a": "x"}), "spec.nested")
}

async fn schema_prunes_unknown_fields(c: Ctx) -> anyhow::Result<()> {
    let mut body =
        widget_body("pruned", json!({"size": 1, "bogus": true, "nested": {"a": "y", "bogus": 1}}), json!({}));
    body["extra"] = json!("top level");
    let created = c.post(&c.widgets(), &body).await?.expect(201, "")?.body.clone();
    ensure_eq(&created["spec"], &json!({"size": 1, "color": "red", "nested": {"a": "y"}}), "spec")?;
    ensure!(created.get("extra").is_none(), "the unknown top-level field was kept");
    Ok(())
}

async fn schema_keeps_fields_under_preserve_unknown(c: Ctx) -> anyhow::Result<()> {
    let created = c
        .widget_with("free", json!({"size": 1, "free": {"anything": {"deep": [1, "two"]}}}), json!({}))
        .await?;
    ensure_eq(&created["spec"]["free"], &json!({"anything": {"deep": [1, "two"]}}), "spec.free")
}

async fn schema_checks_additional_properties(c: Ctx) -> anyhow::Result<()> {
    let created = c.widget_with("notes", json!({"size": 1, "notes": {"any-key": "v"}}), json!({})).await?;
    ensure_eq(&created["spec"]["notes"], &json!({"any-key": "v"}), "spec.notes")?;
    invalid_spec(
        &c,
        json!({"size": 1, "notes": {"k": 1}}),
        "spec.notes.k: Invalid value: \"integer\": spec.notes.k in body must be of type string: \"integer\"",
    )
    .await
}

async fn schema_takes_an_integer_for_a_number(c: Ctx) -> anyhow::Result<()> {
    let created = c.widget_with("ratio", json!({"size": 1, "ratio": 2}), json!({})).await?;
    ensure_eq(&created["spec"]["ratio"], &json!(2), "spec.ratio")
}

async fn namespace_is_active_with_the_kubernetes_finalizer(c: Ctx) -> anyhow::Result<()> {
    let namespace = c.get(&format!("/api/v1/namespaces/{}", c.namespace)).await?;
    let namespace = namespace.ok()?;
    ensure_eq(&namespace["status"]["phase"], &json!("Active"), "status.phase")?;
    ensure_eq(&namespace["spec"]["finalizers"], &json!(["kubernetes"]), "spec.finalizers")?;
    ensure_eq(
        &namespace["metadata"]["labels"]["kubernetes.io/metadata.name"],
        &json!(c.namespace),
        "name label",
    )
}

async fn create_in_a_missing_namespace_is_not_found(c: Ctx) -> anyhow::Result<()> {
    let path = format!("/apis/{GROUP}/v1/namespaces/no-such-namespace-here/widgets");
    let answer = c.post(&path, &widget_body("w", json!({"size": 1}), json!({}))).await?;
    answer.expect(404, "NotFound")?;
    ensure_eq(&answer.body["message"], &json!("namespaces \"no-such-namespace-here\" not found"), "message")?;
    ensure_eq(
        &answer.body["details"],
        &json!({"name": "no-such-namespace-here", "kind": "namespaces"}),
        "details",
    )
}

async fn scratch_namespace(c: &Ctx, suffix: &str) -> anyhow::Result<Ctx> {
    let name = format!("{}-{suffix}", c.namespace);
    c.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await?
    .expect(201, "")?;
    Ok(Ctx { namespace: name, client: c.client.clone() })
}

async fn namespace_deletion_removes_its_objects(c: Ctx) -> anyhow::Result<()> {
    let inner = scratch_namespace(&c, "del").await?;
    inner.new_widget("inside").await?;
    inner
        .post(
            &inner.core("configmaps"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inside"}}),
        )
        .await?
        .expect(201, "")?;
    let path = format!("/api/v1/namespaces/{}", inner.namespace);
    let deleted = inner.delete(&path, None).await?;
    let deleted = deleted.ok()?;
    ensure_eq(&deleted["status"]["phase"], &json!("Terminating"), "status.phase after delete")?;
    ensure!(deleted["metadata"]["deletionTimestamp"].is_string(), "no deletionTimestamp");
    inner.gone(&path).await?;
    inner.gone(&inner.widget("inside")).await?;
    inner.gone(&format!("{}/inside", inner.core("configmaps"))).await
}

async fn create_in_a_terminating_namespace_is_forbidden(c: Ctx) -> anyhow::Result<()> {
    let inner = scratch_namespace(&c, "term").await?;
    let mut held = widget_body("held", json!({"size": 1}), json!({}));
    held["metadata"]["finalizers"] = json!(["conformance/hold"]);
    inner.post(&inner.widgets(), &held).await?.expect(201, "")?;
    let path = format!("/api/v1/namespaces/{}", inner.namespace);
    inner.delete(&path, None).await?.ok()?;
    // The namespace controller marks the held object, and the namespace waits for it.
    inner
        .eventually(&inner.widget("held"), "the held object to be marked", |a| {
            a.body["metadata"]["deletionTimestamp"].is_string()
        })
        .await?;
    let answer = inner.post(&inner.widgets(), &widget_body("late", json!({"size": 1}), json!({}))).await?;
    answer.expect(403, "Forbidden")?;
    ensure!(answer.message().contains("because it is being terminated"), "message: {}", answer.message());
    inner
        .json_patch(&inner.widget("held"), &json!([{"op": "remove", "path": "/metadata/finalizers"}]))
        .await?
        .ok()?;
    inner.gone(&path).await
}

async fn get_of_a_missing_object_is_not_found(c: Ctx) -> anyhow::Result<()> {
    let answer = c.get(&c.widget("nope")).await?;
    answer.expect(404, "NotFound")?;
    ensure_eq(&answer.body["message"], &json!(format!("widgets.{GROUP} \"nope\" not found")), "message")?;
    ensure_eq(
        &answer.body["details"],
        &json!({"name": "nope", "group": GROUP, "kind": "widgets"}),
        "details",
    )?;
    ensure_eq(&answer.body["kind"], &json!("Status"), "kind")?;
    ensure_eq(&answer.body["status"], &json!("Failure"), "status")
}

async fn names_of(c: &Ctx, query: &str) -> anyhow::Result<Vec<String>> {
    let answer = c.get(&format!("{}?{query}", c.widgets())).await?;
    Ok(answer.ok()?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

async fn labelled(c: &Ctx) -> anyhow::Result<()> {
    c.widget_with("a", json!({"size": 1}), json!({"tier": "front", "team": "x"})).await?;
    c.widget_with("b", json!({"size": 1}), json!({"tier": "back", "team": "y"})).await?;
    c.widget_with("c", json!({"size": 1}), json!({"tier": "cache"})).await?;
    Ok(())
}

async fn list_filters_by_label_equality(c: Ctx) -> anyhow::Result<()> {
    labelled(&c).await?;
    ensure_eq(&json!(names_of(&c, "labelSelector=tier%3Dfront").await?), &json!(["a"]), "tier=front")?;
    ensure_eq(&json!(names_of(&c, "labelSelector=tier!%3Dfront").await?), &json!(["b", "c"]), "tier!=front")?;
    ensure_eq(
        &json!(names_of(&c, "labelSelector=tier%3Dfront,team%3Dy").await?),
        &json!([]),
        "tier=front,team=y",
    )
}

async fn list_filters_by_label_sets(c: Ctx) -> anyhow::Result<()> {
    labelled(&c).await?;
    ensure_eq(
        &json!(names_of(&c, "labelSelector=tier%20in%20(front,back)").await?),
        &json!(["a", "b"]),
        "in",
    )?;
    ensure_eq(
        &json!(names_of(&c, "labelSelector=tier%20notin%20(front,back)").await?),
        &json!(["c"]),
        "notin",
    )?;
    ensure_eq(&json!(names_of(&c, "labelSelector=team").await?), &json!(["a", "b"]), "exists")?;
    ensure_eq(&json!(names_of(&c, "labelSelector=!team").await?), &json!(["c"]), "not exists")
}

async fn list_filters_by_field_name(c: Ctx) -> anyhow::Result<()> {
    labelled(&c).await?;
    ensure_eq(
        &json!(names_of(&c, "fieldSelector=metadata.name%3Db").await?),
        &json!(["b"]),
        "metadata.name=b",
    )?;
    ensure_eq(
        &json!(names_of(&c, "fieldSelector=metadata.name!%3Db").await?),
        &json!(["a", "c"]),
        "metadata.name!=b",
    )
}

async fn list_refuses_an_unsupported_field_selector(c: Ctx) -> anyhow::Result<()> {
    let answer = c.get(&format!("{}?fieldSelector=spec.size%3D1", c.widgets())).await?;
    answer.expect(400, "BadRequest")?;
    ensure!(
        answer.message().contains("field label not supported: spec.size"),
        "message: {}",
        answer.message()
    );
    Ok(())
}

async fn list_pages_with_limit_and_continue(c: Ctx) -> anyhow::Result<()> {
    for name in ["p1", "p2", "p3", "p4", "p5"] {
        c.new_widget(name).await?;
    }
    let first = c.get(&format!("{}?limit=2", c.widgets())).await?;
    let first = first.ok()?;
    let names = |list: &Value| -> Vec<Value> {
        list["items"].as_array().into_iter().flatten().map(|i| i["metadata"]["name"].clone()).collect()
    };
    ensure_eq(&json!(names(first)), &json!(["p1", "p2"]), "first page")?;
    ensure_eq(&first["metadata"]["remainingItemCount"], &json!(3), "remainingItemCount")?;
    let token = first["metadata"]["continue"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no continue token"))?
        .to_string();
    let second = c.get(&format!("{}?limit=2&continue={token}", c.widgets())).await?;
    let second = second.ok()?;
    ensure_eq(&json!(names(second)), &json!(["p3", "p4"]), "second page")?;
    let token = second["metadata"]["continue"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no second token"))?
        .to_string();
    let third = c.get(&format!("{}?limit=2&continue={token}", c.widgets())).await?;
    let third = third.ok()?;
    ensure_eq(&json!(names(third)), &json!(["p5"]), "third page")?;
    ensure!(
        third["metadata"].get("continue").is_none_or(|t| t == "" || t.is_null()),
        "a continue token on the last page"
    );
    Ok(())
}

async fn list_resource_version_is_at_least_every_item(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("v").await?;
    let list = c.get(&c.widgets()).await?;
    let list = list.ok()?;
    ensure!(rv(list) >= rv(&created), "list version {} < object version {}", rv(list), rv(&created));
    ensure_eq(&list["kind"], &json!("WidgetList"), "kind")?;
    ensure_eq(&list["apiVersion"], &json!(format!("{GROUP}/v1")), "apiVersion")
}

async fn list_across_namespaces(c: Ctx) -> anyhow::Result<()> {
    let other = scratch_namespace(&c, "b").await?;
    let label = json!({"across": c.namespace});
    c.widget_with("here", json!({"size": 1}), label.clone()).await?;
    other.widget_with("there", json!({"size": 1}), label).await?;
    let answer = c.get(&format!("/apis/{GROUP}/v1/widgets?labelSelector=across%3D{}", c.namespace)).await?;
    let found: Vec<(Value, Value)> = answer.ok()?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| (i["metadata"]["namespace"].clone(), i["metadata"]["name"].clone()))
        .collect();
    // In etcd's key order, `<ns>-b/there` comes before `<ns>/here` ('-' sorts before '/').
    ensure_eq(&json!(found), &json!([[other.namespace, "there"], [c.namespace, "here"]]), "items")?;
    other.delete(&format!("/api/v1/namespaces/{}", other.namespace), None).await?.ok()?;
    Ok(())
}

fn event_summary(event: &Value) -> (String, String) {
    (
        event["type"].as_str().unwrap_or_default().to_string(),
        event["object"]["metadata"]["name"].as_str().unwrap_or_default().to_string(),
    )
}

async fn watch_sends_added_modified_deleted_in_order(c: Ctx) -> anyhow::Result<()> {
    let list = c.get(&c.widgets()).await?;
    let version = rv(list.ok()?);
    let mut watch = c.watch(&format!("{}?resourceVersion={version}", c.widgets())).await?;
    ensure!(watch.code == 200, "watch answered {}", watch.code);
    let created = c.new_widget("w").await?;
    c.merge(&c.widget("w"), &json!({"spec": {"size": 2}})).await?.ok()?;
    c.delete(&c.widget("w"), None).await?.ok()?;
    let mut seen = Vec::new();
    let mut versions = Vec::new();
    for _ in 0..3 {
        let event = watch.next_change(SHORT).await?;
        versions.push(rv(&event["object"]));
        seen.push(event_summary(&event));
    }
    ensure_eq(&json!(seen), &json!([["ADDED", "w"], ["MODIFIED", "w"], ["DELETED", "w"]]), "events")?;
    ensure!(
        versions[0] == rv(&created) && versions[0] < versions[1] && versions[1] < versions[2],
        "versions {versions:?}"
    );
    Ok(())
}

async fn watch_from_a_resource_version_replays_later_changes(c: Ctx) -> anyhow::Result<()> {
    let first = c.new_widget("first").await?;
    c.new_widget("second").await?;
    let mut watch = c.watch(&format!("{}?resourceVersion={}", c.widgets(), rv(&first))).await?;
    let event = watch.next_change(SHORT).await?;
    ensure_eq(&json!(event_summary(&event)), &json!(["ADDED", "second"]), "first event")
}

async fn watch_with_a_label_selector_sees_objects_enter_and_leave(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("mover").await?;
    let mut watch =
        c.watch(&format!("{}?labelSelector=in%3Dyes&resourceVersion={}", c.widgets(), rv(&created))).await?;
    c.merge(&c.widget("mover"), &json!({"metadata": {"labels": {"in": "yes"}}})).await?.ok()?;
    c.merge(&c.widget("mover"), &json!({"spec": {"size": 3}})).await?.ok()?;
    c.merge(&c.widget("mover"), &json!({"metadata": {"labels": {"in": null}}})).await?.ok()?;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(event_summary(&watch.next_change(SHORT).await?));
    }
    ensure_eq(
        &json!(seen),
        &json!([["ADDED", "mover"], ["MODIFIED", "mover"], ["DELETED", "mover"]]),
        "events",
    )
}

async fn watch_from_a_too_old_resource_version_is_gone(c: Ctx) -> anyhow::Result<()> {
    let mut watch = c.watch(&format!("{}?resourceVersion=1", c.widgets())).await?;
    ensure!(watch.code == 200, "watch answered {}", watch.code);
    let event = watch.next(SHORT).await?.ok_or_else(|| anyhow::anyhow!("no event"))?;
    ensure_eq(&event["type"], &json!("ERROR"), "type")?;
    ensure_eq(&event["object"]["code"], &json!(410), "code")?;
    ensure_eq(&event["object"]["reason"], &json!("Expired"), "reason")?;
    ensure!(
        event["object"]["message"].as_str().is_some_and(|m| m.starts_with("too old resource version: 1 (")),
        "message: {}",
        event["object"]["message"]
    );
    Ok(())
}

async fn watch_with_initial_events_ends_them_with_a_bookmark(c: Ctx) -> anyhow::Result<()> {
    c.new_widget("one").await?;
    c.new_widget("two").await?;
    let mut watch = c
        .watch(&format!(
            "{}?sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
            c.widgets()
        ))
        .await?;
    let mut seen = Vec::new();
    loop {
        let event =
            watch.next(SHORT).await?.ok_or_else(|| anyhow::anyhow!("the stream ended after {seen:?}"))?;
        if event["type"] == "BOOKMARK" {
            ensure_eq(
                &event["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
                &json!("true"),
                "bookmark annotation",
            )?;
            ensure!(rv(&event["object"]) > 0, "bookmark without a version");
            break;
        }
        seen.push(event_summary(&event));
    }
    ensure_eq(&json!(seen), &json!([["ADDED", "one"], ["ADDED", "two"]]), "initial events")?;
    c.new_widget("three").await?;
    let event = watch.next_change(SHORT).await?;
    ensure_eq(&json!(event_summary(&event)), &json!(["ADDED", "three"]), "after the bookmark")
}

async fn watch_initial_events_need_not_older_than(c: Ctx) -> anyhow::Result<()> {
    let watch = c.watch(&format!("{}?sendInitialEvents=true&allowWatchBookmarks=true", c.widgets())).await?;
    ensure!(watch.code == 422, "watch answered {}", watch.code);
    Ok(())
}

async fn watch_by_name_sees_only_that_object(c: Ctx) -> anyhow::Result<()> {
    let list = c.get(&c.widgets()).await?;
    let version = rv(list.ok()?);
    let mut watch = c
        .watch(&format!("{}?fieldSelector=metadata.name%3Dme&resourceVersion={version}", c.widgets()))
        .await?;
    c.new_widget("other").await?;
    c.new_widget("me").await?;
    let event = watch.next_change(SHORT).await?;
    ensure_eq(&json!(event_summary(&event)), &json!(["ADDED", "me"]), "event")
}

async fn watch_of_one_namespace_sees_only_it(c: Ctx) -> anyhow::Result<()> {
    let other = scratch_namespace(&c, "w").await?;
    let list = c.get(&c.widgets()).await?;
    let version = rv(list.ok()?);
    let mut watch = c.watch(&format!("{}?resourceVersion={version}", c.widgets())).await?;
    other.new_widget("elsewhere").await?;
    c.new_widget("here").await?;
    let event = watch.next_change(SHORT).await?;
    ensure_eq(&json!(event_summary(&event)), &json!(["ADDED", "here"]), "event")?;
    other.delete(&format!("/api/v1/namespaces/{}", other.namespace), None).await?.ok()?;
    Ok(())
}

async fn create_with_generate_name_appends_five_characters(c: Ctx) -> anyhow::Result<()> {
    let mut body = widget_body("", json!({"size": 1}), json!({}));
    body["metadata"] = json!({"generateName": "gen-"});
    let created = c.post(&c.widgets(), &body).await?.expect(201, "")?.body.clone();
    let name = created["metadata"]["name"].as_str().unwrap_or_default();
    let suffix = name.strip_prefix("gen-").unwrap_or_default();
    ensure!(
        suffix.len() == 5 && suffix.chars().all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch)),
        "name {name}"
    );
    ensure_eq(&created["metadata"]["generateName"], &json!("gen-"), "generateName")
}

async fn create_sets_uid_timestamp_generation_and_version(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("fresh").await?;
    let uid = created["metadata"]["uid"].as_str().unwrap_or_default();
    let parts: Vec<usize> = uid.split('-').map(str::len).collect();
    ensure!(parts == [8, 4, 4, 4, 12], "uid {uid}");
    let timestamp = created["metadata"]["creationTimestamp"].as_str().unwrap_or_default();
    ensure!(timestamp.len() == 20 && timestamp.ends_with('Z'), "creationTimestamp {timestamp}");
    ensure_eq(&created["metadata"]["generation"], &json!(1), "generation")?;
    ensure!(rv(&created) > 0, "resourceVersion");
    let read = c.get(&c.widget("fresh")).await?;
    ensure_eq(read.ok()?, &created, "read back")
}

async fn create_of_an_existing_name_is_already_exists(c: Ctx) -> anyhow::Result<()> {
    c.new_widget("twice").await?;
    let answer = c.post(&c.widgets(), &widget_body("twice", json!({"size": 1}), json!({}))).await?;
    answer.expect(409, "AlreadyExists")?;
    ensure_eq(
        &answer.body["message"],
        &json!(format!("widgets.{GROUP} \"twice\" already exists")),
        "message",
    )?;
    ensure_eq(
        &answer.body["details"],
        &json!({"name": "twice", "group": GROUP, "kind": "widgets"}),
        "details",
    )
}

async fn create_without_a_name_is_invalid(c: Ctx) -> anyhow::Result<()> {
    let mut body = widget_body("", json!({"size": 1}), json!({}));
    body["metadata"] = json!({});
    let answer = c.post(&c.widgets(), &body).await?;
    answer.expect(422, "Invalid")?;
    ensure!(
        answer.message().contains("metadata.name: Required value: name or generateName is required"),
        "message: {}",
        answer.message()
    );
    Ok(())
}

async fn create_with_an_invalid_name_is_invalid(c: Ctx) -> anyhow::Result<()> {
    let answer = c.post(&c.widgets(), &widget_body("Not_Valid", json!({"size": 1}), json!({}))).await?;
    answer.expect(422, "Invalid")?;
    ensure!(
        answer
            .message()
            .contains("metadata.name: Invalid value: \"Not_Valid\": a lowercase RFC 1123 subdomain"),
        "message: {}",
        answer.message()
    );
    Ok(())
}

async fn create_drops_the_status_of_a_kind_with_a_status_subresource(c: Ctx) -> anyhow::Result<()> {
    let mut body = widget_body("stat", json!({"size": 1}), json!({}));
    body["status"] = json!({"phase": "Done"});
    let created = c.post(&c.widgets(), &body).await?.expect(201, "")?.body.clone();
    ensure!(created.get("status").is_none(), "status kept: {}", created["status"]);
    Ok(())
}

async fn create_with_another_namespace_in_the_body_is_a_bad_request(c: Ctx) -> anyhow::Result<()> {
    let mut body = widget_body("ns", json!({"size": 1}), json!({}));
    body["metadata"]["namespace"] = json!("somewhere-else");
    let answer = c.post(&c.widgets(), &body).await?;
    answer.expect(400, "BadRequest")?;
    ensure!(answer.message().contains("does not match the namespace"), "message: {}", answer.message());
    Ok(())
}

async fn create_dry_run_stores_nothing(c: Ctx) -> anyhow::Result<()> {
    let answer = c
        .post(&format!("{}?dryRun=All", c.widgets()), &widget_body("dry", json!({"size": 1}), json!({})))
        .await?;
    answer.expect(201, "")?;
    ensure_eq(&answer.body["metadata"]["name"], &json!("dry"), "name")?;
    c.get(&c.widget("dry")).await?.expect(404, "NotFound")?;
    Ok(())
}

fn configmap(name: &str, data: Value) -> Value {
    let mut map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    map["data"] = data;
    map
}

async fn configmap_has_no_generation(c: Ctx) -> anyhow::Result<()> {
    let created = c
        .post(&c.core("configmaps"), &configmap("plain", json!({"a": "1"})))
        .await?
        .expect(201, "")?
        .body
        .clone();
    ensure!(
        created["metadata"].get("generation").is_none(),
        "generation {}",
        created["metadata"]["generation"]
    );
    Ok(())
}

async fn update_with_a_stale_version_is_a_conflict(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("race").await?;
    c.merge(&c.widget("race"), &json!({"spec": {"size": 2}})).await?.ok()?;
    let mut stale = created.clone();
    stale["spec"]["size"] = json!(3);
    let answer = c.put(&c.widget("race"), &stale).await?;
    answer.expect(409, "Conflict")?;
    ensure_eq(
        &answer.body["message"],
        &json!(format!(
            "Operation cannot be fulfilled on widgets.{GROUP} \"race\": the object has been modified; please apply your changes to the latest version and try again"
        )),
        "message",
    )
}

async fn update_of_a_custom_resource_needs_a_version(c: Ctx) -> anyhow::Result<()> {
    let mut created = c.new_widget("unversioned").await?;
    created["metadata"].as_object_mut().expect("metadata").remove("resourceVersion");
    let answer = c.put(&c.widget("unversioned"), &created).await?;
    answer.expect(422, "Invalid")?;
    ensure!(
        answer
            .message()
            .contains("metadata.resourceVersion: Invalid value: 0: must be specified for an update"),
        "message: {}",
        answer.message()
    );
    Ok(())
}

async fn update_of_a_configmap_without_a_version_is_unconditional(c: Ctx) -> anyhow::Result<()> {
    c.post(&c.core("configmaps"), &configmap("free", json!({"a": "1"}))).await?.expect(201, "")?;
    let answer =
        c.put(&format!("{}/free", c.core("configmaps")), &configmap("free", json!({"a": "2"}))).await?;
    ensure_eq(&answer.ok()?["data"], &json!({"a": "2"}), "data")
}

async fn update_that_changes_nothing_keeps_the_version(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("same").await?;
    let answer = c.put(&c.widget("same"), &created).await?;
    ensure_eq(
        &answer.ok()?["metadata"]["resourceVersion"],
        &created["metadata"]["resourceVersion"],
        "resourceVersion",
    )
}

async fn spec_changes_bump_the_generation_and_metadata_changes_do_not(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("gen").await?;
    let labelled = c.merge(&c.widget("gen"), &json!({"metadata": {"labels": {"x": "y"}}})).await?;
    let labelled = labelled.ok()?.clone();
    ensure!(
        generation(&labelled) == 1 && rv(&labelled) > rv(&created),
        "after a label: {}",
        labelled["metadata"]
    );
    let changed = c.merge(&c.widget("gen"), &json!({"spec": {"size": 5}})).await?;
    ensure_eq(&changed.ok()?["metadata"]["generation"], &json!(2), "generation after a spec change")
}

async fn update_of_the_main_resource_ignores_the_status(c: Ctx) -> anyhow::Result<()> {
    c.new_widget("main").await?;
    let answer = c.merge(&c.widget("main"), &json!({"status": {"phase": "Sneaky"}})).await?;
    ensure!(answer.ok()?.get("status").is_none(), "status changed through the main resource");
    Ok(())
}

async fn update_with_another_name_in_the_body_is_a_bad_request(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("named").await?;
    let mut renamed = created.clone();
    renamed["metadata"]["name"] = json!("other");
    let answer = c.put(&c.widget("named"), &renamed).await?;
    answer.expect(400, "BadRequest")?;
    ensure!(answer.message().contains("does not match the name on the URL"), "message: {}", answer.message());
    Ok(())
}

async fn update_of_a_missing_object_is_not_found(c: Ctx) -> anyhow::Result<()> {
    let mut body = widget_body("absent", json!({"size": 1}), json!({}));
    body["metadata"]["resourceVersion"] = json!("1");
    c.put(&c.widget("absent"), &body).await?.expect(404, "NotFound")?;
    c.merge(&c.widget("absent"), &json!({"spec": {"size": 2}})).await?.expect(404, "NotFound")?;
    Ok(())
}

async fn merge_patch_changes_and_removes_fields(c: Ctx) -> anyhow::Result<()> {
    c.widget_with("m", json!({"size": 1, "title": "t", "nested": {"a": "q", "b": 2}}), json!({})).await?;
    let answer = c.merge(&c.widget("m"), &json!({"spec": {"title": null, "nested": {"b": 3}}})).await?;
    ensure_eq(
        &answer.ok()?["spec"],
        &json!({"size": 1, "color": "red", "nested": {"a": "q", "b": 3}}),
        "spec",
    )
}

async fn merge_patch_with_a_stale_version_is_a_conflict(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("mp").await?;
    c.merge(&c.widget("mp"), &json!({"spec": {"size": 2}})).await?.ok()?;
    let answer = c.merge(&c.widget("mp"), &json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"size": 3}})).await?;
    answer.expect(409, "Conflict")?;
    Ok(())
}

async fn json_patch_whose_test_fails_is_invalid(c: Ctx) -> anyhow::Result<()> {
    c.new_widget("jp").await?;
    let answer = c.json_patch(&c.widget("jp"), &json!([{"op": "test", "path": "/spec/size", "value": 9}, {"op": "replace", "path": "/spec/size", "value": 10}])).await?;
    answer.expect(422, "Invalid")?;
    let read = c.get(&c.widget("jp")).await?;
    ensure_eq(&read.ok()?["spec"]["size"], &json!(1), "size")
}

async fn json_patch_testing_a_missing_list_for_null_succeeds(c: Ctx) -> anyhow::Result<()> {
    c.new_widget("fin").await?;
    let answer = c
        .json_patch(&c.widget("fin"), &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["conformance/f"]}]))
        .await?;
    ensure_eq(&answer.ok()?["metadata"]["finalizers"], &json!(["conformance/f"]), "finalizers")?;
    c.json_patch(&c.widget("fin"), &json!([{"op": "remove", "path": "/metadata/finalizers"}])).await?.ok()?;
    Ok(())
}

async fn strategic_merge_patch_of_a_custom_resource_is_unsupported(c: Ctx) -> anyhow::Result<()> {
    c.new_widget("smp").await?;
    let answer = c.strategic(&c.widget("smp"), &json!({"spec": {"size": 2}})).await?;
    answer.expect(415, "UnsupportedMediaType")?;
    Ok(())
}

async fn strategic_merge_patch_merges_configmap_data(c: Ctx) -> anyhow::Result<()> {
    c.post(&c.core("configmaps"), &configmap("smp", json!({"a": "1", "b": "2"}))).await?.expect(201, "")?;
    let answer = c
        .strategic(&format!("{}/smp", c.core("configmaps")), &json!({"data": {"b": null, "c": "3"}}))
        .await?;
    ensure_eq(&answer.ok()?["data"], &json!({"a": "1", "c": "3"}), "data")
}

async fn strategic_merge_patch_merges_containers_by_name(c: Ctx) -> anyhow::Result<()> {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "app", "image": "app:1"}, {"name": "side", "image": "side:1"}]}}},
    });
    let path = format!("/apis/apps/v1/namespaces/{}/deployments", c.namespace);
    let created = c.post(&path, &deployment).await?.expect(201, "")?.body.clone();
    ensure_eq(&created["metadata"]["generation"], &json!(1), "generation")?;
    let answer = c
        .strategic(
            &format!("{path}/web"),
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "side:2"}]}}}}),
        )
        .await?;
    let patched = answer.ok()?;
    let containers: Vec<(Value, Value)> = patched["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|container| (container["name"].clone(), container["image"].clone()))
        .collect();
    ensure_eq(&json!(containers), &json!([["app", "app:1"], ["side", "side:2"]]), "containers")?;
    ensure_eq(&patched["metadata"]["generation"], &json!(2), "generation")
}

fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            (
                entry["manager"].as_str().unwrap_or_default().into(),
                entry["operation"].as_str().unwrap_or_default().into(),
            )
        })
        .collect()
}

async fn apply_creates_and_records_the_manager(c: Ctx) -> anyhow::Result<()> {
    let answer =
        c.apply(&c.widget("ssa"), "alice", false, &widget_body("ssa", json!({"size": 1}), json!({}))).await?;
    answer.expect(201, "")?;
    ensure_eq(&json!(managers(&answer.body)), &json!([["alice", "Apply"]]), "managedFields")?;
    ensure_eq(
        &answer.body["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:size"],
        &json!({}),
        "fieldsV1",
    )
}

async fn apply_of_another_managers_field_conflicts_unless_forced(c: Ctx) -> anyhow::Result<()> {
    c.apply(&c.widget("ssa"), "alice", false, &widget_body("ssa", json!({"size": 1}), json!({})))
        .await?
        .ok()?;
    let answer =
        c.apply(&c.widget("ssa"), "bob", false, &widget_body("ssa", json!({"size": 2}), json!({}))).await?;
    answer.expect(409, "Conflict")?;
    ensure_eq(
        &answer.body["message"],
        &json!("Apply failed with 1 conflict: conflict with \"alice\": .spec.size"),
        "message",
    )?;
    let forced =
        c.apply(&c.widget("ssa"), "bob", true, &widget_body("ssa", json!({"size": 2}), json!({}))).await?;
    let forced = forced.ok()?;
    ensure_eq(&forced["spec"]["size"], &json!(2), "size")?;
    ensure!(
        !managers(forced).contains(&("alice".into(), "Apply".into())),
        "alice still owns something: {:?}",
        managers(forced)
    );
    Ok(())
}

async fn apply_of_the_same_value_shares_the_field(c: Ctx) -> anyhow::Result<()> {
    c.apply(&c.widget("ssa"), "alice", false, &widget_body("ssa", json!({"size": 1}), json!({})))
        .await?
        .ok()?;
    let answer =
        c.apply(&c.widget("ssa"), "bob", false, &widget_body("ssa", json!({"size": 1}), json!({}))).await?;
    let mut found = managers(answer.ok()?);
    found.sort();
    ensure_eq(&json!(found), &json!([["alice", "Apply"], ["bob", "Apply"]]), "managers")
}

async fn apply_removes_fields_the_manager_stopped_applying(c: Ctx) -> anyhow::Result<()> {
    c.apply(
        &c.widget("ssa"),
        "alice",
        false,
        &widget_body("ssa", json!({"size": 1, "tags": ["a"], "title": "t"}), json!({})),
    )
    .await?
    .ok()?;
    let answer =
        c.apply(&c.widget("ssa"), "alice", false, &widget_body("ssa", json!({"size": 1}), json!({}))).await?;
    ensure_eq(&answer.ok()?["spec"], &json!({"size": 1, "color": "red"}), "spec")
}

async fn apply_that_changes_nothing_keeps_the_version(c: Ctx) -> anyhow::Result<()> {
    let body = widget_body("ssa", json!({"size": 1}), json!({"l": "v"}));
    let first = c.apply(&c.widget("ssa"), "alice", false, &body).await?.body.clone();
    let second = c.apply(&c.widget("ssa"), "alice", false, &body).await?;
    ensure_eq(
        &second.ok()?["metadata"]["resourceVersion"],
        &first["metadata"]["resourceVersion"],
        "resourceVersion",
    )
}

async fn apply_without_a_field_manager_is_refused(c: Ctx) -> anyhow::Result<()> {
    let answer = c
        .call(
            "PATCH",
            &c.widget("ssa"),
            "application/apply-patch+yaml",
            Some(&widget_body("ssa", json!({"size": 1}), json!({}))),
        )
        .await?;
    answer.expect(422, "Invalid")?;
    ensure!(answer.message().contains("fieldManager: Required value"), "message: {}", answer.message());
    Ok(())
}

async fn update_records_its_field_manager(c: Ctx) -> anyhow::Result<()> {
    c.new_widget("upd").await?;
    let answer = c
        .call(
            "PATCH",
            &format!("{}?fieldManager=carol", c.widget("upd")),
            "application/merge-patch+json",
            Some(&json!({"spec": {"size": 7}})),
        )
        .await?;
    let patched = answer.ok()?;
    ensure!(
        managers(patched).contains(&("carol".into(), "Update".into())),
        "managers {:?}",
        managers(patched)
    );
    let carol = patched["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == "carol")
        .cloned()
        .unwrap_or_default();
    ensure_eq(&carol["fieldsV1"]["f:spec"]["f:size"], &json!({}), "carol's fields")
}

async fn status_patch_does_not_bump_the_generation(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("st").await?;
    let answer = c
        .merge(&format!("{}/status", c.widget("st")), &json!({"status": {"phase": "Ready", "count": 1}}))
        .await?;
    let patched = answer.ok()?;
    ensure_eq(&patched["status"], &json!({"phase": "Ready", "count": 1}), "status")?;
    ensure_eq(&patched["metadata"]["generation"], &json!(1), "generation")?;
    ensure!(rv(patched) > rv(&created), "resourceVersion did not move");
    Ok(())
}

async fn status_patch_ignores_the_spec(c: Ctx) -> anyhow::Result<()> {
    c.new_widget("st").await?;
    let answer = c
        .merge(
            &format!("{}/status", c.widget("st")),
            &json!({"spec": {"size": 50}, "status": {"phase": "P"}}),
        )
        .await?;
    let patched = answer.ok()?;
    ensure_eq(&patched["spec"]["size"], &json!(1), "spec.size")?;
    ensure_eq(&patched["status"]["phase"], &json!("P"), "status.phase")
}

async fn status_update_with_a_stale_version_is_a_conflict(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("st").await?;
    c.merge(&c.widget("st"), &json!({"spec": {"size": 2}})).await?.ok()?;
    let mut stale = created.clone();
    stale["status"] = json!({"phase": "Old"});
    c.put(&format!("{}/status", c.widget("st")), &stale).await?.expect(409, "Conflict")?;
    Ok(())
}

async fn status_of_a_kind_without_the_subresource_is_not_found(c: Ctx) -> anyhow::Result<()> {
    c.post(&c.core("configmaps"), &configmap("nostatus", json!({}))).await?.expect(201, "")?;
    c.get(&format!("{}/nostatus/status", c.core("configmaps"))).await?.expect(404, "NotFound")?;
    Ok(())
}

async fn finalized(c: &Ctx, name: &str) -> anyhow::Result<Value> {
    let mut body = widget_body(name, json!({"size": 1}), json!({}));
    body["metadata"]["finalizers"] = json!(["conformance/hold"]);
    Ok(c.post(&c.widgets(), &body).await?.expect(201, "")?.body.clone())
}

async fn delete_of_an_object_with_a_finalizer_marks_it(c: Ctx) -> anyhow::Result<()> {
    let created = finalized(&c, "held").await?;
    let answer = c.delete(&c.widget("held"), None).await?;
    let deleted = answer.expect(200, "")?.body.clone();
    ensure!(deleted["metadata"]["deletionTimestamp"].is_string(), "no deletionTimestamp");
    ensure_eq(&deleted["metadata"]["deletionGracePeriodSeconds"], &json!(0), "deletionGracePeriodSeconds")?;
    ensure_eq(&deleted["metadata"]["generation"], &json!(generation(&created) + 1), "generation")?;
    let read = c.get(&c.widget("held")).await?;
    ensure_eq(
        &read.ok()?["metadata"]["deletionTimestamp"],
        &deleted["metadata"]["deletionTimestamp"],
        "read back",
    )?;
    c.json_patch(&c.widget("held"), &json!([{"op": "remove", "path": "/metadata/finalizers"}]))
        .await?
        .ok()?;
    Ok(())
}

async fn removing_the_last_finalizer_deletes_the_object(c: Ctx) -> anyhow::Result<()> {
    let created = finalized(&c, "held").await?;
    c.delete(&c.widget("held"), None).await?.ok()?;
    let marked = c.get(&c.widget("held")).await?.body.clone();
    let mut watch = c.watch(&format!("{}?resourceVersion={}", c.widgets(), rv(&marked))).await?;
    let answer =
        c.json_patch(&c.widget("held"), &json!([{"op": "remove", "path": "/metadata/finalizers"}])).await?;
    answer.expect(200, "")?;
    c.get(&c.widget("held")).await?.expect(404, "NotFound")?;
    let event = watch.next_change(SHORT).await?;
    ensure_eq(&json!(event_summary(&event)), &json!(["DELETED", "held"]), "the one event")?;
    ensure_eq(&event["object"]["metadata"]["uid"], &created["metadata"]["uid"], "uid")
}

async fn no_new_finalizers_while_deleting(c: Ctx) -> anyhow::Result<()> {
    finalized(&c, "held").await?;
    c.delete(&c.widget("held"), None).await?.ok()?;
    let answer = c
        .json_patch(
            &c.widget("held"),
            &json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "conformance/late"}]),
        )
        .await?;
    answer.expect(422, "Invalid")?;
    ensure!(
        answer.message().contains("no new finalizers can be added if the object is being deleted"),
        "message: {}",
        answer.message()
    );
    c.json_patch(&c.widget("held"), &json!([{"op": "remove", "path": "/metadata/finalizers"}]))
        .await?
        .ok()?;
    Ok(())
}

async fn deleting_twice_changes_nothing(c: Ctx) -> anyhow::Result<()> {
    finalized(&c, "held").await?;
    let first = c.delete(&c.widget("held"), None).await?.body.clone();
    let second = c.delete(&c.widget("held"), None).await?;
    let second = second.expect(200, "")?.body.clone();
    ensure_eq(
        &second["metadata"]["deletionTimestamp"],
        &first["metadata"]["deletionTimestamp"],
        "deletionTimestamp",
    )?;
    ensure_eq(
        &second["metadata"]["resourceVersion"],
        &first["metadata"]["resourceVersion"],
        "resourceVersion",
    )?;
    c.json_patch(&c.widget("held"), &json!([{"op": "remove", "path": "/metadata/finalizers"}]))
        .await?
        .ok()?;
    Ok(())
}

async fn delete_of_a_missing_object_is_not_found(c: Ctx) -> anyhow::Result<()> {
    let answer = c.delete(&c.widget("never"), None).await?;
    answer.expect(404, "NotFound")?;
    ensure_eq(&answer.body["message"], &json!(format!("widgets.{GROUP} \"never\" not found")), "message")
}

async fn delete_with_a_wrong_uid_precondition_is_a_conflict(c: Ctx) -> anyhow::Result<()> {
    let created = c.new_widget("pre").await?;
    let options = json!({"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}});
    let answer = c.delete(&c.widget("pre"), Some(&options)).await?;
    answer.expect(409, "Conflict")?;
    let expected = format!(
        "Operation cannot be fulfilled on Widget.{GROUP} \"pre\": the UID in the precondition (00000000-0000-0000-0000-000000000000) does not match the UID in record ({}). The object might have been deleted and then recreated",
        created["metadata"]["uid"].as_str().unwrap_or_default()
    );
    ensure_eq(&answer.body["message"], &json!(expected), "message")?;
    c.get(&c.widget("pre")).await?.ok()?;
    Ok(())
}

async fn delete_returns_a_status_once_gone_and_the_object_while_finalizers_hold_it(
    c: Ctx,
) -> anyhow::Result<()> {
    let created = c.new_widget("gone").await?;
    let answer = c.delete(&c.widget("gone"), None).await?;
    let body = &answer.expect(200, "")?.body;
    ensure_eq(&body["kind"], &json!("Status"), "kind for a custom resource")?;
    ensure_eq(&body["status"], &json!("Success"), "status")?;
    ensure_eq(
        &body["details"],
        &json!({"name": "gone", "group": GROUP, "kind": "widgets", "uid": created["metadata"]["uid"]}),
        "details",
    )?;
    finalized(&c, "held").await?;
    let answer = c.delete(&c.widget("held"), None).await?;
    ensure_eq(&answer.expect(200, "")?.body["kind"], &json!("Widget"), "kind while held")?;
    c.json_patch(&c.widget("held"), &json!([{"op": "remove", "path": "/metadata/finalizers"}]))
        .await?
        .ok()?;
    c.post(&c.core("configmaps"), &configmap("gone", json!({}))).await?.expect(201, "")?;
    let answer = c.delete(&format!("{}/gone", c.core("configmaps")), None).await?;
    let body = &answer.expect(200, "")?.body;
    ensure_eq(&body["kind"], &json!("Status"), "kind for a ConfigMap")?;
    ensure_eq(&body["status"], &json!("Success"), "status")?;
    ensure_eq(&body["details"]["name"], &json!("gone"), "details.name")
}

async fn delete_collection_deletes_what_the_selector_selects(c: Ctx) -> anyhow::Result<()> {
    labelled(&c).await?;
    c.delete(&format!("{}?labelSelector=team", c.widgets()), None).await?.ok()?;
    ensure_eq(&json!(names_of(&c, "").await?), &json!(["c"]), "left")
}

async fn owned_configmap(c: &Ctx, owner: &Value, name: &str) -> anyhow::Result<()> {
    let mut map = configmap(name, json!({}));
    map["metadata"]["ownerReferences"] = json!([{
        "apiVersion": format!("{GROUP}/v1"), "kind": "Widget", "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "blockOwnerDeletion": true,
    }]);
    c.post(&c.core("configmaps"), &map).await?.expect(201, "")?;
    Ok(())
}

async fn garbage_collection_deletes_dependents_in_the_background(c: Ctx) -> anyhow::Result<()> {
    let owner = c.new_widget("owner").await?;
    owned_configmap(&c, &owner, "child").await?;
    c.delete(&c.widget("owner"), None).await?.ok()?;
    c.gone(&format!("{}/child", c.core("configmaps"))).await
}

async fn foreground_deletion_waits_for_the_dependents(c: Ctx) -> anyhow::Result<()> {
    let owner = c.new_widget("owner").await?;
    owned_configmap(&c, &owner, "child").await?;
    let options = json!({"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground"});
    let answer = c.delete(&c.widget("owner"), Some(&options)).await?;
    let marked = answer.expect(200, "")?.body.clone();
    ensure_eq(&marked["metadata"]["finalizers"], &json!(["foregroundDeletion"]), "finalizers")?;
    ensure!(marked["metadata"]["deletionTimestamp"].is_string(), "no deletionTimestamp");
    c.gone(&format!("{}/child", c.core("configmaps"))).await?;
    c.gone(&c.widget("owner")).await
}

async fn orphan_deletion_keeps_the_dependents(c: Ctx) -> anyhow::Result<()> {
    let owner = c.new_widget("owner").await?;
    owned_configmap(&c, &owner, "child").await?;
    let options = json!({"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Orphan"});
    c.delete(&c.widget("owner"), Some(&options)).await?.ok()?;
    c.gone(&c.widget("owner")).await?;
    let child = c
        .eventually(&format!("{}/child", c.core("configmaps")), "the child to be orphaned", |a| {
            a.code == 200 && a.body["metadata"].get("ownerReferences").is_none()
        })
        .await?;
    ensure!(child.code == 200, "the child went");
    Ok(())
}

async fn events_k8s_io_events_read_back_as_core_events(c: Ctx) -> anyhow::Result<()> {
    let owner = c.new_widget("evented").await?;
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "evented.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "conformance", "reportingInstance": "conformance-1",
        "action": "Testing", "reason": "Checked", "type": "Normal", "note": "a note",
        "regarding": {"apiVersion": format!("{GROUP}/v1"), "kind": "Widget", "name": "evented", "namespace": c.namespace, "uid": owner["metadata"]["uid"]},
    });
    let created =
        c.post(&format!("/apis/events.k8s.io/v1/namespaces/{}/events", c.namespace), &event).await?;
    ensure_eq(&created.expect(201, "")?.body["note"], &json!("a note"), "note")?;
    let core = c.get(&format!("{}?fieldSelector=involvedObject.name%3Devented", c.core("events"))).await?;
    let items = core.ok()?["items"].as_array().cloned().unwrap_or_default();
    ensure!(items.len() == 1, "{} core events", items.len());
    ensure_eq(&items[0]["message"], &json!("a note"), "message")?;
    ensure_eq(&items[0]["involvedObject"]["uid"], &owner["metadata"]["uid"], "involvedObject.uid")?;
    ensure_eq(&items[0]["reportingComponent"], &json!("conformance"), "reportingComponent")
}

async fn core_events_select_by_reason_and_involved_object(c: Ctx) -> anyhow::Result<()> {
    for (name, reason) in [("e1", "One"), ("e2", "Two")] {
        let event = json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Widget", "name": "x", "namespace": c.namespace}, "reason": reason,
            "message": "m", "type": "Warning", "source": {"component": "conformance"},
        });
        c.post(&c.core("events"), &event).await?.expect(201, "")?;
    }
    let answer = c
        .get(&format!("{}?fieldSelector=reason%3DTwo,involvedObject.kind%3DWidget", c.core("events")))
        .await?;
    let names: Vec<Value> = answer.ok()?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["metadata"]["name"].clone())
        .collect();
    ensure_eq(&json!(names), &json!(["e2"]), "selected")
}

async fn leases_update_with_conflicts(c: Ctx) -> anyhow::Result<()> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", c.namespace);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lock"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    let created = c.post(&path, &lease).await?.expect(201, "")?.body.clone();
    let mut taken = created.clone();
    taken["spec"]["holderIdentity"] = json!("b");
    taken["spec"]["renewTime"] = json!("2026-01-01T00:00:00.000000Z");
    let answer = c.put(&format!("{path}/lock"), &taken).await?;
    ensure_eq(&answer.ok()?["spec"]["holderIdentity"], &json!("b"), "holder")?;
    let mut stale = created.clone();
    stale["spec"]["holderIdentity"] = json!("c");
    c.put(&format!("{path}/lock"), &stale).await?.expect(409, "Conflict")?;
    Ok(())
}

async fn cluster_scoped_objects_have_no_namespace(c: Ctx) -> anyhow::Result<()> {
    let name = format!("g-{}", c.namespace);
    let path = format!("/apis/{GROUP}/v1/gadgets");
    let body = json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Gadget", "metadata": {"name": name}, "anything": {"goes": true}});
    let created = c.post(&path, &body).await?.expect(201, "")?.body.clone();
    ensure!(created["metadata"].get("namespace").is_none(), "namespace {}", created["metadata"]["namespace"]);
    ensure_eq(&created["anything"], &json!({"goes": true}), "preserved")?;
    // Not a path the server has: a plain `404 page not found`, not a Status.
    let answer = c.get(&format!("/apis/{GROUP}/v1/namespaces/{}/gadgets", c.namespace)).await?;
    ensure!(
        answer.code == 404 && answer.body == json!("404 page not found\n"),
        "answer {} {}",
        answer.code,
        answer.body
    );
    c.delete(&format!("{path}/{name}"), None).await?.ok()?;
    Ok(())
}

async fn table_for_kubectl_get_has_the_printer_columns(c: Ctx) -> anyhow::Result<()> {
    c.widget_with("tabled", json!({"size": 4}), json!({})).await?;
    let request = http::Request::builder()
        .uri(c.widgets())
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
        .body(kube::client::Body::from(Vec::new()))?;
    let response = c.client.send(request).await?;
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
    let table: Value = serde_json::from_slice(&bytes)?;
    ensure_eq(&table["kind"], &json!("Table"), "kind")?;
    let columns: Vec<Value> =
        table["columnDefinitions"].as_array().into_iter().flatten().map(|d| d["name"].clone()).collect();
    ensure_eq(&json!(columns), &json!(["Name", "Size", "Age"]), "columns")?;
    ensure_eq(&table["rows"][0]["cells"][0], &json!("tabled"), "name cell")?;
    ensure_eq(&table["rows"][0]["cells"][1], &json!(4), "size cell")
}

async fn crd_deletion_deletes_its_objects_then_itself(c: Ctx) -> anyhow::Result<()> {
    // A CRD of this scenario's own: the plural carries the namespace's random suffix.
    let suffix: String = c.namespace.chars().rev().take(8).collect::<String>().chars().rev().collect();
    let plural = format!("doomed{suffix}");
    let name = format!("{plural}.{GROUP}");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": name},
        "spec": {"group": GROUP, "scope": "Namespaced", "names": {"plural": plural, "singular": plural, "kind": format!("Doomed{suffix}")},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
    });
    super::harness::install(&c.client, &crd).await?;
    let objects = format!("/apis/{GROUP}/v1/namespaces/{}/{plural}", c.namespace);
    let object = json!({"apiVersion": format!("{GROUP}/v1"), "kind": format!("Doomed{suffix}"), "metadata": {"name": "d"}});
    c.post(&objects, &object).await?.expect(201, "")?;
    let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
    let answer = c.delete(&path, None).await?;
    ensure!(
        answer.ok()?["metadata"]["finalizers"] == json!(["customresourcecleanup.apiextensions.k8s.io"]),
        "finalizers {}",
        answer.body["metadata"]["finalizers"]
    );
    c.gone(&path).await?;
    c.eventually(&format!("{objects}/d"), "the resource to stop being served", |a| a.code == 404).await?;
    Ok(())
}

async fn list_in_an_empty_namespace_is_empty(c: Ctx) -> anyhow::Result<()> {
    let answer = c.get(&c.widgets()).await?;
    ensure_eq(&answer.ok()?["items"], &json!([]), "items")?;
    let missing = c.get(&format!("/apis/{GROUP}/v1/namespaces/never-created-here/widgets")).await?;
    ensure_eq(&missing.ok()?["items"], &json!([]), "items of a namespace that does not exist")
}

async fn list_pages_after_the_first_are_a_snapshot_of_its_version(c: Ctx) -> anyhow::Result<()> {
    for name in ["s1", "s2", "s3", "s4"] {
        c.new_widget(name).await?;
    }
    let first = c.get(&format!("{}?limit=2", c.widgets())).await?;
    let first = first.ok()?.clone();
    let token = first["metadata"]["continue"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no continue token"))?
        .to_string();
    // Changes after the first page: one object goes, one comes, one changes.
    c.delete(&c.widget("s3"), None).await?.ok()?;
    c.new_widget("s5").await?;
    c.merge(&c.widget("s4"), &json!({"spec": {"size": 9}})).await?.ok()?;
    let rest = c.get(&format!("{}?limit=10&continue={token}", c.widgets())).await?;
    let rest = rest.ok()?;
    let seen: Vec<(Value, Value)> = rest["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| (item["metadata"]["name"].clone(), item["spec"]["size"].clone()))
        .collect();
    ensure_eq(&json!(seen), &json!([["s3", 1], ["s4", 1]]), "the rest, as of the first page")?;
    ensure_eq(&rest["metadata"]["resourceVersion"], &first["metadata"]["resourceVersion"], "resourceVersion")
}

/// `shardSelector` for the lower (`0x0…` to `0x8…`) or upper half of the hash space of `field`.
fn half(field: &str, upper: bool) -> String {
    let (start, end) = if upper {
        ("0x8000000000000000", "0x10000000000000000")
    } else {
        ("0x0000000000000000", "0x8000000000000000")
    };
    format!("shardRange(object.metadata.{field}, '{start}', '{end}')")
}

fn query_value(text: &str) -> String {
    text.replace('%', "%25").replace(' ', "%20").replace('\'', "%27").replace(',', "%2C").replace('|', "%7C")
}

/// Whether the uid of `object` hashes into the upper half, by Kuberator's own hash.
fn upper_half(object: &Value) -> bool {
    kuberator::shard::hash(object["metadata"]["uid"].as_str().unwrap_or_default()) >= 1 << 63
}

async fn list_by_shard_range_splits_by_the_fnv_hash_of_the_uid(c: Ctx) -> anyhow::Result<()> {
    let mut expected = (Vec::new(), Vec::new());
    for index in 0..12 {
        let created = c.new_widget(&format!("s{index:02}")).await?;
        let name = created["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        if upper_half(&created) { expected.1.push(name) } else { expected.0.push(name) }
    }
    for (upper, names) in [(false, &expected.0), (true, &expected.1)] {
        let selector = half("uid", upper);
        let answer = c.get(&format!("{}?shardSelector={}", c.widgets(), query_value(&selector))).await?;
        let list = answer.ok()?;
        // Filtered, but a custom resource's list does not say so (1.36 echoes the selector in
        // typed lists only): see `list_by_shard_range_of_a_built_in_kind_echoes_the_selector`.
        ensure_eq(&list["metadata"]["shardInfo"], &Value::Null, "shardInfo of a custom resource")?;
        let listed: Vec<&str> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["metadata"]["name"].as_str())
            .collect();
        ensure_eq(
            &json!(listed),
            &json!(names),
            &format!("the {} half", if upper { "upper" } else { "lower" }),
        )?;
    }
    // Without a selector: no shardInfo, everything.
    let all = c.get(&c.widgets()).await?;
    ensure_eq(&all.ok()?["metadata"]["shardInfo"], &Value::Null, "shardInfo without a selector")?;
    ensure_eq(&json!(all.ok()?["items"].as_array().map(Vec::len)), &json!(12), "all")
}

async fn list_by_shard_range_of_the_namespace_takes_all_or_nothing(c: Ctx) -> anyhow::Result<()> {
    c.new_widget("one").await?;
    c.new_widget("two").await?;
    let upper = kuberator::shard::hash(&c.namespace) >= 1 << 63;
    let inside = names_of(&c, &format!("shardSelector={}", query_value(&half("namespace", upper)))).await?;
    let outside = names_of(&c, &format!("shardSelector={}", query_value(&half("namespace", !upper)))).await?;
    ensure_eq(&json!(inside), &json!(["one", "two"]), "the namespace's half")?;
    ensure_eq(&json!(outside), &json!([]), "the other half")
}

async fn watch_by_shard_range_sees_only_its_objects(c: Ctx) -> anyhow::Result<()> {
    let first = c.new_widget("w-first").await?;
    let upper = upper_half(&first);
    let selector = query_value(&half("uid", upper));
    let mut watch =
        c.watch(&format!("{}?shardSelector={selector}&resourceVersion={}", c.widgets(), rv(&first))).await?;
    ensure!(watch.code == 200, "watch answered {}", watch.code);
    let mut expected = Vec::new();
    for index in 0..8 {
        let created = c.new_widget(&format!("w{index}")).await?;
        if upper_half(&created) == upper {
            expected.push(created["metadata"]["name"].as_str().unwrap_or_default().to_owned());
        }
    }
    // The last object is in the range, so that its event ends the sequence.
    let mut last = 8;
    loop {
        let created = c.new_widget(&format!("w{last}")).await?;
        if upper_half(&created) == upper {
            expected.push(created["metadata"]["name"].as_str().unwrap_or_default().to_owned());
            break;
        }
        last += 1;
        ensure!(last < 64, "no uid in the range after 64 objects");
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let event = watch.next_change(SHORT).await?;
        ensure_eq(&event["type"], &json!("ADDED"), "type")?;
        seen.push(event["object"]["metadata"]["name"].as_str().unwrap_or_default().to_owned());
    }
    ensure_eq(&json!(seen), &json!(expected), "objects in the range")
}

async fn list_by_shard_range_of_a_built_in_kind_echoes_the_selector(c: Ctx) -> anyhow::Result<()> {
    for name in ["l1", "l2", "l3", "l4"] {
        let lease =
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}});
        c.post(&c.leases(), &lease).await?.ok()?;
    }
    let mut listed = 0;
    for upper in [false, true] {
        let selector = half("uid", upper);
        let answer =
            c.get(&format!("{}?limit=10&shardSelector={}", c.leases(), query_value(&selector))).await?;
        let list = answer.ok()?;
        ensure_eq(&list["metadata"]["shardInfo"], &json!({"selector": selector}), "shardInfo")?;
        for item in list["items"].as_array().into_iter().flatten() {
            ensure!(upper_half(item) == upper, "{} listed in the wrong half", item["metadata"]["name"]);
            listed += 1;
        }
    }
    ensure_eq(&json!(listed), &json!(4), "leases in both halves")
}

async fn list_refuses_a_malformed_shard_selector(c: Ctx) -> anyhow::Result<()> {
    let selector =
        query_value("shardRange(object.metadata.name, '0x0000000000000000', '0x8000000000000000')");
    let answer = c.get(&format!("{}?shardSelector={selector}", c.widgets())).await?;
    // The server's parse error is a plain error: a 500 without a reason.
    answer.expect(500, "")?;
    ensure!(answer.body.get("reason").is_none(), "reason: {}", answer.body["reason"]);
    ensure!(
        answer.message().contains("invalid shard selector")
            && answer.message().contains("unsupported field path"),
        "{}: {}",
        answer.code,
        answer.message()
    );
    Ok(())
}
