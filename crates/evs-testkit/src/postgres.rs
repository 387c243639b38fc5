//! A throwaway PostgreSQL cluster for the tests of the PostgreSQL read-model
//! store: [`Postgres::shared`] starts one per test process, and
//! [`Postgres::fresh_database`] gives each test an empty database of its own.
//!
//! The binaries are those of `$EVS_PG_BIN` (a `bin` folder) if set, else the
//! newest `/usr/lib/postgresql/<version>/bin` (Debian's layout), else
//! `pg_config --bindir`. `make test` installs Debian's `postgresql` when none
//! has `initdb`. The cluster is `initdb`'d into a temporary folder (user
//! `evs`, trust authentication, no fsync) and started with `pg_ctl` on a free
//! loopback port, its Unix socket in that folder. `initdb` refuses to run as
//! root, so as root both run as `nobody` (through `su`) on a folder chowned
//! to it. As with [`crate::Moto`], a watchdog shell stops the cluster
//! (`pg_ctl stop -m fast`) and removes the folder once the test process is
//! gone, so no server outlives the tests. Missing binaries skip the tests
//! outside CI and fail them under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::{free_port, in_ci};

/// The superuser `initdb` creates, trusted without a password.
pub const USER: &str = "evs";

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    /// The temporary folder: `data/` (the cluster), `log`, the socket.
    dir: PathBuf,
    port: u16,
    /// Run `initdb` and `pg_ctl` as `nobody` (we are root).
    as_nobody: bool,
    /// Stops the cluster and removes `dir` when this process is gone, or
    /// at once when sent SIGTERM.
    watchdog: Option<Child>,
}

/// The folder holding `initdb` (see the module docs), or why there is none.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("EVS_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
        return Err(format!(
            "EVS_PG_BIN is {}, which has no initdb",
            dir.display()
        ));
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let missing = "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or \
                   `pg_config --bindir`)";
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|_| missing.to_owned())?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && dir.join("initdb").exists() {
        Ok(dir)
    } else {
        Err(missing.to_owned())
    }
}

/// `s` quoted for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The last lines of `path`, for a failure message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn describe(out: &Output) -> String {
    format!(
        "{}; {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

impl Postgres {
    /// One cluster shared by the whole test process; `None` (with a
    /// message) when PostgreSQL is not installed outside CI. Panics under
    /// CI when it is missing, and when it fails to start.
    pub fn shared() -> Option<&'static Postgres> {
        static SHARED: OnceLock<Option<Postgres>> = OnceLock::new();
        SHARED.get_or_init(Postgres::start).as_ref()
    }

    /// Starts a private cluster, stopped when dropped (see
    /// [`Postgres::shared`] for `None` and the panics).
    pub fn start() -> Option<Postgres> {
        let bin = match bin_dir() {
            Ok(bin) => bin,
            Err(why) => {
                let msg = format!(
                    "{why}: run `make test`, which installs it, or set EVS_PG_BIN to \
                     PostgreSQL's bin folder"
                );
                if in_ci() {
                    panic!("{msg}");
                }
                eprintln!("SKIPPED (no PostgreSQL): {msg}");
                return None;
            }
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "evs-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut pg = Postgres {
            bin,
            dir,
            port: 0,
            as_nobody: running_as_root(),
            watchdog: None,
        };
        if let Err(e) = pg.init().and_then(|()| pg.start_server()) {
            let log = tail(&pg.dir.join("log"), 20);
            let _ = std::fs::remove_dir_all(&pg.dir);
            panic!(
                "PostgreSQL ({}) did not start: {e}\nlog tail:\n{log}",
                pg.bin.display()
            );
        }
        Some(pg)
    }

    /// A command running `program` (of the bin folder) with `args` in the
    /// cluster's folder, as `nobody` when we are root.
    fn pg_command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        if self.as_nobody {
            let mut line = format!(
                "cd {} && exec {}",
                quote(&self.path(".")),
                quote(&program.to_string_lossy())
            );
            for arg in args {
                line.push(' ');
                line.push_str(&quote(arg));
            }
            let mut cmd = Command::new("su");
            cmd.args(["nobody", "-s", "/bin/sh", "-c", &line]);
            cmd
        } else {
            let mut cmd = Command::new(program);
            cmd.args(args).current_dir(&self.dir);
            cmd
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .pg_command(program, args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{program} failed: {}", describe(&out)))
        }
    }

    /// Creates the folder (owned by `nobody` when we are root) and the
    /// cluster in it.
    fn init(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        if self.as_nobody {
            let status = Command::new("chown")
                .args(["nobody", &self.path(".")])
                .status()
                .map_err(|e| format!("cannot run chown: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "chown nobody {} failed: {status}",
                    self.dir.display()
                ));
            }
        }
        let data = self.path("data");
        self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                USER,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )
    }

    /// Starts the server on a free port (a few tries: another process may
    /// take the port first), then the watchdog.
    fn start_server(&mut self) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off",
                self.port,
                self.path(".")
            );
            let (data, log) = (self.path("data"), self.path("log"));
            match self.run(
                "pg_ctl",
                &[
                    "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
                ],
            ) {
                Ok(()) => return self.start_watchdog(),
                Err(e) => last = e,
            }
            if !tail(&self.dir.join("log"), 5).contains("could not bind") {
                break;
            }
        }
        Err(last)
    }

    /// The command line that stops the cluster, for `sh`.
    fn stop_line(&self) -> String {
        let data = self.path("data");
        let cmd = self.pg_command("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn start_watchdog(&mut self) -> Result<(), String> {
        let script = r#"
parent=$1; dir=$2; stop=$3
finish() { sh -c "$stop" >/dev/null 2>&1; rm -rf "$dir"; exit 0; }
trap finish TERM INT HUP
while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
finish
"#;
        let child = Command::new("sh")
            .args(["-c", script, "evs-testkit-pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(self.stop_line())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the watchdog: {e}"))?;
        self.watchdog = Some(child);
        Ok(())
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server, as [`USER`].
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database; its URL. Panics when it cannot be created.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "evs_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("create database {name}"));
        self.url(&name)
    }

    /// Runs `sql` with `psql` on `database` (stopping at the first error);
    /// its output, unaligned, tuples only. Panics when it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(&psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", psql.display()));
        assert!(out.status.success(), "psql {sql:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the cluster and removes its folder (also done on drop, and by
    /// the watchdog when the process ends).
    pub fn stop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            // its trap stops the server and removes the folder, then it exits
            let _ = Command::new("kill").arg(watchdog.id().to_string()).status();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
