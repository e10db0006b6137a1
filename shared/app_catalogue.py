"""The app's image catalogue: loaded from the configured file, re-read when it changes.

The catalogue file (``IMAGE_CATALOGUE_PATH``, relative to the app root) is the single source of
truth for every workload image. Parsing and validation live in ``shared.domain.catalogue``; this
module only finds the file and caches the parsed result by path and modification time.
"""

from __future__ import annotations

import threading
from pathlib import Path

from shared.domain.catalogue import Catalogue, CatalogueImage, load_catalogue
from shared.errors import InputError
from shared.settings import Settings, load_settings

APP_ROOT = Path(__file__).resolve().parent.parent

_lock = threading.Lock()
_cache: dict[Path, tuple[float, Catalogue]] = {}


def catalogue_file(settings: Settings | None = None) -> Path:
    settings = settings or load_settings()
    path = Path(settings.catalogue_path)
    return path if path.is_absolute() else APP_ROOT / path


def app_catalogue(settings: Settings | None = None) -> Catalogue:
    """The parsed catalogue (InputError naming each bad field if the file is invalid)."""
    path = catalogue_file(settings)
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise InputError.single(
            "IMAGE_CATALOGUE_PATH", f"{path}: {exc.strerror or exc}", "catalogue unavailable"
        ) from None
    with _lock:
        hit = _cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
    parsed = load_catalogue(path)
    with _lock:
        _cache[path] = (mtime, parsed)
    return parsed


def find_image(name: str, settings: Settings | None = None) -> CatalogueImage:
    """The catalogue entry called ``name``; NotFoundError naming it otherwise."""
    return app_catalogue(settings).get(name)
