"""Start-then-check: a ``begin_*`` sends its request and nothing polls the operation."""

from __future__ import annotations

import time

from shared.azure import compute, gallery
from shared.azure.models import MarketplaceSource, VmSpec
from shared.settings import Settings
from tests.emulator.conftest import EmulatorEnv

RG = "rg-image-factory"


def _spec(sub: str) -> VmSpec:
    return VmSpec(
        resource_group=RG,
        name="vm-nopoll",
        location="westeurope",
        size="Standard_D4s_v5",
        computer_name="nopoll",
        nic_name="nic-nopoll",
        subnet_id=f"/subscriptions/{sub}/resourceGroups/rg-net/providers/Microsoft.Network/"
        "virtualNetworks/vnet/subnets/build",
        os_disk_name="osdisk-nopoll",
        source=MarketplaceSource(
            "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd", "26200.7462.251205"
        ),
        tags={"imagefactory:build-id": "nopoll"},
        admin_password="Secret-Pa55word!",
    )


def test_begin_calls_never_poll_the_operation(
    emulator_env: EmulatorEnv, app_settings: Settings
) -> None:
    # Slow the create down so a poller, if one ran, would have seconds of polling to do.
    emulator_env.emu.clock.pause()
    try:
        vm_id = compute.begin_create_vm(app_settings, _spec(emulator_env.subscription))
        compute.begin_delete_resource(app_settings, vm_id)
        gallery.begin_create_gallery(app_settings, "rg-gallery", "galNoPoll", "westeurope", {})
        time.sleep(0.3)  # a poller thread would have sent requests by now
        _, metrics = emulator_env.admin("GET", "metrics")
    finally:
        emulator_env.emu.clock.resume()
    requests = metrics["requests"]
    assert requests.get("Microsoft.Compute/virtualMachines/write") == 1
    assert requests.get("Microsoft.Compute/virtualMachines/delete") == 1
    assert requests.get("Microsoft.Compute/galleries/write") == 1
    polled = {op: n for op, n in requests.items() if "operation" in op.lower()}
    assert polled == {}
    # Nothing else was read either: each begin_* is exactly one request.
    assert sum(requests.values()) == 3


def test_vm_password_is_not_in_the_spec_repr() -> None:
    spec = _spec("00000000-0000-0000-0000-000000000001")
    assert "Secret-Pa55word!" not in repr(spec)
