"""Runs docs/lake/duckdb.sql on an archive and prints every query's answer as one JSON object.

Usage: python duckdb_queries.py SQL_FILE ARCHIVE_PREFIX STREAM EVENT_TYPE SINCE UNTIL

The file's statements before the first `-- query: NAME` line set up the views; each query after one
is run and its rows printed under NAME, every value as text (JSON values as their JSON text), so
that nothing is lost to Python's floats. Exit 3 when duckdb cannot be imported.
"""

import json
import sys

try:
    import duckdb
except ImportError as e:
    print(f"duckdb is not installed: {e}", file=sys.stderr)
    sys.exit(3)


def main():
    sql_file, archive, stream, event_type, since, until = sys.argv[1:7]
    with open(sql_file, encoding="utf-8") as f:
        text = f.read()
    setup, *sections = text.split("\n-- query: ")
    con = duckdb.connect()
    for name, value in [
        ("archive", archive),
        ("stream", stream),
        ("event_type", event_type),
        ("since", since),
        ("until", until),
    ]:
        con.execute(f"SET VARIABLE {name} = ?", [value])
    con.execute(setup)
    out = {"duckdb": duckdb.__version__}
    for section in sections:
        name, query = section.split("\n", 1)
        cursor = con.execute(query)
        columns = [d[0] for d in cursor.description]
        rows = [
            {c: (None if v is None else str(v)) for c, v in zip(columns, row)}
            for row in cursor.fetchall()
        ]
        out[name.strip()] = rows
    json.dump(out, sys.stdout, ensure_ascii=False)


main()
