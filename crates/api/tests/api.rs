//! The REST API in-process, against the in-memory store: Cloudflare's shapes, codes and rules.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};

use common::{ACCOUNT, ADMIN, Api, codes};

impl Api {
    async fn record(&self, zone: &str, body: Value) -> Value {
        self.ok("POST", &format!("/zones/{zone}/dns_records"), Some(body))
            .await
    }

    async fn import(
        &self,
        zone: &str,
        file: &str,
        proxied: Option<bool>,
        as_file_part: bool,
    ) -> (StatusCode, Value) {
        let b = "XBOUNDARYX";
        let disposition = if as_file_part {
            "name=\"file\"; filename=\"z.txt\""
        } else {
            "name=\"file\""
        };
        let mut body =
            format!("--{b}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{file}\r\n");
        if let Some(p) = proxied {
            body.push_str(&format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"proxied\"\r\n\r\n{p}\r\n"
            ));
        }
        body.push_str(&format!("--{b}--\r\n"));
        let (s, v, _) = self.import_raw(zone, b, body.into_bytes()).await;
        (s, v)
    }

    /// An import of the multipart `body` delimited by `boundary`, as it is.
    async fn import_raw(
        &self,
        zone: &str,
        boundary: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value, String) {
        self.raw(
            "POST",
            &format!("/zones/{zone}/dns_records/import"),
            Some(ADMIN),
            &format!("multipart/form-data; boundary={boundary}"),
            body,
        )
        .await
    }
}

/// The messages of a response's errors.
fn messages(v: &Value) -> Vec<&str> {
    v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect()
}

#[tokio::test]
async fn missing_bad_and_malformed_tokens_are_refused_with_cloudflare_codes() {
    let api = Api::new();
    let (s, v, _) = api
        .raw("GET", "/zones", None, "application/json", vec![])
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::UNAUTHORIZED, vec![9106]));
    // A Global API Key is not "missing": it is said to be not taken.
    let (s, v) = api
        .get_with(
            "/zones",
            &[
                ("x-auth-email", "me@example.com"),
                ("x-auth-key", "0123456789abcdef"),
            ],
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::UNAUTHORIZED, vec![9103]));
    assert!(v.to_string().contains("Bearer"), "{v}");
    let (s, v) = api.call_as("not-a-real-token", "GET", "/zones", None).await;
    assert_eq!((s, codes(&v)), (StatusCode::UNAUTHORIZED, vec![1000]));
    let (s, v) = api
        .call_as("bad token with spaces", "GET", "/zones", None)
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::UNAUTHORIZED, vec![6111]));
    assert_eq!(v["success"], false);
    let verified = api.ok("GET", "/user/tokens/verify", None).await;
    assert_eq!(verified["status"], "active");
}

