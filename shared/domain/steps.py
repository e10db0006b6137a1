"""Guest scripts: the recognised command set, typed customisation steps, guardrails, health.

Every line the factory sends to a build VM (as a managed run command) must be one command of
:data:`COMMANDS`, the single list of what the factory runs inside Windows. The emulator's guest
interpreter understands the same set (emulator/README.md); a catalogue step with any other line
fails validation before a VM exists. Free text is only accepted where PowerShell cannot expand
it (single-quoted strings, double-quoted strings without ``$`` or backtick, bare words without
``; | & ( ) { } < >``), so a recognised command cannot smuggle a second one.

This module also renders each typed step into its lines, builds the fixed guardrail scripts
(pre-capture: BitLocker off and kept off; health check; sysprep with an optional "finished"
signal) and parses the health check's ``key=value`` output into :class:`GuestHealth`.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from shared.errors import FieldError, InputError, PermanentError

# -- building blocks of the command patterns ------------------------------------------------

# PowerShell also ends a string at a typographic quote, so those are as unsafe as ASCII ones.
_SMART_QUOTES = "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f"
_UNSAFE = "\"'`$;|&<>(){}\\[\\]" + _SMART_QUOTES
_BARE = rf"[^\s{_UNSAFE}]+"  # one bare word PowerShell takes literally
_DQ = rf'"[^"`$\r\n{_SMART_QUOTES}]*"'  # double-quoted without interpolation
_SQ = rf"'[^'\r\n{_SMART_QUOTES}]*'"  # single-quoted: never interpolated
_VALUE = rf"(?:{_DQ}|{_SQ}|{_BARE})"
_WORDS = rf"{_BARE}(?:[ \t]+{_BARE})*"
_PKG = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
_VER = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
_HIVE = r"(?:HKLM|HKCU|HKEY_LOCAL_MACHINE|HKEY_CURRENT_USER)"
_REG_KEY = rf'(?:"{_HIVE}(?:\\[^"`$\\\r\n{_SMART_QUOTES}]+)+"|{_HIVE}(?:\\[^\s{_UNSAFE}\\]+)+)'
_PS_REG_BODY = rf"(?:Registry::)?{_HIVE}:?(?:\\[^'\"`$\\\r\n{_SMART_QUOTES}]+)+"
_PS_REG_PATH = (
    rf"(?:'{_PS_REG_BODY}'|\"{_PS_REG_BODY}\"|(?:Registry::)?{_HIVE}:?(?:\\[^\s{_UNSAFE}\\]+)+)"
)
_DRIVE_C = r"(?:C:|'C:'|\"C:\")"
_REG_TYPES = "REG_SZ|REG_EXPAND_SZ|REG_DWORD|REG_QWORD|REG_MULTI_SZ|REG_BINARY"
_PS_TYPES = "String|ExpandString|DWord|QWord|MultiString|Binary"
SYSPREP_PATH: Final = r"C:\Windows\System32\Sysprep\sysprep.exe"
# The instance metadata service's token endpoint (reachable only from inside the VM).
IMDS_TOKEN_URL: Final = "http://169.254.169.254/metadata/identity/oauth2/token"  # noqa: S105
EVENTGRID_RESOURCE: Final = "https://eventgrid.azure.net"


@dataclass(frozen=True)
class Command:
    """One recognised guest command: its syntax, pattern and where it may be used."""

    name: str
    syntax: str
    purpose: str
    pattern: re.Pattern[str]
    head: re.Pattern[str]  # how a line *tries* to be this command (for a precise reason)
    examples: tuple[str, ...]
    customisation: bool = True  # False: reserved for the factory's own guardrail scripts
    check: Callable[[re.Match[str]], str | None] | None = None  # extra rule; returns a reason

    def matches(self, line: str) -> re.Match[str] | None:
        return self.pattern.fullmatch(line.strip())


def _cmd(
    name: str,
    syntax: str,
    purpose: str,
    pattern: str,
    head: str,
    examples: tuple[str, ...],
    *,
    customisation: bool = True,
    check: Callable[[re.Match[str]], str | None] | None = None,
) -> Command:
    return Command(
        name=name,
        syntax=syntax,
        purpose=purpose,
        pattern=re.compile(pattern, re.IGNORECASE),
        head=re.compile(head, re.IGNORECASE),
        examples=examples,
        customisation=customisation,
        check=check,
    )


def _check_sysprep(match: re.Match[str]) -> str | None:
    flags = [f.lower() for f in match.group("flags").split()]
    if len(set(flags)) != len(flags):
        return "a sysprep flag is repeated"
    missing = [f for f in ("/generalize", "/oobe", "/quiet") if f not in flags]
    if missing:
        return f"sysprep needs {' '.join(missing)}"
    if ("/shutdown" in flags) == ("/quit" in flags):
        return "sysprep needs exactly one of /shutdown and /quit"
    return None


def _check_json_body(match: re.Match[str]) -> str | None:
    try:
        json.loads(match.group("body"))
    except ValueError as exc:
        return f"-Body is not valid JSON ({exc})"
    return None


COMMANDS: Final[tuple[Command, ...]] = (
    _cmd(
        "choco install",
        "choco install <package> [-y] [--no-progress] [--version <version>]",
        "install a Chocolatey package",
        rf"choco\s+install\s+(?P<package>{_PKG})"
        rf"(?:\s+(?:-y|--yes|--no-progress|--version(?:=|\s+)(?P<version>{_VER})))*",
        r"choco\b",
        ("choco install 7zip -y", "choco install git -y --version 2.45.1", "choco install vlc"),
    ),
    _cmd(
        "winget install",
        "winget install --id <id> [--version <version>] [--exact] [--silent] "
        "[--accept-package-agreements] [--accept-source-agreements]",
        "install a winget package",
        rf"winget\s+install\s+--id(?:=|\s+)(?P<package>{_PKG})"
        rf"(?:\s+(?:--version(?:=|\s+)(?P<version>{_VER})|-e|--exact|--silent|-h"
        r"|--accept-package-agreements|--accept-source-agreements|--disable-interactivity))*",
        r"winget\b",
        (
            "winget install --id Microsoft.PowerBI",
            "winget install --id 7zip.7zip --version 24.08 --exact --silent "
            "--accept-package-agreements --accept-source-agreements",
        ),
    ),
    _cmd(
        "Disable-BitLocker",
        "Disable-BitLocker -MountPoint C:",
        "turn BitLocker off on the OS volume (sysprep fails while it is on)",
        rf"Disable-BitLocker\s+-MountPoint\s+{_DRIVE_C}",
        r"Disable-BitLocker\b",
        ("Disable-BitLocker -MountPoint C:", "Disable-BitLocker -MountPoint 'C:'"),
    ),
    _cmd(
        "manage-bde -off",
        "manage-bde -off C:",
        "turn BitLocker off on the OS volume (classic tool)",
        r"manage-bde\s+-off\s+C:",
        r"manage-bde\b",
        ("manage-bde -off C:",),
    ),
    _cmd(
        "reg add",
        'reg add "<key>" /v <name> /t <type> /d <data> /f',
        f"set a registry value (HKLM or HKCU; type one of {_REG_TYPES.replace('|', ', ')})",
        rf"reg\s+add\s+(?P<key>{_REG_KEY})\s+/v\s+(?P<name>{_VALUE})\s+/t\s+(?P<type>{_REG_TYPES})"
        rf"\s+/d\s+(?P<data>{_VALUE})\s+/f",
        r"reg(?:\.exe)?\s",
        (
            r'reg add "HKLM\SOFTWARE\Policies\Microsoft\FSLogix" /v Enabled /t REG_DWORD /d 1 /f',
            r'reg add "HKLM\SOFTWARE\Contoso" /v Motd /t REG_SZ /d "Hello there" /f',
        ),
    ),
    _cmd(
        "Set-ItemProperty",
        "Set-ItemProperty -Path '<HKLM:\\path>' -Name <name> -Value <value> [-Type <type>] "
        "[-Force]",
        f"set a registry value from PowerShell (type one of {_PS_TYPES.replace('|', ', ')})",
        rf"Set-ItemProperty\s+-Path\s+(?P<path>{_PS_REG_PATH})\s+-Name\s+(?P<name>{_VALUE})"
        rf"\s+-Value\s+(?P<value>{_VALUE})(?:\s+-Type\s+(?P<type>{_PS_TYPES}))?(?:\s+-Force)?",
        r"Set-ItemProperty\b",
        (
            r"Set-ItemProperty -Path 'HKLM:\SOFTWARE\Contoso' -Name Ring -Value 2",
            r"Set-ItemProperty -Path 'HKLM:\SOFTWARE\Contoso' -Name Ring -Value 2 -Type DWord "
            r"-Force",
        ),
    ),
    _cmd(
        "New-ItemProperty",
        "New-ItemProperty -Path '<HKLM:\\path>' -Name <name> -Value <value> "
        "[-PropertyType <type>] [-Force]",
        "create a registry value from PowerShell",
        rf"New-ItemProperty\s+-Path\s+(?P<path>{_PS_REG_PATH})\s+-Name\s+(?P<name>{_VALUE})"
        rf"\s+-Value\s+(?P<value>{_VALUE})(?:\s+-PropertyType\s+(?P<type>{_PS_TYPES}))?"
        r"(?:\s+-Force)?",
        r"New-ItemProperty\b",
        (
            r"New-ItemProperty -Path 'HKLM:\SOFTWARE\Contoso' -Name Ring -Value 2 "
            r"-PropertyType DWord -Force",
        ),
    ),
    _cmd(
        "Install-WindowsUpdate",
        "Install-WindowsUpdate -AcceptAll [-IgnoreReboot] [-MicrosoftUpdate]",
        "install every pending Windows update (leaves a reboot pending: restart afterwards)",
        r"Install-WindowsUpdate\s+-AcceptAll(?:\s+-(?:IgnoreReboot|MicrosoftUpdate))*",
        r"Install-WindowsUpdate\b",
        ("Install-WindowsUpdate -AcceptAll", "Install-WindowsUpdate -AcceptAll -IgnoreReboot"),
    ),
    _cmd(
        "Restart-Computer",
        "Restart-Computer [-Force]",
        "restart the VM (completes pending servicing)",
        r"Restart-Computer(?:\s+-Force)?",
        r"Restart-Computer\b",
        ("Restart-Computer", "Restart-Computer -Force"),
    ),
    _cmd(
        "Get-BitLockerVolume",
        "Get-BitLockerVolume -MountPoint C:",
        "report BitLocker on the OS volume",
        rf"Get-BitLockerVolume\s+-MountPoint\s+{_DRIVE_C}",
        r"Get-BitLockerVolume\b",
        ("Get-BitLockerVolume -MountPoint C:",),
    ),
    _cmd(
        "Get-PSDrive",
        "Get-PSDrive C",
        "report free space on C:",
        r"Get-PSDrive\s+(?:-Name\s+)?C",
        r"Get-PSDrive\b",
        ("Get-PSDrive C", "Get-PSDrive -Name C"),
    ),
    _cmd(
        "Test-PendingReboot",
        "Test-PendingReboot",
        "report whether a reboot is pending",
        r"Test-PendingReboot",
        r"Test-PendingReboot\b",
        ("Test-PendingReboot",),
    ),
    _cmd(
        "Get-InstalledApps",
        "Get-InstalledApps",
        "report installed applications and their versions",
        r"Get-InstalledApps",
        r"Get-InstalledApps\b",
        ("Get-InstalledApps",),
    ),
    _cmd(
        "Write-Output",
        "Write-Output <text>",
        "print text ('single-quoted', \"double-quoted\" without $ or `, or plain words)",
        rf"Write-Output(?:\s+(?P<text>{_DQ}|{_SQ}|{_WORDS}))?",
        r"Write-Output\b",
        ("Write-Output 'step done'", 'Write-Output "hello"', "Write-Output ready"),
    ),
    _cmd(
        "exit",
        "exit <n>",
        "end the script with an exit code",
        r"exit(?:\s+(?P<code>-?\d{1,10}))?",
        r"exit\b",
        ("exit 0", "exit 3", "exit"),
    ),
    _cmd(
        "throw",
        'throw "<message>"',
        "fail the script with a message",
        rf"throw\s+(?P<message>{_DQ}|{_SQ})",
        r"throw\b",
        ('throw "not supported"', "throw 'stop here'"),
    ),
    _cmd(
        "sysprep",
        r"C:\Windows\System32\Sysprep\sysprep.exe /generalize /oobe /shutdown|/quit /quiet "
        "[/mode:vm]",
        "generalize Windows for capture (the factory runs it after the guardrails)",
        r"C:\\Windows\\System32\\Sysprep\\sysprep\.exe"
        r"(?P<flags>(?:\s+/(?:generalize|oobe|shutdown|quit|quiet|mode:vm))+)",
        r"(?:\S*\\)?sysprep(?:\.exe)?\b",
        (
            rf"{SYSPREP_PATH} /generalize /oobe /shutdown /quiet",
            rf"{SYSPREP_PATH} /generalize /oobe /quit /quiet /mode:vm",
        ),
        customisation=False,
        check=_check_sysprep,
    ),
    _cmd(
        "Stop-Computer",
        "Stop-Computer -Force",
        "shut the VM down (after sysprep /quit)",
        r"Stop-Computer\s+-Force",
        r"Stop-Computer\b",
        ("Stop-Computer -Force",),
        customisation=False,
    ),
    _cmd(
        "Invoke-RestMethod",
        "Invoke-RestMethod -Method Post -Uri '<url>' -ContentType 'application/json' "
        "-Body '<json>'",
        "signal 'sysprep finished' to the factory",
        rf"Invoke-RestMethod\s+-Method\s+Post\s+-Uri\s+'(?P<uri>https?://[^'\s{_SMART_QUOTES}]+)'"
        rf"\s+-ContentType\s+'application/json'\s+-Body\s+'(?P<body>[^'\r\n{_SMART_QUOTES}]*)'",
        r"Invoke-(?:RestMethod|WebRequest)\b",
        (
            "Invoke-RestMethod -Method Post -Uri 'https://127.0.0.1:7071/api/signal' "
            "-ContentType 'application/json' -Body '{\"build_id\": \"b1\"}'",
        ),
        customisation=False,
        check=_check_json_body,
    ),
    _cmd(
        "try",
        "try {",
        "start a block whose error goes to its catch (the sysprep signal is only a hint)",
        r"try\s*\{",
        r"try\b",
        ("try {",),
        customisation=False,
    ),
    _cmd(
        "catch",
        "} catch {",
        "what runs when the try block failed",
        r"\}\s*catch\s*\{",
        r"\}\s*catch\b",
        ("} catch {",),
        customisation=False,
    ),
    _cmd(
        "}",
        "}",
        "end the catch block",
        r"\}",
        r"\}",
        ("}",),
        customisation=False,
    ),
    _cmd(
        "IMDS token",
        "$<name> = Invoke-RestMethod -Method Get -Uri '<IMDS token url>' "
        "-Headers @{Metadata='true'} [-TimeoutSec n]",
        "take a token for the build VM's managed identity from the instance metadata service",
        rf"\$(?P<var>[A-Za-z_]\w{{0,30}})\s*=\s*Invoke-RestMethod\s+-Method\s+Get\s+-Uri\s+"
        rf"'(?P<uri>{re.escape(IMDS_TOKEN_URL)}\?[^'\s{_SMART_QUOTES}]+)'"
        r"\s+-Headers\s+@\{Metadata\s*=\s*'true'\}(?:\s+-TimeoutSec\s+\d{1,3})?",
        r"\$[A-Za-z_]\w*\s*=",
        (
            f"$imds = Invoke-RestMethod -Method Get -Uri '{IMDS_TOKEN_URL}?api-version="
            "2018-02-01&resource=https://eventgrid.azure.net' -Headers @{Metadata='true'}",
        ),
        customisation=False,
    ),
    _cmd(
        "Invoke-RestMethod (bearer)",
        "Invoke-RestMethod -Method Post -Uri '<url>' -ContentType 'application/json' "
        '-Headers @{Authorization="Bearer $($<name>.access_token)"} [-TimeoutSec n] '
        "-Body '<json>'",
        "publish 'sysprep finished' to the app's Event Grid topic with the identity's token",
        rf"Invoke-RestMethod\s+-Method\s+Post\s+-Uri\s+'(?P<uri>https?://[^'\s{_SMART_QUOTES}]+)'"
        r"\s+-ContentType\s+'application/json'"
        r'\s+-Headers\s+@\{Authorization\s*=\s*"Bearer \$\(\$(?P<var>[A-Za-z_]\w{0,30})'
        r'\.access_token\)"\}(?:\s+-TimeoutSec\s+\d{1,3})?'
        rf"\s+-Body\s+'(?P<body>[^'\r\n{_SMART_QUOTES}]*)'",
        r"Invoke-(?:RestMethod|WebRequest)\b",
        (
            "Invoke-RestMethod -Method Post -Uri 'https://topic.westeurope-1.eventgrid.azure.net"
            "/api/events' -ContentType 'application/json' "
            '-Headers @{Authorization="Bearer $($imds.access_token)"} -TimeoutSec 10 '
            "-Body '[]'",
        ),
        customisation=False,
        check=_check_json_body,
    ),
)

COMMANDS_BY_NAME: Final[Mapping[str, Command]] = {c.name: c for c in COMMANDS}
MAX_LINE_LENGTH: Final = 2000
MAX_LINES_PER_STEP: Final = 200


def is_comment_or_blank(line: str) -> bool:
    """Blank lines and ``#`` comments are allowed anywhere and run nothing."""
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def find_command(line: str) -> Command | None:
    """The recognised command ``line`` is (all its rules met), or None."""
    if "\n" in line or "\r" in line:
        return None
    for command in COMMANDS:
        match = command.matches(line)
        if match is not None and (command.check is None or command.check(match) is None):
            return command
    return None


