//! Registering metrics and rendering them in Prometheus' text format. Each service keeps its
//! own names, labels and latency buckets in its `metrics.rs`; this is how they are made.

use std::ops::Deref;
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A registry plus the latency buckets its histograms use unless told otherwise. Every
/// constructor registers what it makes; a name registered twice is a bug and panics.
#[derive(Clone)]
pub struct Registrar {
    registry: Registry,
    buckets: &'static [f64],
}

impl Registrar {
    pub fn new(buckets: &'static [f64]) -> Registrar {
        Registrar {
            registry: Registry::new(),
            buckets,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers `c` and hands it back.
    pub fn register<T: Collector + Clone + 'static>(&self, c: T) -> T {
        self.registry
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid counter"))
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid gauge"))
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"))
    }

    /// A histogram on the registrar's latency buckets.
    pub fn histogram(&self, name: &str, help: &str) -> Histogram {
        self.histogram_with(name, help, self.buckets)
    }

    /// A histogram on buckets of its own (sizes, counts: not latencies).
    pub fn histogram_with(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(Histogram::with_opts(opts).expect("valid histogram"))
    }

    /// A labelled histogram on the registrar's latency buckets.
    pub fn histogram_vec(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(self.buckets.to_vec());
        self.register(HistogramVec::new(opts, labels).expect("valid histogram"))
    }

    /// `{prefix}_build_info{version="…"} 1`: which build runs, for dashboards and alerts.
    pub fn build_info(&self, prefix: &str, version: &str) -> IntGaugeVec {
        let info = self.gauge_vec(
            &format!("{prefix}_build_info"),
            "Always 1; the labels say which build runs",
            &["version"],
        );
        info.with_label_values(&[version]).set(1);
        info
    }

    /// The text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// A service's metrics (`T`, made by its `Default`), shared by everything that records them:
/// cloning is one reference count. `pub type Metrics = Shared<Inner>` gives `Metrics::new()`.
pub struct Shared<T>(Arc<T>);

impl<T: Default> Shared<T> {
    pub fn new() -> Shared<T> {
        Shared(Arc::new(T::default()))
    }
}

impl<T: Default> Default for Shared<T> {
    fn default() -> Self {
        Shared::new()
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const BUCKETS: &[f64] = &[0.1, 1.0];

    #[test]
    fn renders_what_was_registered() {
        let r = Registrar::new(BUCKETS);
        let c = r.counter_vec("t_requests_total", "requests", &["route"]);
        c.with_label_values(&["/a"]).inc_by(3);
        r.gauge("t_open", "open").set(7);
        r.counter("t_bad_total", "bad").inc();
        r.histogram_vec("t_seconds", "latency", &["route"])
            .with_label_values(&["/a"])
            .observe(0.5);
        let text = r.render();
        assert!(text.contains("t_requests_total{route=\"/a\"} 3"), "{text}");
        assert!(text.contains("t_open 7"), "{text}");
        assert!(text.contains("t_bad_total 1"), "{text}");
        assert!(
            text.contains("t_seconds_bucket{route=\"/a\",le=\"0.1\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{route=\"/a\",le=\"1\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn histograms_may_have_buckets_of_their_own() {
        let r = Registrar::new(BUCKETS);
        r.histogram_with("t_entries", "entries", &[4.0])
            .observe(2.0);
        r.histogram("t_latency_seconds", "latency").observe(0.05);
        let text = r.render();
        assert!(text.contains("t_entries_bucket{le=\"4\"} 1"), "{text}");
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"0.1\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn build_info_is_one_with_the_version() {
        let r = Registrar::new(BUCKETS);
        r.build_info("svc", "1.2.3");
        assert!(r.render().contains("svc_build_info{version=\"1.2.3\"} 1"));
    }

    #[test]
    fn shared_metrics_are_one_set() {
        #[derive(Default)]
        struct Inner {
            hits: std::sync::atomic::AtomicU64,
        }
        let a = Shared::<Inner>::new();
        let b = a.clone();
        b.hits.fetch_add(2, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    #[should_panic(expected = "metric names are unique")]
    fn a_name_registered_twice_panics() {
        let r = Registrar::new(BUCKETS);
        r.gauge("t_twice", "once");
        r.gauge("t_twice", "twice");
    }
}
