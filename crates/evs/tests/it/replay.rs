//! `evs replay` and `evs verify` on a local archive made by `evs invoke`
//! from the sample stream events (no emulator needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use evs_testkit::unique_name;
use serde_json::Value;

fn evs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evs"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(name)
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `evs invoke` of event files into `archive`.
fn invoke(archive: &str, files: &[&Path]) {
    let mut args = vec!["invoke", "--archive", archive];
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(files.iter().map(String::as_str));
    let out = evs(&args);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A copy of a sample event file keeping only the records `keep` accepts.
fn filtered(scratch: &Scratch, sample_name: &str, keep: impl Fn(&Value) -> bool) -> PathBuf {
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample(sample_name)).unwrap()).unwrap();
    let records = event["Records"].as_array_mut().unwrap();
    records.retain(|r| keep(r));
    let path = scratch
        .0
        .join(format!("{}-{}", fastrand_name(), sample_name));
    std::fs::write(&path, event.to_string()).unwrap();
    path
}

fn fastrand_name() -> String {
    unique_name("ev")
}

fn ids(out: &Output) -> Vec<(String, u64)> {
    stdout(out)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["streamId"].as_str().unwrap().to_owned(),
                v["eventId"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn record_is(r: &Value, stream: &str, id: &str) -> bool {
    r["dynamodb"]["Keys"]["StreamId"]["S"] == stream && r["dynamodb"]["Keys"]["EventId"]["N"] == id
}

#[test]
fn replay_and_verify_a_local_archive() {
    let scratch = Scratch::new("evs-replay-cli");
    let archive = scratch.path("archive");
    invoke(&archive, &[&sample("inserts.json"), &sample("mixed.json")]);
    // The mapping retried the first batch: its events are archived twice.
    invoke(&archive, &[&sample("inserts.json")]);

    let out = evs(&["replay", "--archive", &archive]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = ids(&out);
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(got.len(), sorted.len(), "no event twice: {got:?}");
    assert_eq!(got.len(), 12, "{got:?}");
    for stream in [
        "order-1001",
        "customer-zoë",
        "cart-9b1e",
        "invoice-2026-0042",
    ] {
        let per: Vec<u64> = got
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(per, (1..=per.len() as u64).collect::<Vec<_>>(), "{stream}");
    }
    // The line shape of `evs read`: the stream record's fields are gone.
    let first: Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    for field in ["streamId", "eventId", "eventName", "timestamp", "payload"] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    for field in ["eventID", "sequenceNumber"] {
        assert!(first.get(field).is_none(), "{field} in {first}");
    }
    assert!(
        stderr(&out).contains("replayed 12 events"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("8 duplicate lines dropped"),
        "{}",
        stderr(&out)
    );

    let out = evs(&["verify", "--archive", &archive]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("5 streams, 12 events, 8 duplicate lines"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).trim_end().ends_with("complete"),
        "{}",
        stdout(&out)
    );

    // --since after every object: nothing.
    let out = evs(&[
        "replay",
        "--archive",
        &archive,
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    let out = evs(&["replay", "--archive", &archive, "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));
    let out = evs(&["replay", "--archive", &scratch.path("nowhere")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no archive at"), "{}", stderr(&out));
}

#[test]
fn a_missing_event_is_named_by_replay_and_verify() {
    let scratch = Scratch::new("evs-replay-gap");
    let archive = scratch.path("archive");
    // order-1001 event 2 never reaches the archive.
    let without = filtered(&scratch, "inserts.json", |r| {
        !record_is(r, "order-1001", "2")
    });
    invoke(&archive, &[&without]);

    let out = evs(&["replay", "--archive", &archive]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("stream \"order-1001\" is missing event 2; 1 later events held back"),
        "{err}"
    );
    assert!(err.contains("--table"), "{err}");
    // Event 3 is held back, never delivered before event 2.
    assert!(!ids(&out).contains(&("order-1001".to_owned(), 3)));

    let out = evs(&["verify", "--archive", &archive]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stdout(&out).contains("missing: stream \"order-1001\" event 2"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("incomplete"), "{}", stderr(&out));
}

#[test]
fn a_checkpoint_resumes_with_nothing_repeated_and_nothing_skipped() {
    let scratch = Scratch::new("evs-replay-resume");
    let archive = scratch.path("archive");
    let checkpoint = scratch.path("replay.checkpoint.json");
    let early = filtered(&scratch, "inserts.json", |r| {
        !record_is(r, "order-1001", "2") && !record_is(r, "order-1001", "3")
    });
    let late = filtered(&scratch, "inserts.json", |r| {
        record_is(r, "order-1001", "2") || record_is(r, "order-1001", "3")
    });
    invoke(&archive, &[&early]);
    let first = evs(&[
        "replay",
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(ids(&first).len(), 6);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["lastDelivered"]["order-1001"], 1);

    invoke(&archive, &[&late]);
    let second = evs(&[
        "replay",
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
    ]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        ids(&second),
        [("order-1001".to_owned(), 2), ("order-1001".to_owned(), 3)]
    );
    let third = evs(&[
        "replay",
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
    ]);
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(stdout(&third).is_empty(), "{}", stdout(&third));

    std::fs::write(&checkpoint, "{not json").unwrap();
    let out = evs(&[
        "replay",
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not usable"), "{}", stderr(&out));
}

#[test]
fn follow_picks_up_new_objects_and_stops_cleanly_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let scratch = Scratch::new("evs-replay-follow");
    let archive = scratch.path("archive");
    let checkpoint = scratch.path("follow.checkpoint.json");
    let early = filtered(&scratch, "inserts.json", |r| {
        !record_is(r, "cart-9b1e", "3")
    });
    let late = filtered(&scratch, "inserts.json", |r| record_is(r, "cart-9b1e", "3"));
    invoke(&archive, &[&early]);

    let mut child = Command::new(env!("CARGO_BIN_EXE_evs"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args([
            "replay",
            "--archive",
            &archive,
            "--follow",
            "--archiver-timeout",
            "0",
            "--clock-margin",
            "1",
            "--poll-interval",
            "0.1",
            "--checkpoint-file",
            &checkpoint,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(lines.next().unwrap().unwrap());
    }
    // A new object while it follows: delivered once it has settled.
    invoke(&archive, &[&late]);
    let next: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (next["streamId"].as_str(), next["eventId"].as_u64()),
        (Some("cart-9b1e"), Some(3))
    );

    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends a follow cleanly");
    assert!(lines.next().is_none(), "nothing after the last event");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["lastDelivered"]["cart-9b1e"], 3);
    assert_eq!(saved["lastDelivered"]["order-1001"], 3);
}
