//! The operator as installed by the Helm chart (tests/e2e/run.sh): its pods,
//! its log and its leader-election Lease. Where to find them:
//! `RAFTKV_E2E_OPERATOR_NAMESPACE` (default `raftkv-system`),
//! `RAFTKV_E2E_OPERATOR_SELECTOR` (default the chart's selector labels for a
//! release named `raftkv-operator`) and `RAFTKV_E2E_OPERATOR_LEASE` (default
//! `raftkv-operator`, the chart's lease name for that release).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, LogParams};

pub fn namespace() -> String {
    std::env::var("RAFTKV_E2E_OPERATOR_NAMESPACE").unwrap_or_else(|_| "raftkv-system".into())
}

pub fn selector() -> String {
    std::env::var("RAFTKV_E2E_OPERATOR_SELECTOR").unwrap_or_else(|_| {
        "app.kubernetes.io/name=raftkv-operator,app.kubernetes.io/instance=raftkv-operator".into()
    })
}

pub fn lease_name() -> String {
    std::env::var("RAFTKV_E2E_OPERATOR_LEASE").unwrap_or_else(|_| "raftkv-operator".into())
}

pub fn pods_api(client: &kube::Client) -> Api<Pod> {
    Api::namespaced(client.clone(), &namespace())
}

pub async fn pods(client: &kube::Client) -> anyhow::Result<Vec<Pod>> {
    let list = pods_api(client)
        .list(&ListParams::default().labels(&selector()))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "listing operator pods ({}) in {}: {e}",
                selector(),
                namespace()
            )
        })?;
    Ok(list.items)
}

/// The holder of the operator's leader-election Lease.
pub async fn lease_holder(client: &kube::Client) -> anyhow::Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(client.clone(), &namespace())
        .get_opt(&lease_name())
        .await
        .map_err(|e| anyhow::anyhow!("reading Lease {}: {e}", lease_name()))?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

/// The last `tail` lines of every operator pod's log (for diagnostics).
pub async fn logs(client: &kube::Client, tail: i64) -> String {
    let pods = match pods(client).await {
        Ok(p) => p,
        Err(e) => return format!("{e}\n"),
    };
    let mut out = String::new();
    for p in pods {
        let params = LogParams {
            tail_lines: Some(tail),
            ..LogParams::default()
        };
        match pods_api(client).logs(&p.name_any(), &params).await {
            Ok(log) => out.push_str(&format!("== {}\n{log}\n", p.name_any())),
            Err(e) => out.push_str(&format!("== {}: {e}\n", p.name_any())),
        }
    }
    out
}
