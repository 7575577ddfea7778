//! kvctl against real nodes: `kvnode --dev`, fresh nodes for `init`, the
//! metrics endpoint, and authentication (users, roles, permissions).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::kvctl::{fails, ok, ok_json, run, run_with};
use crate::common::{NodeProc, Opts, Start, wait_for};
use kvclient::{TxnOp, TxnRequest};

const VERSION: &str = env!("CARGO_PKG_VERSION");

async fn dev_node(root: &Path) -> NodeProc {
    crate::common::dev_node(root, "dev", Opts::default(), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_node_and_kvctl_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = dev_node(dir.path()).await;
    let c = n.client();
    let ep = n.client_url();

    assert!(ok(&ep, &["put", "greeting", "hello"]).starts_with("OK revision"));
    assert_eq!(ok(&ep, &["get", "greeting"]), "hello\n");
    // -o is global: before or after the subcommand.
    for args in [
        &["-o", "json", "get", "greeting"][..],
        &["get", "greeting", "-o", "json"],
    ] {
        let json = ok_json(&ep, args);
        assert_eq!(json["value"], "hello", "{args:?}");
        assert!(json["revision"].as_u64().expect("revision") > 0);
    }

    let ls = ok(&ep, &["ls", "--prefix", "gr"]);
    assert!(
        ls.lines().nth(1).expect("row").starts_with("greeting"),
        "{ls}"
    );
    // --count-only: the number alone, or grouped by a delimiter.
    for k in ["grp/a/1", "grp/a/2", "grp/b"] {
        ok(&ep, &["put", k, "v"]);
    }
    let counted = ok(&ep, &["ls", "--prefix", "gr", "--count-only"]);
    assert!(counted.starts_with("4 keys (revision "), "{counted}");
    let grouped = ok_json(
        &ep,
        &[
            "-o",
            "json",
            "ls",
            "--prefix",
            "grp/",
            "--count-only",
            "--delimiter",
            "/",
        ],
    );
    assert_eq!(grouped["count"], 3, "{grouped}");
    assert_eq!(grouped["direct"], 1, "{grouped}");
    assert_eq!(grouped["groups"][0]["prefix"], "grp/a/", "{grouped}");
    assert_eq!(grouped["groups"][0]["count"], 2, "{grouped}");
    let table = ok(
        &ep,
        &["ls", "--prefix", "grp/", "--count-only", "--delimiter", "/"],
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("grp/a/") && l.ends_with('2')),
        "{table}"
    );
    // A usage error: clap's message and exit status 2, as for every usage error.
    let out = run(&ep, &["ls", "--delimiter", "/"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--count-only"), "{err}");
    ok(&ep, &["del", "--prefix", "grp/"]);

    let members = ok_json(&ep, &["-o", "json", "members"]);
    assert_eq!(members["voters"].as_array().expect("voters").len(), 1);
    assert!(ok(&ep, &["status"]).contains("leader"));
    assert!(ok(&ep, &["health"]).contains("ready"));
    assert!(ok(&ep, &["del", "greeting"]).starts_with("deleted"));

    // version: kvctl's own, then one row per endpoint; a dead endpoint is
    // shown as an error row, not a failure, while another answers.
    let version = ok(&ep, &["version"]);
    let lines: Vec<&str> = version.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("kvctl {VERSION}").as_str())
    );
    assert!(
        lines
            .get(2)
            .expect("endpoint row")
            .starts_with(&format!("{ep}  {VERSION}")),
        "{version}"
    );
    let v = ok_json(&ep, &["version", "-o", "json"]);
    assert_eq!(v["kvctl"], VERSION);
    assert_eq!(v["servers"][0]["version"], VERSION);
    assert_eq!(v["servers"][0]["api"], "v1");
    let two = ok(&format!("{ep},http://127.0.0.1:1"), &["version"]);
    assert!(
        two.lines()
            .any(|l| l.starts_with("http://127.0.0.1:1 ") && l.contains("error")),
        "{two}"
    );

    // Failures: non-zero exit and exactly one line on stderr.
    assert!(fails(&ep, &["get", "greeting"]).contains("not found"));
    fails("http://127.0.0.1:1", &["get", "x"]);
    fails("http://127.0.0.1:1", &["version"]);
    let out = run("not a url", &["get", "x"]);
    assert!(!out.status.success());

    // A short bench prints figures and JSON.
    let report = ok_json(
        &ep,
        &[
            "-o",
            "json",
            "bench",
            "--clients",
            "4",
            "--duration",
            "1",
            "--keys",
            "50",
        ],
    );
    assert!(report["ops"].as_u64().expect("ops") > 0);
    assert!(report["p99_ms"].as_f64().expect("p99") > 0.0);

    // Metrics count the requests above and expose raft state.
    let metrics = c.metrics().await.expect("metrics");
    assert!(
        metrics.contains(
            "raftkv_http_requests_total{route=\"/v1/kv/{*key}\",method=\"PUT\",code=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("raftkv_raft_is_leader 1"));
    assert!(
        metrics.contains(&format!("raftkv_build_info{{version=\"{VERSION}\"}} 1")),
        "{metrics}"
    );
    // `kvnode --version` names the same version.
    let out = Command::new(env!("CARGO_BIN_EXE_kvnode"))
        .arg("--version")
        .output()
        .expect("kvnode --version");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("kvnode {VERSION}")
    );
    assert!(metrics.contains("raftkv_http_request_duration_seconds_bucket"));
}

/// etcdctl habits: get --prefix in every output form, paging, range deletes,
/// and values that would break a table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prefix_and_range_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = dev_node(dir.path()).await;
    let c = n.client();
    let ep = n.client_url();
    c.put("app/a", "1").await.expect("put");
    c.put("app/b", "2").await.expect("put");
    c.put("app/c", "line1\nline2").await.expect("put");
    c.put("app/d", vec![0xffu8, 0x00]).await.expect("put");
    c.put("other", "x").await.expect("put");

    // Table: header plus one row per key, the two-line value escaped on its
    // row, the binary value marked as base64. ls prints the same table.
    for args in [
        &["get", "app/", "--prefix"][..],
        &["ls", "--prefix", "app/"],
    ] {
        let table = ok(&ep, args);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{args:?}:\n{table}");
        assert!(lines[0].starts_with("KEY"), "{table}");
        assert!(
            lines[3].starts_with("app/c ") && lines[3].ends_with(" line1\\nline2"),
            "{table}"
        );
        assert!(lines[4].ends_with(" base64:/wA="), "{table}");
    }
    assert_eq!(
        ok(&ep, &["get", "app/", "--prefix", "--keys-only"]),
        "app/a\napp/b\napp/c\napp/d\n"
    );
    assert_eq!(
        ok(
            &ep,
            &["get", "app/", "--prefix", "--keys-only", "--serializable"]
        ),
        "app/a\napp/b\napp/c\napp/d\n"
    );
    assert_eq!(
        ok(
            &ep,
            &[
                "get",
                "app/",
                "--prefix",
                "--print-value-only",
                "--limit",
                "2"
            ]
        ),
        "1\n2\n"
    );
    let all = ok_json(&ep, &["get", "app/", "--prefix", "-o", "json"]);
    assert_eq!(all["items"].as_array().expect("items").len(), 4);
    assert_eq!(all["items"][2]["value"], "line1\nline2");
    assert_eq!(all["items"][3]["value_encoding"], "base64");
    assert!(all["next"].is_null(), "{all}");
    let some = ok_json(
        &ep,
        &["get", "app/", "--prefix", "--limit", "3", "-o", "json"],
    );
    assert_eq!(some["items"].as_array().expect("items").len(), 3);
    assert_eq!(some["next"], "app/d");
    // Without --prefix: the value as before, or the key with --keys-only.
    assert_eq!(ok(&ep, &["get", "app/a", "--print-value-only"]), "1\n");
    assert_eq!(ok(&ep, &["get", "app/a", "--keys-only"]), "app/a\n");

    // More keys than one server page (1000): kvctl follows `next`.
    for batch in 0..10 {
        let success = (0..110)
            .map(|i| TxnOp::Put {
                key: format!("bulk/{:04}", batch * 110 + i),
                value: "v".into(),
                value_encoding: None,
                lease: None,
            })
            .collect();
        let r = c
            .txn(&TxnRequest {
                success,
                ..TxnRequest::default()
            })
            .await
            .expect("txn");
        assert!(r.succeeded);
    }
    let keys = ok(&ep, &["get", "bulk/", "--prefix", "--keys-only"]);
    assert_eq!(keys.lines().count(), 1100);
    assert_eq!(keys.lines().last(), Some("bulk/1099"));
    let keys = ok(
        &ep,
        &["get", "bulk/", "--prefix", "--keys-only", "--limit", "1050"],
    );
    assert_eq!(keys.lines().count(), 1050);
    assert_eq!(keys.lines().last(), Some("bulk/1049"));
    let page = ok_json(
        &ep,
        &["get", "bulk/", "--prefix", "--limit", "1050", "-o", "json"],
    );
    assert_eq!(page["items"].as_array().expect("items").len(), 1050);
    assert_eq!(page["next"], "bulk/1050");

    // del START END removes [START, END); --prefix every key under it.
    let out = ok(&ep, &["del", "app/b", "app/d"]);
    assert!(out.starts_with("deleted 2 (revision "), "{out}");
    assert_eq!(
        ok(&ep, &["get", "app/", "--prefix", "--keys-only"]),
        "app/a\napp/d\n"
    );
    let del = ok_json(&ep, &["-o", "json", "del", "--prefix", "app/"]);
    assert_eq!(del["deleted"], 2);
    assert!(del["revision"].as_u64().expect("revision") > 0);
    assert_eq!(ok(&ep, &["get", "app/", "--prefix", "--keys-only"]), "");
    let out = ok(&ep, &["del", "--prefix", "bulk/"]);
    assert!(out.starts_with("deleted 1100 (revision "), "{out}");
    // Keys outside the ranges are untouched.
    assert_eq!(ok(&ep, &["get", "other"]), "x\n");
}

