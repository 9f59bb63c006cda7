"""The support team from the command line: agents, API tokens, and reading tickets
(`helpdesk agent ...`, `helpdesk token ...`, `helpdesk ticket list|show`)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from gateway.cli import main
from storage.agents import agent_for_token, token_hash
from storage.db import transaction
from tests.conftest import MAILS


@pytest.fixture
def helpdesk(settings, directory, monkeypatch, tmp_path):
    """Run `helpdesk ARGS...` in this process against the test's database; (exit code, output)."""
    monkeypatch.setenv("HELPDESK_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("HELPDESK_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("HELPDESK_STORAGE_DIR", str(tmp_path / "blobs"))
    monkeypatch.setenv("HELPDESK_SECRET_KEY", "team-cli-test-key")
    monkeypatch.setenv("HELPDESK_SUPPORT_ADDRESS", "soporte@example.com")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args))
        return result.exit_code, result.output

    return run


def test_agents_are_added_listed_deactivated_and_refused_clearly(helpdesk):
    assert helpdesk("agent", "add", "Ana.Ruiz@soporte.example", "--name", "Ana Ruiz")[0] == 0
    code, out = helpdesk("agent", "add", "luis@soporte.example", "--name", "Luis Gil",
                         "--role", "admin", "--language", "en")
    assert code == 0 and "luis@soporte.example added (admin)" in out
    code, out = helpdesk("agent", "add", "ana.ruiz@soporte.example", "--name", "Otra Ana")
    assert code == 1 and "an agent with email ana.ruiz@soporte.example already exists" in out
    code, out = helpdesk("agent", "add", "x@soporte.example", "--name", "X", "--password",
                         "1234567890")
    assert code == 2 and "too easy to guess" in out
    code, out = helpdesk("agent", "add", "x@soporte.example", "--name", "X", "--role", "boss")
    assert code == 2 and "boss" in out and "Traceback" not in out
    code, out = helpdesk("agent", "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].split()[:5] == ["ana.ruiz@soporte.example", "Ana", "Ruiz", "agent", "active"]
    assert helpdesk("agent", "deactivate", "ana.ruiz@soporte.example")[0] == 0
    assert "deactivated" in helpdesk("agent", "list")[1].splitlines()[0]
    code, out = helpdesk("agent", "deactivate", "nadie@soporte.example")
    assert code == 1 and "no agent with email nadie@soporte.example" in out


def test_a_token_is_shown_once_stored_hashed_and_stops_with_revocation_or_deactivation(
        helpdesk, directory):
    helpdesk("agent", "add", "ana@soporte.example", "--name", "Ana Ruiz")
    code, out = helpdesk("token", "create", "ana@soporte.example", "--name", "helpdesk sync")
    assert code == 0, out
    secret = out.strip().splitlines()[-1]
    assert re.fullmatch(r"hd_[A-Za-z0-9_-]{40,}", secret)
    # Stored as its SHA-256 only: the secret itself is nowhere in the table.
    with transaction(directory, write=False) as session:
        rows = session.exec(text("SELECT token_hash, prefix, name FROM api_token")).all()
    assert [tuple(row) for row in rows] == [(token_hash(secret), secret[:10], "helpdesk sync")]
    # It acts as its agent, and its use is recorded.
    found = agent_for_token(directory, secret)
    assert found is not None and found[0].email == "ana@soporte.example"
    assert agent_for_token(directory, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    code, out = helpdesk("token", "list")
    assert secret[:10] in out and secret not in out and "helpdesk sync" in out
    assert "last used -" not in out and "active" in out
    # A deactivated agent's tokens stop; reactivated, they work again.
    helpdesk("agent", "deactivate", "ana@soporte.example")
    assert agent_for_token(directory, secret) is None
    assert helpdesk("token", "create", "ana@soporte.example", "--name", "x")[0] == 1
    helpdesk("agent", "deactivate", "ana@soporte.example", "--undo")
    assert agent_for_token(directory, secret) is not None
    # A revoked token stays revoked.
    token_id = out.split()[0]
    assert helpdesk("token", "revoke", token_id)[0] == 0
    assert agent_for_token(directory, secret) is None
    assert "revoked" in helpdesk("token", "list")[1]
    assert helpdesk("token", "revoke", "999")[1].strip().endswith("no token 999")


def test_tickets_are_listed_by_filters_and_shown_whole(helpdesk):
    code, out = helpdesk("ingest", str(MAILS / "outlook-new-request-es.eml"))
    assert code == 0, out
    assert helpdesk("ticket", "move", "1001", "qualified", "--actor", "Ana Ruiz",
                    "--note", "factura de noviembre")[0] == 0
    assert helpdesk("ticket", "reply", "1001", "--agent", "Ana Ruiz", "--text",
                    "Estamos revisando la factura.")[0] == 0

    code, out = helpdesk("ticket", "list")
    assert code == 0 and out.startswith("#1001  qualified")
    assert "maria.garcia@ferreteria-lopez.es" in out
    assert "Error al generar la factura de noviembre" in out
    assert helpdesk("ticket", "list", "--status", "qualified", "--status", "new")[1].startswith(
        "#1001")
    assert helpdesk("ticket", "list", "--status", "resolved")[1].strip() == "no tickets"
    assert helpdesk("ticket", "list", "--text", "FACTURA noviembre")[1].startswith("#1001")
    # Words of a message's text find the ticket too, not only its subject.
    assert helpdesk("ticket", "list", "--text", "revisando")[1].startswith("#1001")
    assert helpdesk("ticket", "list", "--text", "impresora")[1].strip() == "no tickets"
    assert helpdesk("ticket", "list", "--org", "NOPE")[1].strip() == "no tickets"
    code, out = helpdesk("ticket", "list", "--status", "done")
    assert code == 1 and "unknown status 'done'" in out

    code, out = helpdesk("ticket", "show", "1001")
    assert code == 0
    assert out.startswith("#1001  Error al generar la factura de noviembre")
    assert "status       qualified" in out
    assert "requester    María García <maria.garcia@ferreteria-lopez.es>" in out
    assert "Estamos revisando la factura." in out
    assert "new -> qualified  by Ana Ruiz  factura de noviembre" in out
    mails = out.split("mails sent")[1]
    assert "received to maria.garcia@ferreteria-lopez.es  queued" in mails
    assert "agent_reply to maria.garcia@ferreteria-lopez.es" in mails
    code, out = helpdesk("ticket", "show", "9999")
    assert code == 1 and "no ticket 9999" in out


def test_a_tickets_priority_assignee_and_application_are_set_from_the_command_line(helpdesk):
    assert helpdesk("agent", "add", "ana@soporte.example", "--name", "Ana Ruiz")[0] == 0
    assert helpdesk("ingest", str(MAILS / "outlook-new-request-es.eml"))[0] == 0
    code, out = helpdesk("ticket", "set", "1001", "--agent", "ana@soporte.example",
                         "--priority", "urgent", "--assignee", "ana@soporte.example")
    assert code == 0 and "assignee, priority changed" in out
    code, out = helpdesk("ticket", "set", "1001", "--agent", "ana@soporte.example",
                         "--assignee", "nadie@soporte.example")
    assert code == 1 and "no active agent 'nadie@soporte.example'" in out
    assert helpdesk("ticket", "set", "1001", "--agent", "x@y.z", "--priority", "low")[0] == 1
    assert helpdesk("ticket", "list", "--status", "new")[1].startswith("#1001")
    code, out = helpdesk("ticket", "set", "1001", "--agent", "ana@soporte.example",
                         "--assignee", "none")
    assert code == 0 and "assignee changed" in out
