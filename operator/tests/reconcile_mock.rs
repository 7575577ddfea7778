//! Reconcile against a mocked Kubernetes API (tower-test): the requests a
//! new KvCluster causes, in order, and what they carry. A real apiserver is
//! the end-to-end tests' job; this pins the create path and the status write.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use raftkv_operator::build::OperatorPeer;
use raftkv_operator::controller::{self, Context, Settings};
use raftkv_operator::crd::{KvCluster, KvClusterSpec};
use raftkv_operator::metrics::Metrics;
use raftkv_operator::observe::PdbSupport;
use raftkv_operator::plan::PlanConfig;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn kvcluster(finalizers: Vec<String>) -> KvCluster {
    let spec: KvClusterSpec = serde_json::from_value(json!({"replicas": 3})).expect("spec parses");
    let mut kvc = KvCluster::new("kv", spec);
    kvc.metadata = ObjectMeta {
        name: Some("kv".into()),
        namespace: Some("db".into()),
        uid: Some("6c1f7f55-0b2e-4f0e-9d43-1d1f2d3e4f50".into()),
        generation: Some(1),
        resource_version: Some("100".into()),
        finalizers: Some(finalizers),
        ..ObjectMeta::default()
    };
    kvc
}

fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(Context {
        recorder: Recorder::new(client.clone(), Reporter::from("raftkv-operator")),
        client,
        settings: Settings {
            namespace: None,
            plan: PlanConfig {
                stabilization: Duration::from_secs(1),
                max_lag: 10,
                cluster_domain: "cluster.local".into(),
                operator_peer: OperatorPeer {
                    namespace: Some("raftkv-system".into()),
                    pod_labels: [(
                        "app.kubernetes.io/name".to_owned(),
                        "raftkv-operator".to_owned(),
                    )]
                    .into(),
                },
                rollout_deadline: Duration::from_secs(300),
            },
            node_timeout: Duration::from_millis(200),
            step_timeout: Duration::from_secs(1),
        },
        pdb: PdbSupport::V1,
        metrics: Arc::new(Metrics::default()),
    })
}

/// One expected request: checks its method and path (and that PATCHes
/// are server-side apply), answers with `status` and `reply`, and returns
/// its query and body for further checks.
async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
    status: StatusCode,
    reply: Value,
) -> (String, Value) {
    let (request, send) = handle
        .next_request()
        .await
        .unwrap_or_else(|| panic!("no request, expected {method} {path}"));
    assert_eq!(request.method(), method, "for {path}");
    assert_eq!(request.uri().path(), path);
    let query = request.uri().query().unwrap_or_default().to_owned();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("request body is JSON")
    };
    if method == Method::PATCH && query.contains("fieldManager") {
        assert_eq!(
            content_type, "application/apply-patch+yaml",
            "{path} is server-side apply"
        );
        assert!(query.contains("fieldManager=raftkv-operator"), "{query}");
        assert!(query.contains("force=true"), "{query}");
    }
    // Null = echo the applied object back, as the apiserver would.
    let reply = if reply.is_null() { body.clone() } else { reply };
    let response = Response::builder()
        .status(status)
        .body(Body::from(
            serde_json::to_vec(&reply).expect("reply encodes"),
        ))
        .expect("response");
    send.send_response(response);
    (query, body)
}

fn not_found(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
           "code": 404, "message": format!("{name} not found")})
}

fn empty_list(kind: &str) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
}

