//! kvctl against a real node, `kvnode --dev`, and the metrics endpoint.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{NodeProc, Opts, wait_for};

/// kvctl is built next to kvnode by `cargo build`/`nextest run --workspace`.
fn kvctl() -> Command {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kvnode")).with_file_name("kvctl");
    assert!(
        bin.exists(),
        "{} missing: build the workspace (cargo build -p kvclient)",
        bin.display()
    );
    Command::new(bin)
}

fn run(endpoint: &str, args: &[&str]) -> Output {
    kvctl()
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kvctl")
}

fn ok(endpoint: &str, args: &[&str]) -> String {
    let out = run(endpoint, args);
    assert!(
        out.status.success(),
        "kvctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_node_and_kvctl_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = NodeProc::new(dir.path(), "dev", Opts::default());
    // --dev: a single node that initializes itself.
    n.start_with(None, &["--dev"]).await;
    let c = n.client();
    wait_for(Duration::from_secs(20), "dev node ready", || async {
        matches!(c.ready().await, Ok(Ok(()))).then_some(())
    })
    .await;
    let ep = n.client_url();

    assert!(ok(&ep, &["put", "greeting", "hello"]).starts_with("OK revision"));
    assert_eq!(ok(&ep, &["get", "greeting"]), "hello\n");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&ep, &["-o", "json", "get", "greeting"])).expect("json");
    assert_eq!(json["value"], "hello");
    assert!(json["revision"].as_u64().expect("revision") > 0);

    let ls = ok(&ep, &["ls", "--prefix", "gr"]);
    assert!(
        ls.lines().nth(1).expect("row").starts_with("greeting"),
        "{ls}"
    );
    let members: serde_json::Value =
        serde_json::from_str(&ok(&ep, &["-o", "json", "members"])).expect("json");
    assert_eq!(members["voters"].as_array().expect("voters").len(), 1);
    assert!(ok(&ep, &["status"]).contains("leader"));
    assert!(ok(&ep, &["health"]).contains("ready"));
    assert!(ok(&ep, &["del", "greeting"]).starts_with("deleted"));

    // Failures: non-zero exit and exactly one line on stderr.
    let out = run(&ep, &["get", "greeting"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not found"), "{err}");
    let out = run("http://127.0.0.1:1", &["get", "x"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let out = run("not a url", &["get", "x"]);
    assert!(!out.status.success());

    // A short bench prints figures and JSON.
    let report: serde_json::Value = serde_json::from_str(&ok(
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
    ))
    .expect("bench json");
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
    assert!(metrics.contains("raftkv_http_request_duration_seconds_bucket"));
}