#[tokio::test]
async fn scoped_tokens_reach_only_their_zones_and_rights() {
    let api = Api::new();
    let a = api.zone("a.example").await;
    let b = api.zone("b.example").await;
    let created = api
        .ok("POST", "/user/tokens", Some(json!({"name": "dns-a", "policies": [{"effect": "allow", "resources": {format!("com.cloudflare.api.account.zone.{a}"): "*"}, "permission_groups": [{"name": "DNS Write"}]}]})))
        .await;
    let dns_a = created["value"].as_str().expect("secret").to_owned();
    // Cloudflare's permission-group ids work as well as names.
    let by_id = api
        .ok("POST", "/user/tokens", Some(json!({"name": "by-id", "policies": [{"effect": "allow", "resources": {format!("com.cloudflare.api.account.zone.{a}"): "*"}, "permission_groups": [{"id": "4755a26eedb94da69e1066d98aa820be"}]}]})))
        .await;
    assert_eq!(
        by_id["policies"][0]["permission_groups"][0]["name"],
        "DNS Write"
    );
    let (s, v) = api.call_as(&dns_a, "GET", "/zones", None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["result"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|z| z["name"].as_str())
        .collect();
    assert_eq!(names, ["a.example"]);
    let rec = json!({"type": "A", "name": "www", "content": "192.0.2.1"});
    let (s, _) = api
        .call_as(
            &dns_a,
            "POST",
            &format!("/zones/{a}/dns_records"),
            Some(rec.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .call_as(
            &dns_a,
            "POST",
            &format!("/zones/{b}/dns_records"),
            Some(rec),
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::FORBIDDEN, vec![10000]));
    let (s, _) = api
        .call_as(&dns_a, "POST", "/zones", Some(json!({"name": "c.example"})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api
        .call_as(&dns_a, "DELETE", &format!("/zones/{a}"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let read = api
        .ok("POST", "/user/tokens", Some(json!({"name": "read", "policies": [{"effect": "allow", "resources": {"com.cloudflare.api.account.zone.*": "*"}, "permission_groups": [{"name": "Zone Read"}]}]})))
        .await["value"]
        .as_str()
        .expect("secret")
        .to_owned();
    let (s, _) = api
        .call_as(&read, "GET", &format!("/zones/{b}/dns_records"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .call_as(
            &read,
            "POST",
            &format!("/zones/{b}/dns_records"),
            Some(json!({"type": "A", "name": "x", "content": "192.0.2.9"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = api.call("POST", "/user/tokens", Some(json!({"name": "bad", "policies": [{"resources": {"nonsense": "*"}, "permission_groups": [{"name": "Everything"}]}]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(codes(&v).len(), 2, "every policy problem listed: {v}");

    // Cloudflare's nested form, zones inside their account, reaches those zones only.
    let account = api.ok("GET", "/accounts", None).await[0]["id"]
        .as_str()
        .expect("account id")
        .to_owned();
    let nested = api
        .ok("POST", "/user/tokens", Some(json!({"name": "nested", "policies": [{"effect": "allow", "resources": {format!("com.cloudflare.api.account.{account}"): {format!("com.cloudflare.api.account.zone.{a}"): "*"}}, "permission_groups": [{"name": "DNS Write"}]}]})))
        .await["value"]
        .as_str()
        .expect("secret")
        .to_owned();
    for (zone, want) in [(&a, StatusCode::OK), (&b, StatusCode::FORBIDDEN)] {
        let path = format!("/zones/{zone}/dns_records");
        assert_eq!(
            api.call_as(&nested, "GET", &path, None).await.0,
            want,
            "{zone}"
        );
    }
    // A resource granted with anything but "*" is refused, not read as every zone.
    for resources in [
        json!({format!("com.cloudflare.api.account.{account}"): {"com.cloudflare.api.account.user.x": "*"}}),
        json!({format!("com.cloudflare.api.account.{account}"): "read"}),
        json!({format!("com.cloudflare.api.account.{account}"): {}}),
    ] {
        let body = json!({"name": "odd", "policies": [{"effect": "allow", "resources": resources, "permission_groups": [{"name": "DNS Write"}]}]});
        let (s, v) = api.call("POST", "/user/tokens", Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{resources}: {v}");
    }
}

#[tokio::test]
async fn zones_list_filters_and_pages_exactly() {
    let api = Api::new();
    for i in 0..7 {
        api.zone(&format!("zone{i}.example")).await;
    }
    let (_, v) = api.call("GET", "/zones?per_page=5&page=2", None).await;
    assert_eq!(v["result"].as_array().expect("list").len(), 2);
    assert_eq!(
        v["result_info"],
        json!({"page": 2, "per_page": 5, "count": 2, "total_count": 7, "total_pages": 2})
    );
    let (s, v) = api.call("GET", "/zones?per_page=5&page=3", None).await;
    assert_eq!(s, StatusCode::OK, "a page past the end is 200");
    assert_eq!(v["result"], json!([]));
    assert_eq!(v["result_info"]["count"], 0);
    let (_, v) = api.call("GET", "/zones?name=zone3.example", None).await;
    assert_eq!(v["result"][0]["name"], "zone3.example");
    assert_eq!(v["result_info"]["total_count"], 1);
    let (_, v) = api.call("GET", "/zones?name=contains:one1", None).await;
    assert_eq!(v["result_info"]["total_count"], 1);
    // Every operator Cloudflare's list documents.
    for (filter, count) in [
        ("not_equal:zone3.example", 6),
        ("equal:ZONE3.example.", 1),
        ("contains:ONE1", 1),
        ("contains_case_sensitive:one1", 1),
        ("contains_case_sensitive:ONE1", 0),
        ("starts_with_case_sensitive:zone", 7),
        ("ends_with_case_sensitive:.EXAMPLE", 0),
        ("ends_with:.EXAMPLE", 7),
    ] {
        let (s, v) = api
            .call("GET", &format!("/zones?name={filter}"), None)
            .await;
        assert_eq!(
            (s, v["result_info"]["total_count"].clone()),
            (StatusCode::OK, json!(count)),
            "{filter}"
        );
    }
    let (s, _) = api.call("GET", "/zones?name=between:a", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = api.call("GET", "/zones?status=initializing", None).await;
    assert_eq!(v["result_info"]["total_count"], 0);
    let (_, v) = api.call("GET", "/zones?order=plan.id", None).await;
    assert_eq!(v["result_info"]["total_count"], 7);
    let (_, v) = api
        .call("GET", "/zones?status=active&direction=desc", None)
        .await;
    assert_eq!(v["result"][0]["name"], "zone6.example");
    let (s, _) = api.call("GET", "/zones?status=sleeping", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.call("GET", "/zones?page=zero", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn zone_creation_rejects_duplicates_and_bad_names() {
    let api = Api::new();
    let zone = api.ok("POST", "/zones", Some(json!({"name": "Example.COM.", "account": {"id": "0123456789abcdef0123456789abcdef"}}))).await;
    assert_eq!(zone["name"], "example.com");
    assert_eq!(
        zone["name_servers"],
        json!(["ns1.parapet.test", "ns2.parapet.test"])
    );
    let (s, v) = api
        .call("POST", "/zones", Some(json!({"name": "example.com"})))
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![1061]));
    let (s, v) = api
        .call(
            "POST",
            "/zones",
            Some(json!({"name": "not a domain", "type": "partial"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(codes(&v).len(), 2, "both errors listed: {v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .starts_with("name")
    );
    let (s, _) = api
        .call(
            "POST",
            "/zones",
            Some(json!({"name": "x.example", "account": {"id": "someone-else"}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_bodies_are_400_never_500() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    for body in [
        &b"{bad"[..],
        b"",
        b"[]",
        b"\"string\"",
        b"{\"type\": 5}",
        &[0xff, 0xfe],
    ] {
        let (s, v, text) = api
            .raw(
                "POST",
                &format!("/zones/{zone}/dns_records"),
                Some(ADMIN),
                "application/json",
                body.to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
        assert_eq!(v["success"], false);
    }
    let (s, _, _) = api
        .raw(
            "PATCH",
            &format!("/zones/{zone}"),
            Some(ADMIN),
            "application/json",
            b"{\"paused\": \"yes\"}".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn record_rules_use_cloudflare_codes() {
    record_checks(Api::new()).await;
}

#[tokio::test]
async fn record_rules_use_cloudflare_codes_without_a_served_snapshot() {
    record_checks(Api::without_snapshots()).await;
}

async fn record_checks(api: Api) {
    let zone = api.zone("example.com").await;
    let path = format!("/zones/{zone}/dns_records");
    let a = api
        .record(
            &zone,
            json!({"type": "A", "name": "www", "content": "192.0.2.1", "proxied": true}),
        )
        .await;
    assert_eq!(
        (
            a["name"].as_str(),
            a["proxiable"].as_bool(),
            a["ttl"].as_u64()
        ),
        (Some("www.example.com"), Some(true), Some(1))
    );
    let (s, v) = api
        .call(
            "POST",
            &path,
            Some(json!({"type": "A", "name": "www.example.com", "content": "192.0.2.1"})),
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![81058]));
    let (s, v) = api
        .call(
            "POST",
            &path,
            Some(json!({"type": "CNAME", "name": "www", "content": "other.example.net"})),
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![81053]));
    api.record(
        &zone,
        json!({"type": "CNAME", "name": "alias", "content": "www.example.com"}),
    )
    .await;
    let (s, v) = api
        .call(
            "POST",
            &path,
            Some(json!({"type": "TXT", "name": "alias", "content": "x"})),
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![81054]));
    // TXT content is kept as written (a client finds its record by the content it sent,
    // quoted or not); the same strings written otherwise are the same record.
    let quoted = "\"heritage=external-dns,external-dns/owner=default\"";
    let txt = api
        .record(
            &zone,
            json!({"type": "TXT", "name": "owner", "content": quoted}),
        )
        .await;
    assert_eq!(txt["content"], quoted);
    let (s, v) = api
        .call(
            "GET",
            &format!("{path}?type=TXT&content={}", urlencode(quoted)),
            None,
        )
        .await;
    assert_eq!(
        (s, v["result"][0]["id"].clone()),
        (StatusCode::OK, txt["id"].clone())
    );
    let (s, v) = api
        .call(
            "POST",
            &path,
            Some(json!({"type": "TXT", "name": "owner",
                "content": "heritage=external-dns,external-dns/owner=default"})),
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![81058]));
    // NS records at the apex are kept beside its other records (Cloudflare keeps them, not
    // served: the apex NS set is the edge's nameservers); below it, they are a delegation.
    api.record(
        &zone,
        json!({"type": "NS", "name": "@", "content": "ns1.other.example.net"}),
    )
    .await;
    api.record(
        &zone,
        json!({"type": "MX", "name": "@", "content": "mail.example.com", "priority": 10}),
    )
    .await;
    api.record(
        &zone,
        json!({"type": "NS", "name": "sub", "content": "ns1.other.example.net"}),
    )
    .await;
    let (s, v) = api
        .call(
            "POST",
            &path,
            Some(json!({"type": "A", "name": "sub", "content": "192.0.2.9"})),
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![81053]));
    let (s, v) = api.call("POST", &path, Some(json!({"type": "MX", "name": "@", "content": "mail.example.com", "proxied": true, "priority": 10}))).await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![9004]));
    let (s, v) = api
        .call(
            "POST",
            &path,
            Some(json!({"type": "AAAA", "name": "v6", "content": "192.0.2.1", "ttl": 7})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(codes(&v), vec![9021, 9005]);
    assert!(
        v["errors"][1]["message"]
            .as_str()
            .expect("msg")
            .contains("content")
    );
    let (s, _) = api
        .call(
            "POST",
            &path,
            Some(json!({"type": "A", "name": "out.other.org.", "content": "192.0.2.1"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Unknown fields are ignored, as Cloudflare does.
    api.record(
        &zone,
        json!({"type": "TXT", "name": "t", "content": "hello", "unknown_field": {"x": 1}}),
    )
    .await;
}

#[tokio::test]
async fn structured_records_take_data_objects() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let srv = api.record(&zone, json!({"type": "SRV", "name": "_sip._tcp", "data": {"priority": 10, "weight": 5, "port": 5060, "target": "sip.example.com"}})).await;
    assert_eq!(srv["content"], "5 5060 sip.example.com");
    assert_eq!(srv["priority"], 10);
    assert_eq!(
        srv["data"],
        json!({"priority": 10, "weight": 5, "port": 5060, "target": "sip.example.com"})
    );
    let caa = api.record(&zone, json!({"type": "CAA", "name": "@", "data": {"flags": 0, "tag": "issue", "value": "letsencrypt.org"}})).await;
    assert_eq!(caa["content"], "0 issue \"letsencrypt.org\"");
    for (t, content) in [
        ("HTTPS", "1 . alpn=h2"),
        ("TLSA", "3 1 0 abcdef"),
        (
            "SSHFP",
            "4 2 123456789abcdef67890123456789abcdef67890123456789abcdef123456789",
        ),
        (
            "NAPTR",
            "100 10 \"S\" \"SIP+D2U\" \"\" _sip._udp.example.com",
        ),
        (
            "DS",
            "2371 13 2 1f987cc6583e92df0890718c42a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3",
        ),
        ("CERT", "1 12345 8 AQIDBA=="),
        ("LOC", "37 46 46 N 122 23 35 W 0m 100m 0m 0m"),
        ("PTR", "host.example.com"),
        ("NS", "ns.delegated.example"),
        ("SVCB", "1 svc.example.com port=8443"),
    ] {
        let r = api
            .record(
                &zone,
                json!({"type": t, "name": format!("{}", t.to_lowercase()), "content": content}),
            )
            .await;
        assert_eq!(r["type"], t);
    }
    let uri = api.record(&zone, json!({"type": "URI", "name": "_http._tcp", "priority": 10, "data": {"weight": 1, "target": "https://example.com/"}})).await;
    assert_eq!(uri["content"], "1 \"https://example.com/\"");
}

#[tokio::test]
async fn record_list_filters_orders_and_pages() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    api.record(
        &zone,
        json!({"type": "A", "name": "www", "content": "192.0.2.1", "proxied": true}),
    )
    .await;
    api.record(
        &zone,
        json!({"type": "A", "name": "api", "content": "192.0.2.2"}),
    )
    .await;
    api.record(
        &zone,
        json!({"type": "TXT", "name": "www", "content": "hello world",
            "comment": "Greeting", "tags": ["env:prod", "team:web"]}),
    )
    .await;
    api.record(
        &zone,
        json!({"type": "MX", "name": "@", "content": "mail.example.com", "priority": 10,
            "tags": ["env:staging"]}),
    )
    .await;
    let list = |q: &'static str| {
        let api = &api;
        let zone = zone.clone();
        async move {
            let (s, v) = api
                .call("GET", &format!("/zones/{zone}/dns_records?{q}"), None)
                .await;
            assert_eq!(s, StatusCode::OK, "{q}: {v}");
            v
        }
    };
    assert_eq!(
        list("name=www.example.com").await["result_info"]["total_count"],
        2
    );
    assert_eq!(
        list("name.exact=WWW.example.com.").await["result_info"]["total_count"],
        2
    );
    assert_eq!(
        list("name.contains=ap").await["result_info"]["total_count"],
        1
    );
    assert_eq!(list("type=A").await["result_info"]["total_count"], 2);
    assert_eq!(
        list("type=A&name=www.example.com").await["result_info"]["total_count"],
        1
    );
    assert_eq!(
        list("type=A&name=www.example.com&match=any").await["result_info"]["total_count"],
        3
    );
    assert_eq!(
        list("content=192.0.2.2").await["result"][0]["name"],
        "api.example.com"
    );
    assert_eq!(
        list("content.exact=hello%20world").await["result_info"]["total_count"],
        1
    );
    assert_eq!(list("proxied=true").await["result_info"]["total_count"], 1);
    // Tags, comments and search narrow the list as Cloudflare's do (never ignored).
    let count = |q: &'static str| {
        let list = &list;
        async move { list(q).await["result_info"]["total_count"].clone() }
    };
    assert_eq!(count("tag=env:prod").await, 1);
    assert_eq!(count("tag=env").await, 2);
    assert_eq!(count("tag.exact=ENV:prod").await, 1);
    assert_eq!(count("tag.present=team").await, 1);
    assert_eq!(count("tag.absent=env").await, 2);
    assert_eq!(count("tag.startswith=env:sta").await, 1);
    assert_eq!(count("tag=env:prod&tag=env:staging").await, 0);
    assert_eq!(count("tag=env:prod&tag=env:staging&tag_match=any").await, 2);
    assert_eq!(count("comment.present=true").await, 1);
    assert_eq!(count("comment.absent=true").await, 3);
    assert_eq!(count("comment.contains=greet").await, 1);
    assert_eq!(count("search=mail").await, 1);
    assert_eq!(count("search=prod").await, 1);
    // The search narrows whatever `match` joins the other filters with.
    assert_eq!(count("search=mail&type=A&match=any").await, 0);
    assert_eq!(
        count("search=example&type=MX&proxied=true&match=any").await,
        2
    );
    let (status, _) = api
        .call(
            "GET",
            &format!("/zones/{zone}/dns_records?tag_match=some"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        list("order=name&direction=desc").await["result"][0]["name"],
        "www.example.com"
    );
    assert_eq!(
        list("order=name").await["result"][0]["name"],
        "api.example.com"
    );
    let page = list("per_page=3&page=2").await;
    assert_eq!(
        page["result_info"],
        json!({"page": 2, "per_page": 3, "count": 1, "total_count": 4, "total_pages": 2})
    );
    assert_eq!(list("page=9").await["result"], json!([]));
    let (s, _) = api
        .call(
            "GET",
            &format!("/zones/{zone}/dns_records?proxied=maybe"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn patch_merges_and_put_replaces() {
    patch_checks(Api::new()).await;
}

#[tokio::test]
async fn patch_merges_and_put_replaces_without_a_served_snapshot() {
    patch_checks(Api::without_snapshots()).await;
}

async fn patch_checks(api: Api) {
    let zone = api.zone("example.com").await;
    let r = api.record(&zone, json!({"type": "A", "name": "www", "content": "192.0.2.1", "ttl": 300, "comment": "web"})).await;
    let id = r["id"].as_str().expect("id");
    let path = format!("/zones/{zone}/dns_records/{id}");
    let patched = api.ok("PATCH", &path, Some(json!({"proxied": true}))).await;
    assert_eq!(
        (
            patched["content"].as_str(),
            patched["ttl"].as_u64(),
            patched["comment"].as_str(),
            patched["proxied"].as_bool()
        ),
        (Some("192.0.2.1"), Some(300), Some("web"), Some(true))
    );
    assert_eq!(patched["created_on"], r["created_on"]);
    let replaced = api
        .ok(
            "PUT",
            &path,
            Some(json!({"type": "A", "name": "www", "content": "192.0.2.9"})),
        )
        .await;
    assert_eq!(
        (
            replaced["ttl"].as_u64(),
            replaced["proxied"].as_bool(),
            replaced["comment"].is_null()
        ),
        (Some(1), Some(false), true)
    );
    let (s, v) = api
        .call("PATCH", &path, Some(json!({"content": "not-an-ip"})))
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![9005]));
    assert_eq!(
        api.ok("GET", &path, None).await["content"],
        "192.0.2.9",
        "a rejected patch changes nothing"
    );
    api.ok("DELETE", &path, None).await;
    let (s, v) = api.call("GET", &path, None).await;
    assert_eq!((s, codes(&v)), (StatusCode::NOT_FOUND, vec![81044]));
}

#[tokio::test]
async fn every_change_increases_the_zone_serial() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let serial = |v: Value| v["serial"].as_u64().expect("serial");
    let s0 = serial(api.ok("GET", &format!("/zones/{zone}"), None).await);
    let r = api
        .record(
            &zone,
            json!({"type": "A", "name": "a", "content": "192.0.2.1"}),
        )
        .await;
    let s1 = serial(api.ok("GET", &format!("/zones/{zone}"), None).await);
    api.ok(
        "DELETE",
        &format!(
            "/zones/{zone}/dns_records/{}",
            r["id"].as_str().expect("id")
        ),
        None,
    )
    .await;
    let s2 = serial(api.ok("GET", &format!("/zones/{zone}"), None).await);
    assert!(s0 < s1 && s1 < s2, "{s0} {s1} {s2}");
}

#[tokio::test]
async fn a_zone_holds_at_most_its_record_quota_and_a_refused_change_stores_nothing() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let txt = |i: usize| json!({"type": "TXT", "name": "bulk", "content": format!("t{i}")});
    let batch = format!("/zones/{zone}/dns_records/batch");
    let records = format!("/zones/{zone}/dns_records");
    let posts: Vec<Value> = (0..common::RECORD_QUOTA - 1).map(txt).collect();
    api.ok("POST", &batch, Some(json!({ "posts": posts })))
        .await;
    let last = api.record(&zone, txt(common::RECORD_QUOTA)).await;
    let count = || async {
        let (_, v) = api
            .call("GET", &format!("{records}?per_page=1"), None)
            .await;
        v["result_info"]["total_count"].clone()
    };
    assert_eq!(count().await, common::RECORD_QUOTA);
    // One more, by any path, is refused with Cloudflare's code, and nothing of it is stored.
    let (s, v) = api.call("POST", &records, Some(txt(0xffff))).await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![81045]));
    let (s, v) = api
        .call(
            "POST",
            &batch,
            Some(json!({"deletes": [{"id": last["id"]}], "posts": [txt(0xfff0), txt(0xfff1)]})),
        )
        .await;
    assert_eq!((s, codes(&v)), (StatusCode::BAD_REQUEST, vec![81045]));
    let (s, v) = api
        .import(&zone, "extra 300 IN A 192.0.2.1\n", None, true)
        .await;
    assert_eq!(
        (s, codes(&v)),
        (StatusCode::BAD_REQUEST, vec![81045]),
        "{v}"
    );
    assert_eq!(count().await, common::RECORD_QUOTA);
    let (s, _) = api
        .call(
            "GET",
            &format!("{records}/{}", last["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the refused batch deleted nothing");
    // A change that adds no record goes through at the quota: one in, one out; an edit.
    api.ok(
        "POST",
        &batch,
        Some(json!({"deletes": [{"id": last["id"]}], "posts": [txt(0xfff2)]})),
    )
    .await;
    let (_, listed) = api
        .call("GET", &format!("{records}?per_page=1"), None)
        .await;
    let id = listed["result"][0]["id"].as_str().expect("id").to_owned();
    api.ok(
        "PATCH",
        &format!("{records}/{id}"),
        Some(json!({"ttl": 600})),
    )
    .await;
    api.ok("DELETE", &format!("{records}/{id}"), None).await;
    assert_eq!(count().await, common::RECORD_QUOTA - 1);
    api.record(&zone, txt(0xfff3)).await;
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    batch_checks(Api::new()).await;
}

#[tokio::test]
async fn batch_is_all_or_nothing_without_a_served_snapshot() {
    batch_checks(Api::without_snapshots()).await;
}

async fn batch_checks(api: Api) {
    let zone = api.zone("example.com").await;
    let keep = api
        .record(
            &zone,
            json!({"type": "A", "name": "keep", "content": "192.0.2.1"}),
        )
        .await;
    let gone = api
        .record(
            &zone,
            json!({"type": "A", "name": "gone", "content": "192.0.2.2"}),
        )
        .await;
    let path = format!("/zones/{zone}/dns_records/batch");
    let (s, v) = api
        .call("POST", &path, Some(json!({"deletes": [{"id": gone["id"]}], "posts": [{"type": "A", "name": "new", "content": "192.0.2.3"}, {"type": "A", "name": "bad", "content": "nope"}]})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .starts_with("posts[1]"),
        "{v}"
    );
    let (_, all) = api
        .call("GET", &format!("/zones/{zone}/dns_records"), None)
        .await;
    assert_eq!(all["result_info"]["total_count"], 2, "nothing applied");
    let done = api
        .ok(
            "POST",
            &path,
            Some(json!({
                "deletes": [{"id": gone["id"]}],
                "patches": [{"id": keep["id"], "ttl": 600}],
                "posts": [{"type": "A", "name": "new", "content": "192.0.2.3"}]
            })),
        )
        .await;
    assert_eq!(done["deletes"][0]["name"], "gone.example.com");
    assert_eq!(done["patches"][0]["ttl"], 600);
    assert_eq!(done["posts"][0]["name"], "new.example.com");
}

#[tokio::test]
async fn batch_checks_each_write_against_the_records_the_writes_before_it_leave() {
    rules_through_a_batch(Api::new()).await;
}

#[tokio::test]
async fn batch_checks_each_write_against_the_records_the_writes_before_it_leave_without_a_served_snapshot()
 {
    rules_through_a_batch(Api::without_snapshots()).await;
}

async fn rules_through_a_batch(api: Api) {
    let zone = api.zone("example.com").await;
    let path = format!("/zones/{zone}/dns_records/batch");
    let a = |name: &str, ip: &str| json!({"type": "A", "name": name, "content": ip});
    let cname = |name: &str| json!({"type": "CNAME", "name": name, "content": "x.example.net"});
    let refused = |v: &Value| {
        (
            v["errors"][0]["code"].as_u64().unwrap_or_default(),
            v["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let one = api.record(&zone, a("m", "192.0.2.1")).await;
    let two = api.record(&zone, a("m", "192.0.2.2")).await;
    let (one, two) = (one["id"].clone(), two["id"].clone());

    // A record changed or moved away frees its data and its name for the writes after it.
    api.ok(
        "POST",
        &path,
        Some(json!({
            "patches": [{"id": one, "content": "192.0.2.9"}, {"id": one, "content": "192.0.2.3"}],
            "puts": [{"id": two, "type": "A", "name": "p", "content": "192.0.2.2"}],
            "posts": [a("m", "192.0.2.1"), a("m", "192.0.2.9"), a("m", "192.0.2.2")]
        })),
    )
    .await;
    // What the writes before it leave is what a write conflicts with.
    for (body, expected) in [
        (
            json!({"posts": [a("p", "192.0.2.7"), a("p", "192.0.2.2")]}),
            (81058, "posts[1]"),
        ),
        (
            json!({"puts": [{"id": two, "type": "A", "name": "m", "content": "192.0.2.3"}]}),
            (81058, "puts[0]"),
        ),
        (json!({"posts": [cname("m")]}), (81053, "posts[0]")),
        (
            json!({"deletes": [{"id": one}], "posts": [a("q", "192.0.2.1"), cname("q")]}),
            (81053, "posts[1]"),
        ),
        (
            json!({"posts": [cname("r"), a("r", "192.0.2.1")]}),
            (81054, "posts[1]"),
        ),
    ] {
        let (status, v) = api.call("POST", &path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused(&v), (expected.0, expected.1.to_owned()), "{body}");
    }
    // A record rewritten and then moved away leaves the other one behind, whichever it is.
    let x = api.record(&zone, a("s", "192.0.2.1")).await["id"].clone();
    let y = api.record(&zone, a("s", "192.0.2.2")).await["id"].clone();
    for (moved, ip) in [(&x, "192.0.2.1"), (&y, "192.0.2.2")] {
        let body = json!({
            "patches": [{"id": x, "ttl": 600}, {"id": y, "ttl": 600}],
            "puts": [{"id": moved, "type": "A", "name": "moved", "content": ip}],
            "posts": [cname("s")]
        });
        let (status, v) = api.call("POST", &path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(refused(&v), (81053, "posts[0]".to_owned()));
    }

    // Emptied by the writes before it, a name takes a CNAME in the same batch.
    let m: Vec<Value> = api
        .ok(
            "GET",
            &format!("/zones/{zone}/dns_records?name=m.example.com"),
            None,
        )
        .await
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(m.len(), 4, "nothing a refused batch wrote is kept");
    let moves: Vec<Value> = m
        .iter()
        .map(|r| json!({"id": r["id"], "type": "A", "name": "moved", "content": r["content"]}))
        .collect();
    api.ok(
        "POST",
        &path,
        Some(json!({
            "patches": [{"id": m[0]["id"], "ttl": 600}],
            "puts": moves,
            "posts": [cname("m")]
        })),
    )
    .await;

    // Many writes at one name, each checked against all the others.
    let many: Vec<Value> = (0..3000)
        .map(|i| json!({"type": "TXT", "name": "many", "content": format!("t{i}")}))
        .collect();
    let mut repeated = many.clone();
    repeated.push(many[1234].clone());
    let (status, v) = api
        .call("POST", &path, Some(json!({"posts": repeated})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused(&v), (81058, "posts[3000]".to_owned()));
    let done = api.ok("POST", &path, Some(json!({"posts": many}))).await;
    assert_eq!(done["posts"].as_array().map(Vec::len), Some(3000));
}

const ZONE_FILE: &str = r#"$ORIGIN example.com.
$TTL 3600
@ IN SOA ns1.example.com. admin.example.com. ( 1 7200 3600 1209600 300 )
@ IN NS ns1.example.com.
@ IN A 192.0.2.1 ; cf_tags=cf-proxied:true
www 300 IN CNAME @
mail IN MX 10 mx1
txt IN TXT "v=spf1 -all"
_sip._tcp IN SRV 10 5 5060 sip
@ IN CAA 0 issue "letsencrypt.org"
"#;

#[tokio::test]
async fn import_reports_every_bad_line_and_imports_nothing() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let bad = "www IN A 300.0.0.1\nok IN A 192.0.2.1\n$INCLUDE /etc/passwd\nx IN NOPE y\n";
    let (s, v) = api.import(&zone, bad, None, true).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let messages = messages(&v);
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages[0].starts_with("line 1")
            && messages[1].starts_with("line 3")
            && messages[2].starts_with("line 4")
    );
    let (_, all) = api
        .call("GET", &format!("/zones/{zone}/dns_records"), None)
        .await;
    assert_eq!(all["result_info"]["total_count"], 0);
}

#[tokio::test]
async fn import_checks_the_zone_rules_within_the_file_and_against_existing_records() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    api.record(
        &zone,
        json!({"type": "A", "name": "d", "content": "192.0.2.1"}),
    )
    .await;
    let rule_breaking = "b IN A 192.0.2.2\n\
        d IN CNAME x.example.net.\n\
        b IN A 192.0.2.2\n\
        c IN CNAME y.example.net.\n\
        d IN A 192.0.2.1\n\
        c IN A 192.0.2.3\n";
    let (s, v) = api.import(&zone, rule_breaking, None, true).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let messages = messages(&v);
    // A CNAME beside the stored A; an A beside the file's own CNAME. Repeats are not errors.
    // Reported in the file's order.
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].starts_with("line 2"), "{messages:?}");
    assert!(messages[1].starts_with("line 6"), "{messages:?}");
    let count = |v: &Value| v["result_info"]["total_count"].clone();
    let (_, all) = api
        .call("GET", &format!("/zones/{zone}/dns_records"), None)
        .await;
    assert_eq!(count(&all), 1);
    // Without them: a record repeated in the file, or already stored, is added once.
    let good = "b IN A 192.0.2.2\nb IN A 192.0.2.2\nd IN A 192.0.2.1\nc IN CNAME y.example.net.\n";
    let (s, v) = api.import(&zone, good, None, true).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["recs_added"], 2);
    let (_, all) = api
        .call("GET", &format!("/zones/{zone}/dns_records"), None)
        .await;
    assert_eq!(count(&all), 3);
    // The imported records are the zone's like any other: a rule-breaking write is refused.
    let (s, _) = api
        .call(
            "POST",
            &format!("/zones/{zone}/dns_records"),
            Some(json!({"type": "A", "name": "c", "content": "192.0.2.9"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn export_then_import_gives_the_same_records() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let (s, v) = api.import(&zone, ZONE_FILE, Some(false), true).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["result"],
        json!({"recs_added": 6, "total_records_parsed": 6})
    );
    // A record with a comment and tags: both go out and come back.
    api.record(
        &zone,
        json!({"type": "TXT", "name": "noted", "content": "v=1",
            "comment": "cf-proxied:true is only words here", "tags": ["team:ops", "env:prod"]}),
    )
    .await;
    let (s, _, exported) = api
        .raw(
            "GET",
            &format!("/zones/{zone}/dns_records/export"),
            Some(ADMIN),
            "text/plain",
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(exported.contains("cf_tags=cf-proxied:true"), "{exported}");
    assert!(
        exported.contains("; cf-proxied:true is only words here cf_tags=team:ops,env:prod"),
        "{exported}"
    );
    let copy = api.zone("copy.example").await;
    let moved = exported.replace("example.com.", "copy.example.");
    let (s, v) = api.import(&copy, &moved, None, false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let shape = |v: &Value, zone: &str| {
        let mut out: Vec<String> = v["result"]
            .as_array()
            .expect("list")
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {} {} {}",
                    r["name"].as_str().unwrap_or("").replace(zone, "Z"),
                    r["type"],
                    r["content"].as_str().unwrap_or("").replace(zone, "Z"),
                    r["ttl"],
                    r["proxied"],
                    r["priority"],
                    r["comment"],
                    r["tags"]
                )
            })
            .collect();
        out.sort();
        out
    };
    let (_, a) = api
        .call("GET", &format!("/zones/{zone}/dns_records"), None)
        .await;
    let (_, b) = api
        .call("GET", &format!("/zones/{copy}/dns_records"), None)
        .await;
    assert_eq!(shape(&a, "example.com"), shape(&b, "copy.example"));
    // Importing the same file again adds nothing.
    let (_, again) = api.import(&zone, ZONE_FILE, None, true).await;
    assert_eq!(again["result"]["recs_added"], 0);
}

#[tokio::test]
async fn deleting_a_zone_deletes_its_records() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let r = api
        .record(
            &zone,
            json!({"type": "A", "name": "a", "content": "192.0.2.1"}),
        )
        .await;
    api.ok("DELETE", &format!("/zones/{zone}"), None).await;
    let (s, _) = api
        .call(
            "GET",
            &format!(
                "/zones/{zone}/dns_records/{}",
                r["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The name is free again.
    api.zone("example.com").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_envelope() {
    let api = Api::new();
    let (s, v) = api.call("GET", "/nothing/here", None).await;
    assert_eq!(
        (s, v["success"].as_bool()),
        (StatusCode::NOT_FOUND, Some(false))
    );
    let (s, v) = api.call("PATCH", "/zones", None).await;
    assert_eq!(
        (s, v["success"].as_bool()),
        (StatusCode::METHOD_NOT_ALLOWED, Some(false))
    );
    let (s, v) = api.call("GET", "/zones/not-an-id", None).await;
    assert_eq!((s, codes(&v)), (StatusCode::NOT_FOUND, vec![7003]));
}

#[tokio::test]
async fn acme_challenge_answers_never_block_the_owners_records() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    api.record(
        &zone,
        json!({"type": "A", "name": "www", "content": "192.0.2.1"}),
    )
    .await;
    // Parapet's own challenge answer at _acme-challenge.www, as its ACME client writes it.
    let id = "0123456789abcdef0123456789abcdef";
    let challenge = parapet_model::RecordDraft::from_json(
        "example.com",
        &json!({"type": "TXT", "name": "_acme-challenge.www", "content": "\"token\""}),
    )
    .expect("draft")
    .into_record(id.to_owned(), zone.as_str(), "", "");
    let rev = api
        .store
        .commit(parapet_store::Txn::new().put(
            parapet_snapshot::acme_challenge_key(&zone, id),
            serde_json::to_vec(&challenge).expect("json"),
        ))
        .await
        .expect("commit");
    api.published.wait_for(rev).await;
    assert_eq!(
        api.published.load().zones["example.com"].challenges.len(),
        1,
        "the challenge answer is served"
    );
    // The owner's CNAME there is accepted: the challenge answer is not one of the zone's records.
    let cname = api
        .record(
            &zone,
            json!({"type": "CNAME", "name": "_acme-challenge.www", "content": "acme.example.net"}),
        )
        .await;
    assert_eq!(cname["type"], "CNAME");
}

#[tokio::test]
async fn purged_urls_reach_the_cache_keyed_by_the_configured_then_the_zones_cache_rules() {
    let purged: Arc<std::sync::Mutex<Vec<parapet_model::purge::Purge>>> = Arc::default();
    let seen = Arc::clone(&purged);
    let api = Api::with_purge(Arc::new(
        move |_zone: &str, what: &parapet_model::purge::Purge| {
            seen.lock().expect("purged").push(what.clone());
            Ok(0)
        },
    ));
    let compiled = |rules: Value| {
        parapet_model::rules::Ruleset::from_json(
            "z",
            parapet_model::rules::CACHE_PHASE,
            &json!({ "rules": rules }),
            None,
            "t",
        )
        .expect("accepted")
        .compile()
        .expect("compiles")
    };
    // The node's configuration sorts queries under /sorted/ and drops every query under
    // /bare/; the zone's own rule keeps the query under /bare/keep/ (it comes later and wins).
    api.published.set_configured_cache_rules(
        [(
            "example.com".to_owned(),
            compiled(json!([
                {"expression": "starts_with(http.request.uri.path, \"/sorted/\")",
                 "action": "set_cache_settings",
                 "action_parameters": {"cache_key": {"ignore_query_strings_order": true}}},
                {"expression": "starts_with(http.request.uri.path, \"/bare/\")",
                 "action": "set_cache_settings",
                 "action_parameters": {"cache_key": {"custom_key":
                    {"query_string": {"exclude": {"all": true}}}}}}
            ])),
        )]
        .into(),
    );
    let zone = api.zone("example.com").await;
    api.ok(
        "PUT",
        &format!("/zones/{zone}/rulesets/phases/http_request_cache_settings/entrypoint"),
        Some(json!({"rules": [
            {"expression": "starts_with(http.request.uri.path, \"/bare/keep/\")",
             "action": "set_cache_settings",
             "action_parameters": {"cache_key": {"ignore_query_strings_order": false}}}
        ]})),
    )
    .await;
    let revision = *api.store.revision_watch().borrow();
    api.published.wait_for(revision).await;
    api.ok(
        "POST",
        &format!("/zones/{zone}/purge_cache"),
        Some(json!({"files": [
            "https://www.example.com/sorted/a.css?b=1&a=2",
            "https://www.example.com/bare/a.css?v=1",
            "https://www.example.com/bare/keep/a.css?b=1&a=2",
            "https://www.example.com/a.css?b=1&a=2"
        ]})),
    )
    .await;
    let purged = purged.lock().expect("purged");
    let [parapet_model::purge::Purge::Files(files)] = purged.as_slice() else {
        panic!("one purge of files: {purged:?}");
    };
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/sorted/a.css?a=2&b=1",
            "/sorted/a.css?b=1&a=2",
            "/bare/a.css",
            "/bare/a.css?v=1",
            "/bare/keep/a.css?b=1&a=2",
            "/a.css?b=1&a=2"
        ]
    );
}

#[tokio::test]
async fn an_import_with_bare_lf_line_ends_as_cloudflare_go_sends_it_is_taken() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let records = format!("/zones/{zone}/dns_records?per_page=50");
    // cloudflare-go's templates: LF line ends, no line break after the closing boundary, the
    // records marked proxied in a second request.
    let b = "------------------------BOUNDARY";
    let template = |file: &str, proxied: bool| {
        let mut body = format!(
            "--{b}\nContent-Disposition: form-data; name=\"file\"; filename=\"bind.txt\"\n\n{file}\n"
        );
        if proxied {
            body.push_str(&format!(
                "--{b}\nContent-Disposition: form-data; name=\"proxied\"\n\ntrue\n"
            ));
        }
        body.push_str(&format!("--{b}--"));
        body.into_bytes()
    };
    for (file, proxied) in [
        (
            "mail.example.com.\t1\tIN\tA\t192.0.2.25\ntxt.example.com.\t1\tIN\tTXT\t\"v=1\"",
            false,
        ),
        ("www.example.com.\t1\tIN\tA\t192.0.2.80", true),
    ] {
        let (s, v, text) = api.import_raw(&zone, b, template(file, proxied)).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        assert_eq!(
            v["result"]["total_records_parsed"],
            file.lines().count(),
            "{text}"
        );
    }
    let v = api.ok("GET", &records, None).await;
    let mut seen: Vec<(String, String, bool)> = v
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["content"].as_str().unwrap_or_default().to_owned(),
                r["proxied"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    let expected = [
        ("mail.example.com", "192.0.2.25", false),
        ("txt.example.com", "v=1", false),
        ("www.example.com", "192.0.2.80", true),
    ]
    .map(|(n, c, p)| (n.to_owned(), c.to_owned(), p));
    assert_eq!(seen, expected);
    // A part that never ends is refused, and nothing of it is stored.
    let unended =
        format!("--{b}\nContent-Disposition: form-data; name=\"file\"\n\nnew A 192.0.2.9\n");
    let (s, v, text) = api.import_raw(&zone, b, unended.into_bytes()).await;
    assert_eq!(
        (s, codes(&v)),
        (StatusCode::BAD_REQUEST, vec![9207]),
        "{text}"
    );
    let v = api.ok("GET", &records, None).await;
    assert_eq!(v.as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn the_frameworks_own_refusals_come_in_the_envelope() {
    let api = Api::new();
    let zone = api.zone("example.com").await;
    let token = ADMIN.to_owned();
    // An import that is not multipart.
    let (s, v, text) = api
        .raw(
            "POST",
            &format!("/zones/{zone}/dns_records/import"),
            Some(&token),
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    assert!(s.is_client_error(), "{s}");
    assert_eq!(v["success"], false, "{text}");
    assert!(v["errors"][0]["message"].is_string(), "{text}");
    // A body over the limit.
    let big = vec![b' '; 3 << 20];
    let (s, v, text) = api
        .raw(
            "POST",
            &format!("/zones/{zone}/dns_records/batch"),
            Some(&token),
            "application/json",
            big,
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["success"], false, "{}", &text[..text.len().min(200)]);
}

#[tokio::test]
async fn a_zone_made_again_under_a_deleted_ones_name_starts_above_its_serial() {
    let api = Api::new();
    let zone = api.zone("again.example").await;
    // Quick writes move the serial ahead of the clock.
    for i in 0..30 {
        api.record(
            &zone,
            json!({"type": "A", "name": format!("h{i}"), "content": "192.0.2.1"}),
        )
        .await;
    }
    let (_, before) = api.call("GET", &format!("/zones/{zone}"), None).await;
    let serial = |v: &Value| v["result"]["serial"].as_u64();
    let last = serial(&before);
    api.ok("DELETE", &format!("/zones/{zone}"), None).await;
    let again = api.zone("again.example").await;
    let (_, after) = api.call("GET", &format!("/zones/{again}"), None).await;
    assert!(last.is_some(), "{before}");
    assert!(serial(&after) > last, "{before}\n{after}");
}

#[tokio::test]
async fn two_tsig_keys_cannot_share_a_name() {
    let api = Api::new();
    let path = format!("/accounts/{ACCOUNT}/secondary_dns/tsigs");
    let key = |name: &str| json!({"name": name, "algo": "hmac-sha256.", "secret": "c2VjcmV0LXNlY3JldC1zZWNyZXQ="});
    let first = api.ok("POST", &path, Some(key("xfr."))).await;
    let other = api.ok("POST", &path, Some(key("other."))).await;
    let (status, v) = api.call("POST", &path, Some(key("XFR."))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["errors"][0]["code"], 1061, "{v}");
    // Renamed onto another key's name: refused, and the stored key is kept.
    let other_path = format!("{path}/{}", other["id"].as_str().expect("id"));
    let (status, v) = api.call("PUT", &other_path, Some(key("xfr."))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(api.ok("GET", &other_path, None).await["name"], "other");
    // A key keeps its own name when updated.
    let first_path = format!("{path}/{}", first["id"].as_str().expect("id"));
    api.ok("PUT", &first_path, Some(key("xfr."))).await;
    assert_eq!(
        api.ok("GET", &path, None).await.as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn a_purge_that_could_not_be_saved_is_reported() {
    let api = Api::with_purge(Arc::new(
        |_zone: &str, _what: &parapet_model::purge::Purge| {
            Err("saving the cache's purge generations: No space left on device".to_owned())
        },
    ));
    let zone = api.zone("example.com").await;
    let (status, v) = api
        .call(
            "POST",
            &format!("/zones/{zone}/purge_cache"),
            Some(json!({"purge_everything": true})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("could not be saved") && message.contains("No space"),
        "{v}"
    );
}

/// `text` as a query parameter's value: every byte but letters and digits percent-encoded.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
