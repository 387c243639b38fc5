//! Test fixture: the DynamoDB / DynamoDB Streams / S3 emulator (moto's
//! server mode) on a free loopback port.
//!
//! The principal type is [`Moto`]. [`Moto::shared`] starts one server per
//! test process (tests isolate themselves with unique table and bucket
//! names from [`unique_name`]); [`Moto::start`] starts a private one that is
//! stopped when dropped. Either way a watchdog stops the server within a
//! second of the test process exiting, so no emulator outlives the tests.
//!
//! The server binary is `$EVS_MOTO_SERVER`, else `.venv/bin/moto_server` at
//! the workspace root (`make venv` installs it). When it is missing the tests
//! that need it fail under `CI=true` and are skipped with a loud message
//! elsewhere.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

/// A running emulator.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
}

/// Region the fixture's clients use.
pub const REGION: &str = "us-east-1";

fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("EVS_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True when running under CI, where a missing emulator is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl Moto {
    /// Starts a private server. `None` (with a message) when the emulator is
    /// not installed outside CI; panics under CI or when it fails to start.
    pub fn start() -> Option<Moto> {
        let bin = server_binary();
        if !bin.exists() {
            let msg = format!(
                "the emulator is not installed ({} missing): run `make test`, which installs it",
                bin.display()
            );
            if in_ci() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED (no emulator): {msg}");
            return None;
        }
        let mut last_err = String::new();
        for _ in 0..5 {
            match Self::spawn(&bin) {
                Ok(m) => return Some(m),
                Err(e) => last_err = e,
            }
        }
        panic!("the emulator did not start: {last_err}");
    }

    fn spawn(bin: &std::path::Path) -> Result<Moto, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        // A watchdog shell stops the server when this process is gone.
        let script = r#"
"$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 &
m=$!
trap 'kill $m 2>/dev/null; exit 0' TERM INT
while kill -0 "$2" 2>/dev/null && kill -0 "$m" 2>/dev/null; do sleep 0.5; done
kill $m 2>/dev/null
"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(bin)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let mut moto = Moto { child, port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(moto);
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!(
                    "the server exited early ({status}); port {port} may be taken"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.stop();
        Err(format!(
            "the server did not listen on port {port} within 60 s"
        ))
    }

    /// One server shared by the whole test process.
    pub fn shared() -> Option<&'static Moto> {
        static SHARED: OnceLock<Option<Moto>> = OnceLock::new();
        SHARED.get_or_init(Moto::start).as_ref()
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
        // The watchdog's trap kills the server, then the watchdog exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
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
