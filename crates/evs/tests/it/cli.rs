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
    // A flag value that does not parse is bad usage.
    assert_one_line_error(&out, 2, "--payload is not valid JSON");
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
    assert_eq!(line["archive"], format!("s3://{bucket}/archive/"));

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
        text.contains("Usage: evs pump") && text.contains("--checkpoint-file"),
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

/// A service that accepts connections and never answers: a hung endpoint
/// (as an emulator stopped with SIGSTOP). Its URL; it lives as long as the
/// test process.
pub(crate) fn hung_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            match conn {
                Ok(conn) => held.push(conn),
                Err(_) => break,
            }
        }
    });
    url
}

/// `evs` with an AWS environment of its own (no emulator): every service at
/// `endpoint`.
fn evs_at(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evs"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("EVS_TABLE", "events")
        .args(args);
    cmd
}

/// Drains a child's pipe on a thread, line by line, into a channel.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `cmd` to its end; if it is still running after `deadline` it is
/// killed and the test fails: a command that hangs fails the test instead
/// of hanging it. Returns the exit code and stderr.
pub(crate) fn run_within(
    cmd: &mut Command,
    deadline: std::time::Duration,
) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text: Vec<String> = err.try_iter().collect();
            panic!(
                "still running after {deadline:?}, killed: it hangs; stderr:\n{}",
                text.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text: Vec<String> = err.iter().collect();
    (status.code(), text.join("\n"))
}