def line_problem(line: str, *, customisation: bool = True) -> str | None:
    """Why ``line`` may not run (None when it may): unknown, malformed or reserved.

    ``customisation=True`` applies the rules for catalogue steps, where the factory's own
    commands (sysprep, Stop-Computer, Invoke-RestMethod) are refused.
    """
    if not isinstance(line, str):
        return "must be a string"
    if "\n" in line or "\r" in line:
        return "one command per line: the line contains a line break"
    if any(ord(ch) < 32 and ch != "\t" for ch in line):
        return "contains a control character"
    if len(line) > MAX_LINE_LENGTH:
        return f"longer than {MAX_LINE_LENGTH} characters"
    if is_comment_or_blank(line):
        return None
    stripped = line.strip()
    for command in COMMANDS:
        match = command.matches(stripped)
        if match is None:
            continue
        reason = command.check(match) if command.check else None
        if reason:
            return f"not a valid {command.name} command: {reason}"
        if customisation and not command.customisation:
            return (
                f"'{command.name}' is reserved for the factory's own scripts (after the "
                "guardrails the factory runs sysprep, signals its end and shuts the VM down); "
                "remove it from the step"
            )
        return None
    for command in COMMANDS:
        if command.head.match(stripped):
            return f"not a valid {command.name} command: expected {command.syntax}"
    return f"unknown command '{stripped}'"