/// `kvctl init` without --member: the members are the endpoints' nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_discovers_fresh_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = Vec::new();
    for i in 1..=4 {
        let mut n = NodeProc::new(dir.path(), &format!("n{i}"), Opts::default());
        // No --id, no init: a fresh node with a generated id.
        n.start(None).await;
        nodes.push(n);
    }
    let eps: Vec<String> = nodes.iter().map(NodeProc::client_url).collect();
    let three = eps[..3].join(",");

    // One endpoint that does not answer: refused, nothing initialized.
    let err = fails(&format!("{three},http://127.0.0.1:1"), &["init"]);
    assert!(err.contains("http://127.0.0.1:1 is unreachable"), "{err}");
    let st = nodes[0].client().status().await.expect("status");
    assert_eq!(st.cluster_id, None);

    let out = ok(&three, &["init"]);
    assert!(out.starts_with("initialized: voters"), "{out}");
    for n in &nodes[..3] {
        let c = n.client();
        wait_for(
            Duration::from_secs(20),
            &format!("{} ready in the cluster", n.name),
            || async {
                let ready = matches!(c.ready().await, Ok(Ok(())));
                let st = c.status().await.ok()?;
                (ready && st.cluster_id.is_some()).then_some(())
            },
        )
        .await;
    }
    // The voters are the three nodes, with the names and URLs they advertise.
    let st = nodes[1].client().status().await.expect("status");
    let mut voters = st.membership.voter_ids();
    voters.sort_unstable();
    let mut want: Vec<u64> = nodes[..3].iter().map(|n| n.id).collect();
    want.sort_unstable();
    assert_eq!(voters, want);
    for m in &st.membership.voters {
        let n = nodes.iter().find(|n| n.id == m.id).expect("a started node");
        assert_eq!(m.info, n.info());
    }

    // Again: already done, exit 0 (idempotent, like the server).
    let again = ok(&three, &["init"]);
    assert!(
        again.starts_with("already initialized: cluster "),
        "{again}"
    );
    let again = ok_json(&three, &["-o", "json", "init"]);
    assert_eq!(again["already_initialized"], true);
    assert_eq!(
        again["cluster_id"],
        st.cluster_id.clone().expect("cluster id")
    );

    // A fresh fourth node next to them: init is refused as not needed, and
    // the fourth node stays out of any cluster.
    let err = fails(&eps.join(","), &["init"]);
    assert!(
        err.contains(&format!(
            "{} (node {}) is already in cluster",
            eps[0], nodes[0].id
        )),
        "{err}"
    );
    assert!(err.contains("init is not needed"), "{err}");
    let st = nodes[3].client().status().await.expect("status");
    assert_eq!(st.cluster_id, None);
}

