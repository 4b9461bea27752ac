//! `/metrics`: the Prometheus text exposition of everything `telemetry`
//! names (metrics + metrics-exporter-prometheus). The recorder is installed
//! once per process; lag gauges are sampled from the engine at each scrape.
//! Served without a key, on the service's address or on its own
//! (`--metrics-bind`).

use std::sync::OnceLock;

use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::Engine;
use crate::store::EventStore;
use crate::telemetry;

/// The route of this file in the OpenAPI document (openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(metrics))]
pub(super) struct MetricsApi;

/// The process's recorder, installed on first use.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(telemetry::SECONDS_BUCKETS)
            .expect("bucket list is not empty")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(telemetry::COMMIT_GROUP_REQUESTS.into()),
                telemetry::GROUP_BUCKETS,
            )
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed already; /metrics will be empty");
        } else {
            telemetry::register();
        }
        handle
    })
}

/// Drains histogram samples into buckets; run every few seconds so memory
/// stays bounded between scrapes.
pub async fn upkeep() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        recorder().run_upkeep();
    }
}

/// Prometheus text exposition of the service's metrics (docs/security.md lists them).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics<S: EventStore>(
    engine: web::Data<Engine<S>>,
    intake: Option<web::Data<super::rejected::Intake>>,
) -> HttpResponse {
    if let Some(intake) = intake {
        use crate::store::DeadLetterStore;
        match intake.letters.stats().await {
            Ok(stats) => telemetry::sample_dead_letters(stats.held),
            Err(e) => tracing::warn!(cause = %e, "cannot count the dead letters"),
        }
    }
    // While the state is being rebuilt there is no state to sample: the
    // lags read 0 and `/readyz` says why.
    if let Some((lag, current, events)) = engine.live_lag() {
        telemetry::sample_lags(lag, current, events);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(recorder().render())
}
