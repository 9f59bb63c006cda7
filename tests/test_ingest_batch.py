"""`helpdesk ingest` in batches (gateway.inbound.batch): a pool of processes prepares, batches
are queued and applied in one transaction each, outcomes come back in the order of the files,
and a mail that raises costs only itself."""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import mailbox
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from gateway.collector import settled_while
from gateway.inbound import batch
from gateway.inbound import ingest as ingest_module
from storage import inbound
from storage.models import InboundMessage, Message, Ticket
from tests.conftest import MAILS, load_mail

MANIFEST: dict[str, dict] = json.loads((MAILS / "expected.json").read_text())
# The fixture mails that need nothing before them: no earlier mail, no status set by hand.
ALONE = sorted(name for name, spec in MANIFEST.items()
               if not spec.get("after") and not spec.get("status_before"))
HELPDESK = str(Path(sys.executable).parent / "helpdesk")


def _attachments(result: dict) -> list[dict]:
    return [{k: a[k] for k in ("filename", "accepted", "reason", "type")}
            for a in result["attachments"]]


def test_a_batch_of_fixture_mails_gets_the_outcome_each_gets_alone_then_copies_are_duplicates(
        parts):
    # Every fixture mail that needs nothing before it, then each one again: more than the
    # pool threshold, so prepared by the pool of processes, applied 32 at a time.
    sources = [(name, MAILS / name) for name in ALONE] + [
        (f"again/{name}", load_mail(name)) for name in ALONE]
    assert len(sources) >= batch.POOL_FROM

    results = list(batch.ingest(parts.ingestor, sources, processes=2))

    assert [label for label, _ in results] == [label for label, _ in sources]
    first, again = dict(results[:len(ALONE)]), dict(results[len(ALONE):])
    for name in ALONE:
        spec, got = MANIFEST[name], first[name]
        assert got["outcome"] == spec["outcome"], (name, got)
        if "from" in spec:
            assert got["from"] == spec["from"], name
        if "subject" in spec:
            assert got["subject"] == spec["subject"], name
        if "attachments" in spec:
            wanted = [{k: a[k] for k in ("filename", "accepted", "reason", "type") if k in a}
                      for a in spec["attachments"]]
            assert [{k: g[k] for k in w} for g, w in
                    zip(_attachments(got), wanted, strict=True)] == wanted, name
    # Written in the order of the files: the tickets they open are numbered in that order.
    created = [first[name]["ticket"] for name in ALONE if first[name]["outcome"] == "created"]
    assert created == sorted(created) and len(set(created)) == len(created)
    # A copy is recorded as the copy of the first (the parsable ones: an unparsable mail has
    # no Message-ID, and its bytes are its only key).
    for name in ALONE:
        if first[name]["outcome"] != "failed":
            assert again[f"again/{name}"]["outcome"] == "duplicate", name
    with Session(parts.engine) as session:
        states = session.exec(select(InboundMessage.state)).all()
        assert len(states) == len(sources) and set(states) <= {"done", "failed"}
        assert all(row.claimed_by for row in session.exec(select(InboundMessage)))


def test_a_copy_in_the_same_batch_is_the_duplicate_of_the_ticket_its_first_opened(parts):
    raw = load_mail("outlook-new-request-es.eml")
    results = list(batch.ingest(parts.ingestor, [("first", raw), ("copy", raw)]))
    assert [(label, r["outcome"], r["ticket"]) for label, r in results] == [
        ("first", "created", 1001), ("copy", "duplicate", 1001)]
    # The same file given twice: two lines of their own under the same name.
    path = MAILS / "outlook-new-request-logo-es.eml"
    twice = list(batch.ingest(parts.ingestor, [(str(path), path), (str(path), path)]))
    assert [r["outcome"] for _label, r in twice] == ["created", "duplicate"]


def test_a_mail_that_raises_is_kept_failed_and_the_rest_of_its_batch_is_written(
        parts, monkeypatch):
    # Three new requests in one batch; the middle one raises inside its rules. The batch is
    # written again with savepoints: the other two are tickets 1001 and 1002 (the numbers the
    # first try took were rolled back with it), the middle one failed with its reason.
    raw = load_mail("outlook-new-request-es.eml")
    mails = [raw.replace(b"Error al generar la factura", word.encode()).replace(
        b"Message-ID: <", f"Message-ID: <{word}.".encode()) for word in ("uno", "dos", "tres")]
    dispose = ingest_module._Run.dispose

    def failing(run):  # type: ignore[no-untyped-def]
        if run.mail.subject.startswith("dos"):
            raise ValueError("a rule tripped over this mail")
        return dispose(run)

    monkeypatch.setattr(ingest_module._Run, "dispose", failing)
    results = dict(batch.ingest(parts.ingestor, [(f"m{i}", m) for i, m in enumerate(mails)]))

    assert [(r["outcome"], r["ticket"]) for r in results.values()] == [
        ("created", 1001), ("failed", None), ("created", 1002)]
    assert "a rule tripped over this mail" in results["m1"]["reason"]
    with Session(parts.engine) as session:
        rows = session.exec(select(InboundMessage).order_by(col(InboundMessage.id))).all()
        assert [(r.state, r.outcome) for r in rows] == [
            ("done", "created"), ("failed", "failed"), ("done", "created")]
        assert sorted(session.exec(select(Ticket.number)).all()) == [1001, 1002]
        assert len(session.exec(select(Message)).all()) == 2


