//! Authentication and authorization between real processes: users, roles
//! and the switch are replicated through raft, every node enforces them,
//! forwarding keeps the caller's identity, tokens expire and are retired
//! by a password change, and the state survives restarts and snapshots.

use std::sync::Arc;
use std::time::Duration;

use crate::common::link::Link;
use crate::common::{Cluster, NodeProc, Opts, Pki, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

/// Raw HTTP against one node, so status codes and error codes are seen as
/// a client sees them.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
}

/// How a request identifies itself.
#[derive(Clone, Copy)]
pub(crate) enum Cred<'a> {
    None,
    Bearer(&'a str),
    /// The header for proxies that consume `Authorization`.
    Header(&'a str),
}

impl Api {
    pub(crate) fn plain(n: &NodeProc) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: n.client_url(),
        }
    }

    pub(crate) async fn call(
        &self,
        m: Method,
        path: &str,
        cred: Cred<'_>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        req = match cred {
            Cred::None => req,
            Cred::Bearer(t) => req.bearer_auth(t),
            Cred::Header(t) => req.header("x-raftkv-token", t),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    pub(crate) async fn put(&self, key: &str, cred: Cred<'_>) -> (u16, Value) {
        let path = kvclient::client::key_path(key);
        let mut req = self.http.put(format!("{}{path}", self.base)).body("v");
        req = match cred {
            Cred::None => req,
            Cred::Bearer(t) => req.bearer_auth(t),
            Cred::Header(t) => req.header("x-raftkv-token", t),
        };
        let resp = req.send().await.expect("put");
        let status = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        (status, v)
    }

    async fn get(&self, key: &str, cred: Cred<'_>) -> u16 {
        self.call(Method::GET, &kvclient::client::key_path(key), cred, None)
            .await
            .0
    }

    /// 200 or the test fails, with the answer in the message.
    pub(crate) async fn ok(
        &self,
        m: Method,
        path: &str,
        cred: Cred<'_>,
        body: Option<Value>,
    ) -> Value {
        let (s, v) = self.call(m.clone(), path, cred, body).await;
        assert_eq!(s, 200, "{m} {path}: {v}");
        v
    }

    pub(crate) async fn login(&self, name: &str, password: &str) -> String {
        let v = self
            .ok(
                Method::POST,
                "/v1/auth/authenticate",
                Cred::None,
                Some(json!({"name": name, "password": password})),
            )
            .await;
        v["token"].as_str().expect("token").to_owned()
    }
}