/// kvctl against a TLS node: etcdctl's `--cacert`/`--cert`/`--key`, and a
/// one-line error when the server cannot be verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_speaks_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = std::sync::Arc::new(crate::common::Pki::new(dir.path().join("pki")));
    let (cert, key) = pki.issue_client("alice");
    let mut n = NodeProc::new(
        dir.path(),
        "tls",
        Opts {
            tls: Some(pki.clone()),
            ..Opts::default()
        },
    );
    n.start(Start::default().args(&["--dev"])).await;
    let ep = n.client_url();
    assert!(ep.starts_with("https://"), "{ep}");
    let ca = pki.ca_file().display().to_string();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    wait_for(Duration::from_secs(20), "tls node ready", || async {
        run(&ep, &["--cacert", &ca, "health"])
            .status
            .success()
            .then_some(())
    })
    .await;
    assert!(ok(&ep, &["put", "k", "over tls", "--cacert", &ca]).starts_with("OK revision"));
    let got = ok(
        &ep,
        &["get", "k", "--cacert", &ca, "--cert", &cert, "--key", &key],
    );
    assert_eq!(got, "over tls\n");

    // No CA: the node's certificate cannot be verified.
    let err = fails(&ep, &["get", "k"]);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let err = fails(&ep, &["get", "k", "--cacert", "/nonexistent/ca.crt"]);
    assert!(err.contains("/nonexistent/ca.crt"), "{err}");
}

