//! `evs replay` and `evs verify` on a local archive made by `evs invoke`
//! from the sample stream events (no emulator needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use evs_testkit::unique_name;
use serde_json::Value;

pub(crate) fn evs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evs"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(name)
}

/// A scratch directory, removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub(crate) fn path(&self, name: &str) -> String {
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
    assert_eq!(out.status.code(), Some(2), "a usage error");
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

// ---------------------------------------------------------------------------
// Reliability: what a checkpoint covers, operator ways out, clear refusals.

/// A Lambda event of `count` records cloned from the first sample record:
/// events `first..` of streams `s-0`..`s-9`, round robin.
fn big_event(scratch: &Scratch, batch: usize, count: usize) -> PathBuf {
    let sample: Value =
        serde_json::from_str(&std::fs::read_to_string(sample("inserts.json")).unwrap()).unwrap();
    let template = &sample["Records"][0];
    let records: Vec<Value> = (0..count)
        .map(|i| {
            let n = batch * count + i;
            let (stream, id) = (format!("s-{}", n % 10), (n / 10 + 1).to_string());
            let mut r = template.clone();
            r["eventID"] = Value::from(format!("{n:032x}"));
            for keys in ["Keys", "NewImage"] {
                r["dynamodb"][keys]["StreamId"]["S"] = Value::from(stream.clone());
                r["dynamodb"][keys]["EventId"]["N"] = Value::from(id.clone());
            }
            r["dynamodb"]["NewImage"]["EventUuid"]["S"] =
                Value::from(format!("00000000-0000-4000-8000-{n:012x}"));
            r["dynamodb"]["SequenceNumber"] = Value::from(format!("{}", 1_000_000 + n));
            r
        })
        .collect();
    let path = scratch.0.join(format!("big-{batch}.json"));
    std::fs::write(&path, serde_json::json!({ "Records": records }).to_string()).unwrap();
    path
}

/// An archive of `objects` objects of `per_object` events each, in order.
pub(crate) fn big_archive(scratch: &Scratch, objects: usize, per_object: usize) -> String {
    let archive = scratch.path("archive");
    for batch in 0..objects {
        // One invoke per object: each is sealed after the one before.
        invoke(&archive, &[&big_event(scratch, batch, per_object)]);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    archive
}

pub(crate) fn replay_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evs"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .arg("replay")
        .args(args);
    cmd
}

/// Reads exactly `n` lines from `from`, a byte at a time (nothing more is
/// taken from the pipe).
pub(crate) fn read_lines(from: &mut impl std::io::Read, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while lines.len() < n {
        assert_eq!(from.read(&mut byte).unwrap(), 1, "the replay ended early");
        if byte[0] == b'\n' {
            lines.push(String::from_utf8(std::mem::take(&mut line)).unwrap());
        } else {
            line.push(byte[0]);
        }
    }
    lines
}

#[test]
fn a_checkpoint_covers_only_the_lines_the_consumer_took() {
    use std::process::Stdio;

    let scratch = Scratch::new("evs-replay-taken");
    // ~1.5 MB of lines: far more than a pipe holds.
    let archive = big_archive(&scratch, 20, 100);
    let all = evs(&["replay", "--archive", &archive, "--quiet"]);
    assert!(all.status.success(), "{}", stderr(&all));
    let all: Vec<String> = stdout(&all).lines().map(str::to_owned).collect();
    assert_eq!(all.len(), 2_000);

    let checkpoint = scratch.path("taken.json");
    let args = [
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
        "--checkpoint-interval",
        "0",
    ];
    // A consumer that reads 250 lines and goes away.
    let mut child = replay_cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let taken = read_lines(&mut pipe, 250);
    assert_eq!(taken, all[..250]);
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "not a success: {err}");
    assert!(err.contains("stdout was closed by its reader"), "{err}");

    // Resumed: from an object boundary at or before line 250, to the end.
    let rest = replay_cmd(&args).output().unwrap();
    assert!(rest.status.success(), "{}", stderr(&rest));
    let rest: Vec<String> = stdout(&rest).lines().map(str::to_owned).collect();
    let from = all.len() - rest.len();
    assert_eq!(rest, all[from..], "nothing lost, nothing reordered");
    assert!(
        from <= 250 && 250 - from < 100,
        "repeated {} lines",
        250 - from
    );

    // `| head -1`: a failure, and a rerun goes on (the lines head read
    // ahead but did not print are the consumer's to lose, not ours).
    std::fs::remove_file(&checkpoint).unwrap();
    let shell = format!(
        "set -o pipefail; \"$0\" replay --archive '{archive}' --checkpoint-file '{checkpoint}' | head -1 >/dev/null"
    );
    let head = Command::new("bash")
        .args(["-c", &shell, env!("CARGO_BIN_EXE_evs")])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert_ne!(head.status.code(), Some(0), "{}", stderr(&head));
    let rest = replay_cmd(&args).output().unwrap();
    let rest: Vec<String> = stdout(&rest).lines().map(str::to_owned).collect();
    assert!(
        rest.len() > 1_000,
        "the rerun goes on: {} lines",
        rest.len()
    );
    assert_eq!(rest, all[all.len() - rest.len()..]);
}

