"""Shared fixtures for the emulator's tests: an in-process emulator on a free port.

``emulator_env`` starts the emulator over HTTPS with a :class:`VirtualClock` and the small test
scenario below, and yields an :class:`EmulatorEnv` with ``.url``, ``.ca_path``, ``.emu``,
``.clock`` and factories for the REAL SDK clients (``compute_client()``, ``avd_client()``)
configured for fast polling. ``emulator_factory(scenario, **options)`` starts more (or
differently seeded) emulators; everything started is stopped at the end of the test.
"""

from __future__ import annotations

import copy
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

import emulator
from devhost.clock import VirtualClock
from emulator.core import Emulator, EmulatorOptions
from emulator.scenario import Scenario, load_scenario

SUB = "00000000-0000-0000-0000-000000000001"
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO.parent / "shared" / "azure-rest-examples"

# A small world: one subscription, two regions, a Windows 11 25H2 and a Windows Server image.
SMALL_SCENARIO: dict[str, Any] = {
    "name": "emulator-tests",
    "seed": 7,
    "start_time": "2026-01-05T06:00:00Z",
    "subscriptions": [{"id": SUB}],
    "regions": ["westeurope", "northeurope"],
    "page_size": 3,
    "marketplace": [
        {
            "publisher": "MicrosoftWindowsDesktop",
            "offer": "windows-11",
            "sku": "win11-25h2-avd",
            "versions": ["26200.7171.251105", "26200.7462.251205"],
            "guest": {"apps": [], "free_disk_gb": 90},
        },
        {
            "publisher": "MicrosoftWindowsDesktop",
            "offer": "office-365",
            "sku": "win11-24h2-avd-m365",
            "versions": ["26100.6899.251015"],
        },
        {
            "publisher": "MicrosoftWindowsServer",
            "offer": "WindowsServer",
            "sku": "2022-datacenter-g2",
            "versions": ["20348.4405.251105"],
        },
    ],
}


class StaticCredential:
    """Any credential whose get_token() returns an AccessToken works with the emulator."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("emulator-test-token", int(time.time()) + 3600)

    def close(self) -> None:
        return None


FAST_CLIENT = {
    "polling_interval": 0.01,
    "retry_backoff_factor": 0.01,
    "retry_backoff_max": 0.05,
}


@dataclass
class EmulatorEnv:
    running: emulator.RunningEmulator
    clock: VirtualClock
    subscription: str = SUB
    _clients: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def ca_path(self) -> Path:
        return self.running.ca_path

    @property
    def emu(self) -> Emulator:
        return self.running.emu

    def client_kwargs(self, **overrides: Any) -> dict[str, Any]:
        return {
            "base_url": self.url,
            "connection_verify": str(self.ca_path),
            "credential_scopes": ["https://management.azure.com/.default"],
            **FAST_CLIENT,
            **overrides,
        }

    def compute_client(self, subscription: str | None = None, **kw: Any) -> Any:
        from azure.mgmt.compute import ComputeManagementClient

        c = ComputeManagementClient(
            StaticCredential(), subscription or self.subscription, **self.client_kwargs(**kw)
        )
        self._clients.append(c)
        return c

    def avd_client(self, subscription: str | None = None, **kw: Any) -> Any:
        from azure.mgmt.desktopvirtualization import DesktopVirtualizationMgmtClient

        c = DesktopVirtualizationMgmtClient(
            StaticCredential(), subscription or self.subscription, **self.client_kwargs(**kw)
        )
        self._clients.append(c)
        return c

    def create_vm(
        self,
        name: str,
        *,
        rg: str = "rg",
        location: str = "westeurope",
        image: dict[str, Any] | None = None,
        trusted_launch: bool = True,
        tags: dict[str, str] | None = None,
        client: Any = None,
    ) -> Any:
        """Create a VM through the real SDK (NIC from a network interface configuration)."""
        c = client or self.compute_client()
        body = vm_body(location, image=image, trusted_launch=trusted_launch, tags=tags)
        return c.virtual_machines.begin_create_or_update(rg, name, body).result()

    def run_script(
        self, vm: str, lines: list[str], *, rg: str = "rg", client: Any = None
    ) -> tuple[str, str]:
        """The runCommand action; returns (stdout, stderr)."""
        c = client or self.compute_client()
        result = c.virtual_machines.begin_run_command(
            rg, vm, {"commandId": "RunPowerShellScript", "script": lines}
        ).result()
        by_code = {v.code: v.message or "" for v in result.value}
        return (
            by_code.get("ComponentStatus/StdOut/succeeded", ""),
            by_code.get("ComponentStatus/StdErr/succeeded", ""),
        )

    def load(self, scenario: Scenario | dict[str, Any] | str | Path) -> Scenario:
        return self.emu.load_scenario(scenario)

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        auth: bool = True,
    ) -> tuple[int, dict[str, str], Any]:
        """A raw HTTPS call; returns (status, headers (lower-cased), parsed JSON or None)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"}
        if auth:
            h["Authorization"] = "Bearer test"
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=30) as resp:
                status, hdrs, payload = resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            status, hdrs, payload = e.code, dict(e.headers.items()), e.read()
        parsed = json.loads(payload) if payload else None
        return status, {k.lower(): v for k, v in hdrs.items()}, parsed

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, parsed = self.http(method, "/_emulator/" + path.lstrip("/"), body, auth=False)
        return status, parsed

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait (real time) until the emulator has nothing in flight and nothing due now:
        no request or event delivery busy, no scheduled work at or before the clock's now."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            due = self.emu.next_due()
            if (
                self.emu.events.pending() == 0
                and self.emu.participant.busy_count == 0
                and (due is None or due > self.clock.now())
            ):
                return
            time.sleep(0.005)
        raise AssertionError("the emulator did not become idle")

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self.running.stop()


