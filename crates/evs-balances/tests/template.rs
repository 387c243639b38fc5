//! The values of `template.yaml` (the balances stack) that `cfn-lint` does
//! not check (`make lint-template` checks the rest): the event source
//! mapping that keeps the read model exact, the reconciler's queue and its
//! dead-letter queue, the alarms, and the roles' least privilege.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
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

#[test]
fn the_function_runs_this_crates_binary_on_the_events_stream() {
    let t = template();
    let f = &t["Resources"]["BalancesFunction"];
    // `sam build` runs this directory's `make build-BalancesFunction`, which builds this crate's binary
    assert_eq!(f["Metadata"]["BuildMethod"], "makefile");
    assert_eq!(f["Properties"]["CodeUri"], ".");
    assert_makefile_builds("BalancesFunction", env!("CARGO_PKG_NAME"));
    assert_eq!(f["Properties"]["Architectures"][0], "arm64");
    let vars = &f["Properties"]["Environment"]["Variables"];
    assert_eq!(vars["EVS_BALANCES_TABLE"]["Ref"], "BalancesTable");
    assert_eq!(vars["EVS_EVENTS_TABLE"]["Ref"], "EventsTableName");
    let mapping = &f["Properties"]["Events"]["TableStream"];
    assert_eq!(mapping["Type"], "DynamoDB");
    let p = &mapping["Properties"];
    assert_eq!(p["Stream"]["Ref"], "EventsTableStreamArn");
    // the handoff rule of docs/design.md §9 assumes TRIM_HORIZON
    assert_eq!(p["StartingPosition"], "TRIM_HORIZON");
    // per-stream retries from the first record not applied
    assert_eq!(
        strings(&p["FunctionResponseTypes"]),
        ["ReportBatchItemFailures"]
    );
    assert_eq!(p["BisectBatchOnFunctionError"], true);
    // Lambda's limits for a DynamoDB stream mapping
    let batch = p["BatchSize"].as_u64().unwrap();
    assert!((1..=10_000).contains(&batch), "{batch}");
    let age = p["MaximumRecordAgeInSeconds"].as_u64().unwrap();
    assert!(age < 24 * 3600, "{age}: under the stream's retention");
    assert_eq!(
        p["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0],
        "BalancesFailureQueue"
    );
    // one batch per shard at a time (no ParallelizationFactor above 1 without a reason)
    assert!(p.get("ParallelizationFactor").is_none());
}

#[test]
fn the_reconciler_consumes_the_failure_queue_which_has_a_dead_letter_queue() {
    let t = template();
    let f = &t["Resources"]["ReconcileFunction"];
    // the same binary: an invocation of SQS messages is the reconciler's
    assert_eq!(f["Metadata"]["BuildMethod"], "makefile");
    assert_eq!(f["Properties"]["CodeUri"], ".");
    assert_makefile_builds("ReconcileFunction", env!("CARGO_PKG_NAME"));
    assert_eq!(f["Properties"]["Architectures"][0], "arm64");
    assert_eq!(f["Properties"]["Runtime"], "provided.al2023");
    let vars = &f["Properties"]["Environment"]["Variables"];
    assert_eq!(vars["EVS_BALANCES_TABLE"]["Ref"], "BalancesTable");
    assert_eq!(vars["EVS_EVENTS_TABLE"]["Ref"], "EventsTableName");
    let mapping = &f["Properties"]["Events"]["FailedBatches"];
    assert_eq!(mapping["Type"], "SQS");
    assert_eq!(
        mapping["Properties"]["Queue"]["Fn::GetAtt"][0],
        "BalancesFailureQueue"
    );
    assert_eq!(
        strings(&mapping["Properties"]["FunctionResponseTypes"]),
        ["ReportBatchItemFailures"]
    );
    let queue = &t["Resources"]["BalancesFailureQueue"]["Properties"];
    let redrive = &queue["RedrivePolicy"];
    assert_eq!(
        redrive["deadLetterTargetArn"]["Fn::GetAtt"][0],
        "BalancesFailureDeadLetterQueue"
    );
    assert!(redrive["maxReceiveCount"].as_u64().unwrap() >= 2);
    let timeout = f["Properties"]["Timeout"].as_u64().unwrap();
    assert!(queue["VisibilityTimeout"].as_u64().unwrap() >= timeout);
}

#[test]
fn the_alarms() {
    let t = template();
    let alarm = |id: &str| t["Resources"][id]["Properties"].clone();
    let age = alarm("FailureQueueAgeAlarm");
    assert_eq!(age["MetricName"], "ApproximateAgeOfOldestMessage");
    assert_eq!(
        age["Dimensions"][0]["Value"]["Fn::GetAtt"][0],
        "BalancesFailureQueue"
    );
    let dlq = alarm("FailureDeadLetterAlarm");
    assert_eq!(dlq["Namespace"], "AWS/SQS");
    assert_eq!(dlq["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(
        dlq["Dimensions"][0]["Value"]["Fn::GetAtt"][0],
        "BalancesFailureDeadLetterQueue"
    );
    assert_eq!(dlq["Threshold"], 0);
    let parked = alarm("ParkedAlarm");
    assert_eq!(parked["Namespace"], evs_balances::NAMESPACE);
    assert_eq!(parked["MetricName"], "Parked");
    for a in [&age, &dlq, &parked] {
        assert_eq!(a["ComparisonOperator"], "GreaterThanThreshold");
    }
}

/// The actions `role` grants, sorted; none on `*`.
fn actions<'t>(t: &'t Value, role: &str) -> Vec<&'t str> {
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
        actions.extend(strings(&s["Action"]));
    }
    actions.sort_unstable();
    actions
}

#[test]
fn the_roles_are_least_privilege() {
    let t = template();
    // The per-stream store loads with BatchGetItem (GetItem does not grant
    // it) and commits one TransactWriteItems, which needs the action of
    // each of its writes: PutItem for a row with its ledger, UpdateItem for
    // a ledger alone (an account parked on its first pending event).
    assert_eq!(
        actions(&t, "BalancesRole"),
        [
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
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
            "dynamodb:UpdateItem",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
        ]
    );
    let table = &t["Resources"]["BalancesTable"]["Properties"];
    assert_eq!(table["KeySchema"][0]["AttributeName"], "StreamId");
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
}
