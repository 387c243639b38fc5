-- The archive as a data lake, in DuckDB (README, "Querying the archive").
--
-- Set where the archive is (its prefix: a local directory, or s3://BUCKET/PREFIX/ after
-- `INSTALL httpfs; LOAD httpfs; CREATE SECRET (TYPE s3, PROVIDER credential_chain);`) and the
-- queries' parameters, then read this file:
--
--   duckdb -cmd "SET VARIABLE archive = 'archive/events/'" \
--          -cmd "SET VARIABLE stream = 'order-1001'" \
--          -cmd "SET VARIABLE event_type = 'OrderPlaced'" \
--          -cmd "SET VARIABLE since = '2026-11-23T00:00:00Z'" \
--          -cmd "SET VARIABLE until = '2026-11-24T00:00:00Z'" \
--          -f docs/lake/duckdb.sql
--
-- The objects are <prefix>yyyy/MM/dd/HH/<sealed-at>-<sequence>-<nonce>.ndjson[.gz|.zst]; DuckDB picks
-- gzip or zstd by the extension, one file at a time, so one glob reads an archive of mixed codecs.
--
-- Each line is read as one JSON value (read_json_objects) and every field is taken by its exact,
-- case-sensitive key: a line has both "eventId" (the event's number) and "eventID" (the stream record's
-- id), which read_json's column detection treats as one name. payload, metadata and attributes stay
-- JSON (their text as archived: numbers keep every digit), so any field of any payload is
-- payload->>'$.field'.
--
-- A retried batch is archived twice, under two keys: the same event can appear on two lines. The view
-- `events` keeps one line per (stream_id, event_id); every query below reads it, never archive_lines.
-- (The copies are the same event, so which one is kept does not matter: the first in key order.)
-- crates/evs-replay/tests/lake.rs runs this file on an archive written by the archiver and checks each
-- answer against the replayer's.

-- Times in UTC, as the archive writes them.
SET TimeZone = 'UTC';

CREATE OR REPLACE VIEW archive_lines AS
SELECT
    json->>'$.streamId'                       AS stream_id,
    CAST(json->>'$.eventId' AS UBIGINT)       AS event_id,
    json->>'$.eventName'                      AS event_name,
    json->>'$.timestamp'                      AS "timestamp",
    TRY_CAST(json->>'$.timestamp' AS TIMESTAMPTZ) AS event_time,
    json->'$.payload'                         AS payload,
    json->>'$.id'                             AS id,
    json->'$.metadata'                        AS metadata,
    json->'$.attributes'                      AS attributes,
    json->>'$.eventID'                        AS record_id,
    json->>'$.sequenceNumber'                 AS sequence_number,
    filename                                  AS object
FROM read_json_objects(
    getvariable('archive') || '[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/[0-9][0-9]/*.ndjson*',
    format = 'newline_delimited',
    filename = true
);

CREATE OR REPLACE VIEW events AS
SELECT * EXCLUDE (copy)
FROM (
    SELECT *, row_number() OVER (PARTITION BY stream_id, event_id ORDER BY object) AS copy
    FROM archive_lines
)
WHERE copy = 1;

-- query: counts_per_stream
-- Distinct events per stream.
SELECT stream_id, count(*) AS events
FROM events
GROUP BY stream_id
ORDER BY stream_id;

-- query: stream_events
-- Every event of one stream, once each, in EventId order.
SELECT stream_id, event_id, event_name, "timestamp", payload, id, metadata
FROM events
WHERE stream_id = getvariable('stream')
ORDER BY event_id;

-- query: type_in_window
-- Events of one type whose own timestamp is in [since, until).
SELECT stream_id, event_id, event_name, "timestamp", payload
FROM events
WHERE event_name = getvariable('event_type')
  AND event_time >= CAST(getvariable('since') AS TIMESTAMPTZ)
  AND event_time < CAST(getvariable('until') AS TIMESTAMPTZ)
ORDER BY "timestamp", stream_id, event_id;

-- query: counts_per_hour
-- Distinct events per hour of their own timestamp (UTC) and per event type.
SELECT strftime(date_trunc('hour', event_time), '%Y-%m-%dT%H:00:00Z') AS hour,
       event_name,
       count(*) AS events
FROM events
GROUP BY ALL
ORDER BY hour, event_name;

-- query: completeness
-- Per stream: the highest EventId archived against the count of distinct EventIds. EventIds run
-- 1, 2, 3, ... per stream, so a count below the highest has a hole; compare max_event_id with the
-- table's last EventId (a table export, or `evs verify --table`) for the events after the last one
-- archived.
SELECT stream_id,
       max(event_id)            AS max_event_id,
       count(DISTINCT event_id) AS distinct_events,
       count(DISTINCT event_id) <> max(event_id) AS has_hole
FROM archive_lines
GROUP BY stream_id
ORDER BY stream_id;