EmulatorFactory = Callable[..., EmulatorEnv]

WIN11_25H2 = {
    "publisher": "MicrosoftWindowsDesktop",
    "offer": "windows-11",
    "sku": "win11-25h2-avd",
    "version": "latest",
}
SYSPREP = r"C:\Windows\System32\Sysprep\sysprep.exe /generalize /oobe /shutdown /quiet /mode:vm"


def vm_body(
    location: str = "westeurope",
    *,
    image: dict[str, Any] | None = None,
    trusted_launch: bool = True,
    tags: dict[str, str] | None = None,
    nic_delete: str = "Delete",
    disk_delete: str = "Delete",
) -> dict[str, Any]:
    """A VM create body as an image pipeline would send it."""
    return {
        "location": location,
        "tags": tags or {},
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D4s_v5"},
            "storageProfile": {
                "imageReference": image or WIN11_25H2,
                "osDisk": {"createOption": "FromImage", "deleteOption": disk_delete},
            },
            "osProfile": {
                "computerName": "build",
                "adminUsername": "builder",
                "adminPassword": "Not-a-real-secret-1",
            },
            "securityProfile": {"securityType": "TrustedLaunch" if trusted_launch else "Standard"},
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": "nic",
                        "properties": {
                            "primary": True,
                            "deleteOption": nic_delete,
                            "ipConfigurations": [{"name": "ipconfig1", "properties": {}}],
                        },
                    }
                ],
            },
        },
    }


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[EmulatorFactory]:
    started: list[EmulatorEnv] = []

    def make(
        scenario: Scenario | dict[str, Any] | str | Path | None = None,
        *,
        modules: list[str] | None = None,
        **options: Any,
    ) -> EmulatorEnv:
        sc = load_scenario(scenario if scenario is not None else SMALL_SCENARIO)
        clock = VirtualClock(sc.start_time)
        running = emulator.start(
            sc,
            clock=clock,
            ca_dir=tmp_path / f"ca{len(started)}",
            options=EmulatorOptions(**options),
            modules=modules,
        )
        env = EmulatorEnv(running, clock, subscription=sc.default_subscription)
        started.append(env)
        return env

    yield make
    for env in started:
        env.close()
        env.clock.close()


@pytest.fixture
def emulator_env(emulator_factory: EmulatorFactory) -> EmulatorEnv:
    """An emulator with the small test scenario, a virtual clock and fast SDK polling."""
    return emulator_factory()


@pytest.fixture
def examples_dir() -> Path:
    if not EXAMPLES.is_dir():
        pytest.skip(f"Azure REST examples not found at {EXAMPLES} (../shared/azure-rest-examples)")
    return EXAMPLES


@pytest.fixture
def make_vm_body() -> Callable[..., dict[str, Any]]:
    """The ``vm_body(location, image=..., trusted_launch=..., tags=..., ...)`` builder."""
    return vm_body


@pytest.fixture
def sysprep_line() -> str:
    return SYSPREP


@pytest.fixture
def small_scenario() -> dict[str, Any]:
    """A fresh copy of the small test scenario (to tweak before starting an emulator)."""
    return copy.deepcopy(SMALL_SCENARIO)
