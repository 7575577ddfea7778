//! Prometheus metrics of the reconciler and the small HTTP server that
//! exposes them with a liveness endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::info;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: String,
    pub outcome: String,
}

pub struct Metrics {
    pub reconciles: Counter,
    pub failures: Family<ReasonLabel, Counter>,
    pub duration: Histogram,
    pub steps: Family<StepLabel, Counter>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Counter::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        // 10 ms .. ~40 s: a reconcile waits on node calls with timeouts.
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 13));
        let steps = Family::<StepLabel, Counter>::default();
        let mut registry = Registry::with_prefix("raftkv_operator");
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "membership_steps",
            "Membership steps sent to nodes, by step and outcome",
            steps.clone(),
        );
        Metrics {
            reconciles,
            failures,
            duration,
            steps,
            registry,
        }
    }
}

impl Metrics {
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn step(&self, step: &str, ok: bool) {
        self.steps
            .get_or_create(&StepLabel {
                step: step.to_owned(),
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    match metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves /metrics and /healthz until the process exits.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "serving /metrics and /healthz");
    axum::serve(listener, router(metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn metrics_are_named_and_labelled() {
        let metrics = Metrics::default();
        metrics.reconciles.inc();
        metrics.failure("observe");
        metrics.step("AddLearner", true);
        metrics.duration.observe(0.2);
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains("raftkv_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(text.contains("raftkv_operator_reconcile_failures_total{reason=\"observe\"} 1"));
        assert!(text.contains(
            "raftkv_operator_membership_steps_total{step=\"AddLearner\",outcome=\"ok\"} 1"
        ));
        assert!(text.contains("raftkv_operator_reconcile_duration_seconds_count 1"));
    }

    /// The docs/operator.md metrics table: series name -> type.
    fn documented() -> BTreeMap<String, String> {
        include_str!("../../docs/operator.md")
            .lines()
            .filter_map(|l| l.strip_prefix("| `raftkv_operator_"))
            .map(|l| {
                let mut cols = l.split('|').map(str::trim);
                let name = cols.next().unwrap_or_default().trim_end_matches('`');
                let kind = cols.next().unwrap_or_default();
                (format!("raftkv_operator_{name}"), kind.to_owned())
            })
            .collect()
    }

    #[test]
    fn the_documented_series_are_the_served_ones() {
        let text = Metrics::default().encode().expect("encodes");
        // By the name the samples carry: counters end in `_total`.
        let served: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| match kind {
                "counter" => (format!("{name}_total"), kind.to_owned()),
                _ => (name.to_owned(), kind.to_owned()),
            })
            .collect();
        assert_eq!(
            served,
            documented(),
            "served (left), docs/operator.md (right)"
        );
    }
}