def test_the_flood_limit_counts_earlier_mails_of_the_same_batch_and_of_earlier_batches(
        settings, directory):
    # A batch reads its senders' contacts and their recent mails once for all its mails: the
    # mails of the batch itself still count, each as it is stored.
    from gateway.service import build
    from tests.test_api import _fresh

    parts = build(dataclasses.replace(settings, flood_limit=3, flood_window_minutes=60),
                  directory)
    maria = [(f"maria{n}", _fresh("outlook-new-request-es.eml", n)) for n in range(5)]
    other = ("jose", load_mail("outlook-new-request-logo-es.eml"))
    results = [r for _label, r in batch.ingest(parts.ingestor, [*maria[:4], other, maria[4]])]
    assert [r["outcome"] for r in results] == [
        "created", "created", "created", "rejected", "created", "rejected"]
    assert results[3]["reason"] == "flood: 3 mails from this sender in 60 min"
    (_label, later), = batch.ingest(parts.ingestor, [("later", _fresh(
        "outlook-new-request-es.eml", 9))])
    assert (later["outcome"], later["reason"]) == (
        "rejected", "flood: 3 mails from this sender in 60 min")


def test_a_new_sender_twice_in_one_batch_is_one_pending_contact(parts, monkeypatch):
    # The second mail finds the contact the first one made (the batch is written in one go,
    # not again mail by mail after a clash on the contact's address).
    from storage.models import Contact

    tries: list[bool] = []
    apply = ingest_module.Ingestor._apply

    def counted(ingestor, batch_, careful):  # type: ignore[no-untyped-def]
        tries.append(careful)
        return apply(ingestor, batch_, careful)

    monkeypatch.setattr(ingest_module.Ingestor, "_apply", counted)
    results = [r for _label, r in batch.ingest(parts.ingestor, [
        ("first", load_mail("foxmail-gb2312-zh.eml")),
        ("second", load_mail("dmail-raw-gbk-headers-zh.eml"))])]
    assert [r["outcome"] for r in results] == ["held", "held"]
    assert tries == [False]
    with Session(parts.engine) as session:
        found = session.exec(select(Contact).where(
            Contact.email == "zhang.wei@ferreteria-lopez.es")).all()
    assert [c.state for c in found] == ["pending"]


def test_a_temporary_error_leaves_the_mail_queued_for_serve(parts, monkeypatch):
    dispose = ingest_module._Run.dispose

    def disk_full(run):  # type: ignore[no-untyped-def]
        if run.mail.subject.startswith("Error"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return dispose(run)

    monkeypatch.setattr(ingest_module._Run, "dispose", disk_full)
    (label, result), = batch.ingest(parts.ingestor, [
        ("new", load_mail("outlook-new-request-es.eml"))])

    assert result["outcome"] == "queued" and "temporary error" in result["reason"]
    with Session(parts.engine) as session:
        row = session.exec(select(InboundMessage)).one()
        assert row.state == "queued" and row.next_attempt_at is not None
    monkeypatch.setattr(ingest_module._Run, "dispose", dispose)
    assert inbound.requeue_failed(parts.engine, [row.id]) == 1  # due now rather than in 1 s
    assert parts.ingestor.process_next(row.id).outcome == "created"  # as serve does


def test_a_file_that_cannot_be_read_is_said_and_the_others_go_on(parts, tmp_path):
    gone = tmp_path / "gone.eml"
    results = dict(batch.ingest(parts.ingestor, [
        ("gone.eml", gone), ("new", load_mail("outlook-new-request-es.eml"))]))
    assert results["gone.eml"]["outcome"] == "failed"
    assert "FileNotFoundError" in results["gone.eml"]["reason"]
    assert results["new"]["outcome"] == "created"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_command_ingests_files_and_an_mbox_through_its_pool_in_order(db_url, tmp_path):
    # The real command on 70 mails and an mbox of three: more than the pool threshold, so the
    # pool of processes (forked) prepares them; one line per mail, in the order given.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env.update(HELPDESK_VAR_DIR=str(tmp_path / "var"), HELPDESK_DATABASE_URL=db_url,
               HELPDESK_SECRET_KEY="cli-test-key-" + "x" * 32,
               HELPDESK_FLOOD_LIMIT="100")  # one sender, 73 mails: no flood for this test
    for args in (("db", "upgrade"),
                 ("org", "add", "--code", "C0001", "--tax-id", "B12345678", "--name", "López",
                  "--domain", "ferreteria-lopez.es"),
                 ("contact", "add", "--org", "C0001", "--name", "María García", "--email",
                  "maria.garcia@ferreteria-lopez.es")):
        done = subprocess.run([HELPDESK, *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    raw = load_mail("outlook-new-request-es.eml")
    files = []
    for n in range(70):
        path = tmp_path / f"mail-{n:03}.eml"
        path.write_bytes(raw.replace(b"Message-ID: <", f"Message-ID: <n{n}.".encode()))
        files.append(str(path))
    box = mailbox.mbox(tmp_path / "three.mbox")
    for n in range(3):
        box.add(raw.replace(b"Message-ID: <", f"Message-ID: <box{n}.".encode()))
    box.close()

    done = subprocess.run([HELPDESK, "ingest", "--json", *files, str(tmp_path / "three.mbox")],
                          env=env, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == files + [
        f"{tmp_path / 'three.mbox'}#{n}" for n in (1, 2, 3)]
    assert [(line["outcome"], line["ticket"]) for line in lines] == [
        ("created", 1001 + n) for n in range(73)]


def test_a_command_run_in_a_process_that_goes_on_gives_back_what_it_froze():
    # `helpdesk ingest` keeps start-up's objects out of the collector's full passes while it
    # runs; a process that runs it and goes on (the tests) gets them back afterwards, to be
    # collected as before.
    assert gc.get_freeze_count() == 0
    with settled_while():
        assert gc.get_freeze_count() > 1000
    assert gc.get_freeze_count() == 0
