"""The app's custom role grants exactly the Azure operations the gateway code calls."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from shared.azure import permissions

ROOT = Path(__file__).resolve().parents[2]
GATEWAYS = ROOT / "shared" / "azure"


def _calls_in(source: str) -> tuple[set[tuple[str, str]], set[str]]:
    """(SDK group, method) calls, and the functions that send raw requests, in a module."""
    sdk: set[tuple[str, str]] = set()
    raw: set[str] = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                func = getattr(inner, "func", None)
                if isinstance(inner, ast.Call) and getattr(func, "attr", "") == "send_request":
                    raw.add(node.name)
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Attribute)
            and func.value.attr in permissions.SDK_GROUPS
        ):
            sdk.add((func.value.attr, func.attr))
    return sdk, raw


def _gateway_calls() -> tuple[set[tuple[str, str]], set[str]]:
    sdk: set[tuple[str, str]] = set()
    raw: set[str] = set()
    for path in sorted(GATEWAYS.glob("*.py")):
        if path.name == "permissions.py":
            continue
        found_sdk, found_raw = _calls_in(path.read_text())
        sdk |= found_sdk
        raw |= found_raw
    return sdk, raw


def test_every_sdk_call_of_the_gateways_is_in_the_role() -> None:
    sdk, _ = _gateway_calls()
    missing = sorted(sdk - set(permissions.SDK_OPERATIONS))
    assert not missing, (
        f"code calls operations the role lacks (add them to permissions.py): {missing}"
    )


def test_the_role_lists_no_call_that_nothing_makes() -> None:
    sdk, raw = _gateway_calls()
    unused = sorted(set(permissions.SDK_OPERATIONS) - sdk)
    assert not unused, f"permissions.py grants calls no gateway makes: {unused}"
    unused_raw = sorted(set(permissions.RAW_REQUESTS) - raw)
    assert not unused_raw, f"permissions.py grants raw requests nothing sends: {unused_raw}"


def test_every_raw_request_is_listed() -> None:
    _, raw = _gateway_calls()
    assert raw, "the scan found no raw ARM request: the scanner is broken"
    unlisted = sorted(raw - set(permissions.RAW_REQUESTS))
    assert not unlisted, f"functions send raw ARM requests the role does not cover: {unlisted}"


def test_the_scan_sees_a_raw_request() -> None:
    _, raw = _calls_in("def peek(client):\n    return client.send_request(request)\n")
    assert raw == {"peek"}


def test_the_scan_sees_a_call_it_does_not_know() -> None:
    sdk, _ = _calls_in("client.virtual_machines.begin_power_off('rg', 'vm')\n")
    assert sdk - set(permissions.SDK_OPERATIONS) == {("virtual_machines", "begin_power_off")}


def test_role_file_is_generated_from_the_table() -> None:
    role = json.loads((ROOT / "infra" / "roles" / "app-role.json").read_text())
    assert role["actions"] == permissions.role_actions()
    assert role["marketplaceRead"] == [permissions.MARKETPLACE_READ]
    assert permissions.main(["--check"]) == 0


@pytest.mark.parametrize("action", permissions.role_actions())
def test_no_wildcards_and_no_subscription_wide_read_in_the_app_role(action: str) -> None:
    assert "*" not in action
    assert action != permissions.MARKETPLACE_READ
