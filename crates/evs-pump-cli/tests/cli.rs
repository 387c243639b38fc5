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
