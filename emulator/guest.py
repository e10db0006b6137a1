"""The simulated guest OS and its tiny script interpreter (for run commands).

A :class:`GuestState` lives on a managed OS disk (``store.meta(disk_id)["guest"]``), so copies
of a disk, snapshots and images made from it carry the same apps, registry values, BitLocker
and sysprep state. Scripts are interpreted one command per line; each recognised command takes
time from the latency model and changes the state when it completes. The recognised command set
is documented in emulator/README.md; anything else fails the way PowerShell does
("The term 'X' is not recognized ...").

Rules worth knowing:

- BitLocker is on for the first boot of a Windows 11 25H2 marketplace image (sku containing
  ``win11-25h2``) and of any Trusted Launch VM, unless the image's registry carries
  ``HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker`` ``PreventDeviceEncryption`` = 1
  (also accepted as the single value ``...\\Control\\BitLockerPreventDeviceEncryption``).
- Sysprep fails while BitLocker is on (or decrypting) with Windows' own message, and while a
  reboot is pending; ``/shutdown`` stops the VM from inside the guest (no ARM event).
- The AVD agent: ``msiexec /i <path>RDAgent<...>.msi /quiet REGISTRATIONTOKEN=<t>`` installs it
  and, like ``Register-AVDSessionHost -Token <t>``, writes the token where the agent keeps it
  (``HKLM\\SOFTWARE\\Microsoft\\RDInfraAgent`` ``RegistrationToken``, read by
  :mod:`emulator.avd`). Secrets never reach a step's text (kept in the guest's history) or an
  error: :func:`redact` masks the values of ``-Token``, ``REGISTRATIONTOKEN=``, and of
  ``/d`` / ``-Value`` on a line that names a token.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SYSPREP_FAILURE = (
    "Sysprep was not able to validate your Windows installation. Review the log file at "
    "%WINDIR%\\System32\\Sysprep\\Panther\\setupact.log for details. After resolving the issue, "
    "use Sysprep to validate your installation again.\n"
    "setupact.log: Error SYSPRP BitLocker-Sysprep: BitLocker is on for the OS volume. Turn "
    "BitLocker off to run Sysprep. (0x80310039)"
)
SYSPREP_PENDING_REBOOT = (
    "Sysprep was not able to validate your Windows installation. Review the log file at "
    "%WINDIR%\\System32\\Sysprep\\Panther\\setupact.log for details.\n"
    "setupact.log: Error SYSPRP Sysprep cannot run while servicing operations are pending: "
    "a reboot is required. Restart the computer and run Sysprep again."
)
PREVENT_KEYS = (
    "hklm\\system\\currentcontrolset\\control\\bitlocker\\preventdeviceencryption",
    "hklm\\system\\currentcontrolset\\control\\bitlockerpreventdeviceencryption",
)
APP_SIZE_GB = 0.6
UPDATE_SIZE_GB = 2.5
AGENT_KEY = "HKLM\\SOFTWARE\\Microsoft\\RDInfraAgent"
AGENT_APP = "Microsoft.RDInfra.RDAgent"
BOOT_LOADER_APP = "Microsoft.RDInfra.RDAgentBootLoader"
_SECRET_VALUE = re.compile(
    r"((?:^|\s)(?:/d|-value|-token|-registrationtoken)\s+|registrationtoken=)"
    r"(\"[^\"]*\"|'[^']*'|\S+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """A command line with its secrets masked (registration tokens): safe to keep or show."""
    if "token" not in text.lower():
        return text
    return _SECRET_VALUE.sub(lambda m: m.group(1) + "***", text)


@dataclass
class GuestState:
    """What a Windows (or Linux) guest looks like from the inside."""

    os_type: str = "Windows"
    os_name: str = "Windows 11 Enterprise multi-session"
    os_version: str = "10.0.26200"
    image: str = ""
    apps: dict[str, str] = field(default_factory=dict)
    registry: dict[str, dict[str, str]] = field(default_factory=dict)
    bitlocker: str = "FullyDecrypted"  # FullyEncrypted | FullyDecrypted
    pending_reboot: bool = False
    free_disk_gb: float = 80.0
    disk_size_gb: int = 127
    windows_update_level: str = ""
    sysprepped: bool = False
    device_encryption_candidate: bool = False  # BitLocker turns on at first boot (OOBE)
    boots: int = 0
    history: list[str] = field(default_factory=list)

    def copy(self) -> GuestState:
        return copy.deepcopy(self)

    @property
    def bitlocker_on(self) -> bool:
        return self.bitlocker != "FullyDecrypted"

    def prevents_device_encryption(self) -> bool:
        for full, entry in self.registry.items():
            if full in PREVENT_KEYS and str(entry.get("data", "0")).strip() not in ("", "0"):
                return True
        return False

    def set_registry(self, key: str, name: str, rtype: str, data: str) -> None:
        k = normalize_key(key)
        self.registry[f"{k.lower()}\\{name.lower()}"] = {
            "key": k,
            "name": name,
            "type": rtype,
            "data": data,
        }

    def get_registry(self, key: str, name: str) -> dict[str, str] | None:
        return self.registry.get(f"{normalize_key(key).lower()}\\{name.lower()}")

    def first_boot(self, trusted_launch: bool) -> None:
        """OOBE after provisioning from an image: device encryption may switch BitLocker on."""
        self.boots += 1
        if self.sysprepped:
            # A generalized image runs OOBE once on its first boot and is specialised after.
            self.sysprepped = False
        if (
            self.os_type == "Windows"
            and (self.device_encryption_candidate or trusted_launch)
            and not self.prevents_device_encryption()
        ):
            self.bitlocker = "FullyEncrypted"

    def boot(self) -> None:
        """An ordinary (re)boot: pending servicing completes."""
        self.boots += 1
        self.pending_reboot = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "osType": self.os_type,
            "osName": self.os_name,
            "osVersion": self.os_version,
            "image": self.image,
            "apps": dict(self.apps),
            "registry": [dict(v) for v in self.registry.values()],
            "bitLocker": self.bitlocker,
            "pendingReboot": self.pending_reboot,
            "freeDiskGB": round(self.free_disk_gb, 1),
            "diskSizeGB": self.disk_size_gb,
            "windowsUpdateLevel": self.windows_update_level,
            "sysprepped": self.sysprepped,
            "boots": self.boots,
        }


def normalize_key(key: str) -> str:
    """``HKLM:\\Software`` / ``HKEY_LOCAL_MACHINE\\Software`` -> ``HKLM\\Software``."""
    k = key.strip().strip("'\"").replace("/", "\\")
    k = re.sub(r"^Registry::", "", k, flags=re.IGNORECASE)
    k = re.sub(r"^HKEY_LOCAL_MACHINE", "HKLM", k, flags=re.IGNORECASE)
    k = re.sub(r"^HKEY_CURRENT_USER", "HKCU", k, flags=re.IGNORECASE)
    k = re.sub(r"^(HKLM|HKCU):", r"\1", k, flags=re.IGNORECASE)
    return k.rstrip("\\")


def marketplace_guest(
    publisher: str,
    offer: str,
    sku: str,
    version: str,
    os_type: str = "Windows",
    apps: list[str] | None = None,
    bitlocker: bool | None = None,
    free_disk_gb: float = 80.0,
    disk_size_gb: int = 127,
    windows_update_level: str | None = None,
) -> GuestState:
    """The guest a marketplace image boots into."""
    sku_l = sku.lower()
    win11_25h2 = "win11-25h2" in sku_l
    if os_type == "Linux":
        name, ver = f"{offer} {sku}", "Linux"
    elif "win11" in sku_l or "windows-11" in offer.lower():
        name = "Windows 11 Enterprise multi-session" if "avd" in sku_l else "Windows 11 Enterprise"
        ver = "10.0.26200" if win11_25h2 else "10.0.26100"
    elif "win10" in sku_l or "windows-10" in offer.lower():
        name, ver = "Windows 10 Enterprise multi-session", "10.0.19045"
    else:
        name, ver = "Windows Server 2022 Datacenter", "10.0.20348"
    build = version.split(".")
    return GuestState(
        os_type=os_type,
        os_name=name,
        os_version=f"{ver}.{build[1]}" if len(build) == 3 and os_type == "Windows" else ver,
        image=f"{publisher}:{offer}:{sku}:{version}",
        apps={a: "latest" for a in (apps or [])},
        free_disk_gb=free_disk_gb,
        disk_size_gb=disk_size_gb,
        windows_update_level=windows_update_level or _update_level_of(version),
        device_encryption_candidate=win11_25h2 if bitlocker is None else bitlocker,
        bitlocker="FullyDecrypted",
    )


def _update_level_of(version: str) -> str:
    """Marketplace Windows versions end in YYMMDD (e.g. 26200.7171.251105 -> 2025-11)."""
    last = version.split(".")[-1]
    if len(last) == 6 and last.isdigit():
        return f"20{last[:2]}-{last[2:4]}"
    return "baseline"


# -- the interpreter -------------------------------------------------------------------------


@dataclass
class Step:
    """One parsed command: a latency name, a duration override, and its effect.

    ``guard``: the ``try`` block the step is in (an error there jumps to its ``catch``);
    ``handler``: the ``try`` block whose ``catch`` the step is in (runs only after an error).
    """

    text: str
    latency: str
    run: Callable[[GuestState, ScriptContext], None]
    seconds: float | None = None
    guard: int | None = None
    handler: int | None = None


# IMDS as the VM's guest sees it: (url, headers) -> (HTTP status, JSON body).
Imds = Callable[[str, dict[str, str]], tuple[int, dict[str, Any]]]


@dataclass
class ScriptContext:
    """What a command can do besides changing the guest: print, fail, stop the VM, post."""

    now: Callable[[], datetime]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    exit_code: int | None = None  # set: the script ends here
    power_request: str | None = None  # "restart" | "stop"
    # url, content type, body, extra headers
    http_posts: list[tuple[str, str, str, dict[str, str]]] = field(default_factory=list)
    imds: Imds | None = None  # None: no metadata service (not on a VM)
    variables: dict[str, Any] = field(default_factory=dict)  # ``$name = ...`` results
    failing: bool = False  # the last error was a failure (``exit`` is not one)
    caught: dict[int, str] = field(default_factory=dict)  # try block -> its error

    def out(self, text: str) -> None:
        self.stdout.append(text)

    def fail(self, message: str, code: int = 1) -> None:
        self.stderr.append(message)
        self.exit_code = code
        self.failing = True


def should_run(step: Step, ctx: ScriptContext) -> bool:
    """False for the rest of a ``try`` block after its error, and for an unneeded ``catch``."""
    if step.guard is not None and step.guard in ctx.caught:
        return False
    return step.handler is None or step.handler in ctx.caught


def settle(step: Step, ctx: ScriptContext) -> None:
    """After ``step`` ran: an error inside ``try`` is caught (the script goes on at ``catch``)."""
    if step.guard is None or not ctx.failing or ctx.exit_code is None:
        return
    ctx.caught[step.guard] = ctx.stderr.pop() if ctx.stderr else "error"
    ctx.exit_code = None
    ctx.failing = False


class ScriptError(ValueError):
    """A line that is not a recognised command (reported as PowerShell would)."""

    def __init__(self, line_no: int, text: str) -> None:
        text = redact(text)
        self.line_no = line_no
        self.text = text
        word = text.split()[0] if text.split() else text
        super().__init__(
            f"{word} : The term '{word}' is not recognized as the name of a cmdlet, function, "
            f"script file, or operable program. Check the spelling of the name, or if a path was "
            f"included, verify that the path is correct and try again.\n"
            f"At line:{line_no} char:1\n+ {text}"
        )


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def _split(text: str) -> list[str]:
    """Split like a shell, honouring quotes but keeping backslashes (Windows paths)."""
    lex = shlex.shlex(text, posix=True)
    lex.whitespace_split = True
    lex.escape = ""
    lex.commenters = ""
    try:
        return list(lex)
    except ValueError:
        return text.split()


def _opt(args: list[str], *names: str) -> str | None:
    """Value of ``-Name value`` / ``--name value`` / ``--name=value`` / ``/name value``."""
    lowered = [n.lower() for n in names]
    for i, a in enumerate(args):
        al = a.lower()
        for n in lowered:
            if al == n and i + 1 < len(args):
                return args[i + 1]
            if al.startswith(n + "=") or al.startswith(n + ":"):
                return a[len(n) + 1 :]
    return None


def _has(args: list[str], *flags: str) -> bool:
    fl = {f.lower() for f in flags}
    return any(a.lower() in fl for a in args)


_MOUNT_C = re.compile(r"^['\"]?c:?['\"]?$", re.IGNORECASE)


_TRY = re.compile(r"try\s*\{", re.IGNORECASE)
_CATCH = re.compile(r"\}\s*catch\s*\{", re.IGNORECASE)


def parse_script(script: str, parameters: dict[str, str] | None = None) -> list[Step]:
    """Parse a script into steps; raises ScriptError at the first unknown command.

    ``try {`` / ``} catch {`` / ``}`` each on a line of their own make one (unnested) block:
    an error in the ``try`` part skips the rest of it and runs the ``catch`` part instead.
    """
    steps: list[Step] = []
    blocks = 0
    guard: int | None = None  # inside this try block
    handler: int | None = None  # inside this block's catch
    for no, raw in enumerate(script.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _TRY.fullmatch(line):
            if guard is not None or handler is not None:
                raise ScriptError(no, line)  # nested blocks are not modelled
            blocks += 1
            guard = blocks
            continue
        if _CATCH.fullmatch(line):
            if guard is None:
                raise ScriptError(no, line)
            guard, handler = None, guard
            continue
        if line == "}":
            if handler is None:  # a try needs its catch; a lone brace is a parse error
                raise ScriptError(no, line)
            handler = None
            continue
        for name, value in (parameters or {}).items():
            line = re.sub(rf"\${re.escape(name)}\b", _literal(value), line)
        step = _parse_line(no, line)
        step.text = redact(step.text)
        step.guard, step.handler = guard, handler
        steps.append(step)
    if guard is not None or handler is not None:
        raise ScriptError(len(script.splitlines()), "Missing closing '}' in statement block")
    return steps


def _literal(value: str) -> Callable[[re.Match[str]], str]:
    return lambda _m: value


def _parse_line(no: int, line: str) -> Step:
    text = line.removeprefix("& ").strip()
    args = _split(text)
    if not args:
        raise ScriptError(no, line)
    head = args[0].lower()
    rest = args[1:]

    if re.match(r"^\$erroractionpreference\s*=", text, re.IGNORECASE) or head in (
        "set-strictmode",
        "$progresspreference",
    ):
        return Step(line, "guest.write_output", lambda g, c: None)

    if head in ("write-output", "write-host", "echo"):
        message = _unquote(text.split(None, 1)[1]) if len(args) > 1 else ""
        return Step(line, "guest.write_output", lambda g, c: c.out(message))

    if head == "exit":
        code = int(rest[0]) if rest and rest[0].lstrip("-").isdigit() else 0

        def do_exit(g: GuestState, c: ScriptContext) -> None:
            c.exit_code = code

        return Step(line, "guest.write_output", do_exit)

    if head == "throw":
        message = _unquote(text.split(None, 1)[1]) if len(args) > 1 else "ScriptHalted"
        return Step(line, "guest.write_output", lambda g, c: c.fail(f"Exception: {message}"))

    if head == "start-sleep":
        secs = _opt(rest, "-seconds", "-s") or (rest[0] if rest else "1")
        try:
            seconds = float(secs)
        except ValueError:
            raise ScriptError(no, line) from None
        return Step(line, "guest.command", lambda g, c: None, seconds=seconds)

    if head == "choco" and rest and rest[0].lower() in ("install", "upgrade"):
        pkgs = [a for a in rest[1:] if not a.startswith("-")]
        version = _opt(rest, "--version")
        pkgs = [p for p in pkgs if p != version]
        if not pkgs:
            raise ScriptError(no, line)
        return Step(line, "guest.choco_install", _install(pkgs, version, "choco"))

    if head == "winget" and rest and rest[0].lower() == "install":
        pkg = _opt(rest, "--id", "-id") or next(
            (a for a in rest[1:] if not a.startswith("-")), None
        )
        if not pkg:
            raise ScriptError(no, line)
        return Step(
            line, "guest.winget_install", _install([pkg], _opt(rest, "--version", "-v"), "winget")
        )

    if (head == "disable-bitlocker" and _MOUNT_C.match(_opt(rest, "-mountpoint") or "")) or (
        head == "manage-bde" and _has(rest, "-off") and any(_MOUNT_C.match(a) for a in rest)
    ):
        return Step(line, "guest.bitlocker_disable", _disable_bitlocker)

    if (head == "enable-bitlocker" and _MOUNT_C.match(_opt(rest, "-mountpoint") or "")) or (
        head == "manage-bde" and _has(rest, "-on") and any(_MOUNT_C.match(a) for a in rest)
    ):
        return Step(line, "guest.bitlocker_disable", _enable_bitlocker)

    if head == "reg" and rest and rest[0].lower() == "add":
        key = rest[1] if len(rest) > 1 else ""
        name = _opt(rest, "/v")
        rtype = _opt(rest, "/t") or "REG_SZ"
        data = _opt(rest, "/d") or ""
        if not key or name is None:
            raise ScriptError(no, line)
        return Step(line, "guest.registry", _set_reg(key, name, rtype, data))

    if head in ("set-itemproperty", "new-itemproperty"):
        path = _opt(rest, "-path", "-literalpath")
        name = _opt(rest, "-name")
        value = _opt(rest, "-value")
        rtype = _opt(rest, "-type", "-propertytype") or "String"
        if path is None or name is None or value is None:
            raise ScriptError(no, line)
        return Step(line, "guest.registry", _set_reg(path, name, rtype, value))

    if head == "new-item" and (_opt(rest, "-path") or (rest[0] if rest else "")).lower().startswith(
        ("hklm", "hkcu", "registry::")
    ):
        return Step(line, "guest.registry", lambda g, c: None)

    if head == "register-avdsessionhost":
        token = _opt(rest, "-token", "-registrationtoken")
        if not token:
            # Never echo the line: a mistyped parameter name may precede the token.
            return Step(
                args[0],
                "guest.registry",
                lambda g, c: c.fail(
                    "Register-AVDSessionHost : Missing an argument for parameter 'Token'. "
                    "Specify a parameter of type 'System.String' and try again."
                ),
            )
        return Step(line, "guest.registry", _register_agent(_unquote(token)))

    if re.search(r"(^|\\)msiexec(\.exe)?$", head) and _opt(rest, "/i", "/package"):
        return _msiexec(no, line, rest)

    if head == "get-itemproperty":
        path = _opt(rest, "-path", "-literalpath") or (rest[0] if rest else "")
        name = _opt(rest, "-name")
        if not path or name is None:
            raise ScriptError(no, line)
        return Step(line, "guest.query", _get_reg(path, name))

    if head == "install-windowsupdate" or (head == "get-windowsupdate" and _has(rest, "-install")):
        auto_reboot = _has(rest, "-autoreboot")
        return Step(line, "guest.windows_update", _windows_update(auto_reboot))

    if head == "restart-computer":
        return Step(line, "guest.restart", _request_power("restart"))

    if head == "stop-computer":
        return Step(line, "guest.stop", _request_power("stop"))

    if head == "get-bitlockervolume":
        return Step(line, "guest.query", _show_bitlocker)

    if head == "get-psdrive" and (not rest or _MOUNT_C.match(_opt(rest, "-name") or rest[0])):
        return Step(line, "guest.query", _show_disk)

    if head == "test-pendingreboot":
        return Step(line, "guest.query", lambda g, c: c.out(f"PendingReboot={g.pending_reboot}"))

    if head == "get-installedapps":
        return Step(line, "guest.query", _show_apps)

    if re.search(r"sysprep(\.exe)?$", head) or (
        head == "start-process" and "sysprep" in text.lower()
    ):
        flags = {a.lower().strip("'\"") for a in re.findall(r"/[A-Za-z:]+", text)}
        if "/generalize" not in flags or "/oobe" not in flags:
            raise ScriptError(no, line)
        mode = "shutdown" if "/shutdown" in flags else "reboot" if "/reboot" in flags else "quit"
        return Step(line, "guest.sysprep", _sysprep(mode))

    assigned = _ASSIGN.match(text)
    if assigned:
        return _imds_get(no, line, assigned.group("var"), assigned.group("rest"))

    if head == "invoke-restmethod" or head == "invoke-webrequest":
        method = (_opt(rest, "-method") or "Get").upper()
        uri = _opt(rest, "-uri") or ""
        ctype = _opt(rest, "-contenttype") or "application/json"
        body = _opt(rest, "-body") or ""
        if method != "POST" or not uri:
            raise ScriptError(no, line)
        headers = _header_table(no, line, text)
        return Step(line, "guest.http_post", _post(uri, ctype, body, headers))

    raise ScriptError(no, line)


_ASSIGN = re.compile(
    r"^\$(?P<var>[A-Za-z_]\w*)\s*=\s*(?P<rest>Invoke-(?:RestMethod|WebRequest)\b.*)$",
    re.IGNORECASE,
)
# ``$($name.field)`` (or ``$name.field``) inside a double-quoted header value.
_FIELD_REF = re.compile(
    r"\$\(\$(?P<a>[A-Za-z_]\w*)\.(?P<b>\w+)\)|\$(?P<c>[A-Za-z_]\w*)\.(?P<d>\w+)"
)


def _header_table(no: int, line: str, text: str) -> dict[str, str]:
    """``-Headers @{'k'='v'; k2="v2"}`` as a dict (values expanded when the step runs)."""
    headers: dict[str, str] = {}
    table = re.search(r"-headers\s+@\{(.*?)\}(?=\s+-|\s*$)", text, re.IGNORECASE)
    if table:
        for entry in table.group(1).split(";"):
            key, sep, value = entry.partition("=")
            if not sep or not _unquote(key):
                raise ScriptError(no, line)
            headers[_unquote(key)] = _unquote(value.strip())
    return headers


def _expand(value: str, variables: dict[str, Any]) -> str:
    """PowerShell's expansion of ``$($var.field)`` (an unknown name expands to nothing)."""

    def one(m: re.Match[str]) -> str:
        found = variables.get(m.group("a") or m.group("c") or "")
        field_name = m.group("b") or m.group("d") or ""
        return str(found.get(field_name, "")) if isinstance(found, dict) else ""

    return _FIELD_REF.sub(one, value)


