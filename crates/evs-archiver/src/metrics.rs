//! CloudWatch Embedded Metric Format: one JSON line per invocation that
//! CloudWatch Logs turns into metrics, no API call needed.

use serde_json::{json, Value};

use crate::handler::Summary;

/// The metrics namespace.
pub const NAMESPACE: &str = "evs/archiver";

/// The EMF line for one invocation's summary. `OldestRecordAge` is there
/// only when the batch archived events (a batch of dead letters alone, or an
/// empty one, has no event age; a 0 would pull the metric's minimum down).
pub fn emf_line(summary: &Summary, now_ms: i64) -> Value {
    let mut metrics = vec![
        json!({"Name": "RecordsIn", "Unit": "Count"}),
        json!({"Name": "Archived", "Unit": "Count"}),
        json!({"Name": "DeadLettered", "Unit": "Count"}),
        json!({"Name": "BatchItemFailures", "Unit": "Count"}),
        json!({"Name": "Bytes", "Unit": "Bytes"}),
    ];
    if summary.oldest_record_age_ms.is_some() {
        metrics.push(json!({"Name": "OldestRecordAge", "Unit": "Milliseconds"}));
    }
    let mut line = json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
                "Metrics": metrics
            }]
        },
        "RecordsIn": summary.records_in,
        "Archived": summary.archived,
        "DeadLettered": summary.dead_lettered,
        "BatchItemFailures": summary.batch_item_failures.len(),
        "Bytes": summary.bytes,
        "key": summary.key,
        "deadLetterKey": summary.dead_letter_key,
    });
    if let (Some(age), Value::Object(map)) = (summary.oldest_record_age_ms, &mut line) {
        map.insert("OldestRecordAge".into(), age.into());
    }
    line
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

    fn declared(line: &Value) -> Vec<&str> {
        line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_oldest_record_age_is_declared_only_when_there_is_one() {
        let none = emf_line(&Summary::default(), 5);
        assert!(!declared(&none).contains(&"OldestRecordAge"));
        assert!(none.get("OldestRecordAge").is_none());
        let some = emf_line(
            &Summary {
                oldest_record_age_ms: Some(1234),
                ..Summary::default()
            },
            5,
        );
        assert!(declared(&some).contains(&"OldestRecordAge"));
        assert_eq!(some["OldestRecordAge"], 1234);
    }
}
