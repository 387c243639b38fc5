//! The deployment's values that `cfn-lint` does not check (`make lint-template` checks the rest):
//! the event source mapping of the archiver, the IAM scope of its role, the bucket's and the table's
//! protections; and the sample Lambda events in `events/`.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

const ARCHIVER_BINARY: &str = "evs-archiver";
const DEAD_LETTER_PREFIX: &str = "dead-letter/";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn template() -> Value {
    let path = root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn resources(t: &Value) -> &serde_yaml_ng::Mapping {
    t["Resources"].as_mapping().expect("Resources is a mapping")
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["Resources"]
        .get(name)
        .unwrap_or_else(|| panic!("no resource {name}"))
}

/// The logical ids of the resources of one type.
fn of_type<'a>(t: &'a Value, ty: &str) -> Vec<&'a str> {
    resources(t)
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(ty))
        .map(|(k, _)| k.as_str().expect("logical ids are strings"))
        .collect()
}

/// The one resource of a type.
fn only<'a>(t: &'a Value, ty: &str) -> (&'a str, &'a Value) {
    let ids = of_type(t, ty);
    assert_eq!(ids.len(), 1, "expected exactly one {ty}, found {ids:?}");
    (ids[0], resource(t, ids[0]))
}

/// The logical id that `{Ref: X}` or `{Fn::GetAtt: [X, attr]}` points at, checking the attribute.
fn target<'a>(v: &'a Value, attr: Option<&str>) -> &'a str {
    match attr {
        None => v["Ref"]
            .as_str()
            .unwrap_or_else(|| panic!("not a Ref: {v:?}")),
        Some(a) => {
            let get = v["Fn::GetAtt"]
                .as_sequence()
                .unwrap_or_else(|| panic!("not a long-form Fn::GetAtt: {v:?}"));
            assert_eq!(get.len(), 2, "{v:?}");
            assert_eq!(get[1].as_str(), Some(a), "{v:?}");
            get[0].as_str().expect("logical id")
        }
    }
}

/// A value that is a string or a list of strings, as IAM's Action and Resource are.
fn list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Sequence(s) => s.iter().collect(),
        other => vec![other],
    }
}

/// The archiver function: the serverless function built from the root package's binary.
fn archiver(t: &Value) -> (&str, &Value) {
    let (id, f) = only(t, "AWS::Serverless::Function");
    assert_eq!(
        f["Metadata"]["BuildProperties"]["Binary"].as_str(),
        Some(ARCHIVER_BINARY)
    );
    (id, f)
}

/// The function's one DynamoDB event (the event source mapping).
fn stream_event(t: &Value) -> &Value {
    let (_, f) = archiver(t);
    let events: Vec<&Value> = f["Properties"]["Events"]
        .as_mapping()
        .expect("the function has Events")
        .values()
        .filter(|e| e["Type"].as_str() == Some("DynamoDB"))
        .collect();
    assert_eq!(events.len(), 1, "expected one DynamoDB event");
    &events[0]["Properties"]
}

fn param_default<'a>(t: &'a Value, name: &str) -> &'a Value {
    let p = t["Parameters"]
        .get(name)
        .unwrap_or_else(|| panic!("no parameter {name}"));
    &p["Default"]
}

/// All the IAM statements of the archiver's role.
fn role_statements(t: &Value) -> Vec<&Value> {
    let (_, f) = archiver(t);
    let role_id = target(&f["Properties"]["Role"], Some("Arn"));
    let role = resource(t, role_id);
    assert_eq!(role["Type"].as_str(), Some("AWS::IAM::Role"));
    role["Properties"]["Policies"]
        .as_sequence()
        .expect("the role has inline policies")
        .iter()
        .flat_map(|p| {
            p["PolicyDocument"]["Statement"]
                .as_sequence()
                .expect("a policy has statements")
        })
        .collect()
}

fn actions(statement: &Value) -> Vec<&str> {
    list(&statement["Action"])
        .into_iter()
        .map(|a| a.as_str().expect("actions are strings"))
        .collect()
}

