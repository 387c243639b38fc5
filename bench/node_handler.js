#!/usr/bin/env node
// The archiver's pure path written as a typical Node.js Lambda would, for comparison
// (the Node twin of bench/python_handler.py: same input, same NDJSON byte for byte).
//
// Lambda event bytes -> JSON.parse -> each NewImage's DynamoDB JSON to plain values (what
// @aws-sdk/util-dynamodb's unmarshall does, written out here so the bench needs no npm
// package) -> the same line objects as the Rust archiver -> sorted by (timestamp, streamId,
// eventId, sequenceNumber, eventID) -> one JSON.stringify per line -> the whole NDJSON
// gzip-compressed at level 6 with Node's built-in zlib -> compressed bytes.
//
//     node bench/node_handler.js target/bench-data/10k.json
//     node bench/node_handler.js EVENT.json --compare OBJECT.ndjson.gz
//
// It times whole iterations of that path with process.hrtime (after one untimed warm-up run)
// and prints one JSON line: records/s and MB/s of input (MB = 10^6 bytes) from the mean time
// per iteration, plus the mean time of each step. With --compare it also checks that its
// NDJSON is byte for byte the NDJSON inside an archive object the Rust archiver wrote from
// the same file.
//
// Like the Python handler it does not do what the Rust archiver does beyond the common path
// (dead letters with reasons, payloadAttr/metadataAttr exactness checks). Numbers: an integer
// that a double cannot hold exactly becomes a BigInt and is written as its digits (JSON.stringify
// cannot write a BigInt: a replacer marks it and the marked string is replaced by the digits),
// any other number a double, written as JSON.stringify writes it: exact for the generated data
// (decimals with few digits, never ending in 0), as the Python handler's floats are.
'use strict';

const fs = require('fs');
const zlib = require('zlib');

const KNOWN = new Set(['StreamId', 'EventId', 'EventName', 'Timestamp', 'EventUuid', 'Payload', 'Metadata']);
const BIG = '\u0000big:';

function number(text) {
  if (/^-?\d+$/.test(text)) {
    const n = Number(text);
    return Number.isSafeInteger(n) ? n : BigInt(text);
  }
  return Number(text);
}

// One DynamoDB JSON value to a plain value (sets as sorted arrays, binary as its base64 text).
function unmarshall(av) {
  if ('S' in av) return av.S;
  if ('N' in av) return number(av.N);
  if ('BOOL' in av) return av.BOOL;
  if ('NULL' in av) return null;
  if ('M' in av) {
    const out = {};
    for (const k of Object.keys(av.M)) out[k] = unmarshall(av.M[k]);
    return out;
  }
  if ('L' in av) return av.L.map(unmarshall);
  if ('B' in av) return av.B;
  if ('SS' in av) return [...av.SS].sort();
  if ('NS' in av) return [...av.NS].sort().map(number);
  if ('BS' in av) return [...av.BS].sort();
  throw new Error(`unknown attribute type ${Object.keys(av)}`);
}

function replacer(_key, value) {
  return typeof value === 'bigint' ? BIG + value.toString() : value;
}

function encode(line) {
  const text = JSON.stringify(line, replacer);
  return text.includes('\\u0000big:') ? text.replace(/"\\u0000big:(-?\d+)"/g, '$1') : text;
}

// The archive line of one INSERT record, or null for anything else.
function toLine(record) {
  if (record.eventName !== 'INSERT') return null;
  const ddb = record.dynamodb || {};
  const raw = ddb.NewImage;
  if (!raw || Object.keys(raw).length === 0) return null;
  const image = {};
  for (const k of Object.keys(raw)) image[k] = unmarshall(raw[k]);
  if (!('StreamId' in image && 'EventId' in image && 'EventName' in image)) return null;
  let ts;
  let source = null;
  if ('Timestamp' in image) {
    ts = Number(image.Timestamp);
  } else {
    ts = Math.trunc(Number(ddb.ApproximateCreationDateTime) * 1000);
    source = 'approximateCreationDateTime';
  }
  let payload = 'Payload' in image ? image.Payload : null;
  let encoding = null;
  if (typeof payload === 'string') {
    try {
      payload = JSON.parse(payload);
      encoding = 'json-string';
    } catch (_) {
      // not JSON: stays a string
    }
  }
  const line = {
    streamId: image.StreamId,
    eventId: image.EventId,
    eventName: image.EventName,
    timestamp: new Date(ts).toISOString(),
    payload,
  };
  if ('EventUuid' in image) line.id = image.EventUuid;
  if ('Metadata' in image) line.metadata = image.Metadata;
  const extra = Object.keys(raw).filter((k) => !KNOWN.has(k)).sort();
  if (extra.length) {
    line.attributes = {};
    for (const k of extra) line.attributes[k] = raw[k];
  }
  line.eventID = record.eventID;
  line.sequenceNumber = ddb.SequenceNumber;
  if (source) line.timestampSource = source;
  if (encoding) line.payloadEncoding = encoding;
  if (!('Payload' in image)) line.payloadAbsent = true;
  return [ts, line];
}

