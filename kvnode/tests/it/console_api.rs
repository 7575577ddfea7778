//! What the web console stands on, between real processes: its files and
//! their headers, counts with "folders", the cluster health every member
//! reports through one node, and `whoami`, with auth off and on. The console
//! itself is tested in a real browser (tests/console).

use std::time::Duration;

use crate::auth::{Api, Cred, code, set_up_auth};
use crate::common::{Cluster, Opts, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_files_are_served_open_with_a_strict_policy() {
    let opts = Opts::default();
    let c = Cluster::start(1, opts.clone()).await;
    let base = c.nodes[0].client_url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let r = http.get(format!("{base}/ui")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"],
        "ui/",
        "relative: works behind a path prefix"
    );

    let check = |r: &reqwest::Response, ct: &str| {
        assert_eq!(r.status().as_u16(), 200, "{}", r.url());
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap_or("").starts_with(ct),
            "{h:?}"
        );
        let csp = h["content-security-policy"].to_str().unwrap_or("");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
    };
    let index = http.get(format!("{base}/ui/")).send().await.expect("get");
    check(&index, "text/html");
    let html = index.text().await.expect("body");
    assert!(
        html.contains(r#"<script src="console.js" defer></script>"#),
        "{html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );
    for (file, ct) in [
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = http
            .get(format!("{base}/ui/{file}"))
            .send()
            .await
            .expect("get");
        check(&r, ct);
        assert!(!r.bytes().await.expect("body").is_empty());
    }
    // Only the embedded files: an encoded path is one (unknown) name.
    let r = http
        .get(format!("{base}/ui/..%2Fconsole.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let r = http
        .get(format!("{base}/ui/secrets.txt"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.expect("json error");
    assert_eq!(code(&v), "not_found");

    // With auth on, the files stay open (they hold no data); the API does not.
    let api = Api::plain(&c.nodes[0]);
    let root = set_up_auth(&api).await;
    opts.set_token(&root);
    let r = http.get(format!("{base}/ui/")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 200);
    let (s, _) = api
        .call(Method::GET, "/v1/kv?prefix=", Cred::None, None)
        .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_group_keys_by_delimiter_and_follow_permissions() {
    let opts = Opts::default();
    let c = Cluster::start(1, opts.clone()).await;
    let api = Api::plain(&c.nodes[0]);
    for k in ["app/a", "app/b/1", "app/b/2", "other/x", "top"] {
        let (s, v) = api.put(k, Cred::None).await;
        assert_eq!(s, 200, "{v}");
    }
    let count = |prefix: &'static str, extra: &'static str, cred| {
        let api = api.clone();
        async move {
            let path = format!("/v1/kv?prefix={prefix}&count_only=true{extra}");
            api.call(Method::GET, &path, cred, None).await
        }
    };
    let (s, all) = count("", "&delimiter=/", Cred::None).await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all["count"], 5);
    assert_eq!(all["direct"], 1, "top");
    assert_eq!(
        all["groups"],
        json!([{"prefix": "app/", "count": 3}, {"prefix": "other/", "count": 1}])
    );
    assert!(all["revision"].as_u64().unwrap_or(0) >= 5, "{all}");
    assert!(all.get("groups_truncated").is_none(), "{all}");

    let (_, app) = count("app%2F", "&delimiter=/", Cred::None).await;
    assert_eq!(
        (app["count"].clone(), app["direct"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(app["groups"], json!([{"prefix": "app/b/", "count": 2}]));

    let (_, capped) = count("", "&delimiter=/&max_groups=1", Cred::None).await;
    assert_eq!(capped["groups"], json!([{"prefix": "app/", "count": 3}]));
    assert_eq!(capped["groups_truncated"], true);
    assert_eq!(capped["count"], 5, "the count covers every key");

    let (_, plain) = count("app%2F", "", Cred::None).await;
    assert_eq!(plain, json!({"count": 3, "revision": plain["revision"]}));

    let (s, v) = api
        .call(Method::GET, "/v1/kv?prefix=&delimiter=/", Cred::None, None)
        .await;
    assert_eq!((s, code(&v)), (400, "bad_request"), "{v}");

    // whoami with auth off: everyone may do everything.
    let me = api
        .ok(Method::GET, "/v1/auth/whoami", Cred::None, None)
        .await;
    assert_eq!(me["enabled"], false);
    assert_eq!(me["root"], true);

    let root = set_up_auth(&api).await;
    opts.set_token(&root);
    let alice = api.login("alice", "alice-pw").await;
    // alice: readwrite on prefix app/, read on the key "shared".
    let (s, v) = count("", "&delimiter=/", Cred::Bearer(&alice)).await;
    assert_eq!((s, code(&v)), (403, "permission_denied"), "{v}");
    let (s, v) = count("app%2F", "&delimiter=/", Cred::Bearer(&alice)).await;
    assert_eq!((s, v["count"].clone()), (200, json!(3)), "{v}");
    let (s, _) = count("", "", Cred::None).await;
    assert_eq!(s, 401);

    let me = api
        .ok(Method::GET, "/v1/auth/whoami", Cred::Bearer(&alice), None)
        .await;
    assert_eq!(me["enabled"], true);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["roles"], json!(["app"]));
    assert_eq!(me["root"], false);
    let mut perms = me["permissions"].as_array().cloned().unwrap_or_default();
    perms.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    assert_eq!(
        perms,
        [
            json!({"permission": "readwrite", "key": "app/", "prefix": true}),
            json!({"permission": "read", "key": "shared"})
        ]
    );
    let me = api
        .ok(Method::GET, "/v1/auth/whoami", Cred::Header(&root), None)
        .await;
    assert_eq!(
        (me["name"].clone(), me["root"].clone()),
        (json!("root"), json!(true))
    );
    let (s, _) = api
        .call(Method::GET, "/v1/auth/whoami", Cred::None, None)
        .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_asks_every_member_with_the_callers_credentials() {
    let opts = Opts::default();
    let mut c = Cluster::start(3, opts.clone()).await;
    let leader = c.leader().await;
    let asked = (leader + 1) % 3;
    let api = Api::plain(&c.nodes[asked]);
    let root = set_up_auth(&api).await;
    opts.set_token(&root);
    let (s, _) = api
        .call(Method::GET, "/v1/cluster/health", Cred::None, None)
        .await;
    assert_eq!(s, 401);

    // alice is no root: she may see the cluster, and every member answers
    // her (the node passes her token on).
    let alice = api.login("alice", "alice-pw").await;
    let h = api
        .ok(
            Method::GET,
            "/v1/cluster/health",
            Cred::Bearer(&alice),
            None,
        )
        .await;
    assert_eq!(h["checked_by"], c.nodes[asked].id);
    let members = h["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{h}");
    let leader_id = c.nodes[leader].id;
    for m in members {
        assert_eq!(
            (m["healthy"].clone(), m["ready"].clone()),
            (json!(true), json!(true)),
            "{m}"
        );
        assert_eq!(m["voter"], true);
        assert_eq!(m["status"]["id"], m["id"], "each member's own status: {m}");
        let role = if m["id"] == leader_id {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(m["status"]["role"], role, "{m}");
        assert!(m.get("reason").is_none(), "{m}");
    }

    // A member killed: named unreachable, the others still healthy.
    let victim = (asked + 1) % 3;
    let victim_id = c.nodes[victim].id;
    c.nodes[victim].kill9();
    let h = wait_for(Duration::from_secs(10), "the dead member reported", || {
        let api = api.clone();
        let alice = alice.clone();
        async move {
            let h = api
                .ok(
                    Method::GET,
                    "/v1/cluster/health",
                    Cred::Bearer(&alice),
                    None,
                )
                .await;
            let dead = h["members"]
                .as_array()?
                .iter()
                .find(|m| m["id"] == victim_id)?
                .clone();
            (dead["healthy"] == false).then_some(h)
        }
    })
    .await;
    for m in h["members"].as_array().expect("members") {
        if m["id"] == victim_id {
            let reason = m["reason"].as_str().unwrap_or("");
            assert!(reason.starts_with("unreachable"), "{m}");
            assert!(
                m.get("status").is_none() && m.get("rtt_ms").is_none(),
                "{m}"
            );
        } else {
            assert_eq!(m["healthy"], true, "{m}");
            assert!(m["rtt_ms"].is_u64(), "{m}");
        }
    }
}
