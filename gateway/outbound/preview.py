"""Sample mails of every template, for `helpdesk mail preview` and for reviewing wording."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from gateway.outbound.render import TEMPLATE_DIR, Envelope, Renderer, build_message

SAMPLE: dict[str, Any] = {
    "brand": "Soporte",
    "contact_name": "María García",
    "ticket_number": 1042,
    "ticket_subject": "Error al generar la factura de noviembre",
    "ticket_status": "new",
    "ticket_url": "http://127.0.0.1:8000/tickets/1042",
    "portal_url": "http://127.0.0.1:8000",
}
SAMPLE_STARS = [{"stars": n, "url": f"http://127.0.0.1:8000/rate/sample-{n}"}
                for n in range(1, 6)]
EVENT_SAMPLES: dict[str, dict[str, Any]] = {
    "received": {"refused": [{"filename": "instalador.exe", "reason": "type_not_allowed"}]},
    "attachments_refused": {"refused": [{"filename": "video.mp4", "reason": "too_large"}],
                            "ticket_status": "in_progress"},
    "qualified": {"ticket_status": "qualified"},
    "in_progress": {"ticket_status": "in_progress"},
    "planned": {"ticket_status": "planned", "planned_for": "2026-12-03",
                "note": "Un técnico se conectará en remoto a primera hora."},
    "awaiting_customer": {"ticket_status": "awaiting_customer",
                          "request": "Una captura de pantalla del error y la versión del "
                                     "programa (Ayuda > Acerca de)."},
    "cancelled": {"ticket_status": "cancelled", "note": "Duplicado del ticket 1040."},
    "resolved": {"ticket_status": "resolved", "rating_links": SAMPLE_STARS,
                 "note": "Corregido el formato de la factura; ya se imprime bien."},
    "rating_reminder": {"ticket_status": "resolved", "rating_links": SAMPLE_STARS},
    "refused_sender": {"sender_name": "Pedro Ruiz", "contact_name": "Pedro Ruiz",
                       "original_subject": "Consulta sobre precios"},
    "agent_reply": {"ticket_status": "in_progress", "agent_name": "Laura (soporte)",
                    "reply_text": "Hola María,\n\nya hemos corregido el error. ¿Puedes probar?"},
    "verification_request": {
        "contact_name": "Ana López", "requester_name": "Pedro Ruiz",
        "requester_email": "pedro.ruiz@ferreteria-lopez.es",
        "organization_name": "Ferretería López S.L.",
        "excerpt": "Buenos días, no puedo abrir el programa de facturación desde esta mañana.",
        "approve_url": "http://127.0.0.1:8000/verify/sample-approve",
        "reject_url": "http://127.0.0.1:8000/verify/sample-reject"},
    "set_password": {"contact_name": "Ana López",
                     "contact_email": "ana.lopez@ferreteria-lopez.es",
                     "set_password_url": "http://127.0.0.1:8000/password/set/sample",
                     "valid_hours": 24, "invited": False},
    "team_customer_replied": {
        "number": 1042, "subject": "Error al generar la factura de noviembre",
        "status": "in_progress", "organization_name": "Ferretería López S.L.",
        "author": "maria.garcia@ferreteria-lopez.es",
        "excerpt": "Adjunto el PDF que me pedíais. Sigue saliendo el error 4012.",
        "console_url": "http://127.0.0.1:8000/team/tickets/1042"},
    "team_low_rating": {
        "number": 1042, "subject": "Error al generar la factura de noviembre",
        "status": "resolved", "organization_name": "Ferretería López S.L.", "stars": 2,
        "comment": "Tardasteis una semana en contestar.",
        "console_url": "http://127.0.0.1:8000/team/tickets/1042"},
    "team_sla_warning": {
        "number": 1042, "subject": "Error al generar la factura de noviembre",
        "status": "in_progress", "organization_name": "Ferretería López S.L.",
        "target": "first_response", "level": "90%", "contractual": True,
        "due_at": "01/12/2026 10:20", "over_minutes": 0,
        "console_url": "http://127.0.0.1:8000/team/tickets/1042"},
    "team_verification": {
        "person_name": "Pedro Ruiz", "person_email": "pedro.ruiz@ferreteria-lopez.es",
        "organization_name": "Ferretería López S.L.", "approved": True,
        "decided_by": "ana.lopez@ferreteria-lopez.es",
        "tickets": [{"number": 1043, "subject": "No puedo abrir el programa"}],
        "console_url": "http://127.0.0.1:8000/team"},
}


# Mails that belong to no ticket of the customer's: no [#NUMBER] tag, no ticket link (the
# team's mails name their ticket, but carry no reply address of it).
WITHOUT_TICKET = frozenset({"refused_sender", "verification_request", "set_password",
                            "team_customer_replied", "team_low_rating", "team_verification",
                            "team_sla_warning"})


def events() -> list[str]:
    """Every event that has a template."""
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.subject"))


def sample(event: str, lang: str, renderer: Renderer | None = None) -> EmailMessage:
    context = {**SAMPLE, **EVENT_SAMPLES.get(event, {})}
    rendered = (renderer or Renderer()).render(event, lang, context)
    envelope = Envelope(
        from_name="Soporte", from_address="soporte@example.com",
        to_name=context["contact_name"], to_address="maria.garcia@ferreteria-lopez.es",
        reply_to="soporte+1042.sample@example.com",
        message_id=f"<t1042.{event}.sample@example.com>",
        in_reply_to="<first@ferreteria-lopez.es>", references=("<first@ferreteria-lopez.es>",),
        language=lang,
    )
    return build_message(rendered, envelope)
