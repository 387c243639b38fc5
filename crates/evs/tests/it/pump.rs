//! `evs pump` on the emulator: output lines, the default checkpoint file,
//! resuming, and its refusals.

use evs_testkit::unique_name;
use serde_json::Value;

use crate::cli::{ndjson, stderr, Evs};

#[test]
fn pump_once_resumes_from_its_default_checkpoint_and_refuses_another_stream() {
    let Some(evs) = Evs::new() else { return };
    let dir = std::env::temp_dir().join(unique_name("evs-pump-cli"));
    std::fs::create_dir_all(&dir).unwrap();
    for (stream, name) in [("a-1", "Opened"), ("b-1", "Opened"), ("a-1", "Paid")] {
        let out = evs.run(&["append", "--stream", stream, "--event-name", name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let pump = |args: &[&str]| {
        let mut cmd = evs.command(&["pump", "--once", "--archive", "archive"]);
        cmd.args(args).current_dir(&dir);
        cmd.output().unwrap()
    };

    let lines = ndjson(&pump(&["--batch-size", "2"]));
    // Two batch lines (2 + 1 records), then the summary.
    assert_eq!(lines.len(), 3, "{lines:?}");
    for batch in &lines[..2] {
        assert_eq!(batch["attempt"], 1);
        assert!(batch["key"].as_str().unwrap().starts_with("events/"));
        assert!(batch["source"].as_str().unwrap().starts_with("shardId-"));
    }
    let done = &lines[2];
    assert_eq!(done["records"], 3);
    assert_eq!(done["archived"], 3);
    assert_eq!(done["stopped"], false);
    let checkpoint = format!("evs-pump-{}.json", evs.table);
    assert_eq!(done["checkpointFile"], Value::from(checkpoint.clone()));
    assert!(done["stream"].as_str().unwrap().contains(&evs.table));
    assert!(dir.join(&checkpoint).is_file());

    // Resumed: nothing new, nothing written.
    let again = ndjson(&pump(&[]));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["records"], 0);

    // The checkpoint of this table's stream is refused for another table.
    let other = Evs::new().unwrap();
    let mut cmd = other.command(&[
        "pump",
        "--once",
        "--archive",
        "archive",
        "--checkpoint-file",
        &checkpoint,
    ]);
    let out = cmd.current_dir(&dir).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("belongs to stream"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // Batch sizes beyond one GetRecords call are a usage error.
    for bad in ["0", "1001"] {
        let out = pump(&["--batch-size", bad]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two pumps on one checkpoint would both archive everything: the second is
/// refused while the first runs, and a pump killed with SIGKILL leaves no
/// lock behind.
#[test]
fn a_second_pump_on_the_same_checkpoint_is_refused_and_a_crash_frees_it() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let Some(evs) = Evs::new() else { return };
    let dir = std::env::temp_dir().join(unique_name("evs-pump-lock"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = evs.run(&["append", "--stream", "a-1", "--event-name", "Opened"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let checkpoint = dir.join("pump.json").display().to_string();
    let archive = dir.join("archive").display().to_string();
    let args = [
        "pump",
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
    ];

    let mut first = evs
        .command(&args)
        .args(["--poll-interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its first batch line: it holds the lock.
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let batch: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(batch["committed"], 1, "{batch}");

    let second = evs.command(&args).arg("--once").output().unwrap();
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another pump is running"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // Killed: the system releases the lock with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    let third = evs.command(&args).arg("--once").output().unwrap();
    let lines = ndjson(&third);
    assert_eq!(lines.last().unwrap()["records"], 0, "resumed: {lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A polling pump through a DynamoDB Streams outage (every request failing
/// with 500 or throttling for a few seconds): it reports each failure,
/// waits with backoff, and archives what was written meanwhile once the
/// stream answers again; Ctrl-C then ends it with exit 0.
#[test]
fn a_polling_pump_waits_out_a_stream_outage() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let Some(moto) = evs_testkit::Moto::shared() else {
        return;
    };
    let Some(proxy) = evs_testkit::FaultProxy::start(moto, "{}") else {
        return;
    };
    let Some(evs) = Evs::new() else { return };
    let dir = std::env::temp_dir().join(unique_name("evs-pump-outage"));
    std::fs::create_dir_all(&dir).unwrap();
    let append = |stream: &str| {
        let out = evs.run(&["append", "--stream", stream, "--event-name", "Happened"]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    append("before-1");
    let archive = dir.join("archive").display().to_string();
    let checkpoint = dir.join("pump.json").display().to_string();
    let mut child = evs
        .command(&[
            "pump",
            "--archive",
            &archive,
            "--checkpoint-file",
            &checkpoint,
            "--poll-interval",
            "100ms",
        ])
        .env("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", proxy.endpoint())
        .env("AWS_MAX_ATTEMPTS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let committed = |rx: &mpsc::Receiver<String>, want: u64| {
        let mut got = 0;
        while got < want {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("a batch line");
            let v: Value = serde_json::from_str(&line).unwrap();
            got += v["committed"].as_u64().unwrap_or(0);
        }
    };
    committed(&rx, 1);

    // The outage: every DynamoDB Streams request fails.
    proxy.configure(r#"{"error": 1.0}"#);
    append("during-1");
    append("during-2");
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "the pump waits it out");
    proxy.configure(r#"{"error": 0.0}"#);
    committed(&rx, 2);

    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("retrying in"), "each failure reported: {err}");
    assert!(err.contains("works again"), "the recovery reported: {err}");
    let report: Value = serde_json::from_str(&proxy.report()).unwrap();
    assert!(report["counts"]["error"].as_u64() > Some(1), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
