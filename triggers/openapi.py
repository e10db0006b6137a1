"""HTTP: the API's own OpenAPI 3.1 document, generated from the route registry (Reader).

``GET /api/openapi.json`` answers :func:`triggers._api.openapi_document`; the same document is
kept in the repository as ``docs/openapi.json`` (``python -m triggers.openapi_doc`` rewrites it;
a test fails when the two differ or when a route is missing from either).
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from triggers._api import Call, Role, openapi_document, route

bp = df.Blueprint()


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
