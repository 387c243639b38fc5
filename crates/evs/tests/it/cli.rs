use std::io::Write;
use std::process::{Command, Output, Stdio};

use evs_testkit::{unique_name, Moto};
use serde_json::Value;

pub(crate) struct Evs {
    pub(crate) env: Vec<(&'static str, String)>,
    pub(crate) table: String,
}

impl Evs {
    /// A fresh table on the shared emulator, created with `evs table create`.
    pub(crate) fn new() -> Option<Evs> {
        let moto = Moto::shared()?;
        let evs = Evs {
            env: moto.env(),
            table: unique_name("cli"),
        };
        let out = evs.run(&["table", "create"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let line: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(line["status"], "created");
        assert!(line["streamArn"]
            .as_str()
            .is_some_and(|a| a.contains(&evs.table)));
        Some(evs)
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_evs"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::temp_dir())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("EVS_TABLE", &self.table)
            .args(args);
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The standard output of a command that must have succeeded.
pub(crate) fn stdout(out: &Output) -> &str {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        stderr(out)
    );
    std::str::from_utf8(&out.stdout).unwrap()
}

fn json_line(out: &Output) -> Value {
    serde_json::from_str(stdout(out)).unwrap()
}

pub(crate) fn ndjson(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One clear line on stderr, no panic, no backtrace.
pub(crate) fn assert_one_line_error(out: &Output, code: i32, says: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(says), "expected {says:?} in: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "more than one line: {err}"
    );
}

#[test]
fn create_append_read_and_conflict() {
    let Some(evs) = Evs::new() else { return };
    let again = evs.run(&["table", "create"]);
    assert_eq!(json_line(&again)["status"], "already exists");

    let out = evs.run(&[
        "append",
        "--stream",
        "order-1",
        "--expected-version",
        "none",
        "--event-name",
        "Placed",
        "--payload",
        r#"{"total":12345678901234567890123,"who":"Zoë"}"#,
        "--metadata",
        r#"{"by":"cli"}"#,
    ]);
    let line = json_line(&out);
    assert_eq!(
        (line["firstEventId"].as_u64(), line["version"].as_u64()),
        (Some(1), Some(1))
    );

    // A conflict: exit code 3 and the actual version in the message.
    let out = evs.run(&[
        "append",
        "--stream",
        "order-1",
        "--expected-version",
        "none",
        "--event-name",
        "Placed",
    ]);
    assert_one_line_error(&out, 3, "actual version is 1");
    let out = evs.run(&[
        "append",
        "--stream",
        "order-1",
        "--expected-version",
        "4",
        "--event-name",
        "Paid",
    ]);
    assert_one_line_error(&out, 3, "actual version is 1");

    // Several events from a file, atomically.
    let dir = std::env::temp_dir().join(unique_name("evs-cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.ndjson");
    std::fs::write(&file, "{\"eventName\":\"Paid\",\"payload\":{\"amount\":1.50}}\n{\"eventName\":\"Shipped\",\"payload\":{}}\n").unwrap();
    let line = json_line(&evs.run(&[
        "append",
        "--stream",
        "order-1",
        "--expected-version",
        "1",
        "--events",
        file.to_str().unwrap(),
    ]));
    assert_eq!(
        (line["firstEventId"].as_u64(), line["version"].as_u64()),
        (Some(2), Some(3))
    );
    // The same file with a stale version writes nothing.
    let out = evs.run(&[
        "append",
        "--stream",
        "order-1",
        "--expected-version",
        "1",
        "--events",
        file.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, 3, "actual version is 3");
    // From stdin.
    let out = evs.run_stdin(
        &[
            "append",
            "--stream",
            "order-1",
            "--expected-version",
            "any",
            "--events",
            "-",
        ],
        "{\"eventName\":\"Delivered\"}\n",
    );
    assert_eq!(json_line(&out)["version"].as_u64(), Some(4));
    let _ = std::fs::remove_dir_all(&dir);

    let events = ndjson(&evs.run(&["read", "--stream", "order-1"]));
    let names: Vec<_> = events
        .iter()
        .map(|e| e["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Placed", "Paid", "Shipped", "Delivered"]);
    let first = &events[0];
    assert_eq!(first["streamId"], "order-1");
    assert_eq!(first["eventId"], 1);
    assert_eq!(
        first["payload"]["total"].to_string(),
        "12345678901234567890123"
    );
    assert_eq!(first["payload"]["who"], "Zoë");
    assert_eq!(first["metadata"]["by"], "cli");
    let ts = first["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
        "{ts}"
    );

    let ids = |out: &Output| {
        ndjson(out)
            .iter()
            .map(|e| e["eventId"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&evs.run(&["read", "--stream", "order-1", "--backward"])),
        [4, 3, 2, 1]
    );
    assert_eq!(
        ids(&evs.run(&["read", "--stream", "order-1", "--from", "2", "--limit", "2"])),
        [2, 3]
    );
    assert_eq!(
        ids(&evs.run(&[
            "read",
            "--stream",
            "order-1",
            "--from",
            "3",
            "--backward",
            "--limit",
            "2"
        ])),
        [3, 2]
    );
    assert!(ids(&evs.run(&["read", "--stream", "nobody"])).is_empty());
}

#[test]
fn bad_input_gives_one_clear_line() {
    let Some(evs) = Evs::new() else { return };
    let out = evs.run(&[
        "append",
        "--stream",
        "s",
        "--event-name",
        "E",
        "--payload",
        "{not json",
    ]);
    assert_one_line_error(&out, 1, "--payload is not valid JSON");
    let out = evs.run(&[
        "append",
        "--stream",
        "s",
        "--expected-version",
        "latest",
        "--event-name",
        "E",
    ]);
    // A flag value that does not parse is bad usage: exit 2, from the parser.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("a version number, `none` or `any`"));
    let out = evs.run(&[
        "append",
        "--stream",
        "s",
        "--events",
        "/nonexistent/events.ndjson",
    ]);
    assert_one_line_error(&out, 1, "cannot open /nonexistent/events.ndjson");
    let big = format!(
        "{{\"eventName\":\"E\",\"payload\":{{\"blob\":\"{}\"}}}}\n",
        "x".repeat(410 * 1024)
    );
    let out = evs.run_stdin(&["append", "--stream", "s", "--events", "-"], &big);
    assert_one_line_error(&out, 1, "item limit");

    // Unknown flag: the parser's usage error, exit 2.
    let out = evs.run(&["read", "--stream", "s", "--sideways"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--sideways"));

    // Missing table.
    let out = evs
        .command(&["read", "--stream", "s"])
        .env("EVS_TABLE", unique_name("nope"))
        .output()
        .unwrap();
    assert_one_line_error(&out, 1, "does not exist");
    // No table at all.
    let out = evs
        .command(&["read", "--stream", "s"])
        .env_remove("EVS_TABLE")
        .output()
        .unwrap();
    // A usage error: exit 2, as the parser's.
    assert_one_line_error(&out, 2, "no table given");
    // A stream with no events says so (stdout stays empty).
    let out = evs.run(&["read", "--stream", "never-written"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("stream never-written has no events"),
        "{}",
        stderr(&out)
    );
    // No credentials.
    let out = evs
        .command(&["read", "--stream", "s"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_one_line_error(&out, 1, "credentials");
    // No region.
    let out = evs
        .command(&["read", "--stream", "s"])
        .env_remove("AWS_REGION")
        .output()
        .unwrap();
    assert_one_line_error(&out, 1, "no AWS region");
}

/// Usage errors exit 2 and say which flag; nothing is written.
#[test]
fn append_flag_values_are_checked_by_the_parser() {
    let Some(evs) = Evs::new() else { return };
    for (args, says) in [
        (&["--expected-version", "garbage"][..], "--expected-version"),
        (&["--expected-version", "1.5"][..], "--expected-version"),
        (&["--id", "not-a-uuid"][..], "--id"),
        (&["--stream", ""][..], "--stream"),
    ] {
        let mut all = vec!["append", "--stream", "s", "--event-name", "E"];
        all.extend_from_slice(args);
        let out = evs.run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    // --id is for a single event (NDJSON lines carry their own ids).
    let out = evs.run(&["append", "--stream", "s", "--events", "-", "--id", &uuid()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(ndjson(&evs.run(&["read", "--stream", "s"])).is_empty());
}

fn uuid() -> String {
    "67e55044-10b1-426f-9247-bb680e5fe0c8".to_owned()
}

#[test]
fn append_id_payload_files_and_stdin() {
    let Some(evs) = Evs::new() else { return };
    let dir = std::env::temp_dir().join(unique_name("evs-cli-payload"));
    std::fs::create_dir_all(&dir).unwrap();
    let payload = dir.join("payload.json");
    std::fs::write(&payload, r#"{"big": 12345678901234567890123, "s": "x"}"#).unwrap();
    let at_payload = format!("@{}", payload.display());

    // --id makes a retried single-event append idempotent.
    let append = || {
        evs.run(&[
            "append",
            "--stream",
            "p-1",
            "--expected-version",
            "none",
            "--event-name",
            "Placed",
            "--id",
            &uuid(),
            "--payload",
            &at_payload,
        ])
    };
    let first: Value = serde_json::from_str(stdout(&append())).unwrap();
    assert_eq!(first["alreadyAppended"], false);
    let again: Value = serde_json::from_str(stdout(&append())).unwrap();
    assert_eq!(
        (
            again["alreadyAppended"].as_bool(),
            again["version"].as_u64()
        ),
        (Some(true), Some(1))
    );

    // The payload from stdin, the metadata from a file.
    let meta = dir.join("meta.json");
    std::fs::write(&meta, r#"{"by": "file"}"#).unwrap();
    let out = evs.run_stdin(
        &[
            "append",
            "--stream",
            "p-1",
            "--expected-version",
            "1",
            "--event-name",
            "Paid",
            "--payload",
            "-",
            "--metadata",
            &format!("@{}", meta.display()),
        ],
        r#"{"amount": 1.50}"#,
    );
    assert_eq!(json_line(&out)["version"].as_u64(), Some(2));
    let events = ndjson(&evs.run(&["read", "--stream", "p-1"]));
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["id"], uuid());
    assert_eq!(
        events[0]["payload"]["big"].to_string(),
        "12345678901234567890123"
    );
    assert_eq!(events[1]["payload"]["amount"].to_string(), "1.50");
    assert_eq!(events[1]["metadata"]["by"], "file");

    // A missing file and a file that is not JSON are named.
    let missing = dir.join("missing.json");
    let out = evs.run(&[
        "append",
        "--stream",
        "p-1",
        "--event-name",
        "E",
        "--payload",
        &format!("@{}", missing.display()),
    ]);
    assert_one_line_error(&out, 1, &format!("cannot read {}", missing.display()));
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{nope").unwrap();
    let out = evs.run(&[
        "append",
        "--stream",
        "p-1",
        "--event-name",
        "E",
        "--payload",
        &format!("@{}", bad.display()),
    ]);
    assert_one_line_error(&out, 1, &format!("{} is not valid JSON", bad.display()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// What DynamoDB refuses is refused before any call, naming the event's
/// position, its NDJSON line and the path in the payload; never the
/// placeholder EventId used to size the items before ids are known.
#[test]
fn invalid_events_are_named_by_position_and_line() {
    let Some(evs) = Evs::new() else { return };
    let out = evs.run(&[
        "append",
        "--stream",
        "v-1",
        "--expected-version",
        "none",
        "--event-name",
        "E",
        "--payload",
        r#"{"d":{"":1}}"#,
    ]);
    assert_one_line_error(
        &out,
        1,
        "event 1 of the append is invalid: payload.d has an empty key",
    );
    let lines = format!(
        "{{\"eventName\":\"A\"}}\n\n{{\"eventName\":\"B\",\"payload\":{{\"l\":[{{\"\":1}}]}}}}\n{{\"eventName\":\"C\",\"payload\":{{\"x\":\"{}\"}}}}\n",
        "y".repeat(410 * 1024)
    );
    let out = evs.run_stdin(&["append", "--stream", "v-1", "--events", "-"], &lines);
    assert_one_line_error(
        &out,
        1,
        "stdin line 3: event 2 of the append is invalid: payload.l[0] has an empty key",
    );
    let big_last = lines.replace(r#"{"l":[{"":1}]}"#, "{}");
    let out = evs.run_stdin(&["append", "--stream", "v-1", "--events", "-"], &big_last);
    assert_one_line_error(&out, 1, "stdin line 4: event 3 of the append would be a");
    assert!(!stderr(&out).contains("4611686018427387904"));
    assert!(ndjson(&evs.run(&["read", "--stream", "v-1"])).is_empty());
}

fn sample(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn invoke_runs_the_archiver_on_event_files() {
    let Some(moto) = Moto::shared() else { return };
    let evs = Evs {
        env: moto.env(),
        table: String::new(),
    };
    let dir = std::env::temp_dir().join(unique_name("evs-invoke"));
    let archive = dir.display().to_string();
    let out = evs.run(&[
        "invoke",
        "--archive",
        &archive,
        &sample("inserts.json"),
        &sample("mixed.json"),
        &sample("empty.json"),
    ]);
    let lines = ndjson(&out);
    assert_eq!(lines.len(), 3);
    assert_eq!(
        (
            lines[0]["recordsIn"].as_u64(),
            lines[0]["archived"].as_u64()
        ),
        (Some(8), Some(8))
    );
    assert_eq!(lines[1]["deadLettered"].as_u64(), Some(3));
    assert_eq!(lines[1]["batchItemFailures"], serde_json::json!([]));
    assert!(lines[2]["key"].is_null());
    for l in &lines[..2] {
        let key = l["key"].as_str().unwrap();
        assert!(dir.join(key).is_file(), "{key}");
    }
    let _ = std::fs::remove_dir_all(&dir);

    // The same into a bucket on the emulator.
    let bucket = unique_name("invoke");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
                .force_path_style(true)
                .build(),
        );
        client.create_bucket().bucket(&bucket).send().await.unwrap();
    });
    let out = evs.run(&[
        "invoke",
        "--archive",
        &format!("s3://{bucket}/archive/"),
        &sample("inserts.json"),
    ]);
    let line = json_line(&out);
    assert!(
        line["key"].as_str().unwrap().starts_with("archive/"),
        "{line}"
    );
    assert_eq!(line["archive"], format!("s3://{bucket}/"));

    // A file that is not an event: one clear line, exit 1.
    let out = evs.run(&["invoke", "--archive", &archive, "/nonexistent.json"]);
    assert_one_line_error(&out, 1, "cannot read /nonexistent.json");
    // An archive location that cannot be right: usage, exit 2.
    let out = evs.run(&["invoke", "--archive", "gs://x/", &sample("empty.json")]);
    assert_one_line_error(&out, 2, "only s3://");
}

/// `evs pump` is the `evs-pump` binary beside `evs` (so `evs` compiles no
/// DynamoDB Streams SDK): its help is the pump's, and an `evs` without it
/// says how to install it.
#[test]
fn evs_pump_runs_the_pump_binary_or_says_how_to_install_it() {
    let help = Command::new(env!("CARGO_BIN_EXE_evs"))
        .args(["pump", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "{}", stderr(&help));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("Usage: evs-pump") && text.contains("--checkpoint-file"),
        "{text}"
    );

    let dir = std::env::temp_dir().join(unique_name("evs-alone"));
    std::fs::create_dir_all(&dir).unwrap();
    let alone = dir.join("evs");
    std::fs::copy(env!("CARGO_BIN_EXE_evs"), &alone).unwrap();
    let out = Command::new(&alone)
        .args(["pump", "--once"])
        .env_clear()
        .env("PATH", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cargo install --path crates/evs-pump-cli"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
