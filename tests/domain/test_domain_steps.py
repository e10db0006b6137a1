"""Guest scripts: the recognised command set, typed steps, guardrail scripts, health output."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.domain import steps
from shared.domain.steps import (
    COMMANDS,
    GuestHealth,
    InstallAppStep,
    RegistryStep,
    RestartStep,
    ScriptStep,
    WindowsUpdateStep,
    check_capture_readiness,
    check_script,
    content_hash,
    find_command,
    health_check_script,
    line_problem,
    parse_guest_health,
    parse_installed_apps,
    pre_capture_script,
    render_step_lines,
    render_steps,
    sysprep_script,
)
from shared.errors import InputError

STEP = TypeAdapter(steps.CustomisationStep)
SYSPREP = r"C:\Windows\System32\Sysprep\sysprep.exe"


# -- the command set ------------------------------------------------------------------------


def test_the_command_set_covers_the_documented_commands() -> None:
    names = {c.name for c in COMMANDS}
    assert names == {
        "choco install",
        "winget install",
        "Disable-BitLocker",
        "manage-bde -off",
        "reg add",
        "Set-ItemProperty",
        "New-ItemProperty",
        "Install-WindowsUpdate",
        "Restart-Computer",
        "Get-BitLockerVolume",
        "Get-PSDrive",
        "Test-PendingReboot",
        "Get-InstalledApps",
        "Write-Output",
        "exit",
        "throw",
        "sysprep",
        "Stop-Computer",
        "Invoke-RestMethod",
        "try",
        "catch",
        "}",
        "IMDS token",
        "Invoke-RestMethod (bearer)",
    }


@pytest.mark.parametrize(
    ("command", "example"),
    [(c, e) for c in COMMANDS for e in c.examples],
    # Stable ids: a Command's repr holds function addresses, which differ between xdist workers.
    ids=[f"{c.name}:{i}" for c in COMMANDS for i, _ in enumerate(c.examples)],
)
def test_every_example_is_recognised_as_its_own_command(
    command: steps.Command, example: str
) -> None:
    assert find_command(example) is command
    assert line_problem(example, customisation=False) is None


def test_commands_are_case_insensitive_like_powershell() -> None:
    assert line_problem("get-bitlockervolume -mountpoint c:") is None
    assert line_problem("RESTART-COMPUTER -FORCE") is None


def test_factory_commands_are_reserved_in_customisation_steps() -> None:
    reserved = [c for c in COMMANDS if not c.customisation]
    assert {c.name for c in reserved} == {
        "sysprep",
        "Stop-Computer",
        "Invoke-RestMethod",
        "try",
        "catch",
        "}",
        "IMDS token",
        "Invoke-RestMethod (bearer)",
    }
    for command in reserved:
        reason = line_problem(command.examples[0])
        assert reason is not None
        assert "reserved for the factory" in reason
        assert line_problem(command.examples[0], customisation=False) is None


def test_unknown_command_reason_is_exact() -> None:
    assert line_problem("format C:") == "unknown command 'format C:'"
    assert line_problem("  Remove-Item C:\\ -Recurse  ") == (
        "unknown command 'Remove-Item C:\\ -Recurse'"
    )


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("choco install", "choco install"),
        ("choco uninstall git", "choco install"),
        ("winget install git", "winget install"),
        ("Disable-BitLocker -MountPoint D:", "Disable-BitLocker"),
        ("manage-bde -on C:", "manage-bde -off"),
        ('reg add "HKLM\\Software\\X" /v a /t REG_SZ /d b', "reg add"),  # no /f
        ('reg add "HKCR\\X" /v a /t REG_SZ /d b /f', "reg add"),  # only HKLM and HKCU
        ("Set-ItemProperty -Path 'C:\\temp' -Name a -Value b", "Set-ItemProperty"),
        ("Install-WindowsUpdate -AutoReboot", "Install-WindowsUpdate"),
        ("Restart-Computer -Wait", "Restart-Computer"),
        ("Get-PSDrive D", "Get-PSDrive"),
        ("exit now", "exit"),
        ("throw oops", "throw"),
        ("Stop-Computer", "Stop-Computer"),
        ("Invoke-RestMethod -Uri 'https://x'", "Invoke-RestMethod"),
    ],
)
def test_malformed_known_command_names_its_syntax(line: str, name: str) -> None:
    reason = line_problem(line, customisation=False)
    assert reason is not None
    assert reason.startswith(f"not a valid {name} command: expected ")


@pytest.mark.parametrize(
    "line",
    [
        "choco install git -y; format C:",
        "choco install git -y && format C:",
        "choco install git -y | Out-Null",
        "Write-Output $(Remove-Item C:\\ -Recurse)",
        'Write-Output "$(Remove-Item C:\\ -Recurse)"',
        "Write-Output (Remove-Item x)",
        "Write-Output `whoami`",
        "Write-Output 'a\u2019; Remove-Item x; \u2019'",  # PowerShell ends '' at a smart quote
        'Write-Output "a\u201d; Remove-Item x; \u201c"',
        "Write-Output {Remove-Item x}",
        "Write-Output x > C:\\Windows\\win.ini",
        'reg add "HKLM\\Software\\X" /v a /t REG_SZ /d "$env:PATH" /f',
        'reg add "HKLM\\Software\\X" /v a /t REG_SZ /d b /f; format C:',
        "exit 0; Remove-Item x",
        "Restart-Computer -Force; Remove-Item x",
        'throw "$(Remove-Item x)"',
        "Get-InstalledApps | Remove-Item",
    ],
)
def test_a_recognised_command_cannot_smuggle_a_second_one(line: str) -> None:
    assert line_problem(line) is not None
    assert find_command(line) is None


def test_one_command_per_line() -> None:
    assert line_problem("choco install git -y\nformat C:") == (
        "one command per line: the line contains a line break"
    )
    assert line_problem("choco install git -y\r") is not None
    assert line_problem("Write-Output a\x00b") == "contains a control character"
    assert line_problem("Write-Output " + "a" * 3000) == "longer than 2000 characters"


def test_comments_and_blank_lines_run_nothing_and_are_allowed() -> None:
    assert line_problem("") is None
    assert line_problem("   ") is None
    assert line_problem("# Remove-Item anything: a comment") is None


def test_sysprep_rules() -> None:
    ok = f"{SYSPREP} /generalize /oobe /shutdown /quiet"
    assert line_problem(ok, customisation=False) is None
    assert (
        line_problem(f"{SYSPREP} /oobe /generalize /quiet /quit /mode:vm", customisation=False)
        is None
    )
    assert "needs /quiet" in (
        line_problem(f"{SYSPREP} /generalize /oobe /shutdown", customisation=False) or ""
    )
    both = line_problem(f"{SYSPREP} /generalize /oobe /shutdown /quit /quiet", customisation=False)
    assert both == "not a valid sysprep command: sysprep needs exactly one of /shutdown and /quit"
    twice = line_problem(
        f"{SYSPREP} /generalize /generalize /oobe /quit /quiet", customisation=False
    )
    assert twice is not None
    assert "repeated" in twice
    assert line_problem("sysprep.exe /generalize /oobe /shutdown /quiet", customisation=False)


def test_invoke_rest_method_needs_a_json_body() -> None:
    line = (
        "Invoke-RestMethod -Method Post -Uri 'https://127.0.0.1/x' -ContentType 'application/json' "
        "-Body '{not json}'"
    )
    reason = line_problem(line, customisation=False)
    assert reason is not None
    assert reason.startswith("not a valid Invoke-RestMethod command: -Body")


def test_check_script_names_each_bad_line() -> None:
    with pytest.raises(InputError) as info:
        check_script(["Write-Output ok", "format C:", "# fine", "rm -rf /"])
    assert [(e.path, e.reason) for e in info.value.errors] == [
        ("lines[1]", "unknown command 'format C:'"),
        ("lines[3]", "unknown command 'rm -rf /'"),
    ]


# -- typed steps ----------------------------------------------------------------------------


def test_render_install_app_choco_and_winget() -> None:
    choco = InstallAppStep(kind="install_app", package="git", version="2.45.1", manager="choco")
    assert render_step_lines(choco) == ("choco install git -y --no-progress --version 2.45.1",)
    winget = InstallAppStep(kind="install_app", package="7zip.7zip", manager="winget")
    assert render_step_lines(winget) == (
        "winget install --id 7zip.7zip --exact --silent --accept-package-agreements "
        "--accept-source-agreements",
    )


def test_render_windows_update_restart_and_script() -> None:
    assert render_step_lines(WindowsUpdateStep(kind="windows_update")) == (
        "Install-WindowsUpdate -AcceptAll -IgnoreReboot",
    )
    assert render_step_lines(RestartStep(kind="restart")) == ("Restart-Computer -Force",)
    script = ScriptStep(kind="script", name="s", lines=["Write-Output a", "# note"])
    assert render_step_lines(script) == ("Write-Output a", "# note")


def test_render_registry_normalises_the_key_and_quotes_when_needed() -> None:
    step = RegistryStep(
        kind="registry", key="HKLM:\\SOFTWARE\\Contoso App", value_name="Motd", data="hello there"
    )
    assert render_step_lines(step) == (
        'reg add "HKLM\\SOFTWARE\\Contoso App" /v Motd /t REG_SZ /d "hello there" /f',
    )
    long_form = RegistryStep(
        kind="registry",
        key="HKEY_LOCAL_MACHINE\\SOFTWARE\\X",
        value_name="Enabled",
        type="REG_DWORD",
        data="0x1",
    )
    assert render_step_lines(long_form) == (
        'reg add "HKLM\\SOFTWARE\\X" /v Enabled /t REG_DWORD /d 0x1 /f',
    )
    empty = RegistryStep(kind="registry", key="HKCU\\X", value_name="V", data="")
    assert render_step_lines(empty) == ('reg add "HKCU\\X" /v V /t REG_SZ /d "" /f',)


@pytest.mark.parametrize(
    ("fields", "where", "reason"),
    [
        ({"type": "REG_DWORD", "data": "4294967296"}, "data", "between 0 and 4294967295"),
        ({"type": "REG_DWORD", "data": "-1"}, "data", "between 0 and 4294967295"),
        ({"type": "REG_DWORD", "data": "yes"}, "data", "REG_DWORD data must be an integer"),
        ({"type": "REG_QWORD", "data": str(2**64)}, "data", "between 0 and 18446744073709551615"),
        ({"data": "$env:PATH"}, "data", "pattern"),
        ({"data": 'say "hi"'}, "data", "pattern"),
        ({"value_name": 'a"b'}, "value_name", "pattern"),
        ({"key": "Software\\X"}, "key", "pattern"),
        ({"key": "HKCR\\X"}, "key", "pattern"),
        ({"type": "REG_BINARY"}, "type", "Input should be"),
        ({"data": 1.10}, "data", 'put the value in quotes (e.g. "1.10")'),
    ],
)
def test_registry_step_refuses(fields: dict[str, object], where: str, reason: str) -> None:
    raw: dict[str, object] = {"kind": "registry", "key": "HKLM\\X", "value_name": "V", "data": "1"}
    raw.update(fields)
    with pytest.raises(ValidationError) as info:
        STEP.validate_python(raw)
    errors = info.value.errors()
    assert errors[0]["loc"][-1] == where
    assert reason in errors[0]["msg"]


def test_registry_whole_numbers_from_yaml_are_accepted() -> None:
    step = STEP.validate_python(
        {"kind": "registry", "key": "HKLM\\X", "value_name": "V", "type": "REG_DWORD", "data": 1}
    )
    assert isinstance(step, RegistryStep)
    assert step.data == "1"


def test_script_step_lines_are_checked_one_by_one() -> None:
    with pytest.raises(ValidationError) as info:
        STEP.validate_python(
            {"kind": "script", "name": "s", "lines": ["Write-Output a", "format C:"]}
        )
    error = info.value.errors()[0]
    assert error["loc"] == ("script", "lines", 1)
    assert error["msg"] == "unknown command 'format C:'"


def test_script_step_needs_a_name_and_lines() -> None:
    with pytest.raises(ValidationError) as info:
        STEP.validate_python({"kind": "script", "lines": []})
    locs = {e["loc"][-1] for e in info.value.errors()}
    assert locs == {"name", "lines"}


def test_unique_names_for_default_named_steps() -> None:
    parsed = [
        STEP.validate_python(raw)
        for raw in (
            {"kind": "windows_update"},
            {"kind": "restart"},
            {"kind": "install_app", "package": "Git", "manager": "choco"},
            {"kind": "restart"},
            {"kind": "restart", "name": "restart-3"},
            {"kind": "restart"},
        )
    ]
    rendered = render_steps(parsed)
    assert [r.name for r in rendered] == [
        "windows-update",
        "restart",
        "install-git",
        "restart-2",
        "restart-3",
        "restart-4",
    ]
    assert [r.kind for r in rendered][:3] == ["windows_update", "restart", "install_app"]


def test_content_hash_is_stable_and_sensitive() -> None:
    a = render_steps([ScriptStep(kind="script", name="s", lines=["Write-Output a"])])[0]
    b = render_steps([ScriptStep(kind="script", name="s", lines=["Write-Output b"])])[0]
    assert a.content_hash == content_hash(["Write-Output a"])
    assert re.fullmatch(r"[0-9a-f]{64}", a.content_hash)
    assert a.content_hash != b.content_hash
    assert a.to_dict() == {
        "name": "s",
        "kind": "script",
        "script": ["Write-Output a"],
        "content_hash": a.content_hash,
    }


# -- guardrail scripts ----------------------------------------------------------------------


def test_pre_capture_turns_bitlocker_off_and_keeps_it_off() -> None:
    script = pre_capture_script()
    assert script[0] == "Disable-BitLocker -MountPoint C:"
    assert script[1] == (
        'reg add "HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker" '
        "/v PreventDeviceEncryption /t REG_DWORD /d 1 /f"
    )
    assert script[2:] == health_check_script()
    assert pre_capture_script(include_health_check=False) == script[:2]
    check_script(script, customisation=False)


def test_health_check_queries_bitlocker_disk_reboot_and_apps() -> None:
    assert health_check_script() == (
        "Get-BitLockerVolume -MountPoint C:",
        "Get-PSDrive C",
        "Test-PendingReboot",
        "Get-InstalledApps",
    )


def test_sysprep_without_signal_shuts_down() -> None:
    assert sysprep_script() == (f"{SYSPREP} /generalize /oobe /shutdown /quiet",)
    assert sysprep_script(vm_mode=True) == (
        f"{SYSPREP} /generalize /oobe /shutdown /quiet /mode:vm",
    )


def test_sysprep_with_signal_quits_posts_then_stops() -> None:
    body = {"eventType": "ImageFactory.SysprepFinished", "data": {"build_id": "b'1", "vm_id": "v"}}
    script = sysprep_script("https://127.0.0.1:7071/api/signal?code=x", [body])
    assert script[0] == f"{SYSPREP} /generalize /oobe /quit /quiet"
    # The post is only a hint: it sits in try/catch, so a refused post never fails the script.
    assert script[1] == "try {"
    assert script[3:6] == (
        "} catch {",
        "Write-Output 'the sysprep signal was not sent: the factory notices the shutdown by "
        "polling'",
        "}",
    )
    assert script[6] == "Stop-Computer -Force"
    match = re.fullmatch(
        r"Invoke-RestMethod -Method Post -Uri '(?P<uri>[^']+)' -ContentType 'application/json' "
        r"-Body '(?P<body>[^']*)'",
        script[2],
    )
    assert match is not None
    assert match.group("uri") == "https://127.0.0.1:7071/api/signal?code=x"
    assert json.loads(match.group("body")) == [body]  # the quote travels as \u0027
    check_script(script, customisation=False)


IDENTITY = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-image-factory"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-build-vm"
)


def test_sysprep_with_an_identity_takes_a_token_from_imds_and_posts_with_it() -> None:
    topic = "https://factory.westeurope-1.eventgrid.azure.net/api/events"
    script = sysprep_script(topic, [{"id": "1"}], identity_id=IDENTITY)
    assert script[1] == "try {"
    token_line, post_line = script[2], script[3]
    url = re.search(r"-Uri '([^']+)'", token_line)
    assert url is not None
    split = urllib.parse.urlsplit(url.group(1))
    assert (split.scheme, split.netloc, split.path) == (
        "http",
        "169.254.169.254",
        "/metadata/identity/oauth2/token",
    )
    assert dict(urllib.parse.parse_qsl(split.query)) == {
        "api-version": "2018-02-01",
        "resource": "https://eventgrid.azure.net",
        "msi_res_id": IDENTITY,
    }
    assert "-Headers @{Metadata='true'}" in token_line
    assert token_line.startswith("$imds = Invoke-RestMethod -Method Get ")
    assert f"-Uri '{topic}'" in post_line
    assert '-Headers @{Authorization="Bearer $($imds.access_token)"}' in post_line
    assert "key" not in post_line.lower()  # no key, no SAS: the token only
    assert script[-1] == "Stop-Computer -Force"
    check_script(script, customisation=False)


def test_an_identity_must_be_a_user_assigned_identity_id() -> None:
    with pytest.raises(InputError) as info:
        sysprep_script("https://x/api/events", [], identity_id="id-build-vm")
    assert info.value.errors[0].path == "identity_id"


def test_the_token_and_bearer_lines_are_refused_in_customisation_steps() -> None:
    script = sysprep_script("https://x/api/events", [], identity_id=IDENTITY)
    factory_only = [line for line in script if not line.startswith("Write-Output")]
    assert len(factory_only) == 7
    for line in factory_only:
        reason = line_problem(line)
        assert reason is not None, line
        assert "reserved for the factory" in reason, line


@pytest.mark.parametrize("url", ["ftp://x", "https://x/a b", "https://x/'", "not a url"])
def test_sysprep_signal_url_is_checked(url: str) -> None:
    with pytest.raises(InputError) as info:
        sysprep_script(url, {})
    assert info.value.errors[0].path == "signal_url"


# -- the health check's output --------------------------------------------------------------


def test_parse_the_documented_key_value_format() -> None:
    output = "\n".join(
        [
            "BitLockerProtectionStatus=Off",
            "BitLockerVolumeStatus=FullyDecrypted",
            "FreeSpaceGB=42.5",
            "PendingReboot=False",
            "App.7zip.7zip=24.08",
            "App.git=2.45.1",
            "Some other line",
        ]
    )
    health = parse_guest_health(output)
    assert health == GuestHealth(
        bitlocker_on=False,
        free_disk_gb=42.5,
        pending_reboot=False,
        bitlocker_status="FullyDecrypted",
        apps={"7zip.7zip": "24.08", "git": "2.45.1"},
    )
    assert parse_installed_apps(output) == {"7zip.7zip": "24.08", "git": "2.45.1"}


def test_parse_tolerates_powershell_tables_and_a_bare_reboot_answer() -> None:
    output = "\n".join(
        [
            "MountPoint: C:  VolumeStatus: FullyEncrypted  ProtectionStatus: On  "
            "EncryptionPercentage: 100",
            "Name: C  Used (GB): 47.0  Free (GB): 80.0",
            "True",
        ]
    )
    health = parse_guest_health(output)
    assert health.bitlocker_on is True
    assert health.bitlocker_status == "FullyEncrypted"
    assert health.free_disk_gb == 80.0
    assert health.pending_reboot is True


def test_parse_format_list_style() -> None:
    output = "ProtectionStatus : Off\nVolumeStatus     : FullyDecrypted\nIsRebootPending : False"
    health = parse_guest_health(output)
    assert (health.bitlocker_on, health.pending_reboot) == (False, False)
    assert health.free_disk_gb is None


def test_decrypting_counts_as_on() -> None:
    health = parse_guest_health(
        "BitLockerProtectionStatus=Off\nBitLockerVolumeStatus=DecryptionInProgress"
    )
    assert health.bitlocker_on is True
    reasons = check_capture_readiness(health, 10)
    assert any("DecryptionInProgress" in r and "wait for decryption" in r for r in reasons)


def test_missing_or_unreadable_values_stay_unknown() -> None:
    health = parse_guest_health("FreeSpaceGB=lots\nPendingReboot=maybe\nTrue\nFalse")
    assert health == GuestHealth(bitlocker_on=None, free_disk_gb=None, pending_reboot=None)
    assert parse_guest_health("") == GuestHealth(None, None, None)


def test_readiness_ok() -> None:
    health = GuestHealth(bitlocker_on=False, free_disk_gb=10.0, pending_reboot=False)
    assert check_capture_readiness(health, 10) == []


def test_readiness_reasons() -> None:
    health = GuestHealth(bitlocker_on=True, free_disk_gb=3.25, pending_reboot=True)
    reasons = check_capture_readiness(health, 10)
    assert len(reasons) == 3
    assert reasons[0].startswith("BitLocker is on for C: (On): sysprep fails")
    assert "TrustedLaunchSupported" in reasons[0]
    assert reasons[1] == "only 3.25 GB free on C:, at least 10 GB needed"
    assert reasons[2].startswith("a reboot is pending")


def test_readiness_unknowns_are_not_ready() -> None:
    reasons = check_capture_readiness(GuestHealth(None, None, None), 10)
    assert len(reasons) == 3
    assert all("unknown" in r for r in reasons)


def test_docs_list_every_command_and_the_output_keys() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "catalogue.md").read_text()
    for command in COMMANDS:
        in_table = command.syntax.replace("|", "\\|")  # a pipe is escaped in a markdown table
        assert f"`{in_table}`" in doc, command.name
    for key in (
        steps.KEY_PROTECTION,
        steps.KEY_VOLUME,
        steps.KEY_FREE_GB,
        steps.KEY_PENDING_REBOOT,
    ):
        assert f"{key}=" in doc
    assert f"{steps.APP_KEY_PREFIX}<name>=<version>" in doc