/// Waits for `count` lines of `rx` that contain `wanted`, each within
/// `deadline`; all lines read so far. Fails (after killing `child`) when
/// none comes: a command that says nothing fails the test.
fn wait_for_lines(
    child: &mut std::process::Child,
    rx: &std::sync::mpsc::Receiver<String>,
    wanted: &str,
    count: usize,
    deadline: std::time::Duration,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut found = 0;
    while found < count {
        match rx.recv_timeout(deadline) {
            Ok(line) => {
                found += usize::from(line.contains(wanted));
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no line with {wanted:?} within {deadline:?} (killed); stderr so far:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    seen
}

/// No terminal escape codes on a pipe; durations as `evs_cli::human`
/// writes them (`20 ms`, `1.5 s`), never Rust's `20.0ns` or `1.5s`.
fn assert_plain_text(text: &str) {
    assert!(!text.contains('\u{1b}'), "ANSI escapes on a pipe: {text:?}");
    for word in
        text.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(' || c == ')')
    {
        let unit = word.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        let is_number_with_unit = unit.len() < word.len()
            && word.starts_with(|c: char| c.is_ascii_digit())
            && ["ns", "µs", "ms", "s"].contains(&unit);
        assert!(
            !is_number_with_unit,
            "a duration not in words ({word}): {text}"
        );
    }
}

/// An AWS call to an endpoint that never answers times out (the connect and
/// call timeouts, here from EVS_CONNECT_TIMEOUT and EVS_CALL_TIMEOUT)
/// instead of waiting for ever, and the error line says so.
#[test]
fn append_to_a_hung_endpoint_times_out_and_says_so() {
    let endpoint = hung_endpoint();
    let mut cmd = evs_at(&endpoint, &["append", "--stream", "s", "--event-name", "E"]);
    cmd.env("EVS_CONNECT_TIMEOUT", "1s")
        .env("EVS_CALL_TIMEOUT", "500ms");
    let (code, err) = run_within(&mut cmd, std::time::Duration::from_secs(90));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("--call-timeout"), "names the setting: {err}");
    assert_plain_text(&err);
}

/// A polling pump whose endpoint hangs reports each timed-out call on
/// stderr and retries it (as a refused connection), in plain text.
#[test]
fn a_polling_pump_reports_a_hung_endpoint_and_retries() {
    let endpoint = hung_endpoint();
    let dir = std::env::temp_dir().join(unique_name("evs-pump-hung"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = evs_at(
        &endpoint,
        &[
            "--call-timeout",
            "500ms",
            "--connect-timeout",
            "1s",
            "pump",
            "--archive",
            "archive",
        ],
    )
    .env("AWS_MAX_ATTEMPTS", "1")
    .current_dir(&dir)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let rx = lines_of(child.stderr.take().unwrap());
    let lines = wait_for_lines(
        &mut child,
        &rx,
        "timed out",
        3,
        std::time::Duration::from_secs(60),
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "it keeps retrying: {lines:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let text = lines.join("\n");
    assert!(text.contains("retrying in"), "{text}");
    assert!(text.contains("failing for"), "{text}");
    assert_plain_text(&text);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flag values that cannot be right are usage errors: exit 2, before any
/// AWS call (the endpoint here would hang).
#[test]
fn flag_values_that_cannot_be_right_exit_2() {
    let endpoint = hung_endpoint();
    let archive = std::env::temp_dir().join(unique_name("evs-empty-archive"));
    std::fs::create_dir_all(&archive).unwrap();
    let archive = archive.display().to_string();
    for (args, says) in [
        (
            &[
                "append",
                "--stream",
                "s",
                "--event-name",
                "E",
                "--payload",
                "{bad json",
            ][..],
            "--payload",
        ),
        (
            &[
                "append",
                "--stream",
                "s",
                "--event-name",
                "E",
                "--metadata",
                "[1,",
            ][..],
            "--metadata",
        ),
        (
            &["verify", "--archive", &archive, "--segments", "0"][..],
            "--segments",
        ),
        (
            &["--call-timeout", "0s", "read", "--stream", "s"][..],
            "--call-timeout",
        ),
    ] {
        let (code, err) = run_within(
            &mut evs_at(&endpoint, args),
            std::time::Duration::from_secs(60),
        );
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.lines().next().unwrap_or("").contains(says),
            "{args:?}: {err}"
        );
    }
    // One line, as every error of evs's own.
    let (_, err) = run_within(
        &mut evs_at(
            &endpoint,
            &[
                "append",
                "--stream",
                "s",
                "--event-name",
                "E",
                "--payload",
                "{bad json",
            ],
        ),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&archive);
}

/// `evs` alone, with no AWS environment.
fn evs_offline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evs"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args)
        .output()
        .unwrap()
}

fn help(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    let out = evs_offline(&all);
    assert!(out.status.success(), "{all:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// `evs pump --help` reads as `evs pump`, and shows no value evs made up
/// (its own default log filter) as if it were the environment's.
#[test]
fn pump_help_reads_as_evs_pump() {
    let text = help(&["pump"]);
    assert!(text.contains("Usage: evs pump"), "{text}");
    assert!(!text.contains("evs-pump [OPTIONS]"), "{text}");
    assert!(text.contains("[env: EVS_LOG=]"), "{text}");
    assert!(text.contains("[default: warn,aws=error]"), "{text}");
    for flag in ["--connect-timeout", "--call-timeout"] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
    // A value given to evs is passed on, and shown as the pump's.
    let out = evs_offline(&["--log", "debug", "pump", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[env: EVS_LOG=debug]"), "{text}");
}

/// The top-level description names every kind of subcommand, `--table` is
/// offered only where a table is used, and the AWS timeouts everywhere.
#[test]
fn help_describes_what_each_command_takes() {
    let top = help(&[]);
    let first = top.split("\n\n").next().unwrap();
    for word in ["replay", "pump", "backfill", "verify"] {
        assert!(first.contains(word), "{word} missing from {first:?}");
    }
    for (command, takes_table) in [
        (&["table", "create"][..], true),
        (&["table", "create-checkpoints"][..], false),
        (&["append"][..], true),
        (&["read"][..], true),
        (&["invoke"][..], false),
        (&["replay"][..], true),
        (&["backfill"][..], false),
        (&["verify"][..], true),
    ] {
        let text = help(command);
        let offered = text
            .lines()
            .any(|l| l.trim_start().starts_with("--table <NAME>"));
        assert_eq!(offered, takes_table, "{command:?}:\n{text}");
        for flag in ["--connect-timeout", "--call-timeout", "EVS_CALL_TIMEOUT"] {
            assert!(text.contains(flag), "{command:?} lacks {flag}:\n{text}");
        }
    }
}

/// The flags a usage line shows outside brackets, which it presents as
/// required.
fn required_in_usage(text: &str) -> Vec<String> {
    let line = text
        .lines()
        .skip_while(|l| !l.starts_with("Usage:"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut depth = 0;
    let mut outside = String::new();
    for c in line.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split(|c: char| c.is_whitespace() || c == '<' || c == '|' || c == '(')
        .filter(|w| w.starts_with("--"))
        .map(str::to_owned)
        .collect()
}

/// Usage lines, in help and in errors, show as required only what is:
/// never an optional flag that was given.
#[test]
fn usage_lines_show_only_what_is_required() {
    let required: &[(&[&str], &[&str])] = &[
        (&["table", "create"], &[]),
        (&["table", "create-checkpoints"], &["--checkpoint-table"]),
        (&["append"], &["--stream", "--event-name", "--events"]),
        (&["read"], &["--stream"]),
        (&["invoke"], &[]),
        (&["replay"], &[]),
        (&["backfill"], &["--export"]),
        (&["verify"], &[]),
    ];
    for (command, allowed) in required {
        let text = help(command);
        for flag in required_in_usage(&text) {
            assert!(
                allowed.contains(&flag.as_str()),
                "{command:?} shows {flag} as required:\n{text}"
            );
        }
    }
    // Errors print a usage line too.
    for (args, allowed) in [
        (&["read", "--limit", "5"][..], &["--stream"][..]),
        (
            &["append", "--stream", "s", "--payload", "{}"][..],
            &["--stream", "--event-name", "--events"][..],
        ),
        (
            &[
                "append",
                "--stream",
                "s",
                "--event-name",
                "E",
                "--events",
                "-",
            ][..],
            &["--stream", "--event-name", "--events"][..],
        ),
        (&["replay", "--checkpoint-table", "t"][..], &[][..]),
        (&["backfill", "--force"][..], &["--export"][..]),
        (&["invoke", "--timeout", "5s"][..], &[][..]),
        (
            &["pump", "--table", "t", "--once", "--sideways"][..],
            &[][..],
        ),
    ] {
        let out = evs_offline(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
        for flag in required_in_usage(&text) {
            assert!(
                allowed.contains(&flag.as_str()),
                "{args:?} shows {flag} as required:\n{text}"
            );
        }
    }
}

/// The pump's lines name the archive in full (bucket and prefix), and its
/// messages read as sentences: "failed" once, never "failed 1 times", and
/// each retried failure of a hung stream with its wait in words.
#[test]
fn pump_output_names_the_archive_in_full_and_reads_as_sentences() {
    let Some(moto) = Moto::shared() else { return };
    let Some(evs) = Evs::new() else { return };
    let dir = std::env::temp_dir().join(unique_name("evs-pump-words"));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("pump.json").display().to_string();
    let bucket = unique_name("pump-words");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
                .force_path_style(true)
                .build(),
        );
        client.create_bucket().bucket(&bucket).send().await.unwrap();
    });
    let append = || {
        let out = evs.run(&["append", "--stream", "w-1", "--event-name", "Happened"]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    append();
    let archive = format!("s3://{bucket}/archive/");
    let pump = |archive: &str| {
        evs.run(&[
            "pump",
            "--once",
            "--archive",
            archive,
            "--checkpoint-file",
            &checkpoint,
        ])
    };
    let lines = ndjson(&pump(&archive));
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["archive"], archive.as_str(), "{line}");
    }

    // A bucket that does not exist cannot heal: the batch fails once.
    append();
    let out = pump(&format!("s3://{bucket}-missing/archive/"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("NoSuchBucket"), "{err}");
    assert!(!err.contains("1 times"), "{err}");

    // A stream that hangs: each timed-out read reported, then retried.
    let endpoint = hung_endpoint();
    let mut child = evs
        .command(&[
            "pump",
            "--archive",
            &archive,
            "--checkpoint-file",
            &checkpoint,
            "--call-timeout",
            "500ms",
        ])
        .env("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", &endpoint)
        .env("AWS_MAX_ATTEMPTS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stderr.take().unwrap());
    let lines = wait_for_lines(
        &mut child,
        &rx,
        "timed out",
        3,
        std::time::Duration::from_secs(60),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let text = lines.join("\n");
    assert!(text.contains("DynamoDB Streams"), "{text}");
    assert!(text.contains("failing for"), "{text}");
    assert_plain_text(&text);
    let _ = std::fs::remove_dir_all(&dir);
}
