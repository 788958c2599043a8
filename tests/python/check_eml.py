#!/usr/bin/env python3
"""Checks every message of an EML export archive with Python's own `email` parser.

Usage: check_eml.py ARCHIVE.zip

Fails (exit 1, the reason on stderr) when a message has a parser defect (on the message, any
part or any header field), a line not ended by CRLF or longer than 998 characters, a Date,
From or Message-ID that does not parse, or when the events the messages show (recounted here,
independently of `cce-admin verify`) differ from the manifest's counts per conversation and day.
Prints a JSON summary of every message on stdout for the calling test to compare with the
events it exported.
"""
import collections
import email
import email.policy
import json
import sys
import zipfile

KINDS = ("events", "posts", "edits", "deletes", "notes", "files_shared")


def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(1)


def header(message, name):
    value = message[name]
    return None if value is None else str(value)


def check_message(name, data):
    if b"\n" in data.replace(b"\r\n", b"") or b"\r" in data.replace(b"\r\n", b""):
        fail(f"{name}: a line does not end with CRLF")
    for line in data.split(b"\r\n"):
        if len(line) > 998:
            fail(f"{name}: a line of {len(line)} characters (RFC 5322 allows 998)")
    message = email.message_from_bytes(data, policy=email.policy.default)
    defects = []
    for part in message.walk():
        defects += [repr(d) for d in part.defects]
        for field, value in part.items():
            defects += [f"{field}: {d!r}" for d in getattr(value, "defects", [])]
    if defects:
        fail(f"{name}: defects {defects}")
    date = message["Date"]
    if date is None or date.datetime is None:
        fail(f"{name}: no Date that parses")
    sender = message["From"]
    if sender is None or len(sender.addresses) != 1:
        fail(f"{name}: From is not one mailbox")
    if not header(message, "Message-ID"):
        fail(f"{name}: no Message-ID")
    recipients = message["To"]
    parts = []
    for part in message.iter_parts():
        if part.get_content_type() != "text/plain":
            fail(f"{name}: a part of type {part.get_content_type()}")
        parts.append({
            "part": header(part, "X-CCE-Part"),
            "edit": header(part, "X-CCE-Edit"),
            "event_at": header(part, "X-CCE-Event-At"),
            "actor_id": header(part, "X-CCE-Actor-Id"),
            "text_before_unknown": header(part, "X-CCE-Text-Before") == "unknown",
            "text": part.get_content(),
        })
    body = message.get_body(preferencelist=("plain",))
    return {
        "path": name,
        "date": date.datetime.isoformat(),
        "from": {"name": sender.addresses[0].display_name,
                 "address": sender.addresses[0].addr_spec},
        "to": [] if recipients is None else [
            {"name": a.display_name, "address": a.addr_spec} for a in recipients.addresses],
        "subject": header(message, "Subject"),
        "message_id": header(message, "Message-ID"),
        "in_reply_to": header(message, "In-Reply-To"),
        "references": header(message, "References"),
        "msg_type": header(message, "X-GlobalRelay-MsgType"),
        "headers": {k: str(v) for k, v in message.items() if k.lower().startswith("x-cce-")},
        "body": body.get_content() if body is not None else None,
        "parts": parts,
    }


def recount(summary):
    """The events one message shows, as the format says (docs/export-format.md, "EML")."""
    counts = dict.fromkeys(KINDS, 0)
    headers = summary["headers"]
    created = 1 if "X-CCE-Created-At" in headers else 0
    edits = sum(1 for p in summary["parts"] if p["part"] == "edit-before")
    deletes = sum(1 for p in summary["parts"] if p["part"] == "delete")
    kind = headers.get("X-CCE-Item-Kind")
    if kind == "post":
        counts.update(posts=created, edits=edits, deletes=deletes)
    elif kind == "note":
        counts["notes"] = created + int(headers["X-CCE-Edit-Count"]) + deletes
    elif kind == "file":
        counts["files_shared"] = 1
    else:
        fail(f"{summary['path']}: X-CCE-Item-Kind {kind!r}")
    counts["events"] = sum(counts[k] for k in KINDS[1:])
    if counts["events"] == 0:
        fail(f"{summary['path']}: shows no event")
    return counts


def main():
    archive = zipfile.ZipFile(sys.argv[1])
    names = archive.namelist()
    manifests = [n for n in names if n.count("/") == 1 and n.endswith("/manifest.json")]
    if len(manifests) != 1:
        fail(f"manifests: {manifests}")
    root = manifests[0].split("/")[0] + "/"
    manifest = json.loads(archive.read(manifests[0]))
    if manifest["format"] != "cce-export-eml":
        fail(f"format {manifest['format']!r}")
    folders = {c["folder"]: c["conversation_id"] for c in manifest["conversations"]}
    found = collections.defaultdict(lambda: dict.fromkeys(KINDS, 0))
    messages = []
    ids = set()
    for name in names:
        if not name.endswith(".eml"):
            continue
        summary = check_message(name, archive.read(name))
        if summary["message_id"] in ids:
            fail(f"{name}: Message-ID {summary['message_id']} twice")
        ids.add(summary["message_id"])
        folder, date, _ = name[len(root):].rsplit("/", 2)
        conversation = folders.get(folder)
        if conversation is None or summary["headers"]["X-CCE-Conversation-Id"] != conversation:
            fail(f"{name}: in folder {folder}, not its conversation's")
        if summary["headers"]["X-CCE-Local-Date"] != date:
            fail(f"{name}: X-CCE-Local-Date is not its folder's {date}")
        for kind, n in recount(summary).items():
            found[(conversation, date)][kind] += n
        messages.append(summary)
    want = {(d["conversation_id"], d["date"]): d["counts"] for d in manifest["days"]}
    if dict(found) != want:
        fail(f"the messages show {dict(found)}, the manifest counts {want}")
    totals = dict.fromkeys(KINDS, 0)
    for counts in found.values():
        for kind in KINDS:
            totals[kind] += counts[kind]
    if totals != manifest["totals"]:
        fail(f"the messages add up to {totals}, the manifest's totals are {manifest['totals']}")
    json.dump({"messages": messages, "totals": totals}, sys.stdout)


if __name__ == "__main__":
    main()