#[test]
fn an_unwritable_checkpoint_is_refused_before_the_first_line() {
    let scratch = Scratch::new("evs-replay-unwritable");
    let archive = scratch.path("archive");
    invoke(&archive, &[&sample("inserts.json")]);
    // Under a file, where no directory can be made.
    std::fs::write(scratch.path("a-file"), b"").unwrap();
    let checkpoint = scratch.path("a-file/replay.json");
    let out = evs(&[
        "replay",
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "nothing printed: {}", stdout(&out));
    assert!(stderr(&out).contains("a-file"), "{}", stderr(&out));
}

#[test]
fn a_corrupt_object_stops_the_replay_unless_quarantined_or_skipped() {
    let scratch = Scratch::new("evs-replay-quarantine");
    let archive = big_archive(&scratch, 3, 20);
    let mut keys: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![PathBuf::from(&archive)];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                keys.push(p);
            }
        }
    }
    keys.sort();
    assert_eq!(keys.len(), 3);
    std::fs::write(&keys[1], b"not gzip at all").unwrap();
    let key = keys[1]
        .strip_prefix(&archive)
        .unwrap()
        .display()
        .to_string();

    // The default: stop, naming the object.
    let out = evs(&["replay", "--archive", &archive]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&key), "{}", stderr(&out));
    assert_eq!(ids(&out).len(), 20, "the first object only");

    // --quarantine: skipped, recorded, and the gaps it leaves reported.
    let quarantine = scratch.path("quarantine.ndjson");
    let out = evs(&["replay", "--archive", &archive, "--quarantine", &quarantine]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "gaps are left: {err}");
    assert!(
        err.contains(&format!("skipped archive object {key}")),
        "{err}"
    );
    assert_eq!(err.matches("skipped archive object").count(), 1, "{err}");
    assert!(!err.contains("archive object skipped"), "said once: {err}");
    assert!(err.contains("evs verify --table"), "{err}");
    assert!(err.contains("is missing events 3..=4"), "{err}");
    assert_eq!(
        ids(&out).len(),
        20,
        "the streams wait for the missing events"
    );
    let recorded: Vec<Value> = std::fs::read_to_string(&quarantine)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["key"], Value::from(key.clone()));
    assert!(recorded[0]["reason"]
        .as_str()
        .unwrap()
        .contains("decompress"));

    // --skip-object KEY: the same, for a key named in advance.
    let out = evs(&["replay", "--archive", &archive, "--skip-object", &key]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped archive object"));
}

