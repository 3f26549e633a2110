"""Keyed pseudonyms for patient, study and image identifiers taken from hospital data.

Splits must keep a patient's images together and audits must be able to say "these images
are one patient", so identifiers cannot simply be dropped; written as they are, they would
put protected health information into manifests, lineage records and every file derived from
them. A keyed hash (HMAC-SHA256) keeps the grouping and reveals nothing without the key: an
unkeyed hash of a patient ID or a UUID-like RSNA patientId could be reversed by hashing every
candidate.

The key (the "salt") lives outside the repository: the `CFXRAY_DEID_SALT` environment
variable or the file named by `ingest.deid_salt_file`. Without one, DICOM ingest stops with
instructions instead of inventing a key, because the same salt must be reused for every
ingest of the same hospital's data: a new one would give every patient a new pseudonym and
new splits. Only the salt's fingerprint is ever written.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from cfxray.errors import UserError

SALT_ENV = "CFXRAY_DEID_SALT"
MIN_SALT_CHARS = 16
_PREFIXES = {"patient": "pid", "study": "sid", "file": "fid"}
_DIGITS = 16  # hex digits kept: 64 bits, collision-free for any realistic number of patients


@dataclass(frozen=True)
class Pseudonymizer:
    salt: bytes = field(repr=False)
    source: str  # where the salt came from, for the summary (never the salt itself)

    def __call__(self, kind: str, value: str) -> str:
        """`pid-`/`sid-`/`fid-` and 16 hex digits of HMAC-SHA256(salt, kind NUL value)."""
        digest = hmac.new(self.salt, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()
        return f"{_PREFIXES[kind]}-{digest[:_DIGITS]}"

    @property
    def fingerprint(self) -> str:
        """Names the salt in records so two datasets can be seen to share one, and cannot be
        turned back into it."""
        return hashlib.sha256(b"cfxray-deid-salt\0" + self.salt).hexdigest()[:_DIGITS]

    def record(self) -> dict[str, str]:
        return {"method": "HMAC-SHA256", "salt_fingerprint": self.fingerprint,
                "salt_source": self.source}


def load_pseudonymizer(salt_file: str | Path | None) -> Pseudonymizer:
    """The salt from `CFXRAY_DEID_SALT`, else from `salt_file`; a clear error when neither."""
    value = os.environ.get(SALT_ENV, "").strip()
    source = f"environment variable {SALT_ENV}"
    if not value:
        path = Path(os.path.expanduser(str(salt_file))) if salt_file else None
        if path is None or not path.is_file():
            raise UserError(_missing_salt_message(path))
        _refuse_inside_repository(path)
        value, source = path.read_text().strip(), "file (ingest.deid_salt_file)"
    if len(value) < MIN_SALT_CHARS:
        raise UserError(f"the de-identification salt from the {source} has {len(value)} "
                        f"characters; use at least {MIN_SALT_CHARS} random ones, e.g. "
                        "`python -c 'import secrets; print(secrets.token_hex(32))'`")
    return Pseudonymizer(value.encode(), source)


def _missing_salt_message(path: Path | None) -> str:
    where = path or Path("~/.config/cfxray/deid-salt").expanduser()
    return (f"DICOM input needs a de-identification salt and none is configured: set "
            f"{SALT_ENV} or create {where} (ingest.deid_salt_file, --deid-salt-file) with "
            f"`mkdir -p {where.parent} && python -c 'import secrets; "
            f"print(secrets.token_hex(32))' > {where} && chmod 600 {where}`; keep it out of "
            "the repository and reuse it for every ingest of the same hospital's data "
            "(docs/DATA.md)")


def _refuse_inside_repository(path: Path) -> None:
    for parent in path.resolve().parents:
        if (parent / ".git").exists() or (parent / ".dvc").is_dir():
            raise UserError(f"the de-identification salt {path} is inside the repository "
                            f"{parent}; keep it outside (e.g. ~/.config/cfxray/deid-salt) so it "
                            "is never committed or pushed")
