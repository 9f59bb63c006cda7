"""Every real mail of ../shared/corpus through `helpdesk ingest --json`: no crash, an outcome for
each, and senders and subjects decoded as the stdlib's strict parser decodes them."""

from __future__ import annotations

import json
import mailbox
import re
import subprocess
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from gateway.inbound.ingest import OUTCOMES
from tests.conftest import CORPUS, missing_part
from tests.test_cli import HELPDESK


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        missing_part(f"corpus not found at {CORPUS}")
    return sorted(p for p in CORPUS.rglob("*")
                  if p.is_file() and p.name not in {"LICENSE", "README.md"})


def expected_headers(raw: bytes) -> tuple[str | None, str | None]:
    """(sender, subject) as the stdlib decodes them, or None where it cannot say. Where a From
    names an address and then gives another in <angle brackets>, the angle address is the sender
    (the stdlib takes the first); where the stdlib can only give replacement characters (raw
    8-bit headers, multi-byte characters split across encoded words), it cannot say. Only the
    domain of an address is lower-cased: its local part is kept as written."""
    try:
        msg = message_from_bytes(raw, policy=policy.default)
        subject = msg["subject"]
        subject = " ".join(str(subject).split()) if subject is not None else None
        if subject is not None and "\ufffd" in subject:
            subject = None
    except Exception:
        subject = None
    try:
        addresses = msg["from"].addresses if msg["from"] is not None else ()
        sender = addresses[0].addr_spec if addresses else None
        raw_from = re.search(rb"^From:([^\n]*)", raw, re.MULTILINE | re.IGNORECASE)
        raw_from = raw_from.group(1).decode("latin-1") if raw_from else ""
        angle = re.search(r"<([^<>\s]+@[^<>\s]+)>", raw_from)
        if angle:
            sender = angle.group(1)
        if sender and "@" not in sender:
            sender = None
        if sender:
            local, _at, domain = sender.rpartition("@")
            sender = f"{local}@{domain.lower()}"
    except Exception:
        sender = None
    return sender, subject


def test_every_corpus_mail_gets_an_outcome_and_decodes(tmp_path, db_url):
    # One process ingests all of them: it must not crash, and every message gets one JSON line.
    files = corpus_files()
    result = subprocess.run(
        [HELPDESK, "ingest", "--json", "--database", db_url, "--storage", str(tmp_path / "b"),
         "--unknown-senders", "accept", *map(str, files)],
        capture_output=True, text=True, timeout=600, check=False,
        env={"HELPDESK_VAR_DIR": str(tmp_path / "var"), "HELPDESK_SECRET_KEY": "k",
             "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_label = {line["file"]: line for line in lines}

    expected_labels = []
    raws = {}
    for path in files:
        if path.suffix == ".mbox":
            box = mailbox.mbox(path, create=False)
            for index, key in enumerate(box.iterkeys(), start=1):
                expected_labels.append(f"{path}#{index}")
                raws[f"{path}#{index}"] = box.get_bytes(key)
            box.close()
        else:
            expected_labels.append(str(path))
            raws[str(path)] = path.read_bytes()
    assert sorted(by_label) == sorted(expected_labels)

    wrong = []
    for label, line in by_label.items():
        assert line["outcome"] in OUTCOMES, line
        assert "\ufffd" not in line["subject"], line  # always readable text
        sender, subject = expected_headers(raws[label])
        if subject is not None and line["outcome"] != "failed" and line["subject"] != subject:
            wrong.append((label, "subject", line["subject"], subject))
        if sender is not None and line["outcome"] != "failed" and line["from"] != sender:
            wrong.append((label, "from", line["from"], sender))
    assert wrong == [], "\n".join(map(repr, wrong))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_outlook_msg_file_is_refused_cleanly(tmp_path, db_url):
    # mail_outlook_1 is an Outlook .msg, not a mail: a clear outcome, no traceback.
    msg_file = CORPUS / "mail-parser" / "mail_outlook_1"
    result = subprocess.run(
        [HELPDESK, "ingest", "--json", "--database", db_url, "--storage", str(tmp_path / "b"),
         str(msg_file)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"HELPDESK_VAR_DIR": str(tmp_path / "var"), "HELPDESK_SECRET_KEY": "k",
             "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert line["outcome"] in {"failed", "rejected"}
    assert line["reason"]
