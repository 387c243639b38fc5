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
