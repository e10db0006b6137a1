#!/usr/bin/env python3
"""The project's two entry points: ``python3 dev.py demo`` and ``python3 dev.py test``.

Each creates (or reuses) the virtual environment ``.venv`` and installs what it needs from the
package registries, so both work on a fresh machine with nothing but Python 3.11+.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".requirements.sha256"


def _requirements_digest() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "requirements-dev.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - say it plainly on an old Python
        sys.exit(f"Python 3.11+ is required, this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    wanted = _requirements_digest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    print("installing dependencies (requirements-dev.txt)", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, cwd=ROOT)
    subprocess.run([*pip, "-r", "requirements-dev.txt"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


TOOLS = ROOT / ".venv-tools"  # checkov lives apart: its pins would fight the app's
TOOLS_SPEC = "checkov==3.3.*"


def ensure_tools() -> None:
    """The offline infra checker (checkov), in its own environment, installed once."""
    stamp = TOOLS / ".spec"
    if stamp.exists() and stamp.read_text().strip() == TOOLS_SPEC:
        return
    print(f"installing {TOOLS_SPEC} into {TOOLS}", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
    pip = [str(TOOLS / BIN.name / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "-q", TOOLS_SPEC], check=True, cwd=ROOT)
    stamp.write_text(TOOLS_SPEC)


def run(*args: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    print("$", " ".join(args), flush=True)
    return subprocess.run(list(args), cwd=ROOT, env=env, check=False).returncode


def tool(name: str) -> str:
    return str(BIN / name)


def test(extra: list[str]) -> int:
    ensure_tools()
    gates = [
        (tool("ruff"), "check", "."),
        (tool("ruff"), "format", "--check", "."),
        (tool("mypy"),),
        (tool("lint-imports"),),
    ]
    for gate in gates:
        code = run(*gate)
        if code:
            print(f"quality gate failed: {' '.join(gate)}", flush=True)
            return code
    workers = os.environ.get("TEST_WORKERS", "2")
    return run(str(PY), "-m", "pytest", "-n", workers, "--dist", "loadfile", *extra)


def demo(extra: list[str]) -> int:
    return run(str(PY), "-m", "devhost.demo", *extra)


def main(argv: list[str]) -> int:
    commands = {
        "test": test,
        "demo": demo,
        # The version lifecycle: build, approve (four eyes), activate, roll back, timeline.
        "lifecycle": lambda extra: run(str(PY), "-m", "devhost.demo_lifecycle", *extra),
    }
    if not argv or argv[0] not in commands:
        print(__doc__)
        print(f"usage: python3 dev.py {{{'|'.join(commands)}}} [args...]")
        return 2
    ensure_venv()
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