pub(crate) fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// Users and roles of the scenarios: `root`; `alice` with role `app`
/// (readwrite on prefix `app/`, read on key `shared`); `bob` with no role.
/// Then auth is enabled. Returns root's token.
pub(crate) async fn set_up_auth(api: &Api) -> String {
    let (s, v) = api
        .call(Method::POST, "/v1/auth/enable", Cred::None, None)
        .await;
    assert_eq!(
        (s, code(&v)),
        (412, "precondition_failed"),
        "enable needs root first: {v}"
    );
    for (path, body) in [
        (
            "/v1/auth/users",
            json!({"name": "root", "password": "root-pw", "roles": ["root"]}),
        ),
        ("/v1/auth/roles", json!({"name": "app"})),
        (
            "/v1/auth/roles/app/permissions",
            json!({"permission": "readwrite", "key": "app/", "prefix": true}),
        ),
        (
            "/v1/auth/roles/app/permissions",
            json!({"permission": "read", "key": "shared"}),
        ),
        (
            "/v1/auth/users",
            json!({"name": "alice", "password": "alice-pw", "roles": ["app"]}),
        ),
        (
            "/v1/auth/users",
            json!({"name": "bob", "password": "bob-pw"}),
        ),
    ] {
        api.ok(Method::POST, path, Cred::None, Some(body)).await;
    }
    let (s, v) = api
        .call(
            Method::POST,
            "/v1/auth/users",
            Cred::None,
            Some(json!({"name": "bob", "password": "x"})),
        )
        .await;
    assert_eq!((s, code(&v)), (409, "already_exists"), "{v}");
    let v = api
        .ok(Method::POST, "/v1/auth/enable", Cred::None, None)
        .await;
    assert_eq!(v["enabled"], true);
    api.login("root", "root-pw").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_enforces_users_roles_and_tokens() {
    let opts = Opts::default();
    let mut c = Cluster::start(3, opts.clone()).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let lapi = Api::plain(&c.nodes[leader]);
    let fapi = Api::plain(&c.nodes[follower]);
    let root = set_up_auth(&fapi).await;
    opts.set_token(&root);

    // Anonymous: refused everywhere but the probes and the auth entry points.
    for api in [&lapi, &fapi] {
        let (s, v) = api.put("app/x", Cred::None).await;
        assert_eq!((s, code(&v)), (401, "unauthenticated"), "{v}");
        assert_eq!(api.get("app/x", Cred::None).await, 401);
        for path in ["/v1/cluster/status", "/v1/kv?prefix=", "/v1/auth/users"] {
            assert_eq!(
                api.call(Method::GET, path, Cred::None, None).await.0,
                401,
                "{path}"
            );
        }
        for path in [
            "/healthz",
            "/readyz",
            "/version",
            "/v1/auth/status",
            "/metrics",
        ] {
            assert_eq!(
                api.call(Method::GET, path, Cred::None, None).await.0,
                200,
                "{path}"
            );
        }
    }

    // The attack of issue 8: a learner added through a follower's client
    // port. Without credentials 401, as a non-root user 403; the
    // membership is unchanged.
    let learner = json!({"id": 99, "name": "intruder", "peer_url": "http://127.0.0.1:1", "client_url": "http://127.0.0.1:2"});
    let (s, _) = fapi
        .call(
            Method::POST,
            "/v1/cluster/learners",
            Cred::None,
            Some(learner.clone()),
        )
        .await;
    assert_eq!(s, 401);
    let alice = fapi.login("alice", "alice-pw").await;
    let (s, v) = fapi
        .call(
            Method::POST,
            "/v1/cluster/learners",
            Cred::Bearer(&alice),
            Some(learner),
        )
        .await;
    assert_eq!((s, code(&v)), (403, "permission_denied"), "{v}");
    let st = fapi
        .ok(Method::GET, "/v1/cluster/status", Cred::Bearer(&root), None)
        .await;
    assert_eq!(
        st["membership"]["learners"].as_array().map(Vec::len),
        Some(0),
        "{st}"
    );

    // Wrong password: one clear 401.
    let (s, v) = fapi
        .call(
            Method::POST,
            "/v1/auth/authenticate",
            Cred::None,
            Some(json!({"name": "alice", "password": "nope"})),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "unauthenticated"), "{v}");
    let (s, _) = fapi
        .call(
            Method::POST,
            "/v1/auth/authenticate",
            Cred::None,
            Some(json!({"name": "nobody", "password": "x"})),
        )
        .await;
    assert_eq!(s, 401);

    // Prefix permissions, on the follower (writes forwarded with alice's
    // identity, not the node's) and on the leader.
    let (s, v) = fapi.put("app/a", Cred::Bearer(&alice)).await;
    assert_eq!(s, 200, "alice writes app/ through a follower: {v}");
    assert_eq!(lapi.put("app/b", Cred::Header(&alice)).await.0, 200);
    let (s, v) = fapi.put("other", Cred::Bearer(&alice)).await;
    assert_eq!((s, code(&v)), (403, "permission_denied"), "{v}");
    assert_eq!(lapi.put("shared", Cred::Bearer(&root)).await.0, 200);
    assert_eq!(fapi.get("shared", Cred::Bearer(&alice)).await, 200);
    assert_eq!(fapi.put("shared", Cred::Bearer(&alice)).await.0, 403);
    assert_eq!(fapi.get("other", Cred::Bearer(&alice)).await, 403);
    let range = |p: &str| format!("/v1/kv?prefix={p}");
    let v = fapi
        .ok(Method::GET, &range("app/"), Cred::Bearer(&alice), None)
        .await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(
        fapi.call(Method::GET, &range("ap"), Cred::Bearer(&alice), None)
            .await
            .0,
        403
    );
    assert_eq!(
        fapi.call(Method::GET, &range(""), Cred::Bearer(&alice), None)
            .await
            .0,
        403
    );
    assert_eq!(
        fapi.call(Method::DELETE, &range(""), Cred::Bearer(&alice), None)
            .await
            .0,
        403
    );

    // A transaction touching one forbidden key is refused whole.
    let txn = json!({"success": [
        {"op": "put", "key": "app/a", "value": "changed"},
        {"op": "put", "key": "other", "value": "x"}]});
    let (s, v) = fapi
        .call(Method::POST, "/v1/txn", Cred::Bearer(&alice), Some(txn))
        .await;
    assert_eq!((s, code(&v)), (403, "permission_denied"), "{v}");
    let got = c
        .client()
        .get("app/a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(&got.value[..], b"v", "the refused txn changed nothing");
    let txn = json!({"compare": [{"key": "shared", "target": {"exists": true}}],
                     "success": [{"op": "put", "key": "app/c", "value": "1"}]});
    let v = fapi
        .ok(Method::POST, "/v1/txn", Cred::Bearer(&alice), Some(txn))
        .await;
    assert_eq!(v["succeeded"], true);

    // bob has no role: authenticated, allowed nothing.
    let bob = lapi.login("bob", "bob-pw").await;
    assert_eq!(lapi.get("app/a", Cred::Bearer(&bob)).await, 403);
    // A user may read its own account, not others'.
    lapi.ok(Method::GET, "/v1/auth/users/bob", Cred::Bearer(&bob), None)
        .await;
    assert_eq!(
        lapi.call(
            Method::GET,
            "/v1/auth/users/alice",
            Cred::Bearer(&bob),
            None
        )
        .await
        .0,
        403
    );

    // A password change retires alice's tokens, not bob's.
    lapi.ok(
        Method::PUT,
        "/v1/auth/users/alice/password",
        Cred::Bearer(&root),
        Some(json!({"password": "alice-pw2"})),
    )
    .await;
    let (s, v) = fapi.put("app/a", Cred::Bearer(&alice)).await;
    assert_eq!((s, code(&v)), (401, "unauthenticated"), "{v}");
    assert_eq!(
        fapi.get("app/a", Cred::Bearer(&bob)).await,
        403,
        "bob's token still works"
    );
    let alice = fapi.login("alice", "alice-pw2").await;
    assert_eq!(fapi.put("app/a", Cred::Bearer(&alice)).await.0, 200);

    // A role change applies at once, without a new token.
    lapi.ok(
        Method::DELETE,
        "/v1/auth/users/alice/roles/app",
        Cred::Bearer(&root),
        None,
    )
    .await;
    wait_for(
        Duration::from_secs(5),
        "the revoke to reach the follower",
        || async { (fapi.get("app/a", Cred::Bearer(&alice)).await == 403).then_some(()) },
    )
    .await;
    lapi.ok(
        Method::PUT,
        "/v1/auth/users/alice/roles/app",
        Cred::Bearer(&root),
        None,
    )
    .await;

    // Every node is killed and restarted: auth stays on, users stay,
    // tokens issued before verify after (the signing key is replicated
    // state, recovered from the synced raft log).
    for n in &mut c.nodes {
        n.kill9();
    }
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.start(Some(i as u64 + 1)).await;
    }
    c.wait_all_ready().await;
    let leader = c.leader().await;
    let api = Api::plain(&c.nodes[leader]);
    assert_eq!(api.put("app/z", Cred::None).await.0, 401);
    assert_eq!(api.put("app/z", Cred::Bearer(&root)).await.0, 200);
    let alice = api.login("alice", "alice-pw2").await;
    assert_eq!(api.put("other", Cred::Bearer(&alice)).await.0, 403);
    let users = api
        .ok(Method::GET, "/v1/auth/users", Cred::Bearer(&root), None)
        .await;
    assert_eq!(users["users"], json!(["alice", "bob", "root"]));

    // Root cannot be removed while auth is on; after disable all is open.
    let (s, v) = api
        .call(
            Method::DELETE,
            "/v1/auth/users/root",
            Cred::Bearer(&root),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (412, "precondition_failed"), "{v}");
    api.ok(Method::POST, "/v1/auth/disable", Cred::Bearer(&root), None)
        .await;
    wait_for(Duration::from_secs(5), "auth off on every node", || async {
        for n in &c.nodes {
            if Api::plain(n).put("open", Cred::None).await.0 != 200 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire() {
    let opts = Opts {
        env: vec![("KVNODE_AUTH_TOKEN_TTL".into(), "2".into())],
        ..Opts::default()
    };
    let c = Cluster::start(1, opts).await;
    let api = Api::plain(&c.nodes[0]);
    set_up_auth(&api).await;
    let alice = api.login("alice", "alice-pw").await;
    assert_eq!(api.put("app/a", Cred::Bearer(&alice)).await.0, 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (s, v) = api.put("app/a", Cred::Bearer(&alice)).await;
    assert_eq!((s, code(&v)), (401, "unauthenticated"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired"),
        "{v}"
    );
    let again = api.login("alice", "alice-pw").await;
    assert_eq!(api.put("app/a", Cred::Bearer(&again)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_gets_users_roles_and_the_key_from_a_snapshot() {
    let opts = Opts {
        snapshot_threshold: 100,
        ..Opts::default()
    };
    let mut c = Cluster::start(3, opts.clone()).await;
    let leader = c.leader().await;
    let lapi = Api::plain(&c.nodes[leader]);
    let root = set_up_auth(&lapi).await;
    opts.set_token(&root);
    let alice = lapi.login("alice", "alice-pw").await;
    // Enough writes that the log holding the auth changes is purged: the
    // learner can only learn them from the snapshot.
    let client = c.client();
    let mut last = 0;
    for i in 0..400 {
        last = client
            .put(&format!("app/{i:04}"), "v")
            .await
            .expect("put as root");
    }
    let metrics = client.metrics().await.expect("metrics");
    assert!(metrics.contains("raftkv_raft_purged_index"), "metrics");

    let idx = c.spawn_extra("learner").await;
    let l = &c.nodes[idx];
    let learner =
        json!({"id": l.id, "name": l.name, "peer_url": l.peer_url(), "client_url": l.client_url()});
    lapi.ok(
        Method::POST,
        "/v1/cluster/learners",
        Cred::Bearer(&root),
        Some(learner),
    )
    .await;
    c.wait_applied(idx, last).await;

    let lm = c.nodes[idx]
        .client()
        .metrics()
        .await
        .expect("learner metrics");
    let snap = lm
        .lines()
        .find_map(|l| l.strip_prefix("raftkv_raft_snapshot_index "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(snap > 0.0, "the learner installed a snapshot:\n{lm}");
    let api = Api::plain(&c.nodes[idx]);
    let serial = |k: &str| format!("{}?consistency=serializable", kvclient::client::key_path(k));
    // alice's token (issued by the leader) verifies on the learner; her
    // grants are there; anonymous is refused.
    assert_eq!(
        api.call(Method::GET, &serial("app/0001"), Cred::Bearer(&alice), None)
            .await
            .0,
        200
    );
    assert_eq!(
        api.call(Method::GET, &serial("other"), Cred::Bearer(&alice), None)
            .await
            .0,
        403
    );
    assert_eq!(
        api.call(Method::GET, &serial("app/0001"), Cred::None, None)
            .await
            .0,
        401
    );
    let v = api
        .ok(Method::GET, "/v1/auth/status", Cred::None, None)
        .await;
    assert_eq!(v["enabled"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_the_user_and_forwarding_keeps_it() {
    let pkis = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(pkis.path().join("ca")));
    let opts = Opts {
        tls: Some(pki.clone()),
        ..Opts::default()
    };
    let c = Cluster::start(3, opts.clone()).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let base = c.nodes[follower].client_url();
    let as_ca = |user: Option<&str>| Api {
        http: match user {
            Some(u) => Pki::http(&pki, Some((&pki, u))),
            None => Pki::http(&pki, None),
        },
        base: base.clone(),
    };
    pki.issue_client("root");
    pki.issue_client("alice");
    pki.issue_client("mallory");
    let root = set_up_auth(&as_ca(None)).await;
    opts.set_token(&root);

    // The CN is the user: root may administer, alice only her keys. The
    // follower forwards the writes and the leader still sees alice.
    let root_cert = as_ca(Some("root"));
    root_cert
        .ok(Method::GET, "/v1/auth/users", Cred::None, None)
        .await;
    let alice = as_ca(Some("alice"));
    let (s, v) = alice.put("app/cert", Cred::None).await;
    assert_eq!(s, 200, "alice by certificate, forwarded: {v}");
    let (s, v) = alice.put("other", Cred::None).await;
    assert_eq!((s, code(&v)), (403, "permission_denied"), "{v}");
    let (s, v) = alice
        .call(Method::GET, "/v1/auth/users", Cred::None, None)
        .await;
    assert_eq!((s, code(&v)), (403, "permission_denied"), "{v}");
    // A CN that is no user, and no certificate at all: 401.
    assert_eq!(as_ca(Some("mallory")).put("app/x", Cred::None).await.0, 401);
    assert_eq!(as_ca(None).put("app/x", Cred::None).await.0, 401);
    // A token wins over the certificate it arrives with.
    let bob = as_ca(None).login("bob", "bob-pw").await;
    assert_eq!(alice.put("app/y", Cred::Bearer(&bob)).await.0, 403);
}

/// A node whose auth state lags admits a write by rules the cluster has
/// already revoked; the write reaches the log but must not apply. The
/// learner here hears from the leader only through a link the test cuts,
/// while it still reaches the leader itself to propose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_checked_against_revoked_rules_does_not_apply() {
    let opts = Opts::default();
    let mut c = Cluster::start(2, opts.clone()).await;
    let leader = c.leader().await;
    let lapi = Api::plain(&c.nodes[leader]);
    let root = set_up_auth(&lapi).await;
    opts.set_token(&root);
    let alice = lapi.login("alice", "alice-pw").await;

    let idx = c.spawn_extra("lagger").await;
    let link = Link::to(c.nodes[idx].peer_port).await;
    let l = &c.nodes[idx];
    let learner = json!({
        "id": l.id, "name": l.name,
        "peer_url": format!("http://127.0.0.1:{}", link.port),
        "client_url": l.client_url(),
    });
    lapi.ok(
        Method::POST,
        "/v1/cluster/learners",
        Cred::Bearer(&root),
        Some(learner),
    )
    .await;
    let lagger = Api::plain(&c.nodes[idx]);
    // Once it has caught up (users, grants, the leader), alice writes
    // through it.
    wait_for(
        Duration::from_secs(20),
        "a write through the learner",
        || async { (lagger.put("app/before", Cred::Bearer(&alice)).await.0 == 200).then_some(()) },
    )
    .await;

    // The learner stops hearing from the leader; the revoke commits
    // without it, so it still holds alice's grant.
    link.cut();
    lapi.ok(
        Method::DELETE,
        "/v1/auth/roles/app/permissions?key=app/&prefix=true",
        Cred::Bearer(&root),
        None,
    )
    .await;
    let (s, v) = lapi.put("app/leader", Cred::Bearer(&alice)).await;
    assert_eq!((s, code(&v)), (403, "permission_denied"), "{v}");

    // The learner admits the write by its old rules and proposes it; the
    // leader commits it after the revoke. Its answer waits for the learner
    // to apply, which needs the link.
    let put = tokio::spawn({
        let lagger = lagger.clone();
        let alice = alice.clone();
        async move { lagger.put("app/after", Cred::Bearer(&alice)).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!put.is_finished(), "the learner answered without applying");
    link.restore();
    let (s, v) = put.await.expect("put task");
    assert_eq!(
        (s, code(&v)),
        (403, "permission_denied"),
        "judged again under the revoke: {v}"
    );
    let (s, v) = lapi
        .call(
            Method::GET,
            &kvclient::client::key_path("app/after"),
            Cred::Bearer(&root),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"), "nothing applied: {v}");
    // Still a member in good standing: root writes through it.
    let (s, v) = lagger.put("app/root", Cred::Bearer(&root)).await;
    assert_eq!(s, 200, "{v}");
}

/// A watch reads keys: it needs read permission on all it covers, and it
/// ends when that permission goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_needs_read_permission_and_ends_when_it_is_revoked() {
    use crate::watch::open;
    use kvapi::{WatchCancel, WatchLine};

    let opts = Opts::default();
    let c = Cluster::start(3, opts.clone()).await;
    let leader = c.leader().await;
    let lapi = Api::plain(&c.nodes[leader]);
    let root = set_up_auth(&lapi).await;
    opts.set_token(&root);
    let alice = lapi.login("alice", "alice-pw").await;
    let base = c.nodes[(leader + 1) % 3].client_url();

    let Err((s, v)) = open(&base, "prefix=app/", None).await else {
        panic!("anonymous watch opened");
    };
    assert_eq!((s, code(&v)), (401, "unauthenticated"), "{v}");
    // `app/` is hers, the whole key space is not.
    let Err((s, v)) = open(&base, "prefix=", Some(&alice)).await else {
        panic!("alice watched every key");
    };
    assert_eq!((s, code(&v)), (403, "permission_denied"), "{v}");
    let mut w = open(&base, "prefix=app/", Some(&alice))
        .await
        .expect("alice watches app/");
    w.next().await;
    let (s, v) = lapi.put("app/1", Cred::Bearer(&root)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(w.events(1).await.len(), 1);

    lapi.ok(
        Method::DELETE,
        "/v1/auth/roles/app/permissions?key=app/&prefix=true",
        Cred::Bearer(&root),
        None,
    )
    .await;
    let (s, v) = lapi.put("app/2", Cred::Bearer(&root)).await;
    assert_eq!(s, 200, "{v}");
    loop {
        match w.next().await.expect("a canceled line") {
            WatchLine::Canceled { code, .. } => {
                assert_eq!(code, WatchCancel::PermissionDenied);
                break;
            }
            WatchLine::Progress { .. } => {}
            WatchLine::Put(e) => panic!("event after the revoke: {e:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
