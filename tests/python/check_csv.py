#!/usr/bin/env python3
"""Checks every file of a CSV export archive with Python's own `csv` module.

Usage: check_csv.py ARCHIVE.zip

Fails (exit 1, the reason on stderr) when a file does not start with a UTF-8 byte-order mark
and the format's header row, a row does not parse (strict RFC 4180 dialect) or has the wrong
number of fields, a line break outside a quoted field is not CRLF, or the rows per event kind
differ from the manifest's counts per conversation and day. Prints every row (as a mapping
from column to value, the formula guard removed) as JSON on stdout, for the calling test to
compare with the events it exported.
"""
import collections
import csv
import io
import json
import sys
import zipfile

KINDS = ("events", "posts", "edits", "deletes", "notes", "files_shared")
COUNTED = {"post": "posts", "edit": "edits", "delete": "deletes", "note": "notes",
           "note_edit": "notes", "note_delete": "notes", "file": "files_shared"}
COLUMNS = ["event_id", "event_time", "local_date", "event_kind", "conversation_id",
           "conversation_kind", "conversation_name", "item_id", "parent_post_id", "actor_id",
           "actor_name", "actor_email", "title", "text", "previous_text",
           "previous_text_known", "file_name", "file_size", "file_content_type",
           "file_sha256"]


def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(1)


def unguard(cell):
    """The formula guard: a cell starting with ' had exactly one added."""
    return cell[1:] if cell.startswith("'") else cell


def crlf_only(data):
    """Whether every CR or LF outside a quoted field is part of a CRLF."""
    quoted, index = False, 0
    while index < len(data):
        byte = data[index:index + 1]
        if byte == b'"':
            quoted = not quoted
        elif not quoted and byte in (b"\r", b"\n"):
            if data[index:index + 2] != b"\r\n":
                return False
            index += 1
        index += 1
    return True


def main():
    archive = zipfile.ZipFile(sys.argv[1])
    names = archive.namelist()
    manifests = [n for n in names if n.count("/") == 1 and n.endswith("/manifest.json")]
    if len(manifests) != 1:
        fail(f"manifests: {manifests}")
    root = manifests[0].split("/")[0] + "/"
    manifest = json.loads(archive.read(manifests[0]))
    if manifest["format"] != "cce-export-csv":
        fail(f"format {manifest['format']!r}")
    found = collections.defaultdict(lambda: dict.fromkeys(KINDS, 0))
    rows = []
    for name in names:
        if not name.endswith(".csv"):
            continue
        if not name.startswith(root + "Events/"):
            fail(f"{name}: not in Events/")
        data = archive.read(name)
        if not data.startswith(b"\xef\xbb\xbf"):
            fail(f"{name}: no UTF-8 byte-order mark")
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), strict=True)
        header = next(reader)
        if header != COLUMNS:
            fail(f"{name}: header {header}")
        for row in reader:
            if len(row) != len(COLUMNS):
                fail(f"{name}: a row of {len(row)} fields: {row}")
            if any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in row):
                fail(f"{name}: a cell a spreadsheet would run as a formula: {row}")
            record = {k: unguard(v) for k, v in zip(COLUMNS, row)}
            kind = COUNTED.get(record["event_kind"])
            if kind is None:
                fail(f"{name}: event_kind {record['event_kind']!r}")
            counts = found[(record["conversation_id"], record["local_date"])]
            counts[kind] += 1
            counts["events"] += 1
            record["file"] = name[len(root):]
            rows.append(record)
        # Every line break outside quotes is CRLF: the csv module would take a bare LF too.
        if not crlf_only(data):
            fail(f"{name}: a line break outside quotes that is not CRLF")
    want = {(d["conversation_id"], d["date"]): d["counts"] for d in manifest["days"]}
    if dict(found) != want:
        fail(f"the rows count {dict(found)}, the manifest {want}")
    totals = dict.fromkeys(KINDS, 0)
    for counts in found.values():
        for kind in KINDS:
            totals[kind] += counts[kind]
    if totals != manifest["totals"]:
        fail(f"the rows add up to {totals}, the manifest's totals are {manifest['totals']}")
    json.dump({"rows": rows, "totals": totals}, sys.stdout)


if __name__ == "__main__":
    main()
