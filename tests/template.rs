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
    evs_testkit::template::load(&root().join("template.yaml"))
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

/// The archiver function: the serverless function whose `sam build` (the root Makefile's
/// `build-<LogicalId>` target) builds the root package's binary.
fn archiver(t: &Value) -> (&str, &Value) {
    let (id, f) = only(t, "AWS::Serverless::Function");
    assert_eq!(f["Metadata"]["BuildMethod"].as_str(), Some("makefile"));
    assert_eq!(f["Properties"]["CodeUri"].as_str(), Some("."));
    evs_testkit::template::assert_makefile_builds(&root().join("Makefile"), id, ARCHIVER_BINARY);
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
fn function_runs_the_arm64_makefile_build() {
    let t = template();
    let (id, f) = archiver(&t);
    assert_eq!(id, "ArchiverFunction");
    assert_eq!(f["Metadata"]["BuildMethod"].as_str(), Some("makefile"));
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
            // No dynamodb:ListStreams: it has no resource-level permissions (granted on the
            // stream's ARN it grants nothing, and on "*" it would list every stream), and neither
            // the function nor its event source mapping, which is given the stream's ARN, needs it.
            assert_eq!(
                sorted,
                [
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
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

/// The template's test of an `ArchivePrefix` value: its `AllowedPattern`
/// (a negative lookahead of a literal at its start, which the regex crate
/// lacks, read apart; the rest evaluated as written) and its `MaxLength`.
struct PrefixParameter {
    refused_start: Option<String>,
    pattern: regex::Regex,
    max_length: usize,
}

impl PrefixParameter {
    fn from_template(t: &Value) -> Self {
        let p = &t["Parameters"]["ArchivePrefix"];
        let text = p["AllowedPattern"].as_str().expect("an AllowedPattern");
        let max_length = p["MaxLength"].as_u64().expect("a MaxLength") as usize;
        let (refused_start, rest) = match text.strip_prefix("^(?!") {
            Some(rest) => {
                let (literal, rest) = rest.split_once(')').expect("a closed lookahead");
                assert!(
                    literal
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c)),
                    "this test reads only a literal lookahead, not {literal:?}"
                );
                (Some(literal.to_owned()), format!("^{rest}"))
            }
            None => (None, text.to_owned()),
        };
        let pattern = regex::Regex::new(&rest).unwrap_or_else(|e| panic!("{rest}: {e}"));
        Self {
            refused_start,
            pattern,
            max_length,
        }
    }

    /// Whether CloudFormation accepts `value` (MaxLength counts characters).
    fn accepts(&self, value: &str) -> bool {
        value.chars().count() <= self.max_length
            && !self
                .refused_start
                .as_deref()
                .is_some_and(|s| value.starts_with(s))
            && self.pattern.is_match(value)
    }
}

/// Whether the archiver, deployed by this template, runs with `prefix`: its
/// configuration from the function's environment (an empty value would
/// leave it on its default prefix, under a grant on the whole bucket).
fn archiver_accepts(t: &Value, prefix: &str) -> bool {
    let (_, f) = archiver(t);
    let dead_letter = f["Properties"]["Environment"]["Variables"]["EVS_DEAD_LETTER_PREFIX"]
        .as_str()
        .expect("a literal dead-letter prefix")
        .to_owned();
    let prefix = prefix.to_owned();
    evs_archiver::config::Config::from_lookup(|k| match k {
        "AWS_LAMBDA_FUNCTION_NAME" => Some("archiver".into()),
        "EVS_ARCHIVE_BUCKET" => Some("bucket".into()),
        "EVS_ARCHIVE_PREFIX" => Some(prefix.clone()),
        "EVS_DEAD_LETTER_PREFIX" => Some(dead_letter.clone()),
        _ => None,
    })
    .is_ok_and(|c| c.prefix.as_str() == prefix)
}

#[test]
fn archive_prefix_parameter_accepts_only_what_the_archiver_does() {
    let t = template();
    let param = PrefixParameter::from_template(&t);
    assert_eq!(param.max_length, evs_archive::MAX_PREFIX_BYTES);
    let longest = "a/".repeat(evs_archive::MAX_PREFIX_BYTES / 2);
    let too_long = format!("{longest}a/");
    // (prefix, the template accepts it, the archiver does). Where they
    // differ the template is the stricter: S3's safe characters only, each
    // segment starting with a letter, a digit or one of !_'()-.
    let table: &[(&str, bool, bool)] = &[
        ("events/", true, true),
        ("a/b/c/", true, true),
        ("Events-2026_(v1)!'/x.y/", true, true),
        ("dead-letters/", true, true),
        ("x/dead-letter/", true, true),
        (&longest, true, true),
        (&too_long, false, false),
        ("", false, false),
        ("events", false, false),
        ("/events/", false, false),
        ("a//", false, false),
        // IAM wildcards: "*/" would grant PutObject on nearly the whole bucket.
        ("*/", false, false),
        ("events/*/", false, false),
        ("a*/", false, false),
        ("?/", false, false),
        // Path segments the archiver refuses: deployed, it would fail every batch.
        ("./", false, false),
        ("../", false, false),
        ("a/../b/", false, false),
        ("a/./", false, false),
        ("a\\b/", false, false),
        ("dead-letter/", false, false),
        ("dead-letter/x/", false, false),
        (".hidden/", false, true),
        (".../", false, true),
        ("a b/", false, true),
        ("événements/", false, true),
        ("a$/", false, true),
    ];
    for &(prefix, template, archiver) in table {
        assert_eq!(param.accepts(prefix), template, "template on {prefix:?}");
        assert_eq!(
            archiver_accepts(&t, prefix),
            archiver,
            "archiver on {prefix:?}"
        );
    }
    // Seeded random prefixes: nothing the template accepts is refused by the archiver.
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let pieces = [
        "a",
        "Z",
        "0",
        ".",
        "..",
        "/",
        "*",
        "?",
        "-",
        "_",
        "!",
        "'",
        "(",
        " ",
        "é",
        "\\",
        "dead-letter/",
        "$",
    ];
    let (mut accepted, mut cases) = (0, 0);
    for _ in 0..20_000 {
        let len = rng.usize(1..8);
        let mut prefix: String = (0..len)
            .map(|_| pieces[rng.usize(..pieces.len())])
            .collect();
        if rng.bool() {
            prefix.push('/');
        }
        cases += 1;
        if param.accepts(&prefix) {
            accepted += 1;
            assert!(
                archiver_accepts(&t, &prefix),
                "seed {seed}: the template accepts {prefix:?}, the archiver refuses it"
            );
        }
    }
    assert!(accepted > 100 && accepted < cases, "{accepted} of {cases}");
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

    // A dead-lettered record is otherwise seen only in the archiver's metrics (and, when it hid a
    // stream's last event, nowhere in the archive): an alarm on the metric the archiver emits (EMF).
    let emf = evs_archiver::metrics::emf_line(&evs_archiver::handler::Summary::default(), 0);
    let emitted = &emf["_aws"]["CloudWatchMetrics"][0];
    let dead = of_type(&t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|id| &resource(&t, id)["Properties"])
        .find(|a| a["MetricName"].as_str() == Some("DeadLettered"))
        .expect("an alarm on dead-lettered records");
    assert_eq!(dead["Namespace"].as_str(), emitted["Namespace"].as_str());
    assert!(emitted["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["Name"] == "DeadLettered"));
    // The EMF line's one dimension set is empty: the alarm names no dimension.
    assert_eq!(emitted["Dimensions"], serde_json::json!([[]]));
    assert!(dead.get("Dimensions").is_none());
    assert_eq!(dead["Statistic"].as_str(), Some("Sum"));
    assert_eq!(
        dead["ComparisonOperator"].as_str(),
        Some("GreaterThanThreshold")
    );
    assert_eq!(dead["Threshold"].as_u64(), Some(0));
    assert_eq!(dead["TreatMissingData"].as_str(), Some("notBreaching"));
    assert!(dead.get("AlarmActions").is_some());

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

// ---- the archive as a data lake (Glue table, Athena saved queries) ----

/// The archive line's fields, from `Line`'s serde definition in
/// crates/evs-archive/src/line.rs: each `pub` field of the struct as (Rust
/// name, JSON key), the key being its `rename` or else the camelCase of the
/// name (the struct's `rename_all`). Read from the source so that a field
/// added to the line fails this test until the table has its column.
fn line_fields() -> Vec<(String, String)> {
    let path = root().join("crates/evs-archive/src/line.rs");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let before = text
        .find("pub struct Line<'a> {")
        .expect("line.rs defines `pub struct Line<'a>`");
    assert!(
        text[..before].contains("rename_all = \"camelCase\""),
        "Line's fields are camelCase"
    );
    let body = &text[before..];
    let body = &body[..body.find("\n}\n").expect("the end of Line")];
    let camel = |name: &str| {
        let mut out = String::new();
        let mut upper = false;
        for c in name.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    };
    let mut rename: Option<String> = None;
    let mut fields = Vec::new();
    for line in body.lines().skip(1).map(str::trim) {
        if let Some(at) = line.find("rename = \"") {
            let rest = &line[at + "rename = \"".len()..];
            rename = Some(rest[..rest.find('"').expect("a closing quote")].to_owned());
        }
        if let Some(decl) = line.strip_prefix("pub ") {
            let name = decl.split(':').next().expect("a field name").trim();
            let key = rename.take().unwrap_or_else(|| camel(name));
            fields.push((name.to_owned(), key));
        }
    }
    assert!(fields.len() > 10, "fields read from line.rs: {fields:?}");
    fields
}

fn lake_table(t: &Value) -> &Value {
    &only(t, "AWS::Glue::Table").1["Properties"]
}

#[test]
fn lake_table_columns_are_the_archive_line_fields() {
    let t = template();
    let table = lake_table(&t);
    let (database_id, _) = only(&t, "AWS::Glue::Database");
    assert_eq!(target(&table["DatabaseName"], None), database_id);
    let input = &table["TableInput"];
    assert_eq!(input["TableType"].as_str(), Some("EXTERNAL_TABLE"));
    let storage = &input["StorageDescriptor"];
    let serde = &storage["SerdeInfo"];
    // OpenX, case-sensitive, one mapping per column: the line has both
    // `eventId` and `eventID` (the template says why not the Hive SerDe).
    assert_eq!(
        serde["SerializationLibrary"].as_str(),
        Some("org.openx.data.jsonserde.JsonSerDe")
    );
    let params = serde["Parameters"].as_mapping().expect("SerDe parameters");
    assert_eq!(params["case.insensitive"].as_str(), Some("false"));
    let columns: Vec<(String, String, String)> = storage["Columns"]
        .as_sequence()
        .expect("Columns")
        .iter()
        .map(|c| {
            let name = c["Name"].as_str().expect("a column name").to_owned();
            let key = params
                .get(format!("mapping.{name}").as_str())
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no mapping.{name}"))
                .to_owned();
            (name, key, c["Type"].as_str().expect("a type").to_owned())
        })
        .collect();
    let mappings = params
        .keys()
        .filter(|k| k.as_str().is_some_and(|k| k.starts_with("mapping.")))
        .count();
    assert_eq!(mappings, columns.len(), "a mapping for each column only");
    let named: Vec<(String, String)> = columns
        .iter()
        .map(|(name, key, _)| (name.clone(), key.clone()))
        .collect();
    assert_eq!(named, line_fields(), "(column, JSON key) per line field");
    for (name, _, ty) in &columns {
        let expected = match name.as_str() {
            "event_id" => "bigint",
            "payload_absent" => "boolean",
            // The JSON values (payload, metadata, ...) as their JSON text.
            _ => "string",
        };
        assert_eq!(ty, expected, "{name}");
    }
    let partitions = input["PartitionKeys"].as_sequence().expect("PartitionKeys");
    assert_eq!(partitions.len(), 1);
    assert_eq!(partitions[0]["Name"].as_str(), Some("date"));
    assert_eq!(partitions[0]["Type"].as_str(), Some("string"));
}

#[test]
fn lake_table_location_follows_the_archive_key_layout() {
    let t = template();
    let input = &lake_table(&t)["TableInput"];
    let p = &input["Parameters"];
    for (k, v) in [
        ("projection.enabled", "true"),
        ("projection.date.type", "date"),
        ("projection.date.format", "yyyy/MM/dd/HH"),
        ("projection.date.interval", "1"),
        ("projection.date.interval.unit", "HOURS"),
    ] {
        assert_eq!(p[k].as_str(), Some(v), "{k}");
    }
    let range = p["projection.date.range"]["Fn::Sub"]
        .as_str()
        .expect("a range with its start from a parameter");
    let (start, end) = range.split_once(',').expect("start,end");
    assert_eq!(end, "NOW");
    let start_param = start
        .strip_prefix("${")
        .and_then(|s| s.strip_suffix('}'))
        .expect("${Parameter}");
    let first_hour = param_default(&t, start_param).as_str().expect("a default");
    assert_eq!(first_hour.len(), "yyyy/MM/dd/HH".len(), "{first_hour}");

    // The same bucket and prefix as the archiver writes to.
    let (_, f) = archiver(&t);
    let env = &f["Properties"]["Environment"]["Variables"];
    let bucket = target(&env["EVS_ARCHIVE_BUCKET"], None);
    let prefix_param = target(&env["EVS_ARCHIVE_PREFIX"], None);
    let location = format!("s3://${{{bucket}}}/${{{prefix_param}}}");
    assert_eq!(
        input["StorageDescriptor"]["Location"]["Fn::Sub"].as_str(),
        Some(location.as_str())
    );
    let template = p["storage.location.template"]["Fn::Sub"]
        .as_str()
        .expect("storage.location.template");
    // `${!date}` is Fn::Sub's literal `${date}`.
    assert_eq!(template, format!("{location}${{!date}}/"));

    // A key the archiver writes, with the projection's format filled in for
    // its seal hour: the object is directly under the partition's location.
    let sealed_at_ms = 1_795_471_652_123; // 2026-11-23T22:07:32.123Z
    let dir = std::env::temp_dir().join(format!("evs-template-lake-{}", std::process::id()));
    let lookup_dir = dir.clone();
    let config = evs_archiver::config::Config::from_lookup(move |name| match name {
        "EVS_ARCHIVE" => Some(lookup_dir.display().to_string()),
        _ => None,
    })
    .expect("a local archive");
    let event = std::fs::read_to_string(root().join("events/inserts.json")).unwrap();
    let summary = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = evs_archiver::config::store_for(&config).await;
        let now = move || sealed_at_ms;
        evs_archiver::handler::handle(&event, store.as_ref(), &config, &now, None)
            .await
            .expect("the sample batch is archived")
    });
    let _ = std::fs::remove_dir_all(&dir);
    let key = summary.key.expect("an events object");
    let time = evs_core::format_timestamp_ms(sealed_at_ms); // 2026-11-23T22:07:32.123Z
    let hour = p["projection.date.format"]
        .as_str()
        .unwrap()
        .replace("yyyy", &time[0..4])
        .replace("MM", &time[5..7])
        .replace("dd", &time[8..10])
        .replace("HH", &time[11..13]);
    let prefix = param_default(&t, prefix_param).as_str().unwrap();
    let partition = template
        .replace(&format!("${{{prefix_param}}}"), prefix)
        .replace("${!date}", &hour);
    let partition = partition
        .split_once("}/")
        .map(|(_, path)| path)
        .expect("s3://${Bucket}/<path>");
    assert_eq!(partition, "events/2026/11/23/22/");
    let file = key
        .strip_prefix(partition)
        .unwrap_or_else(|| panic!("{key} is not under {partition}"));
    assert!(!file.contains('/'), "{key}");
    assert!(file.ends_with(".ndjson.gz"), "{key}");
}

#[test]
fn lake_saved_queries_read_the_table_and_dedupe() {
    let t = template();
    let (database_id, _) = only(&t, "AWS::Glue::Database");
    let table = lake_table(&t)["TableInput"]["Name"]
        .as_str()
        .expect("a name");
    let queries = of_type(&t, "AWS::Athena::NamedQuery");
    assert_eq!(queries.len(), 4, "{queries:?}");
    for id in queries {
        let q = &resource(&t, id)["Properties"];
        assert_eq!(target(&q["Database"], None), database_id, "{id}");
        let sql = q["QueryString"].as_str().expect("QueryString");
        assert!(
            sql.contains(&format!("FROM {table}")),
            "{id}: reads {table}"
        );
        // A retried batch is archived twice: every answer counts an event once.
        assert!(
            sql.contains("PARTITION BY stream_id, event_id")
                || sql.contains("count(DISTINCT event_id)"),
            "{id} does not dedupe by (stream_id, event_id)"
        );
    }
}
