//! Test fixture: the DynamoDB / DynamoDB Streams / S3 emulator (moto's
//! server mode) on a free loopback port.
//!
//! The principal type is [`Moto`]. [`Moto::shared`] starts one server per
//! test process (tests isolate themselves with unique table and bucket
//! names from [`unique_name`]); [`Moto::start`] starts a private one that is
//! stopped when dropped. Either way a watchdog stops the server within a
//! second of the test process exiting, so no emulator outlives the tests.
//!
//! # Why not plain `moto_server`
//!
//! moto's server is threaded and its backends are not written for
//! concurrent requests. In moto 5.2.5 DynamoDB's `TransactWriteItems`
//! deep-copies each table it touches (once per item) before writing, and
//! when the transaction is cancelled it puts that copy back, undoing every
//! write that other requests made to the table in the meantime, although
//! they were told they succeeded. Eight concurrent CLI writers appending with
//! exact expected versions ended with 186 of their 200 acknowledged events.
//! Real DynamoDB has no such race. So the fixture does not run `moto_server`
//! but `emulator.py` (next to this crate's manifest, embedded in it): moto's
//! own WSGI application behind a middleware that runs one request at a time,
//! which makes the emulator linearizable, plus a patch so a transaction
//! copies each table once rather than once per item.
//! [`Moto::start_plain`] still starts plain `moto_server`, for the test that
//! demonstrates the race (`evs-dynamodb`'s `concurrent_writers_on_plain_moto`).
//!
//! The server is `$EVS_MOTO_SERVER`, else `.venv/bin/moto_server` at the
//! workspace root (`make venv` installs it); the launcher runs with the
//! `python` next to it. When they are missing the tests that need them fail
//! under `CI=true` and are skipped with a loud message elsewhere.
//!
//! [`postgres::Postgres`] is the same kind of fixture for PostgreSQL: one
//! throwaway cluster per test process, a fresh database per test.

pub mod lambda;
pub mod postgres;
mod temp;
pub mod template;

pub use temp::TempDir;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

/// A running emulator.
#[derive(Debug)]
pub struct Moto {
    server: Server,
}

/// Region the fixture's clients use.
pub const REGION: &str = "us-east-1";

/// The launcher that makes moto linearizable (see the crate docs).
const EMULATOR_PY: &str = include_str!("../emulator.py");

fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("EVS_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
}

/// The venv's python: the one next to `moto_server`.
fn venv_python() -> PathBuf {
    server_binary().with_file_name("python")
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True when running under CI, where a missing emulator is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `None` (with a message) when `paths` are not all installed outside CI;
/// panics under CI.
fn installed(paths: &[&Path]) -> Option<()> {
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(());
    }
    let msg = format!(
        "the emulator is not installed ({} missing): run `make test`, which installs it",
        missing.join(", ")
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (no emulator): {msg}");
    None
}

/// Runs `program args… -H 127.0.0.1 -p <free port>` under a watchdog that
/// stops it when this process is gone, and waits until it listens. Tries a
/// few ports; panics when it never starts.
fn spawn_server(program: &Path, args: &[&str]) -> Server {
    let mut last_err = String::new();
    for _ in 0..5 {
        match Server::spawn(program, args) {
            Ok(s) => return s,
            Err(e) => last_err = e,
        }
    }
    panic!("{} did not start: {last_err}", program.display());
}

/// A child process on a loopback port, behind a watchdog shell.
#[derive(Debug)]
struct Server {
    child: Child,
    port: u16,
    stopped: bool,
}

impl Server {
    fn spawn(program: &Path, args: &[&str]) -> Result<Server, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        // A watchdog shell stops the server when this process is gone.
        let script = r#"
port=$1; parent=$2; shift 2
"$@" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
m=$!
trap 'kill $m 2>/dev/null; exit 0' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$m" 2>/dev/null; do sleep 0.5; done
kill $m 2>/dev/null
"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("evs-testkit-watchdog")
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let mut server = Server {
            child,
            port,
            stopped: false,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "the server exited early ({status}); port {port} may be taken"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        server.stop();
        Err(format!(
            "the server did not listen on port {port} within 60 s"
        ))
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        // The watchdog's trap kills the server, then the watchdog exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Moto {
    /// Starts a private, linearizable server (moto behind `emulator.py`).
    /// `None` (with a message) when the emulator is not installed outside
    /// CI; panics under CI or when it fails to start.
    pub fn start() -> Option<Moto> {
        let python = venv_python();
        installed(&[&server_binary(), &python])?;
        let server = spawn_server(&python, &["-c", EMULATOR_PY]);
        Some(Moto { server })
    }

    /// Starts plain `moto_server`, whose concurrent requests race (see the
    /// crate docs). Only for the test that demonstrates the race.
    pub fn start_plain() -> Option<Moto> {
        let bin = server_binary();
        installed(&[&bin])?;
        let server = spawn_server(&bin, &[]);
        Some(Moto { server })
    }

    /// One server shared by the whole test process.
    pub fn shared() -> Option<&'static Moto> {
        static SHARED: OnceLock<Option<Moto>> = OnceLock::new();
        SHARED.get_or_init(Moto::start).as_ref()
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// The environment variables that point the AWS SDK (and `evs`) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// SDK configuration for this server: endpoint, region, static credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "evs-testkit"))
            .load()
            .await
    }

    /// A DynamoDB client for this server.
    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config().await)
    }

    /// Stops the server (also done on drop).
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