def _imds_get(no: int, line: str, var: str, rest_text: str) -> Step:
    """``$var = Invoke-RestMethod -Method Get -Uri '<IMDS url>' -Headers @{Metadata='true'}``:
    the VM's metadata service answers (a token for one of the VM's identities)."""
    args = _split(rest_text)[1:]
    method = (_opt(args, "-method") or "Get").upper()
    uri = _unquote(_opt(args, "-uri") or "")
    if method != "GET" or not uri.lower().startswith("http://169.254.169.254/"):
        raise ScriptError(no, line)
    headers = _header_table(no, line, rest_text)

    def run(g: GuestState, c: ScriptContext) -> None:
        if c.imds is None:
            c.fail(f"Invoke-RestMethod : Unable to connect to the remote server ({uri}).")
            return
        status, body = c.imds(uri, headers)
        if status != 200:
            reason = body.get("error_description") or body.get("error") or "error"
            c.fail(f"Invoke-RestMethod : The remote server returned an error: ({status}). {reason}")
            return
        c.variables[var] = body  # holds a token: never printed

    return Step(line, "guest.query", run)


def _install(pkgs: list[str], version: str | None, tool: str) -> Callable[..., None]:
    def run(g: GuestState, c: ScriptContext) -> None:
        need = APP_SIZE_GB * len(pkgs)
        if g.free_disk_gb < need:
            c.fail(f"{tool}: There is not enough space on the disk. ({g.free_disk_gb:.1f} GB free)")
            return
        for p in pkgs:
            g.apps[p] = version or "latest"
        g.free_disk_gb -= need
        if tool == "choco":
            c.out(f"Chocolatey installed {len(pkgs)}/{len(pkgs)} packages.")
        else:
            c.out("Successfully installed")

    return run


