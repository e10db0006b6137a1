"""Validation and rings, the pure part: catalogue sections, smoke checks, health, the gate."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.domain.catalogue import parse_catalogue
from shared.domain.validation import (
    TAG_RING,
    TAG_RING_STATE,
    TAG_RING_VERSION,
    AppPresentCheck,
    BitLockerCheck,
    RegistryValueCheck,
    ScriptCheck,
    check_script,
    evaluate_check,
    evaluate_gate,
    host_health,
    ring_blocker,
    validation_vm_name,
)
from shared.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((ROOT / "catalogue" / "images.yaml").read_text())


def office(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    image = raw["images"][0]
    assert image["name"] == "win11-office"
    for key, value in changes.items():
        image[key] = value
    return raw


def errors_of(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InputError) as caught:
        parse_catalogue(raw)
    return {e.path: e.reason for e in caught.value.errors}


def test_bundled_catalogue_has_validation_and_rings_on_served_pools() -> None:
    image = parse_catalogue(copy.deepcopy(RAW)).get("win11-office")
    assert image.validation is not None
    assert image.validation.host_pool.name == "hp-office-test"
    assert [r.name for r in image.rings] == ["test", "broad"]


def test_unknown_validation_host_pool_is_refused_naming_the_field() -> None:
    raw = office()
    raw["images"][0]["validation"]["host_pool"] = {"resource_group": "rg-avd", "name": "hp-nope"}
    errors = errors_of(raw)
    assert "images[0].validation.host_pool" in errors
    assert "'rg-avd/hp-nope' is unknown" in errors["images[0].validation.host_pool"]


def test_unknown_ring_host_pool_is_refused_naming_the_field() -> None:
    raw = office()
    raw["images"][0]["rings"][1]["host_pools"].append({"resource_group": "rg-x", "name": "hp-x"})
    errors = errors_of(raw)
    assert list(errors) == ["images[0].rings[1].host_pools[1]"]


def test_a_pool_in_another_resource_group_is_not_the_served_one() -> None:
    raw = office()
    raw["images"][0]["rings"][0]["host_pools"] = [
        {"resource_group": "rg-other", "name": "hp-office-test"}
    ]
    assert "images[0].rings[0].host_pools[0]" in errors_of(raw)


def test_zero_validation_hosts_and_bad_checks_are_refused_naming_each_field() -> None:
    raw = office()
    val = raw["images"][0]["validation"]
    val["hosts"] = 0
    val["checks"] = [
        {"kind": "bitlocker", "expected": "maybe"},
        {"kind": "telepathy"},
        {"kind": "script", "lines": ["format C:"], "expected_output": "ok"},
        {"kind": "registry_value", "path": "C:\\temp", "name": "x", "expected": "1"},
    ]
    errors = errors_of(raw)
    assert "greater than or equal to 1" in errors["images[0].validation.hosts"]
    assert "images[0].validation.checks[0].expected" in errors
    assert "unknown check kind 'telepathy'" in errors["images[0].validation.checks[1].kind"]
    assert "unknown command" in errors["images[0].validation.checks[2].lines[0]"]
    assert "images[0].validation.checks[3].path" in errors


def test_duplicate_rings_and_a_pool_in_two_rings_are_refused() -> None:
    raw = office()
    rings = raw["images"][0]["rings"]
    rings.append(copy.deepcopy(rings[0]))
    errors = errors_of(raw)
    assert "duplicate ring 'test'" in errors["images[0].rings[2].name"]
    assert "already in rings[0].host_pools[0]" in errors["images[0].rings[2].host_pools[0]"]


def run(output: str, state: str = "Succeeded", error: str = "") -> dict[str, Any]:
    return {"state": state, "output": output, "error": error, "exit_code": 0}


def test_app_present_reads_installed_apps_and_compares_versions() -> None:
    check = AppPresentCheck(kind="app_present", name="7zip.7zip", min_version="24.08")
    assert check_script(check) == ("Get-InstalledApps",)
    assert evaluate_check(check, run("App.7zip.7zip=24.09\nApp.git=2.45.1")).passed
    older = evaluate_check(check, run("App.7zip.7zip=23.01"))
    assert not older.passed
    assert "23.01 is installed, at least 24.08 expected" in older.detail
    missing = evaluate_check(check, run("App.git=2.45.1"))
    assert "not installed (installed: git)" in missing.detail


def test_bitlocker_registry_and_script_checks() -> None:
    bitlocker = BitLockerCheck(kind="bitlocker", expected="off")
    assert evaluate_check(bitlocker, run("BitLockerProtectionStatus=Off")).passed
    on = evaluate_check(bitlocker, run("BitLockerProtectionStatus=On"))
    assert not on.passed
    assert "BitLocker is on, off expected" in on.detail

    reg = RegistryValueCheck(
        kind="registry_value", path=r"HKLM\SOFTWARE\FSLogix\Profiles", name="Enabled", expected="1"
    )
    assert check_script(reg) == (
        r"Get-ItemProperty -Path 'HKLM:\SOFTWARE\FSLogix\Profiles' -Name 'Enabled'",
    )
    assert evaluate_check(reg, run("Enabled : 1")).passed
    assert "is '0', '1' expected" in evaluate_check(reg, run("Enabled : 0")).detail

    script = ScriptCheck(kind="script", lines=["Test-PendingReboot"], expected_output="False")
    assert evaluate_check(script, run("PendingReboot=False")).passed
    failed = evaluate_check(script, run("", state="Failed", error="Exception: boom"))
    assert not failed.passed
    assert "Exception: boom" in failed.detail


def test_host_health_needs_available_and_every_health_check() -> None:
    ok = {"healthCheckName": "DomainJoinedCheck", "healthCheckResult": "HealthCheckSucceeded"}
    bad = {
        "healthCheckName": "FSLogixHealthCheck",
        "healthCheckResult": "HealthCheckFailed",
        "additionalFailureDetails": {"message": "profile container not healthy"},
    }
    assert host_health("h1", "Available", [ok]).healthy
    sick = host_health("h1", "Available", [ok, bad])
    assert sick.problems == ("FSLogixHealthCheck HealthCheckFailed: profile container not healthy",)
    assert host_health("h1", "Unavailable", []).problems == ("status Unavailable",)


def test_gate_counts_unhealthy_hosts_and_failed_connection_share() -> None:
    passed = evaluate_gate(
        max_unhealthy_hosts=0,
        max_failed_connection_share=0.05,
        unhealthy=[],
        connections=100,
        failed_connections=5,
    )
    assert passed.passed
    failed = evaluate_gate(
        max_unhealthy_hosts=1,
        max_failed_connection_share=0.05,
        unhealthy=["a: status Unavailable", "b: status Unavailable"],
        connections=100,
        failed_connections=6,
    )
    assert not failed.passed
    assert len(failed.reasons) == 2
    assert "6 of 100 connections failed (6.0%)" in failed.reasons[1]
    quiet = evaluate_gate(
        max_unhealthy_hosts=0,
        max_failed_connection_share=0.0,
        unhealthy=[],
        connections=0,
        failed_connections=0,
    )
    assert quiet.passed


def test_ring_blocker_waits_for_an_earlier_soak_and_never_goes_backwards() -> None:
    soaking = {TAG_RING: "pilot", TAG_RING_VERSION: "1.0.0", TAG_RING_STATE: "soaking"}
    wait = ring_blocker(soaking, "1.0.1")
    assert wait is not None
    assert not wait.final
    assert ring_blocker(soaking, "1.0.1", force=True) is None
    assert ring_blocker({**soaking, TAG_RING_STATE: "passed"}, "1.0.1") is None
    assert ring_blocker({**soaking, TAG_RING_STATE: "held"}, "1.0.1") is None
    back = ring_blocker({**soaking, TAG_RING_VERSION: "1.2.0"}, "1.0.1", force=True)
    assert back is not None
    assert back.final
    assert ring_blocker(soaking, "1.0.0") is None
    assert ring_blocker({}, "1.0.0") is None


def test_validation_vm_names_fit_a_windows_computer_name() -> None:
    assert validation_vm_name("6f280a", 9) == "vm-val-6f280a-9"
    assert len(validation_vm_name("6f280a", 9)) <= 15
    with pytest.raises(ValueError, match="outside"):
        validation_vm_name("6f280a", 10)