/// The fault-injecting proxy (see [`FaultProxy`]).
const FAULTPROXY_PY: &str = include_str!("../faultproxy.py");

/// A fault-injecting HTTP proxy in front of an emulator (`faultproxy.py`,
/// embedded in this crate): each request may be answered with a 5xx or a
/// throttling error without being forwarded, forwarded and then answered
/// with a 500 (a lost acknowledgement), dropped before or after being
/// forwarded, or delayed. The faults are drawn from a seeded generator
/// with the probabilities of its configuration, e.g.
/// `{"error": 0.2, "lost_ack": 0.1, "seed": 7}`. Point a client at
/// [`FaultProxy::endpoint`] (or only one service, with
/// `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_DYNAMODB`).
#[derive(Debug)]
pub struct FaultProxy {
    server: Server,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` with `config` (JSON). `None`
    /// (with a message) when the emulator's python is not installed outside
    /// CI; panics under CI or when it fails to start.
    pub fn start(upstream: &Moto, config: &str) -> Option<FaultProxy> {
        let python = venv_python();
        installed(&[&python])?;
        let endpoint = upstream.endpoint();
        let server = spawn_server(
            &python,
            &[
                "-c",
                FAULTPROXY_PY,
                "--upstream",
                &endpoint,
                "--config",
                config,
            ],
        );
        Some(FaultProxy { server })
    }

    /// The proxy's endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// Changes the fault probabilities (JSON; the counts stay) and returns
    /// [`FaultProxy::report`].
    pub fn configure(&self, config: &str) -> String {
        self.control("POST", config)
    }

    /// The configuration and the counts of requests, forwarded requests and
    /// each fault injected so far, as JSON:
    /// `{"config": {…}, "counts": {"requests": N, "error": N, …}}`.
    pub fn report(&self) -> String {
        self.control("GET", "")
    }

    fn control(&self, method: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let addr = SocketAddr::from(([127, 0, 0, 1], self.server.port));
        let mut stream = TcpStream::connect(addr).expect("the fault proxy is reachable");
        let request = format!(
            "{method} /__faults HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .expect("request to the fault proxy");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("answer of the fault proxy");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "the fault proxy refused {method}: {answer}"
        );
        body.to_owned()
    }

    /// The environment variables that point the AWS SDK (and `evs`) at
    /// `moto` for every service but `service` (`S3` or `DYNAMODB`), which
    /// goes through this proxy.
    pub fn env_for(&self, moto: &Moto, service: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = moto
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.push((format!("AWS_ENDPOINT_URL_{service}"), self.endpoint()));
        env
    }

    /// A DynamoDB client whose requests go through this proxy, with the
    /// SDK's own retries turned off (each fault reaches the caller).
    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "evs-testkit"))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        aws_sdk_dynamodb::Client::new(&config)
    }
}

/// A name unique within this machine and run: `prefix-<pid>-<counter>-<random>`,
/// lowercase so it is valid for tables and buckets alike.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// How many times larger the fault and crash tests run: `EVS_SOAK` (a
/// whole number, default 1); `make soak` sets it.
pub fn soak() -> usize {
    std::env::var("EVS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// `sample` with a few bytes flipped, inserted or deleted: what the
/// decoders' "never panics" properties feed to every decoder of outside
/// bytes, beside wholly arbitrary bytes (which rarely get past a parser's
/// first check).
pub fn mutated(sample: Vec<u8>) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    proptest::collection::vec(
        (0..3_u8, any::<proptest::sample::Index>(), 1..=u8::MAX),
        1..6,
    )
    .prop_map(move |edits| {
        let mut bytes = sample.clone();
        for (op, at, byte) in edits {
            match op {
                0 if !bytes.is_empty() => {
                    let i = at.index(bytes.len());
                    bytes[i] ^= byte;
                }
                1 => bytes.insert(at.index(bytes.len() + 1), byte),
                _ if !bytes.is_empty() => {
                    bytes.remove(at.index(bytes.len()));
                }
                _ => {}
            }
        }
        bytes
    })
}
