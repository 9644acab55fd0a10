//! `GET /metrics`: what an operator graphs and alerts on, in Prometheus text format
//! (OpenMetrics), through the Prometheus project's own client crate.
//!
//! Every figure is updated where it happens (routes, batch worker, budgets, reload) and read
//! only when scraped, so a scrape costs the server nothing between scrapes. Route labels come
//! from a fixed list (unknown paths count as `other`), so a client cannot grow the label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// The `route` label of a request (a fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// `/`, `/api/predict`, ... or `other`.
    pub route: String,
}

/// The labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// As [`RouteLabel::route`].
    pub route: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// The served model's identity, as the labels of a gauge that is always 1.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// SHA-256 of the model file, in hex (as `sha256sum` prints it).
    pub sha256: String,
    /// The class names, comma-separated, in the model's order.
    pub classes: String,
}

/// Histogram built for each route on first use: 1 ms to about 16 s.
type LatencyFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every figure the server reports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from a request's headers to its answer, by route.
    pub latency: LatencyFamily,
    /// Images per pass of the network.
    pub batch_size: Histogram,
    /// Images decoded and waiting for the model.
    pub queue_depth: Gauge,
    /// Images the model has classified.
    pub images_classified: Counter,
    /// Model files read again and put in service.
    pub reloads: Counter,
    /// Reloads refused (the old model kept serving).
    pub failed_reloads: Counter,
    /// Decodes that had to wait for the decode budget.
    pub decode_budget_waits: Counter,
    /// Requests answered 503 because a budget (decode or body memory) stayed full.
    pub budget_refusals: Counter,
    /// Connections open now.
    pub connections: Gauge,
    /// Connections closed at once because `--max-connections` were open.
    pub connections_refused: Counter,
    /// The model in service (one series, value 1).
    pub model: Family<ModelLabels, Gauge>,
}

impl Metrics {
    /// A fresh set, all zero, registered under `deepcat_`.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("deepcat"),
            requests: Family::default(),
            latency: LatencyFamily::new_with_constructor(latency_histogram),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
            queue_depth: Gauge::default(),
            images_classified: Counter::default(),
            reloads: Counter::default(),
            failed_reloads: Counter::default(),
            decode_budget_waits: Counter::default(),
            budget_refusals: Counter::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            model: Family::default(),
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register("requests", "Requests answered", self.requests.clone());
        r.register_with_unit(
            "request_duration",
            "Time from a request's headers to its answer",
            Unit::Seconds,
            self.latency.clone(),
        );
        r.register(
            "batch_size",
            "Images per pass of the network",
            self.batch_size.clone(),
        );
        r.register(
            "queue_depth",
            "Decoded images waiting for the model",
            self.queue_depth.clone(),
        );
        r.register(
            "images_classified",
            "Images the model has classified",
            self.images_classified.clone(),
        );
        r.register(
            "model_reloads",
            "Model files read again and put in service",
            self.reloads.clone(),
        );
        r.register(
            "model_reload_failures",
            "Reloads refused; the previous model kept serving",
            self.failed_reloads.clone(),
        );
        r.register(
            "decode_budget_waits",
            "Decodes that waited for the decode budget (pixels)",
            self.decode_budget_waits.clone(),
        );
        r.register(
            "budget_refusals",
            "Requests answered 503 because the decode or body budget stayed full",
            self.budget_refusals.clone(),
        );
        r.register("connections", "Connections open", self.connections.clone());
        r.register(
            "connections_refused",
            "Connections closed at once because --max-connections were open",
            self.connections_refused.clone(),
        );
        r.register(
            "model",
            "The model in service: SHA-256 of its file and its classes (value 1)",
            self.model.clone(),
        );
    }

    /// Counts one answered request.
    pub fn observe_request(&self, route: &str, status: u16, took: Duration) {
        let route = route.to_string();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabel { route })
            .observe(took.as_secs_f64());
    }

    /// Names the model now in service (replacing the previous one).
    pub fn set_model(&self, sha256: &str, classes: &[String]) {
        self.model.clear();
        self.model
            .get_or_create(&ModelLabels {
                sha256: sha256.to_string(),
                classes: classes.join(","),
            })
            .set(1);
    }

    /// The text a scrape returns.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
