"""Gettext catalogs (Spanish first, English too) and the Jinja2 environments that use them.

Catalogs are read from ``locale/<lang>/LC_MESSAGES/messages.po`` and compiled in memory, so a
fresh clone needs no build step. ``make i18n`` re-extracts the strings with Babel.
"""

from __future__ import annotations

import io
from datetime import date
from functools import cache
from pathlib import Path

from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader, nodes, select_autoescape
from jinja2.ext import InternationalizationExtension

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "locale"
LANGUAGES = ("es", "en")
DEFAULT_LANGUAGE = "es"


def pick_language(wanted: str | None) -> str:
    """The contact's language if we have it, else Spanish."""
    lang = (wanted or "").strip().lower()[:2]
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE


@cache
def translations(lang: str) -> Translations:
    po_file = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
    if not po_file.exists():
        return Translations()
    with po_file.open("rb") as handle:
        catalog = read_po(handle, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


class FixedTranslations(InternationalizationExtension):
    """Jinja2's i18n extension, except that a ``{% trans %}`` block with no variable, no plural
    and no context is translated once, when its template is compiled, instead of at every
    render: each environment here is for one language, so its translation cannot change. It
    is exactly what newstyle gettext would output (the translation, ``%%`` read as ``%``, not
    escaped), without a call per block per render (about 5 µs each, a page has some twenty).
    The template syntax is unchanged, so Babel extracts the strings as before."""

    def _make_node(self, singular: str, plural: str | None, context: str | None,
                   variables: dict[str, nodes.Expr], plural_expr: nodes.Expr | None,
                   vars_referenced: bool, num_called_num: bool) -> nodes.Output:
        fixed = getattr(self.environment, "fixed_translations", None)
        if (fixed is not None and plural_expr is None and context is None and not variables
                and self.environment.newstyle_gettext):  # type: ignore[attr-defined]
            return nodes.Output([nodes.TemplateData(fixed.gettext(singular) % {})])
        return super()._make_node(singular, plural, context, variables, plural_expr,
                                  vars_referenced, num_called_num)


def environment(template_dirs: Path | list[Path], lang: str) -> Environment:
    """A Jinja2 environment for one language, with gettext installed (new style, trimmed).

    Only ``.html`` templates are escaped; text parts and subjects are plain text.
    """
    env = Environment(
        loader=FileSystemLoader(template_dirs),
        autoescape=select_autoescape(["html"], default_for_string=False, default=False),
        extensions=[FixedTranslations],
        keep_trailing_newline=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates are code: read once per process, not stat()ed per render
    )
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.extend(fixed_translations=translations(lang))
    env.globals["lang"] = lang
    env.filters["long_date"] = lambda iso: format_date(date.fromisoformat(iso), "long", locale=lang)
    return env
