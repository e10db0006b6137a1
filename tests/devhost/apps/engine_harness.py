"""Builds the engine test apps once per process (``get_functions`` may run once per app)."""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path
from types import ModuleType

import azure.durable_functions as df

from devhost.functions import FunctionIndex, index_app

APPS = Path(__file__).parent


def load(module: str) -> ModuleType:
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    return importlib.import_module(module)


@functools.cache
def app_for(*modules: str) -> df.DFApp:
    """One DFApp registering each module's ``bp`` (cached: one app per combination)."""
    app = df.DFApp()
    for name in modules:
        app.register_functions(load(name).bp)
    return app


def index_for(*modules: str) -> FunctionIndex:
    return index_app(app_for(*modules))
