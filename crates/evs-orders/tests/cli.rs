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
        (&["dump", "--read-model", "dynamodb:"], "names no TABLE"),
        (&["dump", "--read-model", "sqlite:"], "names no FILE"),
        (&["dump", "--read-model", "postgres:"], "names no URL"),
        (&["dump", "--read-model", "orders"], "has no scheme"),
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

/// What a bad read model gives: exit 1, one line naming the cause, and
/// the file as it was.
fn refused(args: &[&str], says: &str) {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, Some(1), "{args:?}: {stderr}");
    assert!(stdout.is_empty(), "{args:?}: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
}

#[test]
fn a_file_that_is_not_a_read_model_is_refused_untouched() {
    let dir = evs_testkit::TempDir::new("orders-cli");
    // not a SQLite database
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a database, just text\n".repeat(200)).unwrap();
    let before = std::fs::read(&text).unwrap();
    let arg = format!("sqlite:{}", text.display());
    for command in ["dump", "parked", "init"] {
        refused(&[command, "--read-model", &arg], "is not a SQLite database");
    }
    assert_eq!(std::fs::read(&text).unwrap(), before);
    // a folder that does not exist
    let missing = format!("sqlite:{}", dir.join("no/such/dir/o.db").display());
    refused(
        &["dump", "--read-model", &missing],
        "does its folder exist?",
    );
    // another projection's read model
    let other = dir.join("balances.db");
    drop(evs_projection::SqliteRowStore::open(&other, "balances").unwrap());
    let arg = format!("sqlite:{}", other.display());
    refused(
        &["dump", "--read-model", &arg],
        "holds the read model of projection \"balances\", not \"orders\"",
    );
    let tables = tables_of(&other);
    assert!(!tables.contains(&"customers".to_owned()), "{tables:?}");
    // a database of other tables
    let foreign = dir.join("app.db");
    let conn = evs_projection::rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("create table users (id integer primary key)")
        .unwrap();
    drop(conn);
    let arg = format!("sqlite:{}", foreign.display());
    refused(
        &["dump", "--read-model", &arg],
        "holds tables (users, …) but no read model",
    );
    assert_eq!(tables_of(&foreign), vec!["users".to_owned()]);
}

fn tables_of(path: &std::path::Path) -> Vec<String> {
    let conn = evs_projection::rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("select name from sqlite_schema where type = 'table' order by name")
        .unwrap();
    let names = stmt.query_map([], |r| r.get(0)).unwrap();
    names.collect::<Result<_, _>>().unwrap()
}

#[test]
fn init_and_dump_of_a_new_sqlite_file() {
    let dir = evs_testkit::TempDir::new("orders-cli");
    let arg = format!("sqlite:{}", dir.join("o.db").display());
    let (code, stdout, stderr) = run(&["init", "--read-model", &arg]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("tables ready"), "{stdout}");
    let (code, stdout, stderr) = run(&["dump", "--read-model", &arg]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let tables = tables_of(&dir.join("o.db"));
    for table in ["customers", "daily", "evs_ledger", "evs_meta", "evs_rows"] {
        assert!(tables.contains(&table.to_owned()), "{tables:?}");
    }
}

#[test]
fn an_unreachable_postgres_server_is_one_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://evs:secret@127.0.0.1:{port}/orders");
    for command in ["dump", "parked", "init"] {
        refused(
            &[command, "--read-model", &url],
            &format!("127.0.0.1:{port}"),
        );
        let (_, _, stderr) = run(&[command, "--read-model", &url]);
        assert!(!stderr.contains("secret"), "{stderr}");
    }
}