#[test]
fn unsafe_follow_settings_are_warned_about_and_durations_share_one_syntax() {
    let scratch = Scratch::new("evs-replay-settings");
    let archive = scratch.path("archive");
    invoke(&archive, &[&sample("inserts.json")]);
    let out = evs(&[
        "replay",
        "--archive",
        &archive,
        "--archiver-timeout",
        "0",
        "--clock-margin",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: --archiver-timeout 0 s is below 1 s"),
        "{err}"
    );
    assert!(
        err.contains("warning: --clock-margin 0 s is below 5 s"),
        "{err}"
    );

    for good in ["90", "90s", "1500ms", "2m", "1h"] {
        let out = evs(&[
            "replay",
            "--archive",
            &archive,
            "--archiver-timeout",
            good,
            "-q",
        ]);
        assert!(out.status.success(), "{good}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("warning"),
            "{good}: {}",
            stderr(&out)
        );
    }
    for bad in ["abc", "5 days", "-1s", ""] {
        let out = evs(&["replay", "--archive", &archive, "--poll-interval", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    // An s3:// URL whose prefix lacks the slash: usage, with the fix.
    let out = evs(&["replay", "--archive", "s3://bucket-x/p"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(write s3://bucket-x/p/)"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("EVS_ARCHIVE_PREFIX"),
        "{}",
        stderr(&out)
    );
}

/// An archive that cannot be reached: a follower waits it out and reports
/// each failure; a one-off replay gives up after --retry-for.
#[test]
fn an_unreachable_archive_is_retried_with_backoff() {
    use std::process::Stdio;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed); // nothing listens there now: connections are refused
    let aws = |cmd: &mut Command| {
        cmd.env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_MAX_ATTEMPTS", "1");
    };
    let mut cmd = replay_cmd(&["--archive", "s3://no-service/events/", "--retry-for", "2s"]);
    aws(&mut cmd);
    let started = std::time::Instant::now();
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("retrying in"), "each failure reported: {err}");
    assert!(err.contains("kept failing for"), "{err}");
    assert!(err.matches("retrying in").count() >= 2, "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{err}"
    );

    let mut cmd = replay_cmd(&["--archive", "s3://no-service/events/", "--follow"]);
    aws(&mut cmd);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let alive = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(alive.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "still following, then stopped: {err}"
    );
    assert!(err.matches("retrying in").count() >= 2, "{err}");
}

/// `evs replay --checkpoint-file` killed with SIGKILL at random moments and
/// restarted until it ends: across the runs' outputs nothing is lost and
/// nothing reordered; a restart repeats at most what came after the last
/// checkpoint saved (with --checkpoint-interval 0: an object and the
/// output's queue).
#[test]
fn a_replay_killed_at_random_moments_resumes_losing_nothing() {
    for _ in 0..evs_testkit::soak() {
        replay_crash_round();
    }
}

fn replay_crash_round() {
    use std::process::Stdio;

    let scratch = Scratch::new("evs-replay-crash");
    let archive = big_archive(&scratch, 20, 100);
    let started = std::time::Instant::now();
    let all = evs(&["replay", "--archive", &archive, "--quiet"]);
    // Kills fall anywhere in a run about as long as a whole one.
    let window = u64::try_from(started.elapsed().as_millis()).unwrap_or(1000) + 1;
    let all: Vec<String> = stdout(&all).lines().map(str::to_owned).collect();
    let checkpoint = scratch.path("crash.json");
    let args = [
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
        "--checkpoint-interval",
        "0",
        "--quiet",
    ];
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut end = 0; // lines of `all` delivered so far
    let (mut kills, mut repeated, mut most_repeated) = (0, 0, 0);
    for run in 0.. {
        assert!(
            run < 200,
            "seed {seed}: never finished ({end} lines delivered, {kills} kills)"
        );
        let out_path = scratch.path(&format!("out-{run}.ndjson"));
        let out_file = std::fs::File::create(&out_path).unwrap();
        let mut child = replay_cmd(&args)
            .stdout(out_file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first run is cut short; later ones (which read the unsettled
        // objects again, dropping what the checkpoint has seen) are given
        // up to twice as long.
        let span = if end == 0 { window } else { 2 * window };
        std::thread::sleep(std::time::Duration::from_millis(rng.u64(0..span)));
        let finished = match child.try_wait().unwrap() {
            Some(status) if kills == 0 => {
                // Never killed (the machine was faster than measured):
                // start again from scratch.
                assert!(status.success(), "seed {seed}: run {run} failed");
                let _ = std::fs::remove_file(&checkpoint);
                end = 0;
                continue;
            }
            Some(status) => {
                assert!(status.success(), "seed {seed}: run {run} failed");
                true
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                false
            }
        };
        // A line torn by the kill (no newline yet) was never covered by a
        // checkpoint: it comes again.
        let text = std::fs::read_to_string(&out_path).unwrap();
        let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
        let got: Vec<&str> = whole.lines().collect();
        if got.is_empty() {
            if finished {
                assert_eq!(end, all.len(), "seed {seed}");
                break;
            }
            continue;
        }
        let start = all
            .iter()
            .position(|l| l == got[0])
            .unwrap_or_else(|| panic!("seed {seed}: unknown line {}", got[0]));
        assert!(
            start <= end,
            "seed {seed}: run {run} skipped lines {end}..{start}"
        );
        assert_eq!(
            got,
            all[start..start + got.len()],
            "seed {seed}: run {run} out of order"
        );
        repeated += end - start;
        most_repeated = most_repeated.max(end - start);
        end = end.max(start + got.len());
        if finished {
            assert_eq!(end, all.len(), "seed {seed}: the last run ended early");
            break;
        }
    }
    eprintln!(
        "seed {seed}: {kills} kills over runs of up to {window} ms, {repeated} lines repeated \
         in all, at most {most_repeated} at one restart"
    );
    assert!(kills > 0, "seed {seed}: never killed");
    // One object, plus what lies between the replay and the file (the
    // output's queue, 64 KiB: about 180 of these lines).
    assert!(
        most_repeated <= 100 + 180,
        "seed {seed}: more than an object and the output's queue repeated"
    );
}

#[test]
fn an_empty_archive_says_so() {
    let scratch = Scratch::new("evs-replay-empty");
    let archive = scratch.path("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let out = evs(&["replay", "--archive", &archive]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("holds no archive objects yet (is the prefix right?"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------
// Delivery to a consumer that acknowledges, checkpoints in a table, partitions.

/// A consumer script: appends each line to `$OUT`, acknowledges it, and
/// after `$STOP` lines (if set) exits with code 3 without reading more.
pub(crate) const CONSUMER: &str = r#"n=0
while IFS= read -r line; do
  printf '%s\n' "$line" >> "$OUT"
  n=$((n+1))
  echo "$n"
  if [ -n "$STOP" ] && [ "$n" -ge "$STOP" ]; then exit 3; fi
done"#;

fn consumer_run(args: &[&str], out: &str, stop: Option<usize>, env: &[(&str, String)]) -> Output {
    let mut cmd = replay_cmd(args);
    cmd.env("OUT", out)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--", "bash", "-c", CONSUMER]);
    if let Some(stop) = stop {
        cmd.env("STOP", stop.to_string());
    }
    cmd.output().unwrap()
}

pub(crate) fn lines_of(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A consumer that stops after 250 acknowledged lines: the replay fails
/// (exit 1) naming it, the checkpoint covers only acknowledged lines, and
/// the rerun delivers the rest: nothing lost, nothing reordered.
fn consumer_stops_and_resumes(archive: &str, checkpoint_args: &[&str], env: &[(&str, String)]) {
    let all = evs(&["replay", "--archive", archive, "--quiet"]);
    let all: Vec<String> = stdout(&all).lines().map(str::to_owned).collect();
    assert_eq!(all.len(), 2_000);
    let dir = Scratch::new("evs-consumer");
    let mut args = vec![
        "--archive",
        archive,
        "--checkpoint-interval",
        "0",
        "--quiet",
    ];
    args.extend_from_slice(checkpoint_args);

    let first = dir.path("first.ndjson");
    let out = consumer_run(&args, &first, Some(250), env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stopped after acknowledging 250 of") && err.contains("exit status: 3"),
        "{err}"
    );
    assert_eq!(lines_of(&first), all[..250]);

    let second = dir.path("second.ndjson");
    let out = consumer_run(&args, &second, None, env);
    assert!(out.status.success(), "{}", stderr(&out));
    let rest = lines_of(&second);
    let from = all.len() - rest.len();
    assert_eq!(rest, all[from..], "nothing lost, nothing reordered");
    assert!(
        from <= 250 && 250 - from < 100,
        "repeated {} lines",
        250 - from
    );

    // Done: a third run has nothing to deliver, and the consumer exits 0.
    let third = dir.path("third.ndjson");
    let out = consumer_run(&args, &third, None, env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(lines_of(&third).is_empty());
}

#[test]
fn a_consumer_acknowledges_and_the_checkpoint_covers_only_what_it_acknowledged() {
    let scratch = Scratch::new("evs-replay-acks");
    let archive = big_archive(&scratch, 20, 100);
    let checkpoint = scratch.path("acks.json");
    consumer_stops_and_resumes(&archive, &["--checkpoint-file", &checkpoint], &[]);

    // A consumer that prints something other than a count is refused, and
    // so is one that exits non-zero after acknowledging everything.
    for (script, wanted) in [
        ("read -r l; echo ok; sleep 5", "wrote \"ok\" to its stdout"),
        (
            "n=0; while read -r l; do n=$((n+1)); echo $n; done; exit 7",
            "exited with exit status: 7",
        ),
    ] {
        let out = replay_cmd(&["--archive", &archive, "--", "bash", "-c", script])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{script}");
        assert!(stderr(&out).contains(wanted), "{}", stderr(&out));
    }
}

#[test]
fn a_checkpoint_in_a_table_resumes_a_consumer() {
    let Some(moto) = evs_testkit::Moto::shared() else {
        return;
    };
    let scratch = Scratch::new("evs-replay-table-checkpoint");
    let archive = big_archive(&scratch, 20, 100);
    let env = moto.env();
    let table = unique_name("evs-checkpoints");
    let create = Command::new(env!("CARGO_BIN_EXE_evs"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["table", "create-checkpoints", "--checkpoint-table", &table])
        .output()
        .unwrap();
    assert!(create.status.success(), "{}", stderr(&create));
    consumer_stops_and_resumes(
        &archive,
        &[
            "--checkpoint-table",
            &table,
            "--checkpoint-name",
            "orders-view",
        ],
        &env,
    );
    // A table that does not exist is named before anything is delivered.
    let mut missing = replay_cmd(&[
        "--archive",
        &archive,
        "--checkpoint-table",
        "no-such-table",
        "--checkpoint-name",
        "x",
    ]);
    let out = missing
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    super::cli::assert_one_line_error(&out, 1, "evs table create-checkpoints");
    assert!(out.stdout.is_empty());
}

#[test]
fn partitions_split_the_streams_and_together_deliver_everything_in_order() {
    let scratch = Scratch::new("evs-replay-partitions");
    let archive = big_archive(&scratch, 5, 100);
    let all_ids = ids(&evs(&["replay", "--archive", &archive, "--quiet"]));
    let mut parts = Vec::new();
    for i in 0..3 {
        let out = evs(&[
            "replay",
            "--archive",
            &archive,
            "--quiet",
            "--partition",
            &format!("{i}/3"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        parts.push(ids(&out));
    }
    let mut seen = std::collections::BTreeSet::new();
    for part in &parts {
        // Each partition is the whole replay with the other streams left out,
        // and no stream is in two.
        let streams: std::collections::BTreeSet<&String> = part.iter().map(|(s, _)| s).collect();
        let expected: Vec<(String, u64)> = all_ids
            .iter()
            .filter(|(s, _)| streams.contains(s))
            .cloned()
            .collect();
        assert_eq!(part, &expected);
        for stream in streams {
            assert!(seen.insert(stream), "{stream} is in two partitions");
        }
    }
    let every: std::collections::BTreeSet<&String> = all_ids.iter().map(|(s, _)| s).collect();
    assert_eq!(seen, every, "every stream is in a partition");
    assert!(
        parts.iter().filter(|p| !p.is_empty()).count() >= 2,
        "streams spread out"
    );
    let bad = evs(&["replay", "--archive", &archive, "--partition", "3/3"]);
    // A usage error, as clap words it (with its hint to --help).
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("needs 0 <= i < N"),
        "{}",
        stderr(&bad)
    );

    // A partition's checkpoint resumes that partition only: its other
    // streams' events were passed over, and another partition (or all of
    // them) resuming from it would skip them.
    let checkpoint = scratch.path("partition-0.json");
    let with = |partition: Option<&str>| {
        let mut args = vec!["replay", "--archive", &archive, "--quiet"];
        args.extend(["--checkpoint-file", &checkpoint]);
        if let Some(p) = partition {
            args.extend(["--partition", p]);
        }
        evs(&args)
    };
    let first = with(Some("0/3"));
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(ids(&first), parts[0]);
    let text = std::fs::read_to_string(&checkpoint).unwrap();
    assert!(text.contains(r#""partition":"0/3""#), "{text}");
    for other in [Some("1/3"), None] {
        let refused = with(other);
        super::cli::assert_one_line_error(&refused, 1, "saved by a replay of partition 0/3");
        assert!(refused.stdout.is_empty());
    }
    let again = with(Some("0/3"));
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(ids(&again).is_empty(), "nothing new for partition 0/3");
}

#[test]
fn a_json_summary_for_scripts() {
    let scratch = Scratch::new("evs-replay-json");
    let archive = big_archive(&scratch, 2, 10);
    let out = evs(&["replay", "--archive", &archive, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(summary["delivered"], 20);
    assert_eq!(summary["objects"], 2);
    assert_eq!(summary["gaps"], 0);
    assert!(summary["settledFrontier"].is_string());
    assert!(summary["behindFrontierMs"].is_u64());
}
