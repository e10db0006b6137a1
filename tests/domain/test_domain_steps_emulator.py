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


def _run(state: object, lines: tuple[str, ...], imds: object = None) -> object:
    """Run a script the way the emulator does (try/catch included), without HTTP."""
    context = guest.ScriptContext(now=lambda: datetime(2026, 1, 5, tzinfo=UTC), imds=imds)
    for step in guest.parse_script("\n".join(lines)):
        if not guest.should_run(step, context):
            continue
        step.run(state, context)
        guest.settle(step, context)
        if context.exit_code is not None:
            break
    return context


BLOCK = ("try {", "Write-Output 'in try'", "} catch {", "Write-Output 'in catch'", "}")


@pytest.mark.parametrize("line", [e for c in COMMANDS for e in c.examples], ids=lambda x: x[:60])
def test_every_documented_example_parses_in_the_emulator(line: str) -> None:
    if line in BLOCK:  # a block line parses only inside its whole block
        assert guest.parse_script("\n".join(BLOCK))
        return
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


IDENTITY = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-image-factory"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-build-vm"
)
TOPIC = "https://127.0.0.1:8443/_emulator/eventgrid/topics/factory/api/events"


def _win11() -> object:
    return guest.marketplace_guest(
        "MicrosoftWindowsDesktop", "windows-11", "win11-24h2-avd", "1.2.3"
    )


def test_the_identity_script_posts_with_the_token_imds_gave() -> None:
    asked: list[tuple[str, dict[str, str]]] = []

    def imds(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        asked.append((url, headers))
        return 200, {"access_token": "tok-123", "token_type": "Bearer"}

    state = _win11()
    context = _run(state, sysprep_script(TOPIC, [{"id": "1"}], identity_id=IDENTITY), imds)
    assert len(asked) == 1
    assert asked[0][1] == {"Metadata": "true"}
    posts = context.http_posts  # type: ignore[attr-defined]
    assert [(p[0], p[3]) for p in posts] == [(TOPIC, {"Authorization": "Bearer tok-123"})]
    assert context.power_request == "stop"  # type: ignore[attr-defined]
    assert context.exit_code is None  # type: ignore[attr-defined]


def test_without_a_token_the_script_skips_the_post_and_still_shuts_down() -> None:
    def imds(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        return 400, {"error": "invalid_request", "error_description": "Identity not found"}

    state = _win11()
    context = _run(state, sysprep_script(TOPIC, [{"id": "1"}], identity_id=IDENTITY), imds)
    assert context.http_posts == []  # type: ignore[attr-defined]
    assert state.sysprepped  # type: ignore[attr-defined]
    assert context.power_request == "stop"  # type: ignore[attr-defined]
    assert context.exit_code is None  # type: ignore[attr-defined]
    assert context.stderr == []  # type: ignore[attr-defined]
    assert any("signal was not sent" in line for line in context.stdout)  # type: ignore[attr-defined]