def script_problems(
    lines: Sequence[str], *, customisation: bool = True, path: str = "lines"
) -> list[FieldError]:
    """Every line of ``lines`` that may not run, as field errors ``lines[i]: reason``."""
    problems: list[FieldError] = []
    for index, line in enumerate(lines):
        reason = line_problem(line, customisation=customisation)
        if reason:
            problems.append(FieldError(f"{path}[{index}]", reason))
    return problems


def check_script(lines: Sequence[str], *, customisation: bool = True, path: str = "lines") -> None:
    """Raise InputError naming every line of ``lines`` that may not run."""
    problems = script_problems(lines, customisation=customisation, path=path)
    if problems:
        raise InputError(problems, "script refused")


# -- typed customisation steps --------------------------------------------------------------


def _script_line(value: str) -> str:
    reason = line_problem(value, customisation=True)
    if reason is not None:
        raise PydanticCustomError("script_line", "{reason}", {"reason": reason})
    return value


def _scalar_to_str(value: Any) -> Any:
    """YAML gives ``data: 1`` as an int: accept whole numbers as text, refuse the rest.

    A YAML float is refused because its text is already lost (``1.10`` reads as ``1.1``).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        raise PydanticCustomError(
            "quote_number",
            'YAML read this as the number {value}: put the value in quotes (e.g. "1.10")',
            {"value": repr(value)},
        )
    return value


def _yaml_mapping_line(value: Any) -> Any:
    """``- Disable-BitLocker -MountPoint C:`` is a one-key mapping to YAML: say so clearly."""
    if isinstance(value, dict) and len(value) == 1:
        key, item = next(iter(value.items()))
        text = f"{key}:" if item is None else f"{key}: {item}"
        raise PydanticCustomError(
            "yaml_mapping_line",
            "YAML read this line as a mapping ({text} has a colon followed by a space or the "
            "end of the line): put the whole line in quotes",
            {"text": repr(text)},
        )
    return value


ScriptLine = Annotated[str, BeforeValidator(_yaml_mapping_line), AfterValidator(_script_line)]
StepName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]
PackageId = Annotated[str, Field(pattern=rf"^{_PKG}$", max_length=128)]
PackageVersion = Annotated[
    str, BeforeValidator(_scalar_to_str), Field(pattern=rf"^{_VER}$", max_length=64)
]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StepName | None = None

    def default_name(self) -> str:
        raise NotImplementedError


class ScriptStep(_Step):
    """Inline script lines, each one a recognised command."""

    kind: Literal["script"]
    name: StepName
    lines: list[ScriptLine] = Field(min_length=1, max_length=MAX_LINES_PER_STEP)

    def default_name(self) -> str:
        return self.name


class InstallAppStep(_Step):
    """Install one package with Chocolatey or winget, optionally pinned to a version."""

    kind: Literal["install_app"]
    package: PackageId
    version: PackageVersion | None = None
    manager: Literal["choco", "winget"]

    def default_name(self) -> str:
        return f"install-{self.package.lower()}"


class WindowsUpdateStep(_Step):
    """Install all pending Windows updates (a restart must follow before capture)."""

    kind: Literal["windows_update"]

    def default_name(self) -> str:
        return "windows-update"


RegistryType = Literal["REG_SZ", "REG_EXPAND_SZ", "REG_DWORD", "REG_QWORD"]
_REG_KEY_FIELD = rf'^{_HIVE}:?(?:\\[^"`$\\\r\n{_SMART_QUOTES}]+)+$'
_REG_TEXT = rf'[^"`$\r\n\t{_SMART_QUOTES}]'


class RegistryStep(_Step):
    """Set one registry value (rendered as ``reg add``)."""

    kind: Literal["registry"]
    key: str = Field(pattern=_REG_KEY_FIELD, max_length=255)
    value_name: str = Field(pattern=rf"^{_REG_TEXT}{{1,255}}$")
    type: RegistryType = "REG_SZ"
    data: Annotated[str, BeforeValidator(_scalar_to_str)] = Field(
        pattern=rf"^{_REG_TEXT}*$", max_length=1024
    )

    @field_validator("data")
    @classmethod
    def _data_fits_type(cls, value: str, info: ValidationInfo) -> str:
        rtype = info.data.get("type")
        if rtype in ("REG_DWORD", "REG_QWORD"):
            bits = 32 if rtype == "REG_DWORD" else 64
            text = value.strip().lower()
            try:
                number = int(text, 16) if text.startswith("0x") else int(text)
            except ValueError:
                number = -1
            if not 0 <= number < 2**bits:
                raise PydanticCustomError(
                    "registry_data",
                    "{type} data must be an integer between 0 and {top} (decimal or 0x hex)",
                    {"type": rtype, "top": 2**bits - 1},
                )
        return value

    def default_name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.value_name).strip("-.") or "value"
        return f"registry-{slug}"[:64]


class RestartStep(_Step):
    """Restart the VM (after updates or installers that need it)."""

    kind: Literal["restart"]

    def default_name(self) -> str:
        return "restart"


CustomisationStep = Annotated[
    ScriptStep | InstallAppStep | WindowsUpdateStep | RegistryStep | RestartStep,
    Field(discriminator="kind"),
]
STEP_KINDS: Final = ("script", "install_app", "windows_update", "registry", "restart")
AnyStep = ScriptStep | InstallAppStep | WindowsUpdateStep | RegistryStep | RestartStep


def _quote(value: str) -> str:
    """A value as a reg.exe argument: bare when safe, double-quoted otherwise."""
    if value and re.fullmatch(_BARE, value):
        return value
    return f'"{value}"'


def _reg_key(key: str) -> str:
    """``HKLM:\\Software`` and ``HKEY_LOCAL_MACHINE\\Software`` as reg.exe's ``HKLM\\Software``."""
    k = re.sub(r"^HKEY_LOCAL_MACHINE", "HKLM", key, flags=re.IGNORECASE)
    k = re.sub(r"^HKEY_CURRENT_USER", "HKCU", k, flags=re.IGNORECASE)
    return re.sub(r"^(HKLM|HKCU):", r"\1", k, flags=re.IGNORECASE)


