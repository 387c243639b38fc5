"""A fault-injecting HTTP proxy in front of the test emulator.

Usage: python faultproxy.py -H HOST -p PORT --upstream http://127.0.0.1:N
                            [--config JSON]

Every request is forwarded to the upstream emulator, except that, drawn from
a seeded random generator, it may instead suffer one fault:

- error:    a 5xx answered without forwarding (S3: 500 InternalError or
            503 SlowDown; DynamoDB: 500 InternalServerError or 400
            ThrottlingException). The request had no effect.
- lost_ack: forwarded, then answered 500 InternalError/InternalServerError:
            the request took effect but its acknowledgement is lost.
- drop:     the connection is closed without a response, not forwarded.
- drop_after: forwarded, then the connection is closed without a response.
- latency:  forwarded after a pause of up to `latency_ms`.

The configuration is a JSON object of probabilities (`error`, `lost_ack`,
`drop`, `drop_after`, `latency`, all 0 by default), `latency_ms` and `seed`.
`GET /__faults` answers the configuration and the counts of what was
injected, per kind; `POST /__faults` with a JSON object changes the
configuration (the counts stay). Requests are told apart by the DynamoDB
`X-Amz-Target` header: anything else is answered as S3.
"""

import argparse
import http.client
import json
import random
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("error", "lost_ack", "drop", "drop_after", "latency")
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
}


class State:
    def __init__(self, config):
        self.lock = threading.Lock()
        self.config = {kind: 0.0 for kind in KINDS}
        self.config.update({"latency_ms": 200, "seed": 0})
        self.counts = {kind: 0 for kind in KINDS}
        self.counts.update({"requests": 0, "forwarded": 0})
        self.rng = random.Random(0)
        self.configure(config)

    def configure(self, config):
        with self.lock:
            for key, value in config.items():
                if key not in self.config:
                    raise ValueError(f"unknown setting {key!r}")
                self.config[key] = value
            if "seed" in config:
                self.rng = random.Random(config["seed"])

    def draw(self):
        """One fault kind (or None) for the next request, and a random number."""
        with self.lock:
            self.counts["requests"] += 1
            roll = self.rng.random()
            extra = self.rng.random()
            for kind in KINDS:
                p = float(self.config[kind])
                if roll < p:
                    self.counts[kind] += 1
                    return kind, extra
                roll -= p
            return None, extra

    def count(self, key):
        with self.lock:
            self.counts[key] += 1

    def snapshot(self):
        with self.lock:
            return {"config": dict(self.config), "counts": dict(self.counts)}


def dynamodb_error(throttle):
    if throttle:
        status, kind = 400, "ThrottlingException"
        message = "Rate of requests exceeds the allowed throughput."
    else:
        status, kind = 500, "InternalServerError"
        message = "Internal server error (injected)"
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{kind}", "message": message})
    return status, "application/x-amz-json-1.0", body.encode()


def s3_error(slow_down):
    if slow_down:
        status, code, message = 503, "SlowDown", "Please reduce your request rate."
    else:
        status, code, message = 500, "InternalError", "We encountered an internal error. Please try again."
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
    )
    return status, "application/xml", body.encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None
    upstream = None

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.handle_any()

    def do_HEAD(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_DELETE(self):
        self.handle_any()

    def do_PATCH(self):
        self.handle_any()

    def do_OPTIONS(self):
        self.handle_any()

    def read_body(self):
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def send(self, status, headers, body, head=False):
        self.send_response(status)
        length = None
        for name, value in headers:
            if name.lower() == "content-length":
                length = value
            elif name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if not head or length is None:
            length = str(len(body))
        self.send_header("Content-Length", length)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def error(self, throttle_or_slow):
        if self.headers.get("X-Amz-Target", "").startswith("DynamoDB"):
            status, content_type, body = dynamodb_error(throttle_or_slow)
        else:
            status, content_type, body = s3_error(throttle_or_slow)
        self.send(status, [("Content-Type", content_type)], body, self.command == "HEAD")

    def drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def forward(self, body):
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            conn.close()

    def handle_any(self):
        body = self.read_body()
        if self.path.startswith("/__faults"):
            return self.control(body)
        kind, extra = self.state.draw()
        if kind == "error":
            return self.error(extra < 0.5)
        if kind == "drop":
            return self.drop()
        if kind == "latency":
            time.sleep(extra * float(self.state.snapshot()["config"]["latency_ms"]) / 1000)
        try:
            status, headers, payload = self.forward(body)
        except OSError as e:
            message = f"upstream unreachable: {e}".encode()
            return self.send(502, [("Content-Type", "text/plain")], message)
        self.state.count("forwarded")
        if kind == "lost_ack":
            return self.error(False)
        if kind == "drop_after":
            return self.drop()
        self.send(status, headers, payload, self.command == "HEAD")

    def control(self, body):
        if self.command == "POST":
            try:
                self.state.configure(json.loads(body or b"{}"))
            except (ValueError, TypeError) as e:
                return self.send(400, [("Content-Type", "text/plain")], str(e).encode())
        answer = json.dumps(self.state.snapshot()).encode()
        self.send(200, [("Content-Type", "application/json")], answer)


def stop(signum, frame):
    sys.exit(0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the emulator's URL")
    parser.add_argument("--config", default="{}", help="JSON settings (see above)")
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    Handler.state = State(json.loads(args.config))
    Handler.upstream = urllib.parse.urlsplit(args.upstream)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
