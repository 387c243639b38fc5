//! `evs replay`'s delivery from a script's point of view: whatever ends a
//! consumer, the exit code says whether everything was delivered, and the
//! checkpoint covers what was taken, no more and not much less.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::replay::{
    big_archive, evs, lines_of, read_lines, replay_cmd, stderr, stdout, Scratch, CONSUMER,
};

/// Objects and events per object of the archives here: 1,920 lines, as in
/// the report this reproduces.
const OBJECTS: usize = 40;
const PER_OBJECT: usize = 48;

fn seed() -> u64 {
    let seed = std::env::var("EVS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..1_000_000));
    eprintln!("seed {seed} (EVS_SEED={seed} repeats this run)");
    seed
}

fn all_lines(archive: &str) -> Vec<String> {
    let all = evs(&["replay", "--archive", archive, "--quiet"]);
    assert!(all.status.success(), "{}", stderr(&all));
    stdout(&all).lines().map(str::to_owned).collect()
}

/// `1234` as `1,234`, as the messages write counts.
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The lines the checkpoint covered, as the error says.
fn covered(err: &str) -> usize {
    let (_, rest) = err
        .split_once("covers the first ")
        .unwrap_or_else(|| panic!("no checkpoint named: {err}"));
    let number: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    number.parse().unwrap()
}

/// Runs the rest of the replay into the recording consumer and checks that,
/// after a first run whose consumer handled `handled` lines, nothing is lost
/// or reordered: the rerun starts at or before `handled` (returned: where).
fn resume_and_check(
    args: &[&str],
    all: &[String],
    handled: usize,
    dir: &Scratch,
    what: &str,
) -> usize {
    let rest_path = dir.path(&format!("rest-{}.ndjson", fastrand::u32(..)));
    let out = replay_cmd(args)
        .env("OUT", &rest_path)
        .args(["--", "bash", "-c", CONSUMER])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: the rerun failed: {}",
        stderr(&out)
    );
    let rest = lines_of(&rest_path);
    let from = all.len() - rest.len();
    assert_eq!(
        rest,
        all[from..],
        "{what}: the rerun is not the end of the replay"
    );
    assert!(
        from <= handled,
        "{what}: lines {handled}..{from} were never delivered"
    );
    from
}

/// A consumer that acknowledges every line and exits (0 or 3) after N of
/// them, for many N: the replay never ends with success unless everything
/// was acknowledged, names the consumer and the count it acknowledged, and
/// the checkpoint covers what it acknowledged, less at most two objects.
#[test]
fn a_consumer_that_exits_at_any_point_never_ends_the_replay_as_a_success() {
    let scratch = Scratch::new("evs-consumer-exits");
    let archive = big_archive(&scratch, OBJECTS, PER_OBJECT);
    let all = all_lines(&archive);
    let total = all.len();
    let mut rng = fastrand::Rng::with_seed(seed());
    let mut points: Vec<(usize, u8)> =
        vec![(1, 0), (1_500, 0), (total - 1, 3), (total, 3), (total, 0)];
    points.extend((0..6).map(|_| (rng.usize(1..total), if rng.bool() { 0 } else { 3 })));
    for (round, (stop, code)) in points.into_iter().enumerate() {
        let what = format!("exit {code} after {stop} lines");
        let checkpoint = scratch.path(&format!("exits-{round}.json"));
        let args = [
            "--archive",
            &archive,
            "--checkpoint-file",
            &checkpoint,
            "--quiet",
        ];
        let script = format!("{{print NR; fflush()}} NR=={stop}{{exit {code}}}");
        let out = replay_cmd(&args)
            .args(["--", "awk", &script])
            .output()
            .unwrap();
        let err = stderr(&out);
        if stop == total && code == 0 {
            assert!(out.status.success(), "{what}: {err}");
            assert!(std::path::Path::new(&checkpoint).exists(), "{what}");
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("the consumer \"awk\""), "{what}: {err}");
        if stop == total {
            assert!(
                err.contains("exited with exit status: 3 after acknowledging every line"),
                "{what}: {err}"
            );
            continue;
        }
        assert!(
            err.contains(&format!("stopped after acknowledging {} of", count(stop))),
            "{what}: {err}"
        );
        let saved = covered(&err);
        assert!(
            saved <= stop && stop - saved < 2 * PER_OBJECT,
            "{what}: the checkpoint covers {saved} lines"
        );
        let from = resume_and_check(&args, &all, stop, &scratch, &what);
        assert_eq!(
            from, saved,
            "{what}: the rerun starts where the checkpoint said"
        );
    }
}

