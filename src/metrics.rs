//! CloudWatch Embedded Metric Format: one JSON line per invocation that
//! CloudWatch Logs turns into metrics, no API call needed.

use serde_json::{json, Value};

use crate::handler::Summary;

/// The metrics namespace.
pub const NAMESPACE: &str = "evs/archiver";

/// The EMF line for one invocation's summary.
pub fn emf_line(summary: &Summary, now_ms: i64) -> Value {
    json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [
                    {"Name": "RecordsIn", "Unit": "Count"},
                    {"Name": "Archived", "Unit": "Count"},
                    {"Name": "DeadLettered", "Unit": "Count"},
                    {"Name": "BatchItemFailures", "Unit": "Count"},
                    {"Name": "Bytes", "Unit": "Bytes"},
                    {"Name": "OldestRecordAge", "Unit": "Milliseconds"}
                ]
            }]
        },
        "RecordsIn": summary.records_in,
        "Archived": summary.archived,
        "DeadLettered": summary.dead_lettered,
        "BatchItemFailures": summary.batch_item_failures.len(),
        "Bytes": summary.bytes,
        "OldestRecordAge": summary.oldest_record_age_ms.unwrap_or(0),
        "key": summary.key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_metric_has_a_value() {
        let line = emf_line(
            &Summary {
                records_in: 3,
                archived: 2,
                dead_lettered: 1,
                ..Summary::default()
            },
            5,
        );
        let metrics = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name}");
        }
        assert_eq!(line["RecordsIn"], 3);
        assert_eq!(line["_aws"]["Timestamp"], 5);
    }
}