def render_step_lines(step: AnyStep) -> tuple[str, ...]:
    """The script lines one typed step runs as (each a recognised command)."""
    if isinstance(step, ScriptStep):
        lines: tuple[str, ...] = tuple(step.lines)
    elif isinstance(step, InstallAppStep):
        if step.manager == "choco":
            version = f" --version {step.version}" if step.version else ""
            lines = (f"choco install {step.package} -y --no-progress{version}",)
        else:
            version = f" --version {step.version}" if step.version else ""
            lines = (
                f"winget install --id {step.package}{version} --exact --silent "
                "--accept-package-agreements --accept-source-agreements",
            )
    elif isinstance(step, WindowsUpdateStep):
        lines = ("Install-WindowsUpdate -AcceptAll -IgnoreReboot",)
    elif isinstance(step, RegistryStep):
        lines = (
            f'reg add "{_reg_key(step.key)}" /v {_quote(step.value_name)} /t {step.type} '
            f"/d {_quote(step.data)} /f",
        )
    elif isinstance(step, RestartStep):
        lines = ("Restart-Computer -Force",)
    else:  # pragma: no cover - the union is closed
        raise PermanentError(f"no renderer for step {step!r}")
    problems = script_problems(lines, customisation=True)
    if problems:  # a renderer bug, never bad input: the models constrain every field
        raise PermanentError(f"step {step.default_name()!r} renders refused lines: {problems}")
    return lines


