//! One scenario: its own namespace (created, then deleted with everything in
//! it), a log with timings, waits with generous timeouts that report what was
//! last seen, and diagnostics when it fails.

use std::fmt::Display;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Namespace, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, PostParams};
use kube::{Resource, ResourceExt};

use crate::kv::{Access, Kv};
use crate::kvc;
use crate::operator;

/// Label on every namespace the suite creates (run.sh removes leftovers by it).
pub const NAMESPACE_LABEL: &str = "raftkv.io/e2e";
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(500);

pub struct Scenario {
    /// Short name used in log lines and the namespace name.
    pub tag: &'static str,
    pub client: kube::Client,
    pub namespace: String,
    pub kv: Kv,
    started: Instant,
    timings: Mutex<Vec<(String, Duration)>>,
}

impl Scenario {
    /// Runs `body` in a fresh namespace. On failure (error or panic) prints
    /// what the cluster looks like; always deletes the namespace and waits for
    /// it to be gone, so that the next scenario starts on an idle machine.
    pub async fn run(
        tag: &'static str,
        body: impl AsyncFnOnce(&Scenario) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("no Kubernetes client from KUBECONFIG: {e}"))?;
        let access = Access::from_env()?;
        let namespace = format!("e2e-{tag}-{:05x}", rand::random::<u32>() & 0xfffff);
        let scenario = Scenario {
            tag,
            kv: Kv::new(client.clone(), &namespace, access),
            client,
            namespace,
            started: Instant::now(),
            timings: Mutex::new(Vec::new()),
        };
        scenario.log(format_args!(
            "namespace {}, kvnode access via {access:?}",
            scenario.namespace
        ));
        scenario.create_namespace().await?;