fn ok_output(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kvctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failed run: exit 1 (not a panic's 101, not a usage error's 2) and one
/// line on stderr, which is returned.
fn one_line_failure(args: &[&str], out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "kvctl {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "kvctl {args:?}: {err}");
    err
}

/// etcdctl's authentication workflow through kvctl: root, auth enable,
/// credentials on the command line, from the environment and piped in,
/// a user whose role grants one prefix, and the failures a user meets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_with_authentication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = dev_node(dir.path()).await;
    let ep = n.client_url();
    let root = ["--user", "root:rootpw"];
    let as_root = |args: &[&str]| ok(&ep, &[&root[..], args].concat());

    // Before auth is on: root's password piped in (stdin is not a
    // terminal), then the built-in root role, then the switch.
    let args = ["user", "add", "root"];
    let out = ok_output(&args, run_with(&ep, &args, "rootpw\n", &[]));
    assert_eq!(out, "User root created\n");
    assert_eq!(
        ok(&ep, &["user", "grant-role", "root", "root"]),
        "Role root is granted to user root\n"
    );
    assert_eq!(ok(&ep, &["auth", "enable"]), "Authentication Enabled\n");

    // Without credentials: one line, exit 1.
    let args = ["put", "k", "v"];
    let err = one_line_failure(&args, run(&ep, &args));
    assert!(err.contains("unauthenticated"), "{err}");
    // With them: --user NAME:PASSWORD, --user with --password, the
    // environment, and the password piped in for a bare --user.
    assert!(as_root(&["put", "k", "v"]).starts_with("OK revision"));
    assert_eq!(
        ok(&ep, &["get", "k", "--user", "root", "--password", "rootpw"]),
        "v\n"
    );
    let env = [("KVCTL_USER", "root"), ("KVCTL_PASSWORD", "rootpw")];
    assert_eq!(
        ok_output(&["get"], run_with(&ep, &["get", "k"], "", &env)),
        "v\n"
    );
    // The password is the first line; the value of `put k -` the rest.
    let args = ["--user", "root", "put", "piped", "-"];
    ok_output(&args, run_with(&ep, &args, "rootpw\nline 2\n", &[]));
    assert_eq!(as_root(&["get", "piped"]), "line 2\n");

    // A wrong password: one line naming the user, never the password.
    for args in [
        &["--user", "root:nope-pw", "get", "k"][..],
        &["--user", "root", "--password", "nope-pw", "get", "k"],
    ] {
        let err = one_line_failure(args, run(&ep, args));
        assert!(
            err.contains(
                "authenticating as \"root\": authentication failed: invalid user name or password"
            ),
            "{err}"
        );
        assert!(!err.contains("nope-pw"), "{err}");
    }
    let args = ["--user", "root", "get", "k"];
    let err = one_line_failure(&args, run_with(&ep, &args, "nope-pw\n", &[]));
    assert!(
        err.contains(
            "authenticating as \"root\": authentication failed: invalid user name or password"
        ),
        "{err}"
    );
    // Probes need no credentials, whatever the password.
    assert!(ok(&ep, &["health", "--user", "root:nope-pw"]).contains("ready"));

    let status = as_root(&["auth", "status"]);
    assert!(
        status.starts_with("Authentication Status: true\nAuthRevision: "),
        "{status}"
    );
    let st = ok_json(
        &ep,
        &[&root[..], &["auth", "status", "-o", "json"]].concat(),
    );
    assert_eq!(st["enabled"], true);

    // A role with one prefix, a user holding it.
    assert_eq!(as_root(&["role", "add", "app"]), "Role app created\n");
    assert_eq!(
        as_root(&[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "app/",
            "--prefix"
        ]),
        "Role app updated\n"
    );
    as_root(&[
        "role",
        "grant-permission",
        "app",
        "READ",
        "conf/a",
        "conf/c",
    ]);
    assert_eq!(
        as_root(&["role", "get", "app"]),
        "Role app\nKV Read:\n\t[conf/a, conf/c)\n\tprefix app/\nKV Write:\n\tprefix app/\n"
    );
    let role = ok_json(
        &ep,
        &[&root[..], &["role", "get", "app", "-o", "json"]].concat(),
    );
    assert_eq!(
        role["permissions"].as_array().expect("permissions").len(),
        2
    );
    let out = as_root(&["user", "add", "alice", "--new-user-password", "alicepw"]);
    assert_eq!(out, "User alice created\n");
    as_root(&["user", "grant-role", "alice", "app"]);
    assert_eq!(
        as_root(&["user", "get", "alice"]),
        "User: alice\nRoles: app\n"
    );
    let detail = as_root(&["user", "get", "alice", "--detail"]);
    assert!(
        detail.starts_with("User: alice\nRole app\nKV Read:\n"),
        "{detail}"
    );
    let users = as_root(&["user", "list"]);
    assert!(
        users.lines().any(|l| l == "alice") && users.lines().any(|l| l == "root"),
        "{users}"
    );
    let roles = ok_json(&ep, &[&root[..], &["role", "list", "-o", "json"]].concat());
    assert!(
        roles["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .any(|r| r == "app"),
        "{roles}"
    );

    let alice = |args: &[&str]| run(&ep, &[&["--user", "alice:alicepw"][..], args].concat());
    assert!(alice(&["put", "app/x", "1"]).status.success());
    assert_eq!(ok_output(&["get"], alice(&["get", "app/x"])), "1\n");
    // Outside the grant: permission denied, one line.
    for args in [
        &["put", "other", "1"][..],
        &["get", "k"],
        &["put", "conf/b", "1"],
        &["user", "list"],
    ] {
        let err = one_line_failure(args, alice(args));
        assert!(err.contains("permission_denied"), "{args:?}: {err}");
    }

    // Revoking the permission and the role takes the rights away.
    let out = as_root(&["role", "revoke-permission", "app", "app/", "--prefix"]);
    assert_eq!(out, "Permission of prefix app/ is revoked from role app\n");
    let args = ["put", "app/y", "1"];
    assert!(one_line_failure(&args, alice(&args)).contains("permission_denied"));
    as_root(&[
        "role",
        "grant-permission",
        "app",
        "write",
        "app/",
        "--prefix",
    ]);
    assert!(alice(&["put", "app/y", "1"]).status.success());
    assert_eq!(
        as_root(&["user", "revoke-role", "alice", "app"]),
        "Role app is revoked from user alice\n"
    );
    let args = ["put", "app/z", "1"];
    assert!(one_line_failure(&args, alice(&args)).contains("permission_denied"));

    // A new password, piped in: the old one stops working.
    let args = [&root[..], &["user", "passwd", "alice"]].concat();
    assert_eq!(
        ok_output(&args, run_with(&ep, &args, "alicepw2\n", &[])),
        "Password updated\n"
    );
    let args = ["--user", "alice:alicepw", "get", "app/x"];
    assert!(one_line_failure(&args, run(&ep, &args)).contains("authenticating as \"alice\""));

    assert_eq!(
        as_root(&["user", "delete", "alice"]),
        "User alice deleted\n"
    );
    assert_eq!(as_root(&["role", "delete", "app"]), "Role app deleted\n");
    let args = [&root[..], &["user", "get", "alice"]].concat();
    assert!(one_line_failure(&args, run(&ep, &args)).contains("not_found"));

    // Off again: no credentials needed, and given ones do no harm (the
    // node will not authenticate; kvctl goes on without a token).
    assert_eq!(as_root(&["auth", "disable"]), "Authentication Disabled\n");
    assert_eq!(ok(&ep, &["get", "k"]), "v\n");
    assert_eq!(as_root(&["get", "k"]), "v\n");
}

/// Tokens that expire every second under a running bench: kvctl renews
/// them (the refused requests are retried, none fails) with a handful of
/// authentications, not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_renews_expired_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = crate::common::dev_node(
        dir.path(),
        "ttl",
        Opts::default(),
        &["--auth-token-ttl", "1"],
    )
    .await;
    let c = n.client();
    let ep = n.client_url();
    ok(&ep, &["user", "add", "root", "--new-user-password", "pw"]);
    ok(&ep, &["user", "grant-role", "root", "root"]);
    ok(&ep, &["auth", "enable"]);

    let report = ok_json(
        &ep,
        &[
            "--user",
            "root:pw",
            "-o",
            "json",
            "bench",
            "--clients",
            "4",
            "--duration",
            "4",
            "--keys",
            "20",
        ],
    );
    let ops = report["ops"].as_u64().expect("ops");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(ops > 100, "{report}");
    let metrics = c.metrics().await.expect("metrics");
    let authentications: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("raftkv_http_requests_total{route=\"/v1/auth/authenticate\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    // One to start and one per expiry (4 s, 1 s tokens); a little slack for
    // a renewal racing an expiry.
    assert!(
        (2..=12).contains(&authentications),
        "{authentications} authentications for {ops} operations"
    );
}
