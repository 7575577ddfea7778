//! Commands about the nodes rather than the data: health, bench.

use std::time::Duration;

use anyhow::bail;
use kvclient::Client;

use super::Ctx;
use crate::bench::{self, BenchArgs};
use crate::table::Table;

pub async fn health(ctx: &Ctx) -> anyhow::Result<()> {
    let mut healthy = 0;
    let mut t = Table::new(&["ENDPOINT", "HEALTH", "READY"]);
    let mut out = Vec::new();
    for ep in ctx.endpoints() {
        let one = Client::new(&[ep])?
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

pub async fn bench(ctx: &Ctx, args: BenchArgs) -> anyhow::Result<()> {
    bench::run(ctx.endpoints(), args, ctx.out.is_json()).await
}
