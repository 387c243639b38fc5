#!/usr/bin/env python3
"""The archiver's pure path written as a typical Python Lambda would, for comparison.

Lambda event bytes -> json.loads -> boto3's TypeDeserializer on every NewImage
-> the same line dicts as the Rust archiver (`ArchivedEvent::to_line`) ->
sorted by (timestamp, streamId, eventId, sequenceNumber, eventID) -> one
json.dumps per line (compact, UTF-8) -> the whole NDJSON gzip-compressed at
level 6 (flate2's default, which the Rust archiver uses) -> compressed bytes.

    .venv/bin/python bench/python_handler.py target/bench-data/10k.json
    .venv/bin/python bench/python_handler.py EVENT.json --compare OBJECT.ndjson.gz

It times whole iterations of that path with time.perf_counter (after one
untimed warm-up run) and prints one JSON line: records/s and MB/s of input
(MB = 10^6 bytes) from the mean time per iteration, plus the mean time of
each step. With --compare it also checks that its NDJSON is byte for byte
the NDJSON inside an archive object the Rust archiver wrote from the same file.

What it does not do, and the Rust archiver does: dead-letter classification
with reasons, the exactness checks of payloadAttr/metadataAttr (sets, binary,
number text that plain JSON cannot hold), and exact decimals: DynamoDB numbers
come out of TypeDeserializer as Decimal and are written here as int (whole
numbers) or float (the usual `default=` hook of Python handlers), which is
exact for the generated data (bench data decimals never end in 0 and have few
digits) but not in general. So this is, if anything, the lighter of the two.
"""

import argparse
import base64
import gzip
import json
import statistics
import sys
import time
from decimal import Decimal

from boto3.dynamodb.types import Binary, TypeDeserializer

KNOWN = {"StreamId", "EventId", "EventName", "Timestamp", "EventUuid", "Payload", "Metadata"}
DESERIALIZER = TypeDeserializer()


def _default(value):
    if isinstance(value, Decimal):
        return int(value) if value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, Binary):
        return base64.b64encode(value.value).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"cannot encode {type(value).__name__}")


ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_default)


def rfc3339_ms(ms):
    """Epoch ms as 2026-11-23T22:07:32.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def to_line(record):
    """The archive line of one INSERT record, or None for anything else."""
    if record.get("eventName") != "INSERT":
        return None
    ddb = record.get("dynamodb") or {}
    raw = ddb.get("NewImage")
    if not raw:
        return None
    image = {k: DESERIALIZER.deserialize(v) for k, v in raw.items()}
    if not {"StreamId", "EventId", "EventName"} <= image.keys():
        return None
    source = None
    if "Timestamp" in image:
        ts = int(image["Timestamp"])
    else:
        ts = int(Decimal(str(ddb["ApproximateCreationDateTime"])) * 1000)
        source = "approximateCreationDateTime"
    encoding = None
    payload = image.get("Payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload, parse_float=Decimal)
            encoding = "json-string"
        except ValueError:
            pass
    line = {
        "streamId": image["StreamId"],
        "eventId": int(image["EventId"]),
        "eventName": image["EventName"],
        "timestamp": rfc3339_ms(ts),
        "payload": payload,
    }
    if "EventUuid" in image:
        line["id"] = image["EventUuid"]
    if "Metadata" in image:
        line["metadata"] = image["Metadata"]
    extra = sorted(k for k in raw if k not in KNOWN)
    if extra:
        line["attributes"] = {k: raw[k] for k in extra}
    line["eventID"] = record["eventID"]
    line["sequenceNumber"] = ddb["SequenceNumber"]
    if source:
        line["timestampSource"] = source
    if encoding:
        line["payloadEncoding"] = encoding
    if "Payload" not in image:
        line["payloadAbsent"] = True
    return ts, line


def sort_key(item):
    ts, line = item
    seq = line["sequenceNumber"]
    return (ts, line["streamId"], line["eventId"], len(seq), seq, line["eventID"])


def archive(event_bytes, clock=time.perf_counter, steps=None):
    """Event bytes -> (gzip bytes, ndjson bytes, records); step times added to `steps`."""
    t0 = clock()
    event = json.loads(event_bytes)
    t1 = clock()
    lines = [x for x in map(to_line, event["Records"]) if x is not None]
    t2 = clock()
    lines.sort(key=sort_key)
    t3 = clock()
    encode = ENCODER.encode
    ndjson = "".join([encode(line) + "\n" for _, line in lines]).encode("utf-8")
    t4 = clock()
    compressed = gzip.compress(ndjson, compresslevel=6)
    t5 = clock()
    if steps is not None:
        for name, dt in (
            ("1-parse-json", t1 - t0),
            ("2-deserialize-and-build", t2 - t1),
            ("3-sort", t3 - t2),
            ("4-ndjson", t4 - t3),
            ("5-gzip", t5 - t4),
        ):
            steps.setdefault(name, []).append(dt)
    return compressed, ndjson, len(event["Records"])


def compare(ndjson, object_path):
    with open(object_path, "rb") as f:
        rust = gzip.decompress(f.read())
    if rust == ndjson:
        return {"identical": True}
    ours, theirs = ndjson.split(b"\n"), rust.split(b"\n")
    first = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs))
    )
    return {
        "identical": False,
        "firstDifferentLine": first + 1,
        "python": ours[first][:300].decode("utf-8", "replace") if first < len(ours) else None,
        "rust": theirs[first][:300].decode("utf-8", "replace") if first < len(theirs) else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("event", help="a Lambda DynamoDB Streams event JSON file")
    parser.add_argument("--iterations", type=int, default=0, help="timed iterations (default: enough for --min-seconds, at least 3)")
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--compare", metavar="OBJECT.ndjson.gz", help="an archive object written by the Rust archiver from the same file")
    args = parser.parse_args()

    with open(args.event, "rb") as f:
        event_bytes = f.read()
    compressed, ndjson, records = archive(event_bytes)  # warm-up, untimed
    result = {}
    if args.compare:
        result["compare"] = compare(ndjson, args.compare)

    steps, times = {}, []
    started = time.perf_counter()
    while True:
        t = time.perf_counter()
        archive(event_bytes, steps=steps)
        times.append(time.perf_counter() - t)
        n = len(times)
        if args.iterations:
            if n >= args.iterations:
                break
        elif n >= 3 and time.perf_counter() - started >= args.min_seconds:
            break
    mean = statistics.fmean(times)
    result = {
        "handler": "python",
        "python": sys.version.split()[0],
        "file": args.event,
        "inputBytes": len(event_bytes),
        "records": records,
        "outputBytes": len(compressed),
        "ndjsonBytes": len(ndjson),
        "iterations": len(times),
        "meanSeconds": mean,
        "minSeconds": min(times),
        "recordsPerSecond": records / mean,
        "mbPerSecond": len(event_bytes) / mean / 1e6,
        "stepsMeanSeconds": {k: statistics.fmean(v) for k, v in steps.items()},
        **result,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