def _disable_bitlocker(g: GuestState, c: ScriptContext) -> None:
    g.bitlocker = "FullyDecrypted"
    c.out("MountPoint: C:  VolumeStatus: FullyDecrypted  ProtectionStatus: Off")


def _enable_bitlocker(g: GuestState, c: ScriptContext) -> None:
    g.bitlocker = "FullyEncrypted"
    c.out("MountPoint: C:  VolumeStatus: FullyEncrypted  ProtectionStatus: On")


def _set_reg(key: str, name: str, rtype: str, data: str) -> Callable[..., None]:
    def run(g: GuestState, c: ScriptContext) -> None:
        if not normalize_key(key).upper().startswith(("HKLM", "HKCU")):
            c.fail(f"Cannot find path '{key}' because it does not exist.")
            return
        g.set_registry(key, name, rtype, data)
        c.out("The operation completed successfully.")

    return run


def _get_reg(key: str, name: str) -> Callable[..., None]:
    def run(g: GuestState, c: ScriptContext) -> None:
        entry = g.get_registry(key, name)
        if entry is None:
            c.fail(f"Property {name} does not exist at path {normalize_key(key)}.")
            return
        c.out(f"{entry['name']} : {entry['data']}")

    return run


def _register_agent(token: str) -> Callable[..., None]:
    def run(g: GuestState, c: ScriptContext) -> None:
        g.set_registry(AGENT_KEY, "RegistrationToken", "REG_SZ", token)
        g.set_registry(AGENT_KEY, "IsRegistered", "REG_DWORD", "0")
        c.out("The registration token was written; the agent registers with its host pool.")

    return run