        let outcome = AssertUnwindSafe(body(&scenario)).catch_unwind().await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".to_owned()),
            ),
        };
        if let Some(why) = &failure {
            scenario.log(format_args!("FAILED: {why}"));
            scenario.dump_diagnostics().await;
        }
        let cleanup = if std::env::var("RAFTKV_E2E_KEEP").is_ok_and(|v| v == "1") {
            scenario.log("RAFTKV_E2E_KEEP=1: namespace kept");
            Ok(())
        } else {
            scenario.delete_namespace().await
        };
        scenario.summary(failure.is_none() && cleanup.is_ok());
        match (failure, cleanup) {
            (Some(why), _) => Err(anyhow::anyhow!("scenario {tag} failed: {why}")),
            (None, Err(e)) => Err(e.context(format!("scenario {tag}: cleanup"))),
            (None, Ok(())) => Ok(()),
        }
    }

    pub fn log(&self, message: impl Display) {
        eprintln!(
            "[{} +{:6.1}s] {message}",
            self.tag,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Records a measured duration (printed now, in the summary and in the
    /// report file).
    pub fn record(&self, what: &str, took: Duration) {
        self.log(format_args!("{what} ... {:.1}s", took.as_secs_f64()));
        if let Ok(mut t) = self.timings.lock() {
            t.push((what.to_owned(), took));
        }
    }

    /// Polls `check` until it returns `Ok`; `Err(state)` means "not yet" and
    /// describes what was seen, which the timeout error repeats.
    pub async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl AsyncFnMut() -> Result<T, String>,
    ) -> anyhow::Result<T> {
        self.log(format_args!(
            "waiting for {what} (up to {}s)",
            timeout.as_secs()
        ));
        let t0 = Instant::now();
        let mut last = String::new();
        loop {
            match check().await {
                Ok(value) => {
                    self.record(&format!("waited for {what}"), t0.elapsed());
                    return Ok(value);
                }
                Err(state) => {
                    if state != last && t0.elapsed() > Duration::from_secs(20) {
                        // Long waits show progress, once per change.
                        self.log(format_args!("  still waiting: {state}"));
                    }
                    last = state;
                }
            }
            if t0.elapsed() > timeout {
                anyhow::bail!(
                    "timed out after {:.0}s waiting for {what}; last seen: {last}",
                    t0.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create_namespace(&self) -> anyhow::Result<()> {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(self.namespace.clone());
        ns.metadata.labels = Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into());
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| anyhow::anyhow!("creating namespace {}: {e}", self.namespace))?;
        Ok(())
    }

    async fn delete_namespace(&self) -> anyhow::Result<()> {
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let t0 = Instant::now();
        match namespaces
            .delete(&self.namespace, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => anyhow::bail!("deleting namespace {}: {e}", self.namespace),
        }
        // Deleting the namespace deletes the KvClusters, whose finalizer the
        // operator must remove: a namespace stuck here is a finding too.
        let timeout = Duration::from_secs(180);
        loop {
            match namespaces.get_opt(&self.namespace).await {
                Ok(None) => {
                    self.record("namespace deleted", t0.elapsed());
                    return Ok(());
                }
                Ok(Some(_)) | Err(_) if t0.elapsed() < timeout => {}
                Ok(Some(ns)) => {
                    let left = self.leftovers().await;
                    anyhow::bail!(
                        "namespace {} still exists {}s after its deletion (phase {:?}); left: {left}",
                        self.namespace,
                        timeout.as_secs(),
                        ns.status.and_then(|s| s.phase)
                    );
                }
                Err(e) => anyhow::bail!("reading namespace {}: {e}", self.namespace),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn leftovers(&self) -> String {
        let mut left = Vec::new();
        if let Ok(list) = kvc::api(self).list(&ListParams::default()).await {
            left.extend(list.items.iter().map(|k| {
                format!(
                    "KvCluster {} (finalizers {:?})",
                    k.name_any(),
                    k.finalizers()
                )
            }));
        }
        if let Ok(list) = self.api::<Pod>().list(&ListParams::default()).await {
            left.extend(list.items.iter().map(|p| format!("pod {}", p.name_any())));
        }
        if let Ok(list) = self
            .api::<PersistentVolumeClaim>()
            .list(&ListParams::default())
            .await
        {
            left.extend(list.items.iter().map(|p| format!("pvc {}", p.name_any())));
        }
        left.join(", ")
    }

    fn summary(&self, passed: bool) {
        let total = self.started.elapsed();
        let timings = self.timings.lock().map(|t| t.clone()).unwrap_or_default();
        self.log(format_args!(
            "{} in {:.1}s",
            if passed { "PASSED" } else { "FAILED" },
            total.as_secs_f64()
        ));
        for (what, took) in &timings {
            eprintln!("    {:>7.1}s  {what}", took.as_secs_f64());
        }
        // run.sh collects these lines into its summary.
        if let Ok(path) = std::env::var("RAFTKV_E2E_REPORT") {
            let mut lines = String::new();
            for (what, took) in &timings {
                lines.push_str(&format!(
                    "{}\tstep\t{:.1}\t{what}\n",
                    self.tag,
                    took.as_secs_f64()
                ));
            }
            lines.push_str(&format!(
                "{}\ttotal\t{:.1}\t{}\n",
                self.tag,
                total.as_secs_f64(),
                if passed { "passed" } else { "failed" }
            ));
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(lines.as_bytes()));
            if let Err(e) = written {
                eprintln!("cannot append to RAFTKV_E2E_REPORT {path}: {e}");
            }
        }
    }

    /// What a person would look at with kubectl: the KvClusters' status, the
    /// StatefulSets, pods, PVCs, recent events, the operator's log and the end
    /// of each kvnode's log.
    pub async fn dump_diagnostics(&self) {
        let mut out = format!("---- diagnostics of namespace {}\n", self.namespace);
        match kvc::api(self).list(&ListParams::default()).await {
            Ok(list) => {
                for k in &list.items {
                    out.push_str(&kvc_summary(k));
                }
            }
            Err(e) => out.push_str(&format!("KvClusters: {e}\n")),
        }
        if let Ok(list) = self.api::<StatefulSet>().list(&ListParams::default()).await {
            for s in &list.items {
                out.push_str(&format!(
                    "StatefulSet {}: spec.replicas {:?}, ready {:?}\n",
                    s.name_any(),
                    s.spec.as_ref().and_then(|s| s.replicas),
                    s.status.as_ref().and_then(|s| s.ready_replicas)
                ));
            }
        }
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for p in &pods {
            out.push_str(&format!("{}\n", pod_summary(p)));
        }
        if let Ok(list) = self
            .api::<PersistentVolumeClaim>()
            .list(&ListParams::default())
            .await
        {
            for c in &list.items {
                out.push_str(&format!(
                    "PVC {}: {:?}{}\n",
                    c.name_any(),
                    c.status.as_ref().and_then(|s| s.phase.clone()),
                    if c.metadata.deletion_timestamp.is_some() {
                        " (terminating)"
                    } else {
                        ""
                    }
                ));
            }
        }
        if let Ok(list) = self.api::<Event>().list(&ListParams::default()).await {
            let mut events = list.items;
            events.sort_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
            });
            out.push_str("events (oldest first, last 40):\n");
            for e in events.iter().rev().take(40).rev() {
                out.push_str(&format!(
                    "  {} {} {}/{}: {}\n",
                    e.type_.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    e.involved_object.kind.as_deref().unwrap_or("?"),
                    e.involved_object.name.as_deref().unwrap_or("?"),
                    e.message.as_deref().unwrap_or("").trim()
                ));
            }
        }
        out.push_str("operator log (last 60 lines):\n");
        out.push_str(&operator::logs(&self.client, 60).await);
        for p in pods.iter().filter(|p| {
            p.labels().get("app.kubernetes.io/name").map(String::as_str) == Some("raftkv")
        }) {
            let params = LogParams {
                tail_lines: Some(15),
                ..LogParams::default()
            };
            match self.api::<Pod>().logs(&p.name_any(), &params).await {
                Ok(log) => out.push_str(&format!(
                    "log of {} (last 15 lines):\n{log}\n",
                    p.name_any()
                )),
                Err(e) => out.push_str(&format!("log of {}: {e}\n", p.name_any())),
            }
        }
        out.push_str("---- end of diagnostics\n");
        eprint!("{out}");
    }
}

fn kvc_summary(k: &DynamicObject) -> String {
    let status = k
        .data
        .get("status")
        .map(|s| serde_json::to_string_pretty(s).unwrap_or_default())
        .unwrap_or_else(|| "(no status)".into());
    format!(
        "KvCluster {} (generation {:?}, spec.replicas {}):\n{status}\n",
        k.name_any(),
        k.metadata.generation,
        k.data["spec"]["replicas"]
    )
}

pub fn pod_summary(p: &Pod) -> String {
    let status = p.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let restarts: i32 = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    format!(
        "pod {}: {} ready={ready} restarts={restarts} ip={}{}",
        p.name_any(),
        status.and_then(|s| s.phase.as_deref()).unwrap_or("?"),
        status.and_then(|s| s.pod_ip.as_deref()).unwrap_or("-"),
        if p.metadata.deletion_timestamp.is_some() {
            " (terminating)"
        } else {
            ""
        }
    )
}
