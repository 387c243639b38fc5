"""The test emulator: moto's server, one request at a time.

Usage: python emulator.py [-H HOST] [-p PORT] [--plain] [--copy-per-item]

moto's server is threaded, and its backends are not written for concurrent
requests. In moto 5.2.5 DynamoDB's TransactWriteItems deep-copies every table
it touches before it writes and, when the transaction is cancelled, puts the
copy back: every write another request made to that table in between is
undone, although that request was told it succeeded. Real DynamoDB has no
such race, so tests of concurrent writers on plain moto see lost events that
production never would.

This launcher builds moto's own WSGI application (as `moto_server` does) and
wraps it in a middleware that holds one lock for the whole of each request:
every request is atomic, so the emulator is linearizable. Request bodies are
read before the lock is taken and responses are buffered inside it, so a slow
client cannot hold the lock.

It also makes TransactWriteItems take its backup copy of a table once per
transaction instead of once per item (the copies were identical: they are
all taken before the first write). `--copy-per-item` keeps moto's behaviour,
`--plain` runs moto exactly as `moto_server` does (no lock, no patch); both
exist only to measure and demonstrate.
"""

import argparse
import copy
import io
import os
import signal
import sys
import threading


def serialised(app):
    """A WSGI middleware that runs `app` for one request at a time."""
    lock = threading.Lock()

    def middleware(environ, start_response):
        body = read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["args"] = (status, headers, exc_info)
            return lambda data: captured.setdefault("written", []).append(data)

        with lock:
            result = app(environ, capture)
            try:
                chunks = list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        status, headers, exc_info = captured["args"]
        start_response(status, headers, exc_info)
        return captured.get("written", []) + chunks

    return middleware


def read_body(environ):
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit():
        return stream.read(int(length)) if int(length) > 0 else b""
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    return b""


class CopyOncePerTransaction:
    """Stands in for the `copy` module inside moto's DynamoDB models: while a
    TransactWriteItems runs, deep copies of the same table are taken once."""

    def __init__(self, real, table_type):
        self._real = real
        self._table_type = table_type
        self._memo = None

    def __getattr__(self, name):
        return getattr(self._real, name)

    def deepcopy(self, value, memo=None):
        if self._memo is None or not isinstance(value, self._table_type):
            return self._real.deepcopy(value, memo)
        key = id(value)
        if key not in self._memo:
            # The table is kept in the memo too, so its id cannot be reused.
            self._memo[key] = (value, self._real.deepcopy(value, memo))
        return self._memo[key][1]

    def wrap(self, transact_write_items):
        def once(backend, *args, **kwargs):
            self._memo = {}
            try:
                return transact_write_items(backend, *args, **kwargs)
            finally:
                self._memo = None

        return once


def copy_tables_once_per_transaction():
    import moto.dynamodb.models as models

    if not hasattr(models, "copy") or not hasattr(
        models.DynamoDBBackend, "transact_write_items"
    ):
        print("emulator: moto's layout changed; the copy patch is off", file=sys.stderr)
        return
    patched = CopyOncePerTransaction(copy, models.Table)
    models.copy = patched
    models.DynamoDBBackend.transact_write_items = patched.wrap(
        models.DynamoDBBackend.transact_write_items
    )


def stop(signum, frame):
    sys.exit(0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--plain", action="store_true", help="moto as moto_server runs it")
    parser.add_argument(
        "--copy-per-item", action="store_true", help="keep moto's copy per transaction item"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))

    from werkzeug.serving import run_simple

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    if not args.plain:
        if not args.copy_per_item:
            copy_tables_once_per_transaction()
        app = serialised(app)
    run_simple(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
