"""requirements.txt is the lock of requirements.in: exact pins, every one with its hashes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _entries() -> list[str]:
    text = (ROOT / "requirements.txt").read_text()
    return [e for e in re.split(r"\n(?=[A-Za-z0-9])", text) if e and not e.startswith("#")]


def test_the_lock_was_made_from_the_current_requirements_in() -> None:
    header = (ROOT / "requirements.txt").read_text().splitlines()[0]
    digest = hashlib.sha256((ROOT / "requirements.in").read_bytes()).hexdigest()
    assert digest in header, "requirements.in changed: run `python3 dev.py lock`"


def test_every_requirement_is_pinned_and_hashed() -> None:
    entries = _entries()
    assert len(entries) > 20, "the lock names the whole runtime closure"
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9._-]+==[^\s\\]+", entry), entry.splitlines()[0]
        assert "--hash=sha256:" in entry, f"{entry.splitlines()[0]} has no hash"


def test_every_direct_requirement_is_in_the_lock() -> None:
    pinned = {e.split("==")[0].lower().replace("_", "-") for e in _entries()}
    for line in (ROOT / "requirements.in").read_text().splitlines():
        name = re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0]
        if name and not line.startswith("#"):
            assert name.lower().replace("_", "-") in pinned, name


def test_development_requirements_do_not_include_the_runtime_unhashed() -> None:
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" not in dev, "the runtime is installed hash-checked on its own"
