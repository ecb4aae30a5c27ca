//! Cloudflare behaviours an exported configuration or a Cloudflare client relies on, through
//! the REST API in-process: outgoing transfers switched on and off, development mode's expiry,
//! and cache rule payloads Cloudflare returns.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use common::{ACCOUNT, Api};

fn messages(v: &Value) -> String {
    v["errors"].to_string()
}

#[tokio::test]
async fn outgoing_transfers_start_with_enable_and_stop_with_disable() {
    let api = Api::new();
    let zone = api.zone("xfr.example").await;
    let out = format!("/zones/{zone}/secondary_dns/outgoing");
    // Nothing to switch before the outgoing settings exist.
    let (s, _) = api.call("POST", &format!("{out}/enable"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let peer = api
        .ok(
            "POST",
            &format!("/accounts/{ACCOUNT}/secondary_dns/peers"),
            Some(json!({"name": "sec", "ip": "192.0.2.53", "port": 53})),
        )
        .await["id"]
        .clone();

    // Another zone's name is refused, and nothing is stored.
    let (s, v) = api
        .call(
            "POST",
            &out,
            Some(json!({"name": "other.example", "peers": [peer]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(messages(&v).contains("not this zone's name"), "{v}");
    let (s, _) = api.call("GET", &out, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Created as Cloudflare does: listed but not transferring until enabled.
    let created = api
        .ok(
            "POST",
            &out,
            Some(json!({"name": "XFR.example.", "peers": [peer]})),
        )
        .await;
    assert_eq!(created["name"], "xfr.example");
    assert_eq!(
        api.ok("GET", &format!("{out}/status"), None).await,
        "Disabled"
    );
    assert!(!api.served().await.transfers.contains_key("xfr.example"));
    let (s, v) = api.call("POST", &format!("{out}/force_notify"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    assert_eq!(
        api.ok("POST", &format!("{out}/enable"), None).await,
        "Enabled"
    );
    assert_eq!(
        api.ok("GET", &format!("{out}/status"), None).await,
        "Enabled"
    );
    let peers = api.served().await.transfers["xfr.example"].clone();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].addr, "192.0.2.53:53".parse().expect("addr"));

    // A forced NOTIFY changes the served peers, which is what sends it.
    assert_eq!(
        api.ok("POST", &format!("{out}/force_notify"), None).await,
        "OK"
    );
    let after = api.served().await.transfers["xfr.example"].clone();
    assert_ne!(after, peers);
    assert_eq!(after[0].addr, peers[0].addr);

    // Replacing the peers keeps the state.
    api.ok("PUT", &out, Some(json!({"peers": [peer]}))).await;
    assert_eq!(
        api.ok("GET", &format!("{out}/status"), None).await,
        "Enabled"
    );

    assert_eq!(
        api.ok("POST", &format!("{out}/disable"), None).await,
        "Disabled"
    );
    assert!(!api.served().await.transfers.contains_key("xfr.example"));
    assert_eq!(api.ok("GET", &out, None).await["peers"], json!([peer]));
}

#[tokio::test]
async fn outgoing_settings_stored_before_the_switch_stay_enabled() {
    let api = Api::new();
    let zone = api.zone("old.example").await;
    let peer = api
        .ok(
            "POST",
            &format!("/accounts/{ACCOUNT}/secondary_dns/peers"),
            Some(json!({"name": "sec", "ip": "192.0.2.53", "port": 53})),
        )
        .await["id"]
        .clone();
    // As an older version wrote them: no enabled state.
    api.store
        .commit(
            parapet_store::Txn::new().put(
                parapet_snapshot::outgoing_key(&zone),
                serde_json::to_vec(
                    &json!({"zone_id": zone, "name": "old.example", "peers": [peer]}),
                )
                .expect("json"),
            ),
        )
        .await
        .expect("commit");
    let out = format!("/zones/{zone}/secondary_dns/outgoing");
    assert_eq!(
        api.ok("GET", &format!("{out}/status"), None).await,
        "Enabled"
    );
    assert_eq!(api.served().await.transfers["old.example"].len(), 1);
}

#[tokio::test]
async fn development_mode_shows_its_time_left_and_turns_off_after_three_hours() {
    let api = Api::new();
    let zone = api.zone("dev.example").await;
    let path = format!("/zones/{zone}/settings/development_mode");
    let off = api.ok("GET", &path, None).await;
    assert_eq!(
        (off["value"].clone(), off["time_remaining"].clone()),
        (json!("off"), json!(0))
    );
    assert_eq!(off["editable"], true);

    let on = api.ok("PATCH", &path, Some(json!({"value": "on"}))).await;
    assert_eq!(on["value"], "on");
    let left = on["time_remaining"].as_u64().expect("seconds");
    assert!((10_790..=10_800).contains(&left), "{on}");
    let served = api.served().await;
    let edge = &served.zone_edge[&zone].settings;
    assert!(edge.development_mode);
    let until = edge.development_mode_until.expect("expiry");
    // The edge's view turns off by itself when the time comes, with no write.
    assert!(edge.development_mode_at(until - 1));
    assert!(!edge.development_mode_at(until));
    let shown = api.ok("GET", &format!("/zones/{zone}"), None).await["development_mode"]
        .as_i64()
        .expect("seconds");
    assert!((10_790..=10_800).contains(&shown), "{shown}");

    // Turned on four hours ago: off now.
    let earlier = humantime::format_rfc3339_micros(
        std::time::SystemTime::now() - Duration::from_secs(4 * 3600),
    )
    .to_string();
    api.store
        .commit(
            parapet_store::Txn::new().put(
                parapet_snapshot::settings_key(&zone),
                serde_json::to_vec(&json!({"zone_id": zone, "values": {
                    "development_mode": {"value": "on", "modified_on": earlier}
                }}))
                .expect("json"),
            ),
        )
        .await
        .expect("commit");
    let expired = api.ok("GET", &path, None).await;
    assert_eq!(expired["value"], "off", "{expired}");
    assert_eq!(expired["time_remaining"], 0);
    let listed = api
        .ok("GET", &format!("/zones/{zone}/settings"), None)
        .await;
    let listed = listed
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["id"] == "development_mode")
        .expect("listed")
        .clone();
    assert_eq!(listed["value"], "off");
    let served = api.served().await;
    assert!(!served.zone_edge[&zone].settings.development_mode);
    let shown = api.ok("GET", &format!("/zones/{zone}"), None).await["development_mode"]
        .as_i64()
        .expect("seconds");
    assert!(
        (-3_610..=-3_590).contains(&shown),
        "expired an hour ago: {shown}"
    );
}

#[tokio::test]
async fn settings_with_a_single_value_are_not_editable() {
    let api = Api::new();
    let zone = api.zone("fixed.example").await;
    let listed = api
        .ok("GET", &format!("/zones/{zone}/settings"), None)
        .await;
    for s in listed.as_array().expect("settings") {
        let fixed = [
            "0rtt",
            "always_online",
            "automatic_https_rewrites",
            "brotli",
            "browser_cache_ttl",
            "cache_level",
            "http2",
            "http3",
            "ipv6",
            "opportunistic_encryption",
            "security_level",
            "tls_1_3",
            "websockets",
        ]
        .iter()
        .any(|id| s["id"] == *id);
        assert_eq!(s["editable"], !fixed, "{s}");
    }
    // Settings Terraform and the SDK set read as the edge behaves; the value a setting has is
    // taken, another refused, naming the one it takes.
    for (id, value) in [
        ("websockets", json!("on")),
        ("browser_cache_ttl", json!(0)),
        ("security_level", json!("off")),
    ] {
        let path = format!("/zones/{zone}/settings/{id}");
        let read = api.ok("GET", &path, None).await;
        assert_eq!(read["value"], value, "{read}");
        api.ok("PATCH", &path, Some(json!({"value": value}))).await;
    }
    for (id, value, says) in [
        ("cache_level", json!("basic"), "aggressive"),
        ("browser_cache_ttl", json!(14400), "must be 0"),
        ("security_level", json!("medium"), "off"),
    ] {
        let path = format!("/zones/{zone}/settings/{id}");
        let (s, v) = api
            .call("PATCH", &path, Some(json!({"value": value})))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{id}: {v}");
        assert!(messages(&v).contains(says), "{id}: {v}");
    }
}

#[tokio::test]
async fn a_cache_rule_exported_from_cloudflare_can_be_put_back() {
    let api = Api::new();
    let zone = api.zone("cache.example").await;
    let path = format!("/zones/{zone}/rulesets/phases/http_request_cache_settings/entrypoint");
    let exported = json!({"rules": [{
        "expression": "true",
        "action": "set_cache_settings",
        "action_parameters": {
            "cache": true,
            "edge_ttl": {"mode": "respect_origin", "status_code_ttl": [
                {"status_code_range": {"from": 500}, "value": -1},
                {"status_code": 404, "value": 0}
            ]},
            "browser_ttl": {"mode": "bypass_by_default"},
            "cache_key": {
                "cache_deception_armor": false,
                "ignore_query_strings_order": false,
                "custom_key": {
                    "user": {"device_type": false, "geo": false, "lang": false},
                    "host": {"resolved": false},
                    "header": {"include": ["x-variant"], "exclude_origin": false}
                }
            }
        }
    }]});
    let put = api.ok("PUT", &path, Some(exported)).await;
    let params = &put["rules"][0]["action_parameters"];
    assert_eq!(
        params["edge_ttl"]["status_code_ttl"][0]["status_code_range"],
        json!({"from": 500, "to": 599})
    );
    assert_eq!(
        api.ok("GET", &path, None).await["rules"][0]["action_parameters"],
        *params
    );

    let (s, v) = api
        .call(
            "PUT",
            &path,
            Some(
                json!({"rules": [{"expression": "true", "action": "set_cache_settings",
                "action_parameters": {"cache_key": {"custom_key": {"user": {"geo": true}}}}}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(messages(&v).contains("user.geo"), "{v}");
    assert!(messages(&v).contains("not supported"), "{v}");
}

#[tokio::test]
async fn purge_tokens_delete_purges_and_trailing_slashes_work_as_cloudflare_clients_use_them() {
    let purged = Arc::new(std::sync::Mutex::new(0usize));
    let counted = Arc::clone(&purged);
    let api = Api::with_purge(Arc::new(
        move |_zone: &str, _what: &parapet_model::purge::Purge| {
            *counted.lock().expect("count") += 1;
            Ok(0)
        },
    ));
    let zone = api.zone("purge.example").await;
    let purge = format!("/zones/{zone}/purge_cache");
    // A least-privilege token of Cloudflare's "Cache Purge" group purges, and does nothing else.
    let token = api
        .ok(
            "POST",
            "/user/tokens",
            Some(json!({"name": "ci-purge", "policies": [{"effect": "allow",
            "resources": {format!("com.cloudflare.api.account.zone.{zone}"): "*"},
            "permission_groups": [{"id": "e17beae8b8cb423a99b1730f21238bed"}]}]})),
        )
        .await;
    let secret = token["value"].as_str().expect("secret").to_owned();
    let everything = Some(json!({"purge_everything": true}));
    let (s, v) = api
        .call_as(&secret, "POST", &purge, everything.clone())
        .await;
    assert_eq!(
        (s, v["result"]["id"].clone()),
        (StatusCode::OK, json!(zone))
    );
    for (method, path, body) in [
        ("GET", format!("/zones/{zone}"), None),
        (
            "POST",
            format!("/zones/{zone}/dns_records"),
            Some(json!({"type": "A", "name": "x", "content": "192.0.2.1"})),
        ),
        (
            "PATCH",
            format!("/zones/{zone}/settings/development_mode"),
            Some(json!({"value": "on"})),
        ),
    ] {
        let (s, _) = api.call_as(&secret, method, &path, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}");
    }
    // DELETE purges as POST does (Cloudflare's WordPress plugin purges so), and `zones/` is
    // `zones`.
    let (s, _) = api.call("DELETE", &purge, everything).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(*purged.lock().expect("count"), 2);
    let (s, v) = api.call("GET", "/zones/?name=purge.example", None).await;
    assert_eq!(
        (s, v["result"][0]["id"].clone()),
        (StatusCode::OK, json!(zone))
    );
    // A path that routes nowhere gets both of Cloudflare's errors.
    let (s, v) = api.call("GET", "/zones/nonsense/path", None).await;
    assert_eq!(
        (s, common::codes(&v)),
        (StatusCode::NOT_FOUND, vec![7003, 7000])
    );
}

#[tokio::test]
async fn a_bulk_settings_edit_names_every_mistake_and_takes_whole_floats() {
    let api = Api::new();
    let zone = api.zone("settings.example").await;
    let path = format!("/zones/{zone}/settings");
    let (s, v) = api
        .call(
            "PATCH",
            &path,
            Some(json!({"items": [
                {"id": "binary_ast", "value": "on"},
                {"id": "proxy_read_timeout", "value": 0},
                {"id": "nonsense", "value": 1}
            ]})),
        )
        .await;
    assert_eq!(
        (s, common::codes(&v)),
        (StatusCode::BAD_REQUEST, vec![1006, 1007, 1006]),
        "{v}"
    );
    let set = api
        .ok(
            "PATCH",
            &format!("{path}/proxy_read_timeout"),
            Some(json!({"value": 100.0})),
        )
        .await;
    assert_eq!(set["value"], json!(100));
}

#[tokio::test]
async fn an_update_as_cloudflare_go_sends_it_keeps_the_records_tags() {
    let api = Api::new();
    let zone = api.zone("ddns.example").await;
    let created = api
        .ok(
            "POST",
            &format!("/zones/{zone}/dns_records"),
            Some(json!({"type": "A", "name": "home", "content": "192.0.2.1",
                        "tags": ["owner:ops"], "comment": "router"})),
        )
        .await;
    let path = format!(
        "/zones/{zone}/dns_records/{}",
        created["id"].as_str().expect("id")
    );
    // cloudflare-go's UpdateDNSRecord: `"tags": null` whenever it sets none.
    let updated = api
        .ok(
            "PATCH",
            &path,
            Some(
                json!({"type": "A", "name": "home.ddns.example", "content": "192.0.2.2",
                        "tags": null}),
            ),
        )
        .await;
    assert_eq!(updated["content"], "192.0.2.2");
    assert_eq!(updated["tags"], json!(["owner:ops"]));
    assert_eq!(updated["comment"], "router");
    // An empty list still clears them.
    let cleared = api.ok("PATCH", &path, Some(json!({"tags": []}))).await;
    assert_eq!(cleared["tags"], json!([]));
}

#[tokio::test]
async fn token_policies_keep_their_ids_and_name_groups_the_group_list_gives() {
    let api = Api::new();
    let groups = api.ok("GET", "/user/tokens/permission_groups", None).await;
    let groups = groups.as_array().expect("groups").clone();
    assert_eq!(groups.len(), 5, "{groups:?}");
    let dns_write = groups
        .iter()
        .find(|g| g["name"] == "DNS Write")
        .expect("DNS Write");
    assert_eq!(dns_write["id"], "4755a26eedb94da69e1066d98aa820be");
    // Each listed group's id makes a token (the administrator's too), and its policies read
    // back with the same ids every time.
    for group in &groups {
        let created = api
            .ok(
                "POST",
                "/user/tokens",
                Some(json!({"name": "t", "policies": [{"effect": "allow",
                    "resources": {"com.cloudflare.api.account.zone.*": "*"},
                    "permission_groups": [{"id": group["id"]}]}]})),
            )
            .await;
        let id = created["id"].as_str().expect("token id").to_owned();
        let first = api.ok("GET", &format!("/user/tokens/{id}"), None).await;
        let again = api.ok("GET", &format!("/user/tokens/{id}"), None).await;
        assert_eq!(first["policies"], again["policies"]);
        assert_eq!(created["policies"], first["policies"]);
        assert_eq!(
            first["policies"][0]["permission_groups"][0]["id"],
            group["id"]
        );
    }
}

#[tokio::test]
async fn zone_fields_that_cannot_be_applied_are_refused_not_ignored() {
    let api = Api::new();
    let zone = api.zone("edit.example").await;
    let before = api.ok("GET", &format!("/zones/{zone}"), None).await;
    for body in [
        json!({"vanity_name_servers": ["ns1.edit.example"]}),
        json!({"plan": {"id": "94f3b7b768b0458b56d2cac4fe5ec0f9"}}),
        json!({"type": 5}),
        json!({"type": "partial"}),
    ] {
        let (s, v) = api
            .call("PATCH", &format!("/zones/{zone}"), Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["errors"][0]["code"], 1004, "{body}: {v}");
    }
    assert_eq!(api.ok("GET", &format!("/zones/{zone}"), None).await, before);
    // What the zone already has is taken, as are the fields it can change.
    let plan = before["plan"]["id"].clone();
    let paused = api
        .ok(
            "PATCH",
            &format!("/zones/{zone}"),
            Some(json!({"paused": true, "plan": {"id": plan}, "vanity_name_servers": [], "type": "full"})),
        )
        .await;
    assert_eq!(paused["paused"], true);
}

#[tokio::test]
async fn an_mx_priority_out_of_range_is_reported_once() {
    let api = Api::new();
    let zone = api.zone("mx.example").await;
    let (s, v) = api
        .call(
            "POST",
            &format!("/zones/{zone}/dns_records"),
            Some(
                json!({"type": "MX", "name": "@", "content": "mail.mx.example", "priority": 65536}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{v}");
    assert!(messages(&v).contains("between 0 and 65535"), "{v}");
}
