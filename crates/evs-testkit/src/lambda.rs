//! A Lambda Runtime API for tests: a small HTTP server that a Lambda
//! binary (run with `AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT`) polls for its
//! invocations, as it does under Lambda, so a test drives the binary's
//! `main` itself.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The Runtime API: hands out the queued events one per `next`, collects
/// each `response` (or `error`) as (request id, body).
#[derive(Debug)]
pub struct RuntimeApi {
    port: u16,
    queue: Arc<Mutex<VecDeque<(String, String)>>>,
    answers: mpsc::Receiver<(String, String)>,
}

impl RuntimeApi {
    /// Starts the server on a free loopback port.
    pub fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let queue: Arc<Mutex<VecDeque<(String, String)>>> = Arc::default();
        let (tx, answers) = mpsc::channel();
        let q = Arc::clone(&queue);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (q, tx) = (Arc::clone(&q), tx.clone());
                std::thread::spawn(move || serve(conn, &q, &tx));
            }
        });
        RuntimeApi {
            port,
            queue,
            answers,
        }
    }

    /// The port: the binary's `AWS_LAMBDA_RUNTIME_API` is `127.0.0.1:PORT`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Delivers `event` as invocation `id` and waits (up to 2 min) for the
    /// function's answer: its response, or `{"error": …}` for an error.
    pub fn invoke(&self, id: &str, event: &Value) -> Value {
        self.queue
            .lock()
            .unwrap()
            .push_back((id.to_owned(), event.to_string()));
        let (got, body) = self.answers.recv_timeout(Duration::from_secs(120)).unwrap();
        assert_eq!(got, id, "answer to another invocation: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// One connection: requests until it closes.
fn serve(
    conn: TcpStream,
    queue: &Mutex<VecDeque<(String, String)>>,
    tx: &mpsc::Sender<(String, String)>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
        if path.ends_with("/invocation/next") {
            let (id, event) = loop {
                if let Some(next) = queue.lock().unwrap().pop_front() {
                    break next;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
                + 60_000;
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {id}\r\n\
                 Lambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:under-test\r\n\
                 Content-Length: {}\r\n\r\n{event}",
                event.len()
            )
            .unwrap();
        } else {
            let parts: Vec<&str> = path.split('/').collect();
            let id = parts.get(4).copied().unwrap_or("").to_owned();
            let kind = parts.get(5).copied().unwrap_or("");
            let body = String::from_utf8_lossy(&body).into_owned();
            let body = if kind == "response" {
                body
            } else {
                json!({ "error": body }).to_string()
            };
            tx.send((id, body)).unwrap();
            write!(out, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n").unwrap();
        }
        out.flush().unwrap();
    }
}
