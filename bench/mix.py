"""The standard mail mix: generate it with shared/bench/gen_mails.py, read it, register its senders.

The mix is the same on every machine for the same N and seed, so figures compare across versions.
Every sender of the mix becomes a verified contact: companies are organizations with their mail
domain; freemail senders all go into one extra organization, so that none is an unknown sender.
"""

from __future__ import annotations

import json
import re
import subprocess  # noqa: S404 (runs the shared generator with this interpreter)
import sys
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

from sqlalchemy.engine import Engine

from storage.directory import add_contact, add_organization

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT.parent / "shared" / "bench" / "gen_mails.py"
FREEMAIL_ORG = "BFREE"

_RETURN_PATH = re.compile(rb"^Return-Path:[ \t]*<([^<>\s]*)>", re.MULTILINE | re.IGNORECASE)
_FROM = re.compile(rb"^From:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Mix:
    root: Path
    manifest: dict
    mails: tuple[Path, ...]
    seeds: tuple[Path, ...]

    @property
    def n(self) -> int:
        return len(self.mails)

    @property
    def to(self) -> str:
        return str(self.manifest["to"])

    @property
    def expected(self) -> dict[str, int]:
        return dict(self.manifest["expected"])

    @property
    def contacts(self) -> list[dict]:
        return list(self.manifest["contacts"])


def ensure_mix(n: int, seed: int, outdir: Path, generator: Path = GENERATOR) -> Mix:
    """The mix of ``n`` mails under ``outdir``; generated only if missing or different."""
    manifest_path = outdir / "manifest.json"
    if not _complete(manifest_path, n, seed):
        if not generator.exists():
            raise SystemExit(f"mail generator not found: {generator}")
        subprocess.run(  # noqa: S603 (fixed command: this interpreter and the shared generator)
            [sys.executable, str(generator), str(n), str(outdir), "--seed", str(seed)],
            check=True,
        )
    return load_mix(outdir)


def load_mix(outdir: Path) -> Mix:
    manifest = json.loads((outdir / "manifest.json").read_text())
    mails = tuple(outdir / "mails" / f["file"] for f in manifest["files"])
    seeds = tuple(sorted((outdir / "seed").glob("*.eml")))
    return Mix(outdir, manifest, mails, seeds)


def _complete(manifest_path: Path, n: int, seed: int) -> bool:
    if not manifest_path.exists():
        return False
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("n") != n or manifest.get("seed") != seed:
        return False
    root = manifest_path.parent
    return all((root / "mails" / f["file"]).exists() for f in manifest["files"]) and len(
        list((root / "seed").glob("*.eml"))
    ) == manifest["seed_parents"]


def envelope_sender(raw: bytes) -> str:
    """MAIL FROM for a mail of the mix: its Return-Path, or else its From address."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    found = _RETURN_PATH.search(head)
    if found:
        return found.group(1).decode("ascii", "replace")
    found = _FROM.search(head)
    if found:
        return parseaddr(found.group(1).decode("ascii", "replace"))[1]
    return ""


def register_directory(engine: Engine, mix: Mix) -> dict[str, int]:
    """Every sender of the mix as a verified contact of its organization (no password)."""
    companies = sorted({(c["company"], c["domain"]) for c in mix.contacts if c["company"]})
    codes: dict[str | None, str] = {}
    for number, (name, domain) in enumerate(companies, start=1):
        codes[name] = f"B{number:04d}"
        add_organization(engine, code=codes[name], tax_id=f"B{number:08d}", name=name,
                         domains=[domain])
    # Freemail domains belong to nobody: their senders share one organization, no domain.
    codes[None] = FREEMAIL_ORG
    add_organization(engine, code=FREEMAIL_ORG, tax_id="-", name="Particulares (freemail)",
                     domains=[])
    for contact in mix.contacts:
        add_contact(engine, organization_code=codes[contact["company"]], name=contact["name"],
                    email=contact["email"])
    return {"organizations": len(companies) + 1, "contacts": len(mix.contacts)}
