//! Prometheus metrics: requests by route and status, their latency, events appended by this
//! process, and how far each projection is behind the head of the log.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    lag: Family<ProjectionLabels, Gauge>,
    appended: Counter,
    appended_seen: Mutex<u64>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("hpki");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let lag = Family::<ProjectionLabels, Gauge>::default();
        let appended = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "projection_lag_events",
            "Events a projection has yet to apply",
            lag.clone(),
        );
        registry.register(
            "events_appended",
            "Events appended to the log by this process",
            appended.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            lag,
            appended,
            appended_seen: Mutex::new(0),
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                route: route.into(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.into(),
            })
            .observe(seconds);
    }

    pub fn set_projection_lag(&self, projection: &str, lag: i64) {
        self.lag
            .get_or_create(&ProjectionLabels {
                projection: projection.into(),
            })
            .set(lag);
    }

    /// The Prometheus text; `appended` is the store's running count of events appended.
    pub fn render(&self, appended: u64) -> String {
        let mut seen = self.appended_seen.lock().unwrap();
        if appended > *seen {
            self.appended.inc_by(appended - *seen);
            *seen = appended;
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