/// A consumer that takes 5 ms a line (in Python, which reads its input in
/// blocks): checkpoints are saved on time whatever the pipe and the
/// consumer's buffer hold. The first one appears within an interval, and a
/// replay killed mid-way repeats about one --checkpoint-interval of the
/// consumer's lines, not that backlog's worth more.
#[test]
fn checkpoints_keep_up_with_a_slow_consumer() {
    let scratch = Scratch::new("evs-slow-consumer");
    let archive = big_archive(&scratch, OBJECTS, PER_OBJECT);
    let all = all_lines(&archive);
    let checkpoint = scratch.path("slow.json");
    // The default --checkpoint-interval.
    let interval = Duration::from_secs(1);
    let args = [
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
        "--quiet",
    ];
    let handled_path = scratch.path("handled.ndjson");
    let slow = "import os, sys, time
out = open(os.environ['OUT'], 'a')
n = 0
for line in sys.stdin:
    time.sleep(0.005)
    out.write(line)
    out.flush()
    n += 1
    print(n, flush=True)";
    let python = std::env::var("EVS_PYTHON").unwrap_or_else(|_| "python3".into());
    let started = Instant::now();
    let mut child = replay_cmd(&args)
        .env("OUT", &handled_path)
        .args(["--", &python, "-c", slow])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = None;
    while started.elapsed() < Duration::from_secs(4) {
        if first.is_none() && std::path::Path::new(&checkpoint).exists() {
            first = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let ran = started.elapsed();
    // The consumer sees the end of its input and stops.
    std::thread::sleep(Duration::from_millis(500));
    let handled = lines_of(&handled_path).len();
    assert!(
        handled > 50 && handled < all.len(),
        "{handled} lines handled"
    );
    let first = first.unwrap_or_else(|| panic!("no checkpoint in {ran:?}"));
    let from = resume_and_check(&args, &all, handled, &scratch, "killed");
    // What a rerun may repeat: the lines the consumer handled in one
    // interval (at the rate it had; a fifth more for the saver's own
    // latency), and the last object, which the checkpoint covers whole or
    // not at all. A checkpoint taken every interval and saved once the
    // backlog before the consumer drains (the pipe, and the block Python
    // read ahead) trails by that backlog too.
    let per_interval = handled as f64 * interval.as_secs_f64() / ran.as_secs_f64();
    let bound = (1.2 * per_interval) as usize + PER_OBJECT + 2;
    eprintln!(
        "{handled} lines handled in {ran:?}, the first checkpoint after {first:?}; the rerun \
         repeated {} (bound {bound})",
        handled - from
    );
    // Saved as soon as the first object is acknowledged (about 0.5 s here),
    // not an interval after the backlog drains (about 3 s).
    assert!(
        first < interval * 2,
        "the first checkpoint came after {first:?}"
    );
    assert!(
        handled - from <= bound,
        "repeated {} lines (bound {bound})",
        handled - from
    );
}

/// Two replays on one checkpoint file: the second is refused while the
/// first runs.
#[test]
fn two_replays_cannot_share_a_checkpoint_file() {
    let scratch = Scratch::new("evs-checkpoint-lock");
    let archive = big_archive(&scratch, 20, 100);
    // In a directory that does not exist yet: it is created.
    let checkpoint = scratch.path("new/dir/shared.json");
    let args = [
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
        "--quiet",
    ];
    // The first one blocks on a pipe nobody reads.
    let mut first = replay_cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pipe = first.stdout.take().unwrap();
    read_lines(&mut pipe, 1);
    let second = replay_cmd(&args).output().unwrap();
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another replay is running on the checkpoint"),
        "{err}"
    );
    assert!(stdout(&second).is_empty(), "the second delivered nothing");
    first.kill().unwrap();
    first.wait().unwrap();
    // Once the first is gone, the checkpoint is free again.
    let third = replay_cmd(&args).output().unwrap();
    assert!(third.status.success(), "{}", stderr(&third));
}

/// Stdout on a Unix socket (Node's child stdio, systemd): what is still in
/// the socket is not checkpointed. On a network socket no checkpoint can
/// say what was read: refused.
#[test]
fn a_socket_reader_is_checkpointed_only_for_what_it_read() {
    use std::os::unix::net::UnixStream;

    let scratch = Scratch::new("evs-socket");
    let archive = big_archive(&scratch, 20, 100);
    let all = all_lines(&archive);
    let checkpoint = scratch.path("socket.json");
    let args = [
        "--archive",
        &archive,
        "--checkpoint-file",
        &checkpoint,
        "--checkpoint-interval",
        "0",
        "--quiet",
    ];
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let child = replay_cmd(&args)
        .stdout(std::os::fd::OwnedFd::from(theirs))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let taken = read_lines(&mut ours, 250);
    assert_eq!(taken, all[..250]);
    // Give the replay time to fill the socket's buffers, then go away.
    std::thread::sleep(Duration::from_millis(300));
    drop(ours);
    let out: Output = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stdout was closed by its reader"), "{err}");
    let from = resume_and_check(&args, &all, 250, &scratch, "socket");
    assert!(250 - from < 200, "repeated {} lines", 250 - from);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let tcp_checkpoint = scratch.path("tcp.json");
    let out = replay_cmd(&["--archive", &archive, "--checkpoint-file", &tcp_checkpoint])
        .stdout(std::os::fd::OwnedFd::from(client))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("network socket"), "{err}");
    assert!(!std::path::Path::new(&tcp_checkpoint).exists());
}

/// Values no replay could use are usage errors: exit 2, one line.
#[test]
fn unusable_replay_flags_are_usage_errors() {
    for args in [
        &["replay", "--archive", ".", "--since", "garbage"][..],
        &[
            "replay",
            "--archive",
            ".",
            "--checkpoint-table",
            "t",
            "--checkpoint-name",
            "",
        ],
        &[
            "replay",
            "--archive",
            ".",
            "--checkpoint-table",
            "t",
            "--checkpoint-name",
            "a#b",
        ],
    ] {
        let out = evs(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}
