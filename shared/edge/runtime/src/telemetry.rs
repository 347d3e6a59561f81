//! Logs and metrics the way the AWS ecosystem expects them.
//!
//! - **Logs**: one line per event; JSON objects when the function's `LoggingConfig` says
//!   `LogFormat: JSON` (Lambda sets `AWS_LAMBDA_LOG_FORMAT`), with the event's fields flattened
//!   (`account_id`, `source_id`, `event_id`, …) and the current spans' fields, among them the
//!   runtime's `requestId`. The level comes from `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else
//!   `info`.
//! - **Metrics**: the business counts of `messaging::metrics` are added up during an invocation
//!   and printed after it as one CloudWatch embedded-metric-format line ([`flush`]): CloudWatch
//!   makes metrics of it with no API call and no metric filter. The template's dashboard and
//!   alarms read them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use messaging::metrics::{METRIC_TARGET, NAMESPACE};
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::{filter_fn, EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Counts since the last [`flush`], by metric name.
static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Adds up metric events (target [`METRIC_TARGET`], fields `metric` and `value`).
pub struct MetricsLayer;

#[derive(Default)]
struct MetricVisitor {
    metric: Option<String>,
    value: u64,
}

impl Visit for MetricVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "metric" {
            self.metric = Some(value.to_string());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "value" {
            self.value = value;
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "value" {
            self.value = u64::try_from(value).unwrap_or(0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "metric" {
            self.metric = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for MetricsLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != METRIC_TARGET {
            return;
        }
        let mut visitor = MetricVisitor::default();
        event.record(&mut visitor);
        if let Some(metric) = visitor.metric {
            *COUNTS.lock().unwrap_or_else(|p| p.into_inner()).entry(metric).or_default() +=
                visitor.value;
        }
    }
}

/// The counts since the last call as one embedded-metric-format line (`None` when nothing was
/// counted), and start counting again.
pub fn take_metric_line(at: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let counts = std::mem::take(&mut *COUNTS.lock().unwrap_or_else(|p| p.into_inner()));
    if counts.is_empty() {
        return None;
    }
    let definitions: Vec<serde_json::Value> =
        counts.keys().map(|name| serde_json::json!({ "Name": name, "Unit": "Count" })).collect();
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
                "Metrics": definitions,
            }],
        },
    });
    for (name, value) in counts {
        line[name] = value.into();
    }
    Some(line.to_string())
}

/// Print the invocation's metrics (see the module documentation).
pub fn flush() {
    if let Some(line) = take_metric_line(chrono::Utc::now()) {
        println!("{line}");
    }
}

/// Logs and the metrics layer, once per cold start.
pub fn init() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG"));
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse_lossy(level.unwrap_or_default());
    let not_metrics = filter_fn(|metadata| metadata.target() != METRIC_TARGET);
    let logs = tracing_subscriber::fmt::layer().without_time().with_target(false);
    let logs = if json {
        logs.json().flatten_event(true).with_current_span(false).with_span_list(true).boxed()
    } else {
        logs.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter).with_filter(not_metrics))
        .with(MetricsLayer)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn counted_metrics_become_one_embedded_metric_format_line() {
        let subscriber = tracing_subscriber::registry().with(MetricsLayer);
        tracing::subscriber::with_default(subscriber, || {
            messaging::metrics::count(messaging::metrics::CHARGES, 2);
            messaging::metrics::count(messaging::metrics::CHARGES, 1);
            messaging::metrics::count(messaging::metrics::DECLINES, 1);
            messaging::metrics::count(messaging::metrics::NOTICES_SENT, 0);
        });
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(&take_metric_line(at).expect("a line")).unwrap();
        assert_eq!(line["Charges"], 3);
        assert_eq!(line["Declines"], 1);
        assert!(line.get("NoticesSent").is_none(), "zero counts are not printed");
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "ringledger");
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Charges", "Declines"]);
        assert_eq!(take_metric_line(at), None, "flushing starts over");
    }
}