#[tokio::test]
async fn new_cluster_is_created_and_its_status_written() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let ctx = context(client);
    let kvc = kvcluster(vec!["raftkv.io/cleanup".into()]);
    let stored = serde_json::to_value(&kvc).expect("json");

    let api_server = tokio::spawn(async move {
        let h = &mut handle;
        let selector = "app.kubernetes.io%2Finstance%3Dkv%2Capp.kubernetes.io%2Fname%3Draftkv";
        expect(
            h,
            Method::GET,
            "/apis/apps/v1/namespaces/db/statefulsets/kv",
            StatusCode::NOT_FOUND,
            not_found("kv"),
        )
        .await;
        // TLS is on by default: the cluster's certificate Secrets are read
        // by name (there are none yet).
        for secret in ["kv-ca", "kv-tls", "kv-operator-client"] {
            expect(
                h,
                Method::GET,
                &format!("/api/v1/namespaces/db/secrets/{secret}"),
                StatusCode::NOT_FOUND,
                not_found(secret),
            )
            .await;
        }
        let (query, _) = expect(
            h,
            Method::GET,
            "/api/v1/namespaces/db/pods",
            StatusCode::OK,
            empty_list("PodList"),
        )
        .await;
        assert!(
            query.contains(selector),
            "pods listed by the cluster's labels: {query}"
        );
        let (query, _) = expect(
            h,
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims",
            StatusCode::OK,
            empty_list("PersistentVolumeClaimList"),
        )
        .await;
        assert!(query.contains(selector), "{query}");
        // spec.auth is on by default: root's Secret, by name.
        expect(
            h,
            Method::GET,
            "/api/v1/namespaces/db/secrets/kv-root",
            StatusCode::NOT_FOUND,
            not_found("kv-root"),
        )
        .await;
        // The cluster itself, read fresh: the status planned from must be
        // the operator's last write, not the watch cache's copy (which the
        // reconcile was handed without a status). What only the API
        // server's copy holds must survive the status write below.
        let mut fresh = stored.clone();
        fresh["status"] = json!({"recovery": {
            "request": "r1", "survivor": "kv-1", "nodeId": "7",
            "at": "2026-12-07T10:00:00Z"}});
        expect(
            h,
            Method::GET,
            "/apis/raftkv.io/v1alpha1/namespaces/db/kvclusters/kv",
            StatusCode::OK,
            fresh,
        )
        .await;

        // Certificates before anything that starts a pod: CA, node
        // certificates (pod 0's among them), the operator's client.
        let (_, ca) = expect(
            h,
            Method::PATCH,
            "/api/v1/namespaces/db/secrets/kv-ca",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(ca["metadata"]["ownerReferences"][0]["kind"], "KvCluster");
        let data_keys = |secret: &Value| -> Vec<String> {
            secret["data"]
                .as_object()
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(data_keys(&ca), ["ca.crt", "ca.key"]);
        let (_, nodes) = expect(
            h,
            Method::PATCH,
            "/api/v1/namespaces/db/secrets/kv-tls",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(
            data_keys(&nodes),
            [
                "ca.crt", "kv-0.crt", "kv-0.key", "kv-1.crt", "kv-1.key", "kv-2.crt", "kv-2.key"
            ],
            "every pod of spec.replicas has its certificate before its pod exists"
        );
        let (_, operator) = expect(
            h,
            Method::PATCH,
            "/api/v1/namespaces/db/secrets/kv-operator-client",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(operator["type"], "kubernetes.io/tls");
        assert_eq!(data_keys(&operator), ["ca.crt", "tls.crt", "tls.key"]);
        // The recorder's event about the issued certificates.
        let (_, event) = expect(
            h,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/db/events",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(event["reason"], "IssuedCertificates");
        assert!(
            !event.to_string().contains("PRIVATE KEY"),
            "no key in events"
        );

        // Created (never applied: an existing password must stay), with a
        // generated password that no event repeats. Not owned: the default
        // whenDeleted: Retain keeps the volumes, which keep this password.
        let (_, root) = expect(
            h,
            Method::POST,
            "/api/v1/namespaces/db/secrets",
            StatusCode::CREATED,
            Value::Null,
        )
        .await;
        assert_eq!(root["metadata"]["name"], "kv-root");
        assert_eq!(root["metadata"]["ownerReferences"], Value::Null);
        assert_eq!(root["data"]["username"], "cm9vdA==", "base64 of root");
        let password = root["data"]["password"].as_str().unwrap_or_default();
        assert_eq!(password.len(), 44, "32 characters, base64: {password}");
        let (_, event) = expect(
            h,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/db/events",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(event["reason"], "CreatedRootSecret");
        assert!(!event.to_string().contains(password));

        let (_, peer) = expect(
            h,
            Method::PATCH,
            "/api/v1/namespaces/db/services/kv-peer",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(peer["spec"]["clusterIP"], "None");
        assert_eq!(peer["spec"]["publishNotReadyAddresses"], true);
        assert_eq!(peer["metadata"]["ownerReferences"][0]["kind"], "KvCluster");
        assert_eq!(peer["metadata"]["ownerReferences"][0]["controller"], true);
        let (_, client_svc) = expect(
            h,
            Method::PATCH,
            "/api/v1/namespaces/db/services/kv",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(
            client_svc["spec"]["ports"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(client_svc["spec"]["ports"][0]["port"], 7379);

        let (_, policy) = expect(
            h,
            Method::PATCH,
            "/apis/networking.k8s.io/v1/namespaces/db/networkpolicies/kv",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 7380);
        assert_eq!(
            policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "kv"
        );

        let (_, sts) = expect(
            h,
            Method::PATCH,
            "/apis/apps/v1/namespaces/db/statefulsets/kv",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(sts["apiVersion"], "apps/v1");
        assert_eq!(
            sts["spec"]["replicas"], 1,
            "a new cluster starts with one pod"
        );
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        assert_eq!(sts["spec"]["serviceName"], "kv-peer");
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let args = pod["containers"][0]["args"].to_string();
        assert!(
            args.contains("--peer-cert-file=/etc/raftkv/tls/$(POD_NAME).crt"),
            "{args}"
        );
        assert!(args.contains("--advertise-peer-url=https://"), "{args}");

        let (_, pdb) = expect(
            h,
            Method::PATCH,
            "/apis/policy/v1/namespaces/db/poddisruptionbudgets/kv",
            StatusCode::OK,
            Value::Null,
        )
        .await;
        assert_eq!(pdb["spec"]["minAvailable"], 2);

        let (_, status) = expect(
            h,
            Method::PATCH,
            "/apis/raftkv.io/v1alpha1/namespaces/db/kvclusters/kv/status",
            StatusCode::OK,
            stored,
        )
        .await;
        assert_eq!(status["apiVersion"], "raftkv.io/v1alpha1");
        assert_eq!(status["kind"], "KvCluster");
        let status = &status["status"];
        assert_eq!(
            status["recovery"]["request"], "r1",
            "planned from the fresh copy: {status}"
        );
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(
            status["selector"],
            "app.kubernetes.io/instance=kv,app.kubernetes.io/name=raftkv"
        );
        let reasons: Vec<_> = status["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                format!(
                    "{}={}/{}",
                    c["type"].as_str().unwrap_or(""),
                    c["status"].as_str().unwrap_or(""),
                    c["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "Available=False/NotInitialized",
                "Progressing=True/WaitingForPod",
                "Degraded=False/Healthy"
            ]
        );
    });

    let action = controller::reconcile(Arc::new(kvc), ctx.clone())
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    tokio::time::timeout(Duration::from_secs(5), api_server)
        .await
        .expect("all expected requests made")
        .expect("API checks passed");
    let metrics = ctx.metrics.encode().expect("metrics");
    assert!(
        metrics.contains("raftkv_operator_reconciles_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn finalizer_is_added_before_anything_is_created() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(kube::Client::new(service, "default"));
    let kvc = kvcluster(vec![]);
    let stored = serde_json::to_value(kvcluster(vec!["raftkv.io/cleanup".into()])).expect("json");

    let api_server = tokio::spawn(async move {
        let (_, patch) = expect(
            &mut handle,
            Method::PATCH,
            "/apis/raftkv.io/v1alpha1/namespaces/db/kvclusters/kv",
            StatusCode::OK,
            stored,
        )
        .await;
        let text = patch.to_string();
        assert!(
            text.contains("raftkv.io/cleanup"),
            "adds the finalizer: {text}"
        );
    });
    let action = controller::reconcile(Arc::new(kvc), ctx)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::await_change());
    tokio::time::timeout(Duration::from_secs(5), api_server)
        .await
        .expect("finalizer patch made")
        .expect("API checks passed");
}

#[tokio::test]
async fn failing_api_is_a_typed_error_with_a_metric_label() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(kube::Client::new(service, "default"));
    let kvc = Arc::new(kvcluster(vec!["raftkv.io/cleanup".into()]));
    let api_server = tokio::spawn(async move {
        let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "Forbidden", "code": 403, "message": "no"});
        expect(
            &mut handle,
            Method::GET,
            "/apis/apps/v1/namespaces/db/statefulsets/kv",
            StatusCode::FORBIDDEN,
            forbidden,
        )
        .await;
    });
    let error = controller::reconcile(kvc.clone(), ctx.clone())
        .await
        .expect_err("a forbidden read fails the reconcile");
    assert_eq!(error.metric_label(), "observe");
    let action = controller::error_policy(kvc, &error, ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    let metrics = ctx.metrics.encode().expect("metrics");
    assert!(
        metrics.contains("raftkv_operator_reconcile_failures_total{reason=\"observe\"} 1"),
        "{metrics}"
    );
    api_server.await.expect("API checks passed");
}
