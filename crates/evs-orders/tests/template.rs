//! The values of `template.yaml` (the orders example's stack) that
//! `cfn-lint` does not check (`make lint-template` checks the rest): the
//! live function's event source mapping, the reconciler's queue and its
//! dead-letter queue, the alarms, and the roles' least privilege.

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use evs_testkit::template::{load, strings, Value};

fn template() -> Value {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml"))
}

fn assert_makefile_builds(id: &str, binary: &str) {
    let makefile = Path::new(env!("CARGO_MANIFEST_DIR")).join("Makefile");
    evs_testkit::template::assert_makefile_builds(&makefile, id, binary);
}

fn assert_runs_this_binary(f: &Value, id: &str) {
    assert_eq!(f["Metadata"]["BuildMethod"], "makefile");
    assert_eq!(f["Properties"]["CodeUri"], ".");
    assert_makefile_builds(id, env!("CARGO_PKG_NAME"));
    assert_eq!(f["Properties"]["Architectures"][0], "arm64");
    assert_eq!(f["Properties"]["Runtime"], "provided.al2023");
    let vars = &f["Properties"]["Environment"]["Variables"];
    assert_eq!(vars["EVS_READ_MODEL"]["Fn::Sub"], "dynamodb:${OrdersTable}");
    assert_eq!(vars["EVS_EVENTS_TABLE"]["Ref"], "EventsTableName");
}

#[test]
fn the_live_function_reads_the_events_stream_and_hands_failures_to_the_queue() {
    let t = template();
    let f = &t["Resources"]["OrdersFunction"];
    assert_runs_this_binary(f, "OrdersFunction");
    let mapping = &f["Properties"]["Events"]["TableStream"];
    assert_eq!(mapping["Type"], "DynamoDB");
    let p = &mapping["Properties"];
    assert_eq!(p["Stream"]["Ref"], "EventsTableStreamArn");
    assert_eq!(p["StartingPosition"]["Ref"], "StartingPosition");
    assert_eq!(
        t["Parameters"]["StartingPosition"]["Default"],
        "TRIM_HORIZON"
    );
    assert_eq!(
        strings(&p["FunctionResponseTypes"]),
        ["ReportBatchItemFailures"]
    );
    assert_eq!(p["BisectBatchOnFunctionError"], true);
    let batch = p["BatchSize"].as_u64().unwrap();
    assert!((1..=10_000).contains(&batch), "{batch}");
    assert!(p["MaximumRetryAttempts"].as_u64().is_some());
    let age = p["MaximumRecordAgeInSeconds"].as_u64().unwrap();
    assert!(
        age < 24 * 3600,
        "{age}: the reconciler must read the range before the stream trims it"
    );
    assert_eq!(
        p["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0],
        "FailureQueue"
    );
    assert!(p.get("ParallelizationFactor").is_none());
}

#[test]
fn the_reconciler_consumes_the_failure_queue_which_has_a_dead_letter_queue() {
    let t = template();
    let f = &t["Resources"]["ReconcileFunction"];
    assert_runs_this_binary(f, "ReconcileFunction");
    let mapping = &f["Properties"]["Events"]["FailedBatches"];
    assert_eq!(mapping["Type"], "SQS");
    assert_eq!(
        mapping["Properties"]["Queue"]["Fn::GetAtt"][0],
        "FailureQueue"
    );
    assert_eq!(
        strings(&mapping["Properties"]["FunctionResponseTypes"]),
        ["ReportBatchItemFailures"]
    );
    let queue = &t["Resources"]["FailureQueue"]["Properties"];
    let redrive = &queue["RedrivePolicy"];
    assert_eq!(
        redrive["deadLetterTargetArn"]["Fn::GetAtt"][0],
        "FailureDeadLetterQueue"
    );
    assert!(redrive["maxReceiveCount"].as_u64().unwrap() >= 2);
    let timeout = f["Properties"]["Timeout"].as_u64().unwrap();
    assert!(queue["VisibilityTimeout"].as_u64().unwrap() >= timeout);
}

#[test]
fn the_table_and_the_alarms() {
    let t = template();
    let table = &t["Resources"]["OrdersTable"]["Properties"];
    assert_eq!(table["KeySchema"][0]["AttributeName"], "Id");
    assert_eq!(table["AttributeDefinitions"][0]["AttributeType"], "S");
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(table["SSESpecification"]["SSEEnabled"], true);
    let alarm = |id: &str| t["Resources"][id]["Properties"].clone();
    let age = alarm("FailureQueueAgeAlarm");
    assert_eq!(age["MetricName"], "ApproximateAgeOfOldestMessage");
    assert_eq!(
        age["Dimensions"][0]["Value"]["Fn::GetAtt"][0],
        "FailureQueue"
    );
    assert_eq!(age["Threshold"], 300);
    let dlq = alarm("FailureDeadLetterAlarm");
    assert_eq!(dlq["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(
        dlq["Dimensions"][0]["Value"]["Fn::GetAtt"][0],
        "FailureDeadLetterQueue"
    );
    assert_eq!(dlq["Threshold"], 0);
    let parked = alarm("ParkedAlarm");
    assert_eq!(parked["Namespace"], evs_orders::NAMESPACE);
    assert_eq!(parked["MetricName"], "Parked");
    assert_eq!(parked["Threshold"], 0);
    for a in [&age, &dlq, &parked] {
        assert_eq!(a["ComparisonOperator"], "GreaterThanThreshold");
    }
}

fn actions(t: &Value, role: &str) -> Vec<String> {
    let statements = t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
        ["Statement"]
        .as_sequence()
        .unwrap();
    let mut actions = Vec::new();
    for s in statements {
        assert_eq!(s["Effect"], "Allow");
        for resource in s["Resource"].as_sequence().unwrap() {
            assert_ne!(resource.as_str(), Some("*"), "{s:?}");
        }
        actions.extend(strings(&s["Action"]).into_iter().map(str::to_owned));
    }
    actions.sort_unstable();
    actions
}

#[test]
fn the_roles_are_least_privilege() {
    let t = template();
    assert_eq!(
        actions(&t, "OrdersRole"),
        [
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "sqs:SendMessage",
        ]
    );
    assert_eq!(
        actions(&t, "ReconcileRole"),
        [
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
        ]
    );
}