function cmp(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortKey(a, b) {
  const [ta, la] = a;
  const [tb, lb] = b;
  return (
    ta - tb ||
    cmp(la.streamId, lb.streamId) ||
    cmp(BigInt(la.eventId), BigInt(lb.eventId)) ||
    la.sequenceNumber.length - lb.sequenceNumber.length ||
    cmp(la.sequenceNumber, lb.sequenceNumber) ||
    cmp(la.eventID, lb.eventID)
  );
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

// Event bytes -> {compressed, ndjson, records}; step times added to `steps`.
function archive(eventBytes, steps) {
  const t0 = now();
  const event = JSON.parse(eventBytes.toString('utf8'));
  const t1 = now();
  const lines = [];
  for (const r of event.Records) {
    const x = toLine(r);
    if (x !== null) lines.push(x);
  }
  const t2 = now();
  lines.sort(sortKey);
  const t3 = now();
  const ndjson = Buffer.from(lines.map(([, line]) => encode(line) + '\n').join(''), 'utf8');
  const t4 = now();
  const compressed = zlib.gzipSync(ndjson, { level: 6 });
  const t5 = now();
  if (steps) {
    for (const [name, dt] of [
      ['1-parse-json', t1 - t0],
      ['2-deserialize-and-build', t2 - t1],
      ['3-sort', t3 - t2],
      ['4-ndjson', t4 - t3],
      ['5-gzip', t5 - t4],
    ]) {
      (steps[name] = steps[name] || []).push(dt);
    }
  }
  return { compressed, ndjson, records: event.Records.length };
}

function compare(ndjson, objectPath) {
  const rust = zlib.gunzipSync(fs.readFileSync(objectPath));
  if (rust.equals(ndjson)) return { identical: true };
  const ours = ndjson.toString('utf8').split('\n');
  const theirs = rust.toString('utf8').split('\n');
  let first = 0;
  while (first < ours.length && first < theirs.length && ours[first] === theirs[first]) first++;
  return {
    identical: false,
    firstDifferentLine: first + 1,
    node: first < ours.length ? ours[first].slice(0, 300) : null,
    rust: first < theirs.length ? theirs[first].slice(0, 300) : null,
  };
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

function main() {
  const args = process.argv.slice(2);
  let file = null;
  let iterations = 0;
  let minSeconds = 5;
  let compareWith = null;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--iterations') iterations = Number(args[++i]);
    else if (args[i] === '--min-seconds') minSeconds = Number(args[++i]);
    else if (args[i] === '--compare') compareWith = args[++i];
    else file = args[i];
  }
  if (!file) {
    console.error('usage: node bench/node_handler.js EVENT.json [--compare OBJECT.ndjson.gz] [--min-seconds S] [--iterations N]');
    process.exit(2);
  }
  const eventBytes = fs.readFileSync(file);
  const warm = archive(eventBytes); // untimed
  const extra = compareWith ? { compare: compare(warm.ndjson, compareWith) } : {};
  const steps = {};
  const times = [];
  const started = now();
  for (;;) {
    const t = now();
    archive(eventBytes, steps);
    times.push(now() - t);
    if (iterations ? times.length >= iterations : times.length >= 3 && now() - started >= minSeconds) break;
  }
  const m = mean(times);
  const stepsMean = {};
  for (const [k, v] of Object.entries(steps)) stepsMean[k] = mean(v);
  console.log(
    JSON.stringify({
      handler: 'node',
      node: process.version,
      file,
      inputBytes: eventBytes.length,
      records: warm.records,
      outputBytes: warm.compressed.length,
      ndjsonBytes: warm.ndjson.length,
      iterations: times.length,
      meanSeconds: m,
      minSeconds: Math.min(...times),
      recordsPerSecond: warm.records / m,
      mbPerSecond: eventBytes.length / m / 1e6,
      stepsMeanSeconds: stepsMean,
      ...extra,
    }),
  );
}

main();
