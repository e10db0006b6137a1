"""HTTP: the API's own OpenAPI 3.1 document, generated from the route registry (Reader).

``GET /api/openapi.json`` answers :func:`triggers._api.openapi_document`; the same document is
kept in the repository as ``docs/openapi.json`` (``python -m triggers.openapi`` rewrites it; a
test fails when the two differ or when a route is missing from either).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import azure.durable_functions as df

from triggers._api import Call, Role, openapi_document, route

bp = df.Blueprint()
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


@route(
    bp,
    "GET",
    "openapi.json",
    role=Role.READER,
    tag="meta",
    summary="This API's OpenAPI 3.1 document",
)
async def get_openapi(call: Call) -> dict[str, Any]:
    """The OpenAPI document of every registered route."""
    return openapi_document()


def rendered() -> str:
    """The document as kept in docs/openapi.json (stable order, trailing newline)."""
    import function_app  # noqa: F401 - registers every route

    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    """Write docs/openapi.json (``--check``: only say whether it is current)."""
    text = rendered()
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    if "--check" in argv:
        if current != text:
            print(f"{DOC_PATH} is out of date: run python -m triggers.openapi", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
