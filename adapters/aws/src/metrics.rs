//! Metrics in CloudWatch Embedded Metric Format: one JSON line on stdout per
//! data point set, which CloudWatch turns into metrics without an API call.
//! The metric names and units are documented in the README.

use convo_domain::ports::Metrics;

pub const NAMESPACE: &str = "convo";

/// Writes EMF lines for the function named by `AWS_LAMBDA_FUNCTION_NAME`.
#[derive(Default)]
pub struct EmfMetrics;

fn function_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into())
}

/// One EMF document with `values` as (name, value, unit).
pub fn emf_line(function: &str, values: &[(&str, f64, &str)], timestamp_ms: i64) -> String {
    let metrics: Vec<serde_json::Value> = values
        .iter()
        .map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit}))
        .collect();
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": metrics,
            }],
        },
        "FunctionName": function,
    });
    for (name, value, _) in values {
        doc[*name] = serde_json::json!(value);
    }
    doc.to_string()
}

fn emit(values: &[(&str, f64, &str)]) {
    if values.iter().all(|(_, v, _)| *v == 0.0) {
        return;
    }
    println!(
        "{}",
        emf_line(&function_name(), values, chrono::Utc::now().timestamp_millis())
    );
}

/// Counts a cold start (called once, from `bootstrap`).
pub fn cold_start() {
    emit(&[("ColdStart", 1.0, "Count")]);
}

impl Metrics for EmfMetrics {
    fn record(&self, values: &[(&str, f64, &str)]) {
        emit(values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_valid_emf() {
        let line = emf_line(
            "append-message",
            &[
                ("MessagesAccepted", 2.0, "Count"),
                ("PersistLatency", 12.5, "Milliseconds"),
            ],
            1,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "convo");
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Metrics"][1]["Unit"], "Milliseconds");
        assert_eq!(v["MessagesAccepted"], 2.0);
        assert_eq!(v["FunctionName"], "append-message");
    }
}
