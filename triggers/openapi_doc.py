"""Write (or check) docs/openapi.json: ``python -m triggers.openapi_doc [--check]``.

The document is generated from the route registry (``triggers/_api.py``) with every blueprint
of ``function_app`` imported, in a stable order, so a diff shows exactly what changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def rendered() -> str:
    """The document as kept in docs/openapi.json (stable order, trailing newline)."""
    import function_app  # noqa: F401 - registers every route
    from triggers._api import openapi_document

    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    """Write docs/openapi.json (``--check``: exit 1 when it is not current)."""
    text = rendered()
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    if "--check" in argv:
        if current != text:
            print(f"{DOC_PATH} is out of date: run python -m triggers.openapi_doc", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
