//! The command line's usage errors: exit code 2 and one clear line on
//! stderr, before anything is read or written.

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_evs-orders"))
        .args(args)
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("EVS_READ_MODEL")
        .env_remove("EVS_EVENTS_TABLE")
        .env_remove("EVS_ARCHIVE")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for (args, says) in [
        (
            &["dump", "--read-model", "ftp:x"][..],
            "unknown read model scheme \"ftp\"",
        ),
        (&["dump", "--read-model", "dynamodb:"], "names no table"),
        (&["dump", "--read-model", "orders"], "has no scheme"),
        (
            &["parked", "--read-model", "sqlite:orders.db"],
            "\"sqlite\" is not supported yet",
        ),
        (
            &["init", "--read-model", "postgres://h/db"],
            "\"postgres\" is not supported yet",
        ),
        (&["dump"], "no read model given"),
        (
            &["dump", "--read-model", "memory:"],
            "lives only within one `rebuild`",
        ),
        (
            &["resume", "order-1", "--read-model", "dynamodb:t"],
            "needs the events table",
        ),
        (
            &["rebuild", "--read-model", "memory:x", "--archive", "."],
            "takes nothing after the colon",
        ),
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("evs-orders: error: "),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // clap's own: an unknown command or flag, a bad partition, a bad time
    for args in [
        &["frobnicate"][..],
        &["dump", "--nope"],
        &["rebuild", "--partition", "3/2"],
        &["rebuild", "--until", "yesterday"],
        &[],
    ] {
        let (code, _, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
    }
}

#[test]
fn help_names_every_command() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for command in ["init", "rebuild", "dump", "parked", "resume"] {
        assert!(stdout.contains(command), "{stdout}");
    }
    let (code, stdout, _) = run(&["rebuild", "--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--archive",
        "--read-model",
        "--partition",
        "--until",
        "--events-table",
    ] {
        assert!(stdout.contains(flag), "{stdout}");
    }
}

#[test]
fn init_of_memory_needs_nothing() {
    let (code, stdout, stderr) = run(&["init", "--read-model", "memory:"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "memory: needs no setup\n");
}