def _msiexec(no: int, line: str, rest: list[str]) -> Step:
    """``msiexec /i <path>RDAgent<...>.msi /quiet [REGISTRATIONTOKEN=<t>]`` (the AVD agent or
    its boot loader); other packages are not modelled."""
    package = _unquote(_opt(rest, "/i", "/package") or "")
    file_name = re.split(r"[\\/]", package)[-1]
    if "rdagent" not in file_name.lower() or not file_name.lower().endswith(".msi"):
        raise ScriptError(no, line)
    public = {}
    for arg in rest:
        key, sep, value = arg.partition("=")
        if sep and not key.startswith("/"):
            public[key.upper()] = _unquote(value)
    quiet = _has(rest, "/quiet", "/qn", "/q")
    boot_loader = "bootloader" in file_name.lower()
    version = re.search(r"(\d+(?:\.\d+){2,3})", file_name)
    token = public.get("REGISTRATIONTOKEN", "")

    def run(g: GuestState, c: ScriptContext) -> None:
        if not quiet:
            c.fail(
                "msiexec: without /quiet (or /qn) the installer waits for its user interface, "
                "which a run command never shows."
            )
            return
        if g.os_type != "Windows":
            c.fail("msiexec: not a Windows guest")
            return
        if g.free_disk_gb < APP_SIZE_GB:
            c.fail(f"msiexec: There is not enough space on the disk ({g.free_disk_gb:.1f} GB).")
            return
        g.apps[BOOT_LOADER_APP if boot_loader else AGENT_APP] = (
            version.group(1) if version else "latest"
        )
        g.free_disk_gb -= APP_SIZE_GB
        if token and not boot_loader:
            _register_agent(token)(g, c)
        c.out(f"{file_name}: Installation completed successfully.")

    return Step(line, "guest.msi_install", run)


