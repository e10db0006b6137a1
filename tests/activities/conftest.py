"""Activity tests: the registered activity functions, called with dicts, against the emulator.

Each test points the app's settings (environment variables, read at call time) at an
in-process emulator and calls the user function the Functions host would call, looked up by the
activity name in shared/names.py. ``plan_for`` builds a plan dict like resolve_build_plan's for
tests that start later in a build.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import azure.durable_functions as df
import pytest

from activities import build
from shared.azure.clients import avd_client, compute_client
from shared.domain.naming import build_resource_names
from tests.emulator import conftest as emulator_fixtures
from tests.emulator.conftest import EmulatorEnv
from tests.gateways.conftest import FACTORY_RG
from tests.gateways.conftest import point_app_at as point_app_at

emulator_factory = emulator_fixtures.emulator_factory
emulator_env = emulator_fixtures.emulator_env

GALLERY_RG = "rg-gallery"
WIN11 = ("MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd")
WIN11_LATEST = "26200.7462.251205"

Activity = Callable[[Any], dict[str, Any]]


@functools.cache
def registered() -> dict[str, Activity]:
    """Activity name -> the user function the host invokes (indexed like the host does)."""
    app = df.DFApp()
    app.register_functions(build.bp)
    return {
        fn.get_function_name(): fn.get_user_function()
        for fn in app.get_functions()
        if fn.get_trigger().get_binding_name() == "activityTrigger"
    }


def activity(name: str) -> Activity:
    return registered()[name]


@pytest.fixture
def app_env(emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorEnv]:
    point_app_at(emulator_env, monkeypatch)
    yield emulator_env
    compute_client.cache_clear()
    avd_client.cache_clear()


def add_fault(env: EmulatorEnv, **rule: Any) -> None:
    """Arm one emulator fault rule (emulator/faults.py: type, op, status, code, count ...)."""
    status, answer = env.admin("POST", "faults", rule)
    assert status in (200, 201), answer


def plan_for(subscription: str, build_id: str = "b-0001", **overrides: Any) -> dict[str, Any]:
    """A plan dict shaped like resolve_build_plan's answer (marketplace Windows 11 base)."""
    image = str(overrides.pop("image", "win11-office"))
    plan: dict[str, Any] = {
        "image": image,
        "build_id": build_id,
        "os": "Win11",
        "workload": "Office",
        "owner": "team-euc",
        "catalogue_hash": "c0ffee",
        "subscription_id": subscription,
        "resource_group": FACTORY_RG,
        "location": "westeurope",
        "vm_size": "Standard_D4s_v5",
        "subnet_id": (
            f"/subscriptions/{subscription}/resourceGroups/rg-net/providers/"
            "Microsoft.Network/virtualNetworks/vnet-build/subnets/build"
        ),
        "capture_mode": "temporary-vm",
        "source_vm_id": None,
        "source": {
            "kind": "marketplace",
            "publisher": WIN11[0],
            "offer": WIN11[1],
            "sku": WIN11[2],
            "version": WIN11_LATEST,
        },
        "gallery": {
            "resource_group": GALLERY_RG,
            "name": "galFactory",
            "image_definition": "win11-office",
            "security_type": "TrustedLaunchSupported",
            "hyper_v_generation": "V2",
            "os_type": "Windows",
            "publisher": "Contoso",
            "offer": "avd",
            "sku": "win11-office",
            "location": "westeurope",
        },
        "steps": [],
        "guardrail_script": ["Write-Output guard"],
        "health_script": ["Write-Output health"],
        "sysprep_script": ["Write-Output sysprep"],
        "target_regions": [
            {"name": "westeurope", "replica_count": 1, "storage_account_type": "Standard_LRS"},
            {"name": "northeurope", "replica_count": 1, "storage_account_type": "Standard_LRS"},
        ],
        "timeout_minutes": 240,
        "min_free_disk_gb": 20,
        "names": build_resource_names(image, build_id).to_dict(),
        "tags": {"imagefactory:owner": "team-euc"},
        "naming": {"os": "Win11", "workload": "Office"},
        "base_version": WIN11_LATEST,
    }
    plan.update(overrides)
    return plan


def wait_for(
    check: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Poll ``check`` (real time, the emulator's virtual clock runs ahead) until ``done``."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = check()
        if done(last):
            return last
        time.sleep(0.02)
    raise AssertionError(f"condition not reached within {timeout}s; last state: {last}")


def ensure(plan: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
    """ensure_gallery_image the way the orchestrator calls it: again after each temporary."""
    from shared import names
    from shared.errors import TemporaryError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return activity(names.ACT_ENSURE_GALLERY_IMAGE)({"plan": plan})
        except TemporaryError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
