"""Separates the new part of a reply from the quoted history it carries. Pure.

mail-parser-reply does the splitting (it knows the "From:/Sent:" and "On ... wrote:" headers of
Outlook, Gmail, Apple Mail and Thunderbird). Its Spanish table (1.36) cannot match "El ...
escribió:" (it asks for two blanks before "escribió" and its own lookahead excludes every match)
nor Outlook's "Enviado el:", so a corrected Spanish entry is registered here. The full text is
always kept too: this split only decides what the ticket page shows first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailparser_reply import EmailReplyParser
from mailparser_reply.constants import MAIL_LANGUAGES, QUOTED_MATCH_INCLUDE

_Q = QUOTED_MATCH_INCLUDE

MAIL_LANGUAGES["es"] = {
    **MAIL_LANGUAGES.get("es", {}),
    # Gmail:       El lun, 23 nov 2026 a las 9:14, María García (<m@x.es>) escribió:
    # Apple Mail:  El 24 nov 2026, a las 11:32, José <j@x.es> escribió:
    # Thunderbird: El 24/11/2026 a las 11:02, Soporte escribió:
    # Gmail wraps long ones over two or three lines; they may sit inside "> " quotes.
    "wrote_header": (r"^(" + _Q + r"El\s[^\n]{0,200}(?:\n" + _Q + r"[^\n]{0,200}){0,2}?"
                     r"\sescribi[óo]:)$"),
    # Outlook: De: / Enviado: (or "Enviado el:") / Para: / CC: / Asunto:, at least two of them.
    "from_header": r"((?:(?:^|\n|\n" + _Q + r")[* ]*(?:De|Enviado(?: el)?|Para|Asunto|Fecha|CC|Cc"
    r"|Organización):[ *]*(?:\s{,2}).*){2,}(?:\n.*){,1})",
}

# "-----Mensaje original-----" / "-----Original Message-----", as Outlook writes on forwards.
_SEPARATORS = re.compile(r"^\s*-{3,}\s*(?:Mensaje original|Original Message)\s*-{3,}\s*$",
                         re.IGNORECASE | re.MULTILINE)
# Someone who answers between the quoted lines usually says so; then nothing is cut.
_INLINE_NOTE = re.compile(
    r"(respuestas?|comentarios?|contesto|respondo)\s+(en\s+l[ií]nea|entre\s+l[ií]neas|abajo|"
    r"debajo|en\s+(rojo|azul|verde)|en\s+el\s+texto)|(answers?|comments?|replies|see)\s+"
    r"(inline|below|in\s+(red|blue))",
    re.IGNORECASE,
)

_parser = EmailReplyParser(languages=["es", "en"])


@dataclass(frozen=True)
class Split:
    new: str
    quoted: str


# Past this size a body is not a person's reply (a log, a dump, a file pasted as text): the
# splitter's regexes would cost seconds and a gigabyte on it, and nothing would be gained.
MAX_SPLIT = 256 * 1024


def split_reply(text: str) -> Split:
    """The new part and the quoted history of a plain-text body; never loses text."""
    text = text.strip()
    if not text or len(text) > MAX_SPLIT:
        return Split(text, "")
    try:
        latest = _parser.parse_reply(text) or ""
    except re.error:  # a pathological body must not stop ingestion
        return Split(text, "")
    latest = _cut_separator(latest).strip()
    if not latest:
        return Split(text, "")
    rest = _remainder(text, latest)
    if rest and (_INLINE_NOTE.search(latest) or _answers_between_quotes(rest)):
        return Split(text, "")
    return Split(latest, rest)


def _cut_separator(fragment: str) -> str:
    found = _SEPARATORS.search(fragment)
    return fragment[: found.start()] if found else fragment


def _remainder(text: str, latest: str) -> str:
    """What follows the new part in the original text (the library strips every line)."""
    normalized = "\n".join(line.strip() for line in text.replace("\r\n", "\n").split("\n"))
    index = normalized.find(latest)
    return normalized[index + len(latest):].strip() if index >= 0 else ""


def _answers_between_quotes(rest: str) -> bool:
    """True when unquoted lines follow ">"-quoted ones: answers written inside the quote."""
    lines = [line for line in rest.splitlines() if line.strip()]
    first_quoted = next((i for i, line in enumerate(lines) if line.startswith(">")), None)
    if first_quoted is None:
        return False
    return any(not line.startswith(">") for line in lines[first_quoted + 1:])
