"""Contract: every line the factory may send is understood by the emulator's guest interpreter.

The domain and the emulator keep separate code (the domain may not import the emulator), so
this test holds them together: each documented example, each rendered step of the bundled
catalogue and the guardrail scripts must parse there, and a Windows 11 25H2 guest must come
out of the guardrails ready for capture as judged by ``check_capture_readiness``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.domain.catalogue import load_catalogue
from shared.domain.steps import (
    COMMANDS,
    check_capture_readiness,
    parse_guest_health,
    pre_capture_script,
    sysprep_script,
)

guest = pytest.importorskip(
    "emulator.guest", reason="the emulator's guest interpreter (emulator/guest.py) is not present"
)

CATALOGUE = Path(__file__).resolve().parents[2] / "catalogue" / "images.yaml"


def _run(state: object, lines: tuple[str, ...]) -> object:
    context = guest.ScriptContext(now=lambda: datetime(2026, 1, 5, tzinfo=UTC))
    for step in guest.parse_script("\n".join(lines)):
        step.run(state, context)
        if context.exit_code is not None:
            break
    return context


@pytest.mark.parametrize("line", [e for c in COMMANDS for e in c.examples], ids=lambda x: x[:60])
def test_every_documented_example_parses_in_the_emulator(line: str) -> None:
    assert guest.parse_script(line)


def test_every_rendered_catalogue_step_parses_in_the_emulator() -> None:
    for image in load_catalogue(CATALOGUE).images:
        for step in image.rendered_steps():
            assert guest.parse_script("\n".join(step.lines)), step.name  # raises if unknown


def test_guardrails_make_a_25h2_guest_ready_for_capture() -> None:
    state = guest.marketplace_guest(
        "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd", "26200.7171.251105"
    )
    state.first_boot(trusted_launch=False)
    assert state.bitlocker_on  # 25H2 marketplace images come with BitLocker on (seed 001)
    context = _run(state, pre_capture_script())
    assert not state.bitlocker_on
    assert state.prevents_device_encryption()
    health = parse_guest_health("\n".join(context.stdout))  # type: ignore[attr-defined]
    assert health.bitlocker_on is False
    assert health.pending_reboot is False
    assert health.free_disk_gb is not None
    assert health.free_disk_gb > 0
    assert check_capture_readiness(health, 10) == []


def test_health_check_sees_bitlocker_on_before_the_guardrails() -> None:
    state = guest.marketplace_guest(
        "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd", "26200.7171.251105"
    )
    state.first_boot(trusted_launch=False)
    context = _run(state, pre_capture_script()[2:])
    health = parse_guest_health("\n".join(context.stdout))  # type: ignore[attr-defined]
    assert health.bitlocker_on is True
    assert check_capture_readiness(health, 10)


def test_sysprep_script_generalizes_and_signals_in_the_emulator() -> None:
    state = guest.marketplace_guest(
        "MicrosoftWindowsDesktop", "windows-11", "win11-24h2-avd", "1.2.3"
    )
    lines = sysprep_script("https://127.0.0.1:7071/api/sysprep", {"build_id": "b-1"})
    context = _run(state, lines)
    assert state.sysprepped
    posts = [tuple(post[:3]) for post in context.http_posts]  # type: ignore[attr-defined]
    assert posts == [
        ("https://127.0.0.1:7071/api/sysprep", "application/json", '{"build_id":"b-1"}')
    ]
    assert context.power_request == "stop"  # type: ignore[attr-defined]
