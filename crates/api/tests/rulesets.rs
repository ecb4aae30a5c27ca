//! Zone rulesets by id (`/zones/{id}/rulesets...`) in-process, against the in-memory store:
//! Cloudflare's shapes and codes, atomic writes, and the same rules the entrypoint and the
//! edge's snapshot see.

mod common;

use axum::http::StatusCode;
use parapet_model::rules::Ruleset;
use serde_json::{Value, json};

use common::{Api, codes};

const CACHE: &str = "http_request_cache_settings";
const ORIGIN: &str = "http_request_origin";

impl Api {
    /// Every stored key and value, to prove a refused write changed nothing.
    async fn stored(&self) -> Vec<(String, Vec<u8>)> {
        self.store
            .list("")
            .await
            .expect("list")
            .entries
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }
}

fn cache_rule(path: &str, cache: bool) -> Value {
    json!({
        "expression": format!("starts_with(http.request.uri.path, \"/{path}/\")"),
        "action": "set_cache_settings",
        "action_parameters": {"cache": cache},
        "description": path,
    })
}

/// The descriptions of a ruleset's rules, in order.
fn descriptions(ruleset: &Value) -> Vec<&str> {
    ruleset["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["description"].as_str().expect("description"))
        .collect()
}

fn rule_id(ruleset: &Value, description: &str) -> String {
    ruleset["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["description"] == description)
        .and_then(|r| r["id"].as_str())
        .expect("rule")
        .to_owned()
}

#[tokio::test]
async fn ruleset_list_create_get_update_delete_round_trip() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    assert_eq!(
        api.ok("GET", &format!("/zones/{zone}/rulesets"), None)
            .await,
        json!([])
    );

    let created = api
        .ok(
            "POST",
            &format!("/zones/{zone}/rulesets"),
            Some(
                json!({"name": "cache", "description": "static files", "kind": "zone",
                        "phase": CACHE, "rules": [cache_rule("a", true)]}),
            ),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(
        (
            &created["name"],
            &created["description"],
            &created["kind"],
            &created["phase"],
            &created["version"]
        ),
        (
            &json!("cache"),
            &json!("static files"),
            &json!("zone"),
            &json!(CACHE),
            &json!("1")
        )
    );
    let rule = &created["rules"][0];
    for field in [
        "id",
        "version",
        "action",
        "action_parameters",
        "expression",
        "description",
        "enabled",
        "ref",
        "last_updated",
    ] {
        assert!(!rule[field].is_null(), "rule has {field}: {rule}");
    }

    // A second ruleset for the phase is refused as Cloudflare refuses it; another phase is fine.
    let (s, v) = api
        .call(
            "POST",
            &format!("/zones/{zone}/rulesets"),
            Some(json!({"name": "again", "kind": "zone", "phase": CACHE, "rules": []})),
        )
        .await;
    assert_eq!(
        (s, codes(&v)),
        (StatusCode::BAD_REQUEST, vec![20217]),
        "{v}"
    );
    let origin = api
        .ok(
            "POST",
            &format!("/zones/{zone}/rulesets"),
            Some(json!({"name": "origins", "kind": "zone", "phase": ORIGIN})),
        )
        .await;

    let listed = api
        .ok("GET", &format!("/zones/{zone}/rulesets"), None)
        .await;
    let listed = listed.as_array().expect("list");
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|r| r.get("rules").is_none()),
        "{listed:?}"
    );
    let mut ids: Vec<&str> = listed.iter().filter_map(|r| r["id"].as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![id.as_str(), origin["id"].as_str().expect("id")];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    assert_eq!(
        api.ok("GET", &format!("/zones/{zone}/rulesets/{id}"), None)
            .await,
        created
    );
    let updated = api
        .ok(
            "PUT",
            &format!("/zones/{zone}/rulesets/{id}"),
            Some(json!({"kind": "zone", "phase": CACHE,
                        "rules": [cache_rule("b", false), cache_rule("c", true)]})),
        )
        .await;
    assert_eq!(updated["id"], json!(id), "the id stays");
    assert_eq!(updated["version"], json!("2"));
    assert_eq!(updated["name"], json!("cache"), "kept when not given");
    assert_eq!(descriptions(&updated), ["b", "c"]);
    assert_eq!(
        api.ok(
            "GET",
            &format!("/zones/{zone}/rulesets/phases/{CACHE}/entrypoint"),
            None
        )
        .await,
        updated
    );

    let (s, v) = api
        .call("DELETE", &format!("/zones/{zone}/rulesets/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = api
        .call("GET", &format!("/zones/{zone}/rulesets/{id}"), None)
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::NOT_FOUND, vec![10003]));
    let (s, _) = api
        .call(
            "GET",
            &format!("/zones/{zone}/rulesets/phases/{CACHE}/entrypoint"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let listed = api
        .ok("GET", &format!("/zones/{zone}/rulesets"), None)
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    // Once deleted, the phase takes a new ruleset.
    api.ok(
        "POST",
        &format!("/zones/{zone}/rulesets"),
        Some(json!({"name": "cache", "kind": "zone", "phase": CACHE})),
    )
    .await;
}

#[tokio::test]
async fn rules_are_added_edited_moved_and_deleted_by_position() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let ruleset = api
        .ok(
            "POST",
            &format!("/zones/{zone}/rulesets"),
            Some(json!({"name": "cache", "kind": "zone", "phase": CACHE,
                        "rules": [cache_rule("a", true)]})),
        )
        .await;
    let id = ruleset["id"].as_str().expect("id").to_owned();
    let rules = format!("/zones/{zone}/rulesets/{id}/rules");
    let a = rule_id(&ruleset, "a");

    let r = api.ok("POST", &rules, Some(cache_rule("z", true))).await;
    assert_eq!(descriptions(&r), ["a", "z"], "last by default");
    let mut first = cache_rule("first", true);
    first["position"] = json!({"before": ""});
    let r = api.ok("POST", &rules, Some(first)).await;
    assert_eq!(descriptions(&r), ["first", "a", "z"]);
    let mut after_a = cache_rule("after-a", true);
    after_a["position"] = json!({"after": a});
    let r = api.ok("POST", &rules, Some(after_a)).await;
    assert_eq!(descriptions(&r), ["first", "a", "after-a", "z"]);
    let mut second = cache_rule("second", true);
    second["position"] = json!({"index": 2});
    let r = api.ok("POST", &rules, Some(second)).await;
    assert_eq!(descriptions(&r), ["first", "second", "a", "after-a", "z"]);
    assert_eq!(r["version"], json!("5"));
    let rule_a = |r: &Value| {
        r["rules"]
            .as_array()
            .and_then(|rs| rs.iter().find(|x| x["id"] == json!(a)).cloned())
            .expect("rule a")
    };
    assert_eq!(
        rule_a(&r)["version"],
        json!("1"),
        "an untouched rule keeps its version"
    );

    // An edit changes only the fields given; a position moves the rule.
    let r = api
        .ok(
            "PATCH",
            &format!("{rules}/{a}"),
            Some(json!({"enabled": false, "position": {"index": 1}})),
        )
        .await;
    assert_eq!(descriptions(&r), ["a", "first", "second", "after-a", "z"]);
    assert_eq!(rule_a(&r)["enabled"], json!(false));
    assert_eq!(
        rule_a(&r)["expression"],
        cache_rule("a", true)["expression"]
    );
    assert_eq!(rule_a(&r)["version"], r["version"]);
    let z = rule_id(&r, "z");
    let r = api
        .ok(
            "PATCH",
            &format!("{rules}/{z}"),
            Some(json!({"description": "zz", "position": {"before": a}})),
        )
        .await;
    assert_eq!(descriptions(&r), ["zz", "a", "first", "second", "after-a"]);
    // A whole definition (Cloudflare's update) replaces the rule: what it leaves out takes
    // its default (enabled, no description).
    let mut whole = cache_rule("ignored", true);
    whole.as_object_mut().expect("a rule").remove("description");
    whole.as_object_mut().expect("a rule").remove("enabled");
    let r = api
        .ok("PATCH", &format!("{rules}/{a}"), Some(whole.clone()))
        .await;
    let replaced = r["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|rule| rule["id"] == json!(a))
        .expect("the rule keeps its id")
        .clone();
    assert_eq!(replaced["enabled"], json!(true));
    assert!(
        replaced["description"].as_str().is_none_or(str::is_empty),
        "{replaced}"
    );
    assert_eq!(replaced["expression"], whole["expression"]);
    let r = api
        .ok(
            "PATCH",
            &format!("{rules}/{a}"),
            Some(json!({"description": "a", "enabled": false})),
        )
        .await;
    assert_eq!(descriptions(&r), ["zz", "a", "first", "second", "after-a"]);

    let second = rule_id(&r, "second");
    let r = api.ok("DELETE", &format!("{rules}/{second}"), None).await;
    assert_eq!(descriptions(&r), ["zz", "a", "first", "after-a"]);
    let (s, v) = api.call("DELETE", &format!("{rules}/{second}"), None).await;
    assert_eq!((s, codes(&v)), (StatusCode::NOT_FOUND, vec![10003]));
    let (s, v) = api
        .call(
            "PATCH",
            &format!("{rules}/{second}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::NOT_FOUND, vec![10003]));

    // Positions naming no rule, or past the end, are refused and store nothing.
    let before = api.stored().await;
    for position in [
        json!({"before": "0123456789abcdef0123456789abcdef"}),
        json!({"index": 6}),
        json!({"index": 0}),
        json!({"middle": 1}),
    ] {
        let mut rule = cache_rule("bad", true);
        rule["position"] = position.clone();
        let (s, v) = api.call("POST", &rules, Some(rule)).await;
        assert_eq!(
            (s, codes(&v)),
            (StatusCode::BAD_REQUEST, vec![20021]),
            "{position}: {v}"
        );
    }
    let (s, _) = api
        .call(
            "PATCH",
            &format!("{rules}/{a}"),
            Some(json!({"expression": "not an expression ("})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(api.stored().await, before);
}

#[tokio::test]
async fn duplicate_rule_ids_and_refs_are_refused_and_store_nothing() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let mut with_ref = cache_rule("a", true);
    with_ref["ref"] = json!("same");
    let mut also_ref = cache_rule("b", true);
    also_ref["ref"] = json!("same");
    let (s, v) = api
        .call(
            "POST",
            &format!("/zones/{zone}/rulesets"),
            Some(json!({"name": "cache", "kind": "zone", "phase": CACHE,
                        "rules": [with_ref.clone(), also_ref.clone()]})),
        )
        .await;
    assert_eq!(
        (s, codes(&v)),
        (StatusCode::BAD_REQUEST, vec![20021]),
        "{v}"
    );
    assert_eq!(
        api.ok("GET", &format!("/zones/{zone}/rulesets"), None)
            .await,
        json!([])
    );

    let ruleset = api
        .ok(
            "POST",
            &format!("/zones/{zone}/rulesets"),
            Some(json!({"name": "cache", "kind": "zone", "phase": CACHE,
                        "rules": [with_ref, cache_rule("c", true)]})),
        )
        .await;
    let id = ruleset["id"].as_str().expect("id").to_owned();
    let c = rule_id(&ruleset, "c");
    let before = api.stored().await;

    // The same id twice in one replacement.
    let mut c1 = cache_rule("c1", true);
    c1["id"] = json!(c);
    let mut c2 = cache_rule("c2", false);
    c2["id"] = json!(c);
    let (s, v) = api
        .call(
            "PUT",
            &format!("/zones/{zone}/rulesets/{id}"),
            Some(json!({"rules": [c1, c2]})),
        )
        .await;
    assert_eq!(
        (s, codes(&v)),
        (StatusCode::BAD_REQUEST, vec![20021]),
        "{v}"
    );
    // An added rule whose ref another rule has.
    let (s, v) = api
        .call(
            "POST",
            &format!("/zones/{zone}/rulesets/{id}/rules"),
            Some(also_ref),
        )
        .await;
    assert_eq!(
        (s, codes(&v)),
        (StatusCode::BAD_REQUEST, vec![20021]),
        "{v}"
    );
    // An edit giving a rule another's ref.
    let (s, v) = api
        .call(
            "PATCH",
            &format!("/zones/{zone}/rulesets/{id}/rules/{c}"),
            Some(json!({"ref": "same"})),
        )
        .await;
    assert_eq!(
        (s, codes(&v)),
        (StatusCode::BAD_REQUEST, vec![20021]),
        "{v}"
    );
    // The phase's entrypoint takes no duplicates either.
    let mut d1 = cache_rule("d1", true);
    d1["ref"] = json!("twice");
    let mut d2 = cache_rule("d2", true);
    d2["ref"] = json!("twice");
    let (s, v) = api
        .call(
            "PUT",
            &format!("/zones/{zone}/rulesets/phases/{CACHE}/entrypoint"),
            Some(json!({"rules": [d1, d2]})),
        )
        .await;
    assert_eq!(
        (s, codes(&v)),
        (StatusCode::BAD_REQUEST, vec![20021]),
        "{v}"
    );
    assert_eq!(api.stored().await, before);
}

#[tokio::test]
async fn unknown_rulesets_and_unsupported_phases_are_refused() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    // An entrypoint body naming another phase or kind is refused, and stores nothing.
    let third = api.zone("example.org").await;
    let entrypoint = format!("/zones/{third}/rulesets/phases/{CACHE}/entrypoint");
    for body in [
        json!({"phase": ORIGIN, "rules": []}),
        json!({"kind": "managed", "rules": []}),
    ] {
        let (s, v) = api.call("PUT", &entrypoint, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let (s, _) = api.call("GET", &entrypoint, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    api.ok(
        "PUT",
        &entrypoint,
        Some(json!({"kind": "zone", "phase": CACHE, "rules": []})),
    )
    .await;
    let other = api.zone("example.net").await;
    let theirs = api
        .ok(
            "POST",
            &format!("/zones/{other}/rulesets"),
            Some(json!({"name": "o", "kind": "zone", "phase": ORIGIN})),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for id in [
        "0123456789abcdef0123456789abcdef",
        "not-an-id",
        theirs.as_str(),
    ] {
        for (method, path, body) in [
            ("GET", format!("/zones/{zone}/rulesets/{id}"), None),
            (
                "PUT",
                format!("/zones/{zone}/rulesets/{id}"),
                Some(json!({"rules": []})),
            ),
            ("DELETE", format!("/zones/{zone}/rulesets/{id}"), None),
            (
                "POST",
                format!("/zones/{zone}/rulesets/{id}/rules"),
                Some(cache_rule("a", true)),
            ),
            (
                "DELETE",
                format!("/zones/{zone}/rulesets/{id}/rules/{id}"),
                None,
            ),
        ] {
            let (s, v) = api.call(method, &path, body).await;
            assert_eq!(
                (s, codes(&v)),
                (StatusCode::NOT_FOUND, vec![10003]),
                "{method} {path}: {v}"
            );
        }
    }
    let (s, v) = api
        .call(
            "GET",
            "/zones/0123456789abcdef0123456789abcdef/rulesets",
            None,
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::NOT_FOUND, vec![7003]));

    let before = api.stored().await;
    for body in [
        json!({"name": "waf", "kind": "zone", "phase": "http_request_firewall_custom"}),
        json!({"name": "x", "kind": "zone"}),
        json!({"name": "x", "kind": "custom", "phase": CACHE}),
        json!({"name": "x", "kind": "zone", "phase": CACHE, "rules": [{"action": "block"}]}),
        json!(["not", "an", "object"]),
    ] {
        let (s, v) = api
            .call(
                "POST",
                &format!("/zones/{zone}/rulesets"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(codes(&v)[0], 20021, "{body}: {v}");
    }
    let (s, v) = api
        .call(
            "PUT",
            &format!("/zones/{other}/rulesets/{theirs}"),
            Some(json!({"phase": CACHE, "rules": []})),
        )
        .await;
    assert_eq!(
        (s, codes(&v)),
        (StatusCode::BAD_REQUEST, vec![20021]),
        "{v}"
    );
    assert_eq!(api.stored().await, before);
}

#[tokio::test]
async fn rules_changed_by_id_are_what_the_entrypoint_and_the_edge_show() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    // Made through the entrypoint, changed by id: one ruleset.
    let entry = api
        .ok(
            "PUT",
            &format!("/zones/{zone}/rulesets/phases/{CACHE}/entrypoint"),
            Some(json!({"rules": [cache_rule("a", true)]})),
        )
        .await;
    let id = entry["id"].as_str().expect("id").to_owned();
    let rules = format!("/zones/{zone}/rulesets/{id}/rules");
    let mut first = cache_rule("first", false);
    first["position"] = json!({"index": 1});
    api.ok("POST", &rules, Some(first)).await;
    let r = api.ok("POST", &rules, Some(cache_rule("last", true))).await;
    let a = rule_id(&r, "a");
    let r = api
        .ok(
            "PATCH",
            &format!("{rules}/{a}"),
            Some(json!({"enabled": false})),
        )
        .await;

    let shown = api
        .ok(
            "GET",
            &format!("/zones/{zone}/rulesets/phases/{CACHE}/entrypoint"),
            None,
        )
        .await;
    assert_eq!(shown, r);
    assert_eq!(descriptions(&shown), ["first", "a", "last"]);

    let revision = *api.store.revision_watch().borrow();
    api.published.wait_for(revision).await;
    let ruleset: Ruleset = serde_json::from_value(shown).expect("ruleset");
    let expected = ruleset.compile().expect("compiles");
    assert_eq!(expected.len(), 2, "the disabled rule is left out");
    let snapshot = api.published.load();
    assert_eq!(snapshot.zone_edge[&zone].cache_rules, expected);

    // Deleted by id: the edge has no cache rules for the zone any more.
    let (s, _) = api
        .call("DELETE", &format!("/zones/{zone}/rulesets/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let revision = *api.store.revision_watch().borrow();
    api.published.wait_for(revision).await;
    let snapshot = api.published.load();
    assert!(
        snapshot
            .zone_edge
            .get(&zone)
            .is_none_or(|edge| edge.cache_rules.is_empty())
    );
}

#[tokio::test]
async fn page_rules_read_as_none_and_writes_say_to_use_rulesets() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    // As octodns reads them with every zone.
    let rules = api
        .ok(
            "GET",
            &format!("/zones/{zone}/pagerules?status=active"),
            None,
        )
        .await;
    assert_eq!(rules, json!([]));
    let before = api.stored().await;
    let body = json!({"targets": [{"target": "url", "constraint": {"operator": "matches", "value": "example.com/*"}}],
        "actions": [{"id": "cache_level", "value": "bypass"}], "status": "active"});
    let (s, v) = api
        .call("POST", &format!("/zones/{zone}/pagerules"), Some(body))
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![1004]), "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(CACHE)),
        "{v}"
    );
    for method in ["GET", "PATCH", "DELETE"] {
        let (s, v) = api
            .call(method, &format!("/zones/{zone}/pagerules/0123abcd"), None)
            .await;
        assert_eq!(
            (s, codes(&v)),
            (StatusCode::NOT_FOUND, vec![1002]),
            "{method}: {v}"
        );
    }
    assert_eq!(api.stored().await, before);
    // Another zone's id is not found, as for every zone path.
    let (s, v) = api
        .call(
            "GET",
            "/zones/0123456789abcdef0123456789abcdef/pagerules",
            None,
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::NOT_FOUND, vec![7003]), "{v}");
}