def _windows_update(auto_reboot: bool) -> Callable[..., None]:
    def run(g: GuestState, c: ScriptContext) -> None:
        if g.free_disk_gb < UPDATE_SIZE_GB:
            c.fail("Install-WindowsUpdate: There is not enough space on the disk.")
            return
        g.windows_update_level = c.now().strftime("%Y-%m")
        g.free_disk_gb -= UPDATE_SIZE_GB
        g.pending_reboot = True
        c.out(f"Installed updates up to {g.windows_update_level}; a reboot is required.")
        if auto_reboot:
            c.power_request = "restart"

    return run


def _request_power(kind: str) -> Callable[..., None]:
    def run(g: GuestState, c: ScriptContext) -> None:
        c.power_request = kind

    return run


# Query output: one ``key=value`` per line (the health-check contract, docs/catalogue.md).


def _show_bitlocker(g: GuestState, c: ScriptContext) -> None:
    c.out(f"BitLockerProtectionStatus={'On' if g.bitlocker_on else 'Off'}")
    c.out(f"BitLockerVolumeStatus={g.bitlocker}")


def _show_disk(g: GuestState, c: ScriptContext) -> None:
    c.out(f"FreeSpaceGB={g.free_disk_gb:.1f}")
    c.out(f"UsedSpaceGB={g.disk_size_gb - g.free_disk_gb:.1f}")


