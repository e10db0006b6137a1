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


AGENT_KEY = "HKLM\\SOFTWARE\\Microsoft\\RDInfraAgent"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJIb3N0UG9vbCI6ImhwMSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "line",
    [
        f"Register-AVDSessionHost -Token {TOKEN}",
        f"Register-AVDSessionHost -Token '{TOKEN}'",
        rf"msiexec /i C:\temp\Microsoft.RDInfra.RDAgent.Installer-x64-1.0.10673.1000.msi /quiet "
        f"REGISTRATIONTOKEN={TOKEN}",
        rf'msiexec.exe /i "C:\Program Files\RDAgent.msi" /qn REGISTRATIONTOKEN="{TOKEN}"',
    ],
    ids=["register", "register-quoted", "msiexec", "msiexec-exe-quoted"],
)
def test_agent_commands_write_the_registration_token_and_never_show_it(line: str) -> None:
    g = win11_25h2()
    steps = parse_script(line)
    ctx = run(g, line)
    assert ctx.stderr == []
    entry = g.get_registry(AGENT_KEY, "RegistrationToken")
    assert entry is not None
    assert entry["data"] == TOKEN
    # The step's text (kept in the guest's history) and the output never carry the token.
    assert TOKEN not in steps[0].text
    assert "***" in steps[0].text
    assert all(TOKEN not in out for out in ctx.stdout)


def test_msiexec_installs_the_agent_or_its_boot_loader() -> None:
    g = win11_25h2()
    free = g.free_disk_gb
    ctx = run(
        g,
        r"msiexec /i C:\temp\Microsoft.RDInfra.RDAgent.Installer-x64-1.0.10673.1000.msi /quiet"
        "\n"
        r"msiexec /i C:\temp\Microsoft.RDInfra.RDAgentBootLoader.Installer-x64.msi /quiet",
    )
    assert ctx.stderr == []
    assert g.apps["Microsoft.RDInfra.RDAgent"] == "1.0.10673.1000"
    assert g.apps["Microsoft.RDInfra.RDAgentBootLoader"] == "latest"
    assert g.free_disk_gb < free
    assert g.get_registry(AGENT_KEY, "RegistrationToken") is None  # no token: not registered
    # Without /quiet the installer would wait for its UI: the step fails, the token unseen.
    loud = run(g, rf"msiexec /i C:\temp\RDAgent.msi REGISTRATIONTOKEN={TOKEN}")
    assert "quiet" in loud.stderr[0]
    assert g.get_registry(AGENT_KEY, "RegistrationToken") is None
    # Other packages are not modelled.
    with pytest.raises(ScriptError):
        parse_script(r"msiexec /i C:\temp\other.msi /quiet")


def test_bad_agent_lines_fail_without_echoing_the_token() -> None:
    g = win11_25h2()
    ctx = run(g, f"Register-AVDSessionHost -Tokn {TOKEN}")
    assert ctx.exit_code == 1
    assert "Token" in ctx.stderr[0]
    assert TOKEN not in ctx.stderr[0]
    assert parse_script(f"Register-AVDSessionHost -Tokn {TOKEN}")[0].text == (
        "Register-AVDSessionHost"
    )
    with pytest.raises(ScriptError) as err:
        parse_script(f"Reg1ster-AVDSessionHost -Token {TOKEN}")
    assert TOKEN not in str(err.value)
    # A token written with reg add or Set-ItemProperty is masked the same way.
    for line in (
        f"reg add {AGENT_KEY} /v RegistrationToken /t REG_SZ /d {TOKEN} /f",
        f"Set-ItemProperty -Path 'HKLM:\\SOFTWARE\\Microsoft\\RDInfraAgent' "
        f"-Name RegistrationToken -Value '{TOKEN}'",
    ):
        assert TOKEN not in parse_script(line)[0].text