#[test]
fn template_is_plain_yaml_without_short_form_tags() {
    fn walk(v: &Value, path: &str) {
        match v {
            Value::Tagged(tag) => panic!("{path}: short-form tag {}", tag.tag),
            Value::Sequence(s) => s
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            Value::Mapping(m) => m
                .iter()
                .for_each(|(k, v)| walk(v, &format!("{path}.{}", k.as_str().unwrap_or("?")))),
            _ => {}
        }
    }
    let t = template();
    walk(&t, "");
    assert_eq!(t["Transform"].as_str(), Some("AWS::Serverless-2016-10-31"));
}

#[test]
fn event_source_mapping_is_safe_for_an_ordered_archive() {
    let t = template();
    let e = stream_event(&t);
    let table = target(&e["Stream"], Some("StreamArn"));
    assert_eq!(
        resource(&t, table)["Type"].as_str(),
        Some("AWS::DynamoDB::Table")
    );
    assert_eq!(e["BatchSize"].as_u64(), Some(1000));
    assert_eq!(e["StartingPosition"].as_str(), Some("TRIM_HORIZON"));
    assert_eq!(e["BisectBatchOnFunctionError"].as_bool(), Some(true));
    let window = e["MaximumBatchingWindowInSeconds"]
        .as_u64()
        .expect("a batching window");
    assert!(window <= 300, "batching window {window}");
    // Bounded: -1 (the default) would retry a failing batch until its records expire (24 h).
    let retries = e["MaximumRetryAttempts"]
        .as_i64()
        .expect("MaximumRetryAttempts set");
    assert!((0..=100).contains(&retries), "retries {retries}");
    let age = e["MaximumRecordAgeInSeconds"]
        .as_i64()
        .expect("MaximumRecordAgeInSeconds set");
    assert!(
        (60..86_400).contains(&age),
        "record age {age}: must be under the stream's 24 h"
    );
    let types: Vec<_> = e["FunctionResponseTypes"]
        .as_sequence()
        .expect("FunctionResponseTypes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types, ["ReportBatchItemFailures"]);
    let queue = target(
        &e["DestinationConfig"]["OnFailure"]["Destination"],
        Some("Arn"),
    );
    assert_eq!(
        resource(&t, queue)["Type"].as_str(),
        Some("AWS::SQS::Queue")
    );
    assert!(
        e.get("FilterCriteria").is_none(),
        "bad records must reach the dead-letter prefix, not be filtered away"
    );
}

#[test]
fn function_runs_the_arm64_cargo_lambda_build() {
    let t = template();
    let (_, f) = archiver(&t);
    assert_eq!(
        f["Metadata"]["BuildMethod"].as_str(),
        Some("rust-cargolambda")
    );
    let p = &f["Properties"];
    assert_eq!(p["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(p["Handler"].as_str(), Some("bootstrap"));
    assert_eq!(p["CodeUri"].as_str(), Some("."));
    let arch: Vec<_> = p["Architectures"]
        .as_sequence()
        .expect("Architectures")
        .iter()
        .collect();
    assert_eq!(arch, [&Value::from("arm64")]);
    assert_eq!(p["MemorySize"].as_u64(), Some(256));
    let timeout = param_default(&t, target(&p["Timeout"], None));
    assert_eq!(timeout.as_u64(), Some(60));

    let env = &p["Environment"]["Variables"];
    let bucket = target(&env["EVS_ARCHIVE_BUCKET"], None);
    assert_eq!(
        resource(&t, bucket)["Type"].as_str(),
        Some("AWS::S3::Bucket")
    );
    let prefix = param_default(&t, target(&env["EVS_ARCHIVE_PREFIX"], None));
    assert_eq!(prefix.as_str(), Some("events/"));
    let compression = param_default(&t, target(&env["EVS_COMPRESSION"], None));
    assert_eq!(compression.as_str(), Some("gzip"));
    assert_eq!(
        env["EVS_DEAD_LETTER_PREFIX"].as_str(),
        Some(DEAD_LETTER_PREFIX)
    );
    // JSON logs through lambda_runtime's subscriber, which reads the level Lambda
    // sets from ApplicationLogLevel (no RUST_LOG: one place says the level).
    let logging = &p["LoggingConfig"];
    assert_eq!(logging["LogFormat"].as_str(), Some("JSON"));
    assert_eq!(logging["ApplicationLogLevel"].as_str(), Some("INFO"));
    assert!(env.get("RUST_LOG").is_none());
}

#[test]
fn function_role_is_scoped_to_this_stack() {
    let t = template();
    let (_, f) = archiver(&t);
    // An explicit role: with `Policies` SAM would add AWSLambdaDynamoDBExecutionRole (streams on "*").
    assert!(f["Properties"].get("Policies").is_none());
    let role_id = target(&f["Properties"]["Role"], Some("Arn"));
    assert!(resource(&t, role_id)["Properties"]
        .get("ManagedPolicyArns")
        .is_none());

    let env = &f["Properties"]["Environment"]["Variables"];
    let bucket = target(&env["EVS_ARCHIVE_BUCKET"], None);
    let prefix_param = target(&env["EVS_ARCHIVE_PREFIX"], None);
    let bucket_arn = format!("arn:${{AWS::Partition}}:s3:::${{{bucket}}}");
    let mut s3_resources = Vec::new();
    let mut stream_read = false;
    let mut send = false;
    for s in role_statements(&t) {
        assert_eq!(s["Effect"].as_str(), Some("Allow"));
        assert!(s.get("NotAction").is_none() && s.get("NotResource").is_none());
        let acts = actions(s);
        for r in list(&s["Resource"]) {
            assert_ne!(r.as_str(), Some("*"), "a wildcard resource for {acts:?}");
        }
        assert!(
            acts.iter().all(|a| !a.contains('*')),
            "wildcard action in {acts:?}"
        );
        if acts.iter().any(|a| a.starts_with("s3:")) {
            assert_eq!(acts, ["s3:PutObject"], "the function may only put objects");
            for r in list(&s["Resource"]) {
                let arn = r["Fn::Sub"].as_str().unwrap_or_else(|| panic!("{r:?}"));
                s3_resources.push(arn.to_owned());
            }
        } else if acts.iter().any(|a| a.starts_with("dynamodb:")) {
            let mut sorted = acts.clone();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                [
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:ListStreams"
                ]
            );
            let rs = list(&s["Resource"]);
            assert_eq!(rs.len(), 1);
            let table = target(rs[0], Some("StreamArn"));
            assert_eq!(
                resource(&t, table)["Type"].as_str(),
                Some("AWS::DynamoDB::Table")
            );
            stream_read = true;
        } else if acts.iter().any(|a| a.starts_with("sqs:")) {
            assert_eq!(acts, ["sqs:SendMessage"]);
            let rs = list(&s["Resource"]);
            assert_eq!(rs.len(), 1);
            let queue = target(rs[0], Some("Arn"));
            assert_eq!(
                queue,
                target(
                    &stream_event(&t)["DestinationConfig"]["OnFailure"]["Destination"],
                    Some("Arn")
                )
            );
            send = true;
        } else {
            assert!(
                acts.iter().all(|a| a.starts_with("logs:")),
                "unexpected actions {acts:?}"
            );
        }
    }
    assert!(stream_read, "no stream read grant");
    assert!(send, "no grant to send to the on-failure queue");
    s3_resources.sort();
    let mut expected = vec![
        format!("{bucket_arn}/${{{prefix_param}}}*"),
        format!("{bucket_arn}/{DEAD_LETTER_PREFIX}*"),
    ];
    expected.sort();
    assert_eq!(
        s3_resources, expected,
        "PutObject must be scoped to the two prefixes"
    );
    // The prefix parameter must not be able to widen the grant to the whole bucket.
    let pattern = t["Parameters"][prefix_param]["AllowedPattern"]
        .as_str()
        .expect("the prefix parameter has an AllowedPattern");
    assert!(
        pattern.ends_with("/)+$"),
        "prefix pattern {pattern} must require a non-empty prefix ending in /"
    );
}

#[test]
fn bucket_is_private_versioned_encrypted_and_tls_only() {
    let t = template();
    let (bucket_id, bucket) = only(&t, "AWS::S3::Bucket");
    let p = &bucket["Properties"];
    let block = &p["PublicAccessBlockConfiguration"];
    for k in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[k].as_bool(), Some(true), "{k}");
    }
    assert_eq!(
        p["VersioningConfiguration"]["Status"].as_str(),
        Some("Enabled")
    );
    let sse = p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        ["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        .as_str();
    assert!(
        matches!(sse, Some("AES256" | "aws:kms")),
        "encryption {sse:?}"
    );
    assert_eq!(bucket["DeletionPolicy"].as_str(), Some("Retain"));

    let (_, policy) = only(&t, "AWS::S3::BucketPolicy");
    assert_eq!(target(&policy["Properties"]["Bucket"], None), bucket_id);
    let statements = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_sequence()
        .expect("statements");
    let tls = statements
        .iter()
        .find(|s| {
            let secure = &s["Condition"]["Bool"]["aws:SecureTransport"];
            s["Effect"].as_str() == Some("Deny")
                && s["Principal"].as_str() == Some("*")
                && actions(s) == ["s3:*"]
                && (secure.as_str() == Some("false") || secure.as_bool() == Some(false))
        })
        .expect("a statement denying requests without TLS");
    let covered: Vec<_> = list(&tls["Resource"]).into_iter().cloned().collect();
    assert_eq!(covered.len(), 2, "the bucket and its objects: {covered:?}");
}

#[test]
fn table_streams_new_images_and_has_point_in_time_recovery() {
    let t = template();
    let (_, table) = only(&t, "AWS::DynamoDB::Table");
    let p = &table["Properties"];
    assert_eq!(
        p["StreamSpecification"]["StreamViewType"].as_str(),
        Some("NEW_IMAGE")
    );
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    let keys: Vec<_> = p["KeySchema"]
        .as_sequence()
        .expect("KeySchema")
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap(),
                k["KeyType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, [("StreamId", "HASH"), ("EventId", "RANGE")]);
    let attrs: Vec<_> = p["AttributeDefinitions"]
        .as_sequence()
        .expect("AttributeDefinitions")
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap(),
                k["AttributeType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(attrs, [("StreamId", "S"), ("EventId", "N")]);
    assert_eq!(table["DeletionPolicy"].as_str(), Some("Retain"));
}

#[test]
fn failure_queue_alarm_and_outputs() {
    let t = template();
    let (queue_id, queue) = only(&t, "AWS::SQS::Queue");
    assert_eq!(
        queue["Properties"]["MessageRetentionPeriod"].as_u64(),
        Some(14 * 24 * 3600)
    );
    let q = &queue["Properties"];
    assert!(
        q["SqsManagedSseEnabled"].as_bool() == Some(true) || q.get("KmsMasterKeyId").is_some(),
        "the queue is encrypted"
    );

    let (function_id, _) = archiver(&t);
    let lag = of_type(&t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|id| &resource(&t, id)["Properties"])
        .find(|a| a["MetricName"].as_str() == Some("IteratorAge"))
        .expect("an IteratorAge alarm");
    assert_eq!(lag["Namespace"].as_str(), Some("AWS/Lambda"));
    assert_eq!(lag["Statistic"].as_str(), Some("Maximum"));
    assert_eq!(lag["Dimensions"][0]["Name"].as_str(), Some("FunctionName"));
    assert_eq!(target(&lag["Dimensions"][0]["Value"], None), function_id);
    let threshold = param_default(&t, target(&lag["Threshold"], None));
    assert_eq!(threshold.as_u64(), Some(60_000));

    let outputs = t["Outputs"].as_mapping().expect("Outputs");
    let value = |name: &str| {
        &outputs
            .get(name)
            .unwrap_or_else(|| panic!("no output {name}"))["Value"]
    };
    assert_eq!(
        target(value("EventsTableName"), None),
        only(&t, "AWS::DynamoDB::Table").0
    );
    target(value("EventsTableStreamArn"), Some("StreamArn"));
    assert_eq!(
        target(value("ArchiveBucketName"), None),
        only(&t, "AWS::S3::Bucket").0
    );
    assert_eq!(target(value("ArchiverFunctionName"), None), function_id);
    assert_eq!(target(value("ArchiverFailureQueueUrl"), None), queue_id);
}

// ---- events/ ----

fn event_files() -> Vec<PathBuf> {
    let dir = root().join("events");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn records(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["Records"].as_array().expect("a Records array")
}

/// DynamoDB sequence numbers compare by length, then as text.
fn sequence_key(s: &str) -> (usize, &str) {
    (s.len(), s)
}

#[test]
fn every_sample_event_is_a_lambda_dynamodb_event() {
    let files = event_files();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    for expected in ["empty.json", "inserts.json", "mixed.json"] {
        assert!(names.contains(&expected), "events/{expected} missing");
    }
    assert!(root().join("events/README.md").is_file());
    for path in &files {
        let v = read_json(path);
        let recs = records(&v);
        // What the Rust runtime hands the handler: one malformed record must not fail the whole event.
        let text = std::fs::read_to_string(path).unwrap();
        let typed: aws_lambda_events::dynamodb::Event = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a DynamoDB event: {e}", path.display()));
        assert_eq!(typed.records.len(), recs.len());
        let mut previous: Option<String> = None;
        for r in recs {
            let at = format!("{} {}", path.display(), r["eventID"]);
            assert_eq!(r["eventSource"], "aws:dynamodb", "{at}");
            assert_eq!(r["eventVersion"], "1.1", "{at}");
            assert!(
                matches!(
                    r["eventName"].as_str(),
                    Some("INSERT" | "MODIFY" | "REMOVE")
                ),
                "{at}"
            );
            assert!(r["eventID"].as_str().is_some_and(|s| !s.is_empty()), "{at}");
            assert!(r["awsRegion"].is_string(), "{at}");
            assert!(
                r["eventSourceARN"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("arn:aws:dynamodb:") && a.contains("/stream/")),
                "{at}"
            );
            let d = &r["dynamodb"];
            assert_eq!(d["StreamViewType"], "NEW_IMAGE", "{at}");
            assert!(
                d["ApproximateCreationDateTime"].is_u64(),
                "{at}: whole seconds, as AWS sends"
            );
            assert!(d["SizeBytes"].is_u64(), "{at}");
            assert!(d["Keys"].is_object(), "{at}");
            assert!(
                d.get("OldImage").is_none(),
                "{at}: a NEW_IMAGE stream has no old images"
            );
            let seq = d["SequenceNumber"].as_str().expect("SequenceNumber");
            assert!(
                (21..=40).contains(&seq.len()) && seq.bytes().all(|b| b.is_ascii_digit()),
                "{at}: sequence number {seq}"
            );
            // One batch comes from one shard, in order.
            if let Some(p) = &previous {
                assert!(
                    sequence_key(p) < sequence_key(seq),
                    "{at}: sequence numbers must increase"
                );
            }
            previous = Some(seq.to_owned());
        }
    }
}

#[test]
fn sample_events_cover_what_the_readme_says() {
    let dir = root().join("events");
    assert!(records(&read_json(&dir.join("empty.json"))).is_empty());

    let inserts = read_json(&dir.join("inserts.json"));
    let recs = records(&inserts);
    assert!(recs.iter().all(|r| r["eventName"] == "INSERT"));
    let mut streams: Vec<_> = recs
        .iter()
        .map(|r| r["dynamodb"]["Keys"]["StreamId"]["S"].as_str().unwrap())
        .collect();
    streams.sort_unstable();
    streams.dedup();
    assert!(streams.len() >= 3, "streams {streams:?}");
    let text = std::fs::read_to_string(dir.join("inserts.json")).unwrap();
    assert!(
        text.contains(r#""N": "12345678901234567890123""#),
        "a 23-digit integer"
    );
    assert!(!text.is_ascii(), "unicode strings");
    assert!(recs
        .iter()
        .any(|r| r["dynamodb"]["NewImage"]["Metadata"]["M"].is_object()));
    assert!(recs
        .iter()
        .any(|r| r["dynamodb"]["NewImage"]["Tenant"].is_object()));

    let mixed = read_json(&dir.join("mixed.json"));
    let recs = records(&mixed);
    let image = |r: &'_ serde_json::Value| r["dynamodb"]["NewImage"].clone();
    assert!(recs
        .iter()
        .any(|r| r["eventName"] == "MODIFY" && image(r).is_object()));
    assert!(recs
        .iter()
        .any(|r| r["eventName"] == "REMOVE" && image(r).is_null()));
    assert!(
        recs.iter().any(|r| image(r)["EventId"]["S"].is_string()),
        "a malformed EventId"
    );
    assert!(
        recs.iter().any(|r| image(r)["Payload"]["S"]
            .as_str()
            .is_some_and(|s| s.starts_with('{'))),
        "a Payload stored as a JSON string"
    );
    assert!(
        recs.iter().any(|r| r["eventName"] == "INSERT"
            && image(r).is_object()
            && image(r).get("Timestamp").is_none()),
        "an INSERT without Timestamp"
    );
}