def content_hash(lines: Iterable[str]) -> str:
    """sha256 (hex) of a script's lines joined by newlines: what a step changes, exactly."""
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RenderedStep:
    """A customisation step ready to run: its unique name, kind, lines and content hash."""

    name: str
    kind: str
    lines: tuple[str, ...]

    @property
    def content_hash(self) -> str:
        return content_hash(self.lines)

    def to_dict(self) -> dict[str, Any]:
        """The plan's step shape: ``{name, kind, script, content_hash}``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "script": list(self.lines),
            "content_hash": self.content_hash,
        }


def unique_step_names(steps: Sequence[AnyStep]) -> list[str]:
    """Each step's name: its own, or its default made unique with ``-2``, ``-3`` ...

    Explicit names are kept as they are (the catalogue refuses duplicates among them).
    """
    taken = {s.name.lower() for s in steps if s.name}
    names: list[str] = []
    for step in steps:
        if step.name:
            names.append(step.name)
            continue
        base = step.default_name()
        candidate, n = base, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{base}-{n}"
        taken.add(candidate.lower())
        names.append(candidate)
    return names


def render_steps(steps: Sequence[AnyStep]) -> tuple[RenderedStep, ...]:
    """Every step rendered, in order, with unique names."""
    return tuple(
        RenderedStep(name=name, kind=step.kind, lines=render_step_lines(step))
        for name, step in zip(unique_step_names(steps), steps, strict=True)
    )


# -- the factory's guardrail scripts --------------------------------------------------------

BITLOCKER_POLICY_KEY: Final = r"HKLM\SYSTEM\CurrentControlSet\Control\BitLocker"
BITLOCKER_POLICY_VALUE: Final = "PreventDeviceEncryption"

# Output contract of the query commands (docs/catalogue.md): one ``key=value`` per line.
KEY_PROTECTION: Final = "BitLockerProtectionStatus"  # On | Off | Unknown
KEY_VOLUME: Final = "BitLockerVolumeStatus"  # FullyDecrypted | FullyEncrypted | ...InProgress
KEY_FREE_GB: Final = "FreeSpaceGB"  # decimal GB free on C:
KEY_PENDING_REBOOT: Final = "PendingReboot"  # True | False
APP_KEY_PREFIX: Final = "App."  # App.<name>=<version>, one line per installed app

HEALTH_CHECK_LINES: Final = (
    "Get-BitLockerVolume -MountPoint C:",
    "Get-PSDrive C",
    "Test-PendingReboot",
    "Get-InstalledApps",
)


def pre_capture_script(*, include_health_check: bool = True) -> tuple[str, ...]:
    """Turn BitLocker off, keep it off on hosts built from the image, then report health.

    ``PreventDeviceEncryption`` = 1 under ``...\\Control\\BitLocker`` is the documented value
    behind the ``...\\Control\\BitLockerPreventDeviceEncryption`` advice: without it
    Windows 11 switches device encryption back on at the first boot of every session host.
    """
    lines = (
        "Disable-BitLocker -MountPoint C:",
        f'reg add "{BITLOCKER_POLICY_KEY}" /v {BITLOCKER_POLICY_VALUE} /t REG_DWORD /d 1 /f',
    )
    return lines + (HEALTH_CHECK_LINES if include_health_check else ())


def health_check_script() -> tuple[str, ...]:
    """Report BitLocker, free space on C:, a pending reboot and installed apps."""
    return HEALTH_CHECK_LINES


def sysprep_script(
    signal_url: str | None = None,
    signal_body: Mapping[str, Any] | Sequence[Any] | None = None,
    *,
    vm_mode: bool = False,
    identity_id: str | None = None,
) -> tuple[str, ...]:
    """Generalize for capture and shut down; with ``signal_url``, report "finished" first.

    Without a signal: ``sysprep /generalize /oobe /shutdown /quiet``. With one: sysprep with
    ``/quit``, then POST ``signal_body`` (JSON) to ``signal_url``, then ``Stop-Computer -Force``,
    so the signal is sent only when sysprep has succeeded (a failed sysprep ends the script with
    its error before the POST). The signal is only a hint: the POST sits in ``try``/``catch``,
    so a refused or timed-out post never fails the script (the factory polls anyway).

    With ``identity_id`` (a user-assigned managed identity the VM holds) the script first takes
    a token for Event Grid from the instance metadata service and posts with
    ``Authorization: Bearer``: the secure way to publish to the app's topic, with no key.
    """
    mode = " /mode:vm" if vm_mode else ""
    if signal_url is None:
        return (f"{SYSPREP_PATH} /generalize /oobe /shutdown /quiet{mode}",)
    if not re.fullmatch(r"https?://[^'\s]+", signal_url):
        raise InputError.single("signal_url", "must be an http(s) URL without quotes or spaces")
    body = json.dumps(signal_body if signal_body is not None else {}, separators=(",", ":"))
    body = body.replace("'", "\\u0027")  # valid JSON that cannot end the single-quoted string
    post = f"Invoke-RestMethod -Method Post -Uri '{signal_url}' -ContentType 'application/json' "
    if identity_id is None:
        send: tuple[str, ...] = (f"{post}-Body '{body}'",)
    else:
        if not re.fullmatch(r"/subscriptions/[^'\s]+/userAssignedIdentities/[^/'\s]+", identity_id):
            raise InputError.single(
                "identity_id", "must be the resource id of a user-assigned managed identity"
            )
        query = urllib.parse.urlencode(
            {
                "api-version": "2018-02-01",
                "resource": EVENTGRID_RESOURCE,
                "msi_res_id": identity_id,
            },
            safe=":/",
        )
        send = (
            f"$imds = Invoke-RestMethod -Method Get -Uri '{IMDS_TOKEN_URL}?{query}' "
            "-Headers @{Metadata='true'} -TimeoutSec 10",
            f'{post}-Headers @{{Authorization="Bearer $($imds.access_token)"}} -TimeoutSec 10 '
            f"-Body '{body}'",
        )
    lines = (
        f"{SYSPREP_PATH} /generalize /oobe /quit /quiet{mode}",
        "try {",
        *send,
        "} catch {",
        "Write-Output 'the sysprep signal was not sent: the factory notices the shutdown by "
        "polling'",
        "}",
        "Stop-Computer -Force",
    )
    check_script(lines, customisation=False, path="sysprep_script")
    return lines


# -- reading the health check -------------------------------------------------------------


@dataclass(frozen=True)
class GuestHealth:
    """What the health check reported; None where the output did not say."""

    bitlocker_on: bool | None
    free_disk_gb: float | None
    pending_reboot: bool | None
    bitlocker_status: str | None = None  # the volume status, e.g. DecryptionInProgress
    apps: Mapping[str, str] = field(default_factory=dict)


_KV = re.compile(
    r"^\s*(?P<key>[A-Za-z][A-Za-z0-9_.+-]*(?:\s\([A-Za-z]+\))?)\s*=\s*(?P<value>.*?)\s*$"
)
# Tolerated too: PowerShell's ``Name : Value`` lists and several ``Name: Value`` pairs per line.
_PAIR = re.compile(
    r"(?P<key>ProtectionStatus|VolumeStatus|Free \(GB\)|FreeSpaceGB|PendingReboot"
    r"|IsRebootPending)\s*:\s*(?P<value>[^\s]+)",
    re.IGNORECASE,
)
_ALIASES: Final = {
    "bitlockerprotectionstatus": KEY_PROTECTION,
    "protectionstatus": KEY_PROTECTION,
    "bitlockervolumestatus": KEY_VOLUME,
    "volumestatus": KEY_VOLUME,
    "freespacegb": KEY_FREE_GB,
    "free (gb)": KEY_FREE_GB,
    "pendingreboot": KEY_PENDING_REBOOT,
    "isrebootpending": KEY_PENDING_REBOOT,
}


def _bool(value: str) -> bool | None:
    lowered = value.strip().strip("'\"").lower()
    return True if lowered == "true" else False if lowered == "false" else None


def _float(value: str) -> float | None:
    try:
        number = float(value.strip().replace(",", "."))
    except ValueError:
        return None
    return number if number >= 0 and number == number and number != float("inf") else None


def parse_guest_health(output: str) -> GuestHealth:
    """Read the health check's output (``key=value`` lines; see docs/catalogue.md).

    Unknown keys and other lines are ignored; a value that is missing or unreadable stays
    None, which :func:`check_capture_readiness` treats as "not ready".
    """
    found: dict[str, str] = {}
    apps: dict[str, str] = {}
    bare_booleans: list[bool] = []
    for raw in (output or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        kv = _KV.match(line)
        if kv:
            key = kv.group("key")
            if key.startswith(APP_KEY_PREFIX) and len(key) > len(APP_KEY_PREFIX):
                apps[key[len(APP_KEY_PREFIX) :]] = kv.group("value")
                continue
            canonical = _ALIASES.get(key.lower())
            if canonical:
                found[canonical] = kv.group("value")
            continue
        pairs = list(_PAIR.finditer(line))
        for pair in pairs:
            found[_ALIASES[pair.group("key").lower()]] = pair.group("value")
        if not pairs and _bool(line) is not None:
            bare_booleans.append(bool(_bool(line)))
    protection = (found.get(KEY_PROTECTION) or "").strip().lower()
    volume = (found.get(KEY_VOLUME) or "").strip() or None
    bitlocker_on: bool | None
    if protection == "on" or (volume is not None and volume.lower() != "fullydecrypted"):
        bitlocker_on = True
    elif protection == "off" or (volume is not None and volume.lower() == "fullydecrypted"):
        bitlocker_on = False
    else:
        bitlocker_on = None
    pending = _bool(found[KEY_PENDING_REBOOT]) if KEY_PENDING_REBOOT in found else None
    if pending is None and len(bare_booleans) == 1:  # Test-PendingReboot's bare True/False
        pending = bare_booleans[0]
    free = _float(found[KEY_FREE_GB]) if KEY_FREE_GB in found else None
    return GuestHealth(
        bitlocker_on=bitlocker_on,
        free_disk_gb=free,
        pending_reboot=pending,
        bitlocker_status=volume,
        apps=apps,
    )


def parse_installed_apps(output: str) -> dict[str, str]:
    """Installed apps (name -> version) from ``App.<name>=<version>`` lines."""
    return dict(parse_guest_health(output).apps)


def check_capture_readiness(health: GuestHealth, min_free_gb: float) -> list[str]:
    """Why the VM may not be sysprepped and captured yet; empty when it may."""
    reasons: list[str] = []
    if health.bitlocker_on is None:
        reasons.append("BitLocker state of C: unknown: the health check did not report it")
    elif health.bitlocker_on:
        status = health.bitlocker_status or "On"
        hint = (
            "wait for decryption to finish and check again"
            if "progress" in status.lower()
            else "turn it off (Disable-BitLocker -MountPoint C:); a Trusted Launch build VM "
            "turns it on, build as 'TrustedLaunchSupported' instead"
        )
        reasons.append(f"BitLocker is on for C: ({status}): sysprep fails while it is on; {hint}")
    if health.free_disk_gb is None:
        reasons.append("free space on C: unknown: the health check did not report it")
    elif health.free_disk_gb < min_free_gb:
        reasons.append(
            f"only {health.free_disk_gb:g} GB free on C:, at least {min_free_gb:g} GB needed"
        )
    if health.pending_reboot is None:
        reasons.append("pending reboot unknown: the health check did not report it")
    elif health.pending_reboot:
        reasons.append("a reboot is pending: sysprep refuses to run; restart the VM first")
    return reasons
