"""The web benchmark's data: one organization with 10,000 tickets and 100,000 messages, bulk-loaded.

Organizations and contacts go through ``storage.directory`` (so the password hash is the real
one); tickets, their thread, status history and attachments are written with SQLAlchemy Core
executemany into the tables of ``storage.models``, which takes seconds instead of the minutes the
workflow would. A second organization has a few tickets of its own, interleaved by date, so the
lists' organization filter has something to leave out. One real ~200 KB PDF is stored in the blob
store; every accepted attachment row points at it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, text, update
from sqlalchemy.engine import Engine

from storage.blobs import BlobStore
from storage.directory import add_contact, add_organization
from storage.models import (
    COMPLETED_STATUSES,
    OPEN_STATUSES,
    Attachment,
    Counter,
    Message,
    StatusChange,
    Ticket,
)

EMAIL = "maria.garcia@ferreteria-lopez.es"
PASSWORD = "bench-clave-2026"  # noqa: S105 (the benchmark contact's, on a throwaway database)
FIRST_NUMBER = 1001
BATCH = 5000

SAMPLE = ("la factura no se imprime desde esta mañana y el programa muestra un error al abrir "
          "el módulo de contabilidad cuando intentamos cerrar el mes necesitamos ayuda urgente con "
          "la impresora del almacén el cliente no recibe los correos de los pedidos gracias un "
          "saludo hemos reiniciado el equipo pero sigue igual adjunto una captura")
WORDS = tuple(SAMPLE.split())
SUBJECTS = ("No puedo imprimir las facturas", "Error al cerrar el mes", "Pedido duplicado",
            "Consulta sobre la licencia", "El programa va muy lento", "Alta de usuario nuevo",
            "No llegan los correos", "Cambio de IVA en los artículos", "Copia de seguridad",
            "Error al exportar a Excel")


@dataclass(frozen=True)
class Loaded:
    """What the benchmark needs to know about the data it loaded."""

    tickets: int
    messages: int
    attachments: int
    by_group: dict[str, int]
    ticket_number: int  # a ticket of the first organization with 10 messages and the PDF
    attachment_id: int
    pdf_bytes: int


def fake_pdf(size: int = 200_000, seed: int = 7) -> bytes:
    body = random.Random(seed).randbytes(size - 30)
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + body + b"\n%%EOF\n"


def load(engine: Engine, storage_dir: Path, *, tickets: int = 10_000, messages: int = 100_000,
         others: int = 60, seed: int = 42) -> Loaded:
    add_organization(engine, code="C0001", tax_id="B12345678", name="Ferretería López S.L.",
                     domains=["ferreteria-lopez.es"])
    maria = add_contact(engine, organization_code="C0001", name="María García", email=EMAIL,
                        password=PASSWORD, is_manager=True)
    jose = add_contact(engine, organization_code="C0001", name="José Fernández",
                       email="jose.fernandez@ferreteria-lopez.es")
    add_organization(engine, code="C0002", tax_id="A87654321", name="Clínica Dental Sur",
                     domains=["clinicadental-sur.com"])
    lucia = add_contact(engine, organization_code="C0002", name="Lucía Martín",
                        email="lucia.martin@clinicadental-sur.com", language="en")
    pdf = fake_pdf()
    key = BlobStore(storage_dir).put(pdf)

    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=4 * 365)
    total = tickets + others
    other_slots = set(rng.sample(range(total), others))
    mine_slots = [i for i in range(total) if i not in other_slots]
    counts = dict(zip(mine_slots, _message_counts(rng, tickets, messages), strict=True))
    # A recent ticket of the first organization with 10 messages gets the PDF.
    chosen = mine_slots[-120]
    ten = next(i for i in reversed(mine_slots) if counts[i] == 10)
    counts[chosen], counts[ten] = counts[ten], counts[chosen]

    ticket_rows, message_rows, change_rows, attachment_rows = [], [], [], []
    by_group = {"open": 0, "completed": 0}
    message_id = attachment_id = chosen_attachment = 0
    for i in range(total):
        mine = i not in other_slots
        requester = (maria if rng.random() < 0.6 else jose) if mine else lucia
        created = start + (now - start) * (i / total) + timedelta(seconds=rng.randint(0, 3000))
        status = _status(rng, age=1 - i / total)
        if mine:
            by_group["open" if status in OPEN_STATUSES else "completed"] += 1
        updated = created + timedelta(hours=rng.randint(1, 300))
        updated = min(updated, now)
        ticket_id = i + 1
        rated = status == "closed" and rng.random() < 0.3
        ticket_rows.append({
            "id": ticket_id, "number": FIRST_NUMBER + i,
            "organization_id": requester.organization_id, "requester_id": requester.id,
            "subject": f"{rng.choice(SUBJECTS)} ({i})", "status": status, "channel": "email",
            "rating": rng.choice((3, 4, 5, 5)) if rated else None,
            "rating_source": "mail" if rated else None, "rated_at": updated if rated else None,
            "resolved_at": updated if status in COMPLETED_STATUSES else None,
            "created_at": created, "updated_at": updated,
        })
        change_rows.extend(_history(ticket_id, status, created, updated))
        n = counts[i] if mine else 4
        step = (updated - created) / n
        for k in range(n):
            message_id += 1
            incoming = k % 2 == 0
            body = " ".join(rng.choices(WORDS, k=rng.randint(30, 110)))
            message_rows.append({
                "id": message_id, "ticket_id": ticket_id, "direction": "in" if incoming else "out",
                "channel": "email" if incoming else "agent",
                "author_contact_id": requester.id if incoming else None,
                "from_address": requester.email if incoming else "soporte@example.com",
                "subject": ticket_rows[-1]["subject"], "automatic": False, "text": body,
                "html": None, "new_text": body, "message_id": f"<b{message_id}@bench.example>",
                "created_at": created + step * k,
            })
            if incoming and (i == chosen and k == 0 or mine and rng.random() < 0.002):
                attachment_id += 1
                if i == chosen:
                    chosen_attachment = attachment_id
                refused = i != chosen and rng.random() < 0.2
                attachment_rows.append({
                    "id": attachment_id, "message_id": message_id, "ticket_id": ticket_id,
                    "filename": f"factura-{FIRST_NUMBER + i}.pdf" if not refused else "setup.exe",
                    "content_type": "application/pdf" if not refused
                    else "application/x-dosexec",
                    "size": len(pdf), "sha256": key, "storage_key": None if refused else key,
                    "content_id": None, "accepted": not refused,
                    "reason": "type not allowed" if refused else None,
                })

    tables = [(Ticket, ticket_rows), (Message, message_rows), (StatusChange, change_rows),
              (Attachment, attachment_rows)]
    with engine.begin() as conn:
        for model, rows in tables:
            table = model.__table__  # type: ignore[attr-defined]
            for at in range(0, len(rows), BATCH):
                conn.execute(insert(table), rows[at:at + BATCH])
        conn.execute(update(Counter.__table__).where(Counter.__table__.c.name == "ticket")  # type: ignore[attr-defined]
                     .values(value=FIRST_NUMBER + total - 1))
        if engine.dialect.name == "postgresql":
            # Ids were given explicitly: move the sequences past them, as the gateway would.
            for model, _rows in tables:
                name = model.__tablename__
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "  # noqa: S608 (our table names)
                                  f"(SELECT max(id) FROM {name}))"))
    _settle(engine)
    return Loaded(tickets=len(ticket_rows), messages=len(message_rows),
                  attachments=len(attachment_rows), by_group=by_group,
                  ticket_number=FIRST_NUMBER + chosen, attachment_id=chosen_attachment,
                  pdf_bytes=len(pdf))


def _message_counts(rng: random.Random, n: int, total: int) -> list[int]:
    """n counts between 1 and 19 adding up to total (2 to 18, then evened out to the total)."""
    counts = [rng.randint(2, 18) for _ in range(n)]
    diff = total - sum(counts)
    while diff:
        i = rng.randrange(n)
        if diff > 0 and counts[i] < 19:
            counts[i] += 1
            diff -= 1
        elif diff < 0 and counts[i] > 1:
            counts[i] -= 1
            diff += 1
    return counts


def _status(rng: random.Random, age: float) -> str:
    """Recent tickets are the open and resolved ones; older ones are nearly all closed."""
    roll = rng.random()
    if age < 0.08:  # the newest 8 %
        if roll < 0.55:
            return rng.choice(("new", "qualified", "in_progress", "in_progress", "pending",
                               "planned", "awaiting_customer"))
        return "resolved" if roll < 0.85 else "closed"
    if roll < 0.005:
        return rng.choice(("pending", "planned"))  # the odd long-running one
    return "cancelled" if roll < 0.05 else "closed"


def _history(ticket_id: int, status: str, created: datetime, updated: datetime) -> list[dict]:
    path = {"new": ["new"], "resolved": ["new", "in_progress", "resolved"],
            "closed": ["new", "in_progress", "resolved", "closed"],
            "cancelled": ["new", "cancelled"]}.get(status, ["new", "in_progress", status])
    if path[-1] == "in_progress" and len(path) == 3:
        path = path[:2]
    step = (updated - created) / len(path)
    return [{"ticket_id": ticket_id, "from_status": path[k - 1] if k else None,
             "to_status": to, "actor": "system" if k == 0 else "Agente", "note": "",
             "created_at": created + step * k} for k, to in enumerate(path)]


def _settle(engine: Engine) -> None:
    """PostgreSQL: statistics, as autovacuum would have them after such a load; SQLite:
    everything into the main file, nothing left in the WAL (as the tests' templates do)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
