//! Commands about the nodes rather than the data: health, version, bench.

use std::time::Duration;

use anyhow::bail;
use kvclient::VersionResponse;

use super::Ctx;
use crate::bench::{self, BenchArgs};
use crate::table::Table;

pub async fn health(ctx: &Ctx) -> anyhow::Result<()> {
    let mut healthy = 0;
    let mut t = Table::new(&["ENDPOINT", "HEALTH", "READY"]);
    let mut out = Vec::new();
    for ep in ctx.endpoints() {
        let one = ctx
            .client
            .for_endpoints(&[ep])?
            .single_shot()
            .with_timeout(Duration::from_secs(2))?;
        let h = one.health().await;
        let r = one.ready().await;
        let ready = match &r {
            Ok(Ok(())) => "ready".to_string(),
            Ok(Err(reason)) => format!("not ready: {reason}"),
            Err(e) => format!("error: {e}"),
        };
        if h.is_ok() {
            healthy += 1;
        }
        out.push(serde_json::json!({
            "endpoint": ep, "healthy": h.is_ok(), "ready": matches!(r, Ok(Ok(()))),
            "detail": ready,
        }));
        t.row(vec![
            ep.clone(),
            if h.is_ok() {
                "ok".into()
            } else {
                "down".into()
            },
            ready,
        ]);
    }
    ctx.out.emit(&out, || t.render())?;
    let n = ctx.endpoints().len();
    if healthy < n {
        bail!("{} of {n} endpoints unhealthy", n - healthy);
    }
    Ok(())
}

/// This binary's version (the kvclient crate's).
const KVCTL_VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn version(ctx: &Ctx) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for ep in ctx.endpoints() {
        let one = ctx.client.for_endpoints(&[ep])?.single_shot();
        rows.push((ep.clone(), one.version().await.map_err(|e| e.to_string())));
    }
    ctx.out.emit(&version_json(&rows), || version_text(&rows))?;
    // As `status`: the client's version is printed either way, but a run
    // where no node answered is a failure.
    if rows.iter().all(|(_, r)| r.is_err()) {
        bail!("no endpoint answered");
    }
    Ok(())
}

type VersionRow = (String, Result<VersionResponse, String>);

fn version_json(rows: &[VersionRow]) -> serde_json::Value {
    let servers: Vec<_> = rows
        .iter()
        .map(|(ep, r)| match r {
            Ok(v) => serde_json::json!({ "endpoint": ep, "version": v.version, "api": v.api }),
            Err(e) => serde_json::json!({ "endpoint": ep, "error": e }),
        })
        .collect();
    serde_json::json!({ "kvctl": KVCTL_VERSION, "servers": servers })
}

fn version_text(rows: &[VersionRow]) -> String {
    let mut t = Table::new(&["ENDPOINT", "VERSION", "API"]);
    for (ep, r) in rows {
        match r {
            Ok(v) => t.row(vec![ep.clone(), v.version.clone(), v.api.clone()]),
            Err(e) => t.row(vec![ep.clone(), format!("error: {e}")]),
        }
    }
    format!("kvctl {KVCTL_VERSION}\n{}", t.render())
}

pub async fn bench(ctx: &Ctx, args: BenchArgs) -> anyhow::Result<()> {
    bench::run(&ctx.client, args, ctx.out.is_json()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<VersionRow> {
        vec![
            (
                "http://a:7379".into(),
                Ok(VersionResponse {
                    version: "0.1.0".into(),
                    api: "v1".into(),
                }),
            ),
            ("http://b:7379".into(), Err("http://b:7379: refused".into())),
        ]
    }

    #[test]
    fn version_text_names_kvctl_then_each_endpoint() {
        let text = version_text(&rows());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], format!("kvctl {KVCTL_VERSION}"));
        assert!(lines[1].starts_with("ENDPOINT       VERSION"), "{text}");
        assert!(lines[2].starts_with("http://a:7379  0.1.0 "), "{text}");
        assert!(lines[2].ends_with(" v1"), "{text}");
        assert_eq!(lines[3], "http://b:7379  error: http://b:7379: refused");
    }

    #[test]
    fn version_json_has_a_row_per_endpoint() {
        let v = version_json(&rows());
        assert_eq!(v["kvctl"], KVCTL_VERSION);
        assert_eq!(v["servers"][0]["version"], "0.1.0");
        assert_eq!(v["servers"][0]["api"], "v1");
        assert_eq!(v["servers"][1]["endpoint"], "http://b:7379");
        assert!(v["servers"][1]["error"].is_string());
    }
}