def _show_apps(g: GuestState, c: ScriptContext) -> None:
    for name, version in sorted(g.apps.items()):
        c.out(f"App.{name}={version}")


def _sysprep(mode: str) -> Callable[..., None]:
    def run(g: GuestState, c: ScriptContext) -> None:
        if g.os_type != "Windows":
            c.fail("sysprep: not a Windows guest")
            return
        if g.bitlocker_on:
            c.fail(SYSPREP_FAILURE)
            return
        if g.pending_reboot:
            c.fail(SYSPREP_PENDING_REBOOT)
            return
        g.sysprepped = True
        c.out("Sysprep succeeded: IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE.")
        if mode == "shutdown":
            c.power_request = "stop"
        elif mode == "reboot":
            c.power_request = "restart"

    return run


def _post(uri: str, ctype: str, body: str, headers: dict[str, str]) -> Callable[..., None]:
    def run(g: GuestState, c: ScriptContext) -> None:
        from emulator.events import is_loopback_url

        if not is_loopback_url(uri):
            c.fail(
                f"Invoke-RestMethod : Unable to connect to the remote server ({uri}): the "
                "emulated guest can reach loopback URLs only."
            )
            return
        if "json" in ctype.lower() and body:
            try:
                json.loads(body)
            except ValueError:
                c.fail("Invoke-RestMethod : the -Body is not valid JSON.")
                return
        expanded = {k: _expand(v, c.variables) for k, v in headers.items()}
        c.http_posts.append((uri, ctype, body, expanded))

    return run
