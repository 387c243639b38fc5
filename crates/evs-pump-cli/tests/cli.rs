//! The `evs-pump` binary's command line: its help and its refusals, before
//! any AWS call. (Its runs against the emulator are `evs pump` tests in
//! `crates/evs/tests/it`, through the `evs` binary that runs this one;
//! building this test is also what puts `evs-pump` beside `evs` for them.)

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

fn pump(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evs-pump"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_names_every_flag() {
    let out = pump(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--table",
        "--archive",
        "--batch-size",
        "--once",
        "--timeout",
        "--poll-interval",
        "--retry-for",
        "--checkpoint-file",
        "--connect-timeout",
        "--call-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_usage_exits_2_before_any_call() {
    let out = pump(&["--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no table given"), "{}", stderr(&out));
    for args in [
        &["--table", "t", "--batch-size", "0"][..],
        &["--table", "t", "--timeout", "0s"][..],
        &["--table", "t", "--retry-for", "5 parsecs"][..],
    ] {
        let out = pump(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

/// The usage line of an error shows no optional flag as required, even one
/// that was given.
#[test]
fn usage_shows_no_optional_flag_as_required() {
    let out = pump(&["--table", "t", "--once", "--sideways"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Usage: evs-pump [OPTIONS]\n"),
        "{}",
        stderr(&out)
    );
}

/// A service that accepts connections and never answers: a hung endpoint.
fn hung_endpoint() -> String {
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

/// A pump whose endpoint hangs gets timeouts (--connect-timeout,
/// --call-timeout) instead of waiting for ever: each is reported and
/// retried like a refused connection, and with --once it gives up after
/// --retry-for with an error naming the timeout. The child is killed (and
/// the test fails) if it hangs.
#[test]
fn a_hung_endpoint_times_out_is_retried_and_given_up() {
    use std::io::Read;
    use std::time::{Duration, Instant};

    let dir = std::env::temp_dir().join(format!("evs-pump-hung-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_evs-pump"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_ENDPOINT_URL", hung_endpoint())
        .args([
            "--table",
            "events",
            "--archive",
            "archive",
            "--once",
            "--retry-for",
            "2s",
            "--connect-timeout",
            "1s",
            "--call-timeout",
            "500ms",
        ])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(90) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still running after 90 s, killed: it hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() >= 2,
        "each failure reported, then the error: {err}"
    );
    for warning in &lines[..lines.len() - 1] {
        assert!(warning.contains("timed out"), "{err}");
        assert!(warning.contains("retrying in"), "{err}");
    }
    let last = lines[lines.len() - 1];
    assert!(last.starts_with("evs-pump: error:"), "{err}");
    assert!(
        last.contains("timed out") && last.contains("--call-timeout"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI escapes on a pipe: {err:?}"
    );
}

#[test]
fn a_checkpoint_in_a_new_directory_is_locked_there() {
    let dir = std::env::temp_dir().join(format!(
        "evs-pump-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let checkpoint = dir.join("new").join("dir").join("cp.json");
    // No region and no instance metadata: the run stops at the AWS
    // configuration, after the lock and before any call.
    let out = Command::new(env!("CARGO_BIN_EXE_evs-pump"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["--table", "t", "--once", "--archive"])
        .arg(dir.join("archive"))
        .arg("--checkpoint-file")
        .arg(&checkpoint)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("lock"), "{}", stderr(&out));
    assert!(stderr(&out).contains("no AWS region"), "{}", stderr(&out));
    assert!(dir.join("new/dir/cp.json.lock").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
