"""The simulated guest and its script interpreter, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from emulator.guest import (
    GuestState,
    ScriptContext,
    ScriptError,
    marketplace_guest,
    normalize_key,
    parse_script,
)

NOW = datetime(2026, 2, 3, 4, 5, tzinfo=UTC)
SYSPREP = r"C:\Windows\System32\Sysprep\sysprep.exe /oobe /generalize /quit /quiet"


def run(guest: GuestState, script: str) -> ScriptContext:
    ctx = ScriptContext(now=lambda: NOW)
    for step in parse_script(script):
        step.run(guest, ctx)
        if ctx.exit_code is not None or ctx.power_request is not None:
            break
    return ctx


def win11_25h2() -> GuestState:
    return marketplace_guest(
        "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd", "26200.7462.251205"
    )


def test_bitlocker_comes_on_at_first_boot_of_25h2_and_trusted_launch() -> None:
    g = win11_25h2()
    g.first_boot(trusted_launch=False)
    assert g.bitlocker_on
    g24 = marketplace_guest("MicrosoftWindowsDesktop", "windows-11", "win11-24h2-avd", "1.2.3")
    g24.first_boot(trusted_launch=False)
    assert not g24.bitlocker_on
    g24b = marketplace_guest("MicrosoftWindowsDesktop", "windows-11", "win11-24h2-avd", "1.2.3")
    g24b.first_boot(trusted_launch=True)
    assert g24b.bitlocker_on


def test_prevent_device_encryption_keeps_bitlocker_off_on_new_hosts() -> None:
    g = win11_25h2()
    g.first_boot(trusted_launch=True)
    ctx = run(
        g,
        "Disable-BitLocker -MountPoint 'C:'\n"
        "New-Item -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\BitLocker' -Force\n"
        "New-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\BitLocker' "
        "-Name PreventDeviceEncryption -Value 1 -PropertyType DWord -Force\n" + SYSPREP,
    )
    assert ctx.stderr == []
    assert g.sysprepped
    image = g.copy()
    image.first_boot(trusted_launch=True)  # a session host created from the image
    assert not image.bitlocker_on
    assert not image.sysprepped
    # the single-value spelling is accepted too
    g2 = win11_25h2()
    run(
        g2,
        'reg add "HKLM\\SYSTEM\\CurrentControlSet\\Control" /v '
        "BitLockerPreventDeviceEncryption /t REG_DWORD /d 1 /f",
    )
    g2.first_boot(trusted_launch=True)
    assert not g2.bitlocker_on


def test_sysprep_fails_with_bitlocker_on_and_with_pending_reboot() -> None:
    g = win11_25h2()
    g.first_boot(trusted_launch=True)
    ctx = run(g, SYSPREP)
    assert ctx.exit_code == 1
    assert "Sysprep was not able to validate your Windows installation" in ctx.stderr[0]
    assert "BitLocker is on for the OS volume" in ctx.stderr[0]
    assert not g.sysprepped
    g.bitlocker = "FullyDecrypted"
    ctx = run(g, "Install-WindowsUpdate -AcceptAll -IgnoreReboot\n" + SYSPREP)
    assert g.windows_update_level == "2026-02"
    assert "reboot is required" in ctx.stderr[0]
    g.boot()
    assert run(g, SYSPREP).stderr == []


def test_sysprep_shutdown_requests_a_stop_and_ends_the_script() -> None:
    g = win11_25h2()
    ctx = run(
        g,
        "C:\\Windows\\System32\\Sysprep\\sysprep.exe /generalize /oobe /shutdown /quiet /mode:vm\n"
        "Write-Output never",
    )
    assert ctx.power_request == "stop"
    assert "never" not in ctx.stdout


def test_installs_use_disk_space_and_fail_when_full() -> None:
    g = win11_25h2()
    g.free_disk_gb = 1.0
    ctx = run(
        g,
        "winget install --id Microsoft.VisualStudioCode -e --silent\n"
        "choco install googlechrome firefox -y --version 1.2",
    )
    assert g.apps == {"Microsoft.VisualStudioCode": "latest"}
    assert "not enough space" in ctx.stderr[0]


def test_exit_throw_and_write_output() -> None:
    g = GuestState()
    ctx = run(g, "# a comment\n\nWrite-Output 'a b'\necho c\nexit 4\nWrite-Output d")
    assert (ctx.stdout, ctx.exit_code) == (["a b", "c"], 4)
    ctx = run(g, 'throw "broken"')
    assert (ctx.stderr, ctx.exit_code) == (["Exception: broken"], 1)


def test_unknown_commands_fail_like_powershell() -> None:
    with pytest.raises(ScriptError) as e:
        parse_script("Write-Output ok\nGet-Weather -City Oslo")
    assert "'Get-Weather' is not recognized as the name of a cmdlet" in str(e.value)
    assert "At line:2" in str(e.value)
    with pytest.raises(ScriptError):
        parse_script("sysprep.exe /quiet")  # no /generalize /oobe


def test_invoke_restmethod_is_loopback_only() -> None:
    g = GuestState()
    ctx = run(
        g,
        "Invoke-RestMethod -Method Post -Uri 'https://example.com/x' "
        "-ContentType 'application/json' -Body '{}'",
    )
    assert "loopback" in ctx.stderr[0]
    ctx = run(
        g,
        "Invoke-RestMethod -Method Post -Uri 'http://127.0.0.1:7071/api/x' "
        "-ContentType 'application/json' -Body '{\"done\": true}'",
    )
    assert ctx.http_posts == [
        ("http://127.0.0.1:7071/api/x", "application/json", '{"done": true}', {})
    ]
    ctx = run(
        g,
        "Invoke-RestMethod -Method Post -Uri 'http://localhost:1/x' -Headers @{ "
        "'aeg-event-type' = 'Notification'; 'x-a' = 'b' } -Body '[]'",
    )
    assert ctx.http_posts[0][3] == {"aeg-event-type": "Notification", "x-a": "b"}


def test_registry_keys_normalise() -> None:
    assert normalize_key("HKLM:\\Software\\X") == "HKLM\\Software\\X"
    assert normalize_key("Registry::HKEY_LOCAL_MACHINE\\Software\\X\\") == "HKLM\\Software\\X"


def test_parameters_are_substituted() -> None:
    steps = parse_script("choco install $pkg -y", {"pkg": "git"})
    g = GuestState()
    ctx = ScriptContext(now=lambda: NOW)
    steps[0].run(g, ctx)
    assert g.apps == {"git": "latest"}
