"""Least privilege, derived from the code: which Azure operations each SDK call needs.

The gateway layer (``shared/azure/``) is the only code that calls Azure. Every SDK call it makes
(``client.<operation group>.<method>(...)``) and every raw ARM request it sends is listed here
with the Azure RBAC actions it needs. ``role_actions()`` is the union of those actions: it is the
app's custom role (``infra/roles/app-role.json``, written by
``python -m shared.azure.permissions``).
``tests/infra/test_least_privilege.py`` reads the gateway source and fails when code calls an
operation this table lacks, when the table lists a call nothing makes, or when the role file
drifts from the table. So the role grants exactly what the code calls, nothing more.

Actions that an operation needs *besides* its own write (Azure checks them on the resources it
touches on the caller's behalf: a VM create joins a subnet, writes its NIC and disk, reads the
gallery version it boots from and assigns the build identity) are listed with that call.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

# The marketplace watch lists image versions at subscription scope: this is the one action the
# app needs outside the resource groups the catalogue names (a role of its own, assigned there).
MARKETPLACE_READ: Final = (
    "Microsoft.Compute/locations/publishers/artifacttypes/offers/skus/versions/read"
)

_VM_CREATE_NEEDS: Final = (
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Compute/disks/write",
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/galleries/images/versions/read",
    "Microsoft.Network/networkInterfaces/write",
    "Microsoft.Network/networkInterfaces/read",
    "Microsoft.Network/networkInterfaces/join/action",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
)

# (operation group, method) of the SDK clients -> the RBAC actions that call needs.
SDK_OPERATIONS: Final[Mapping[tuple[str, str], tuple[str, ...]]] = {
    # Compute: virtual machines
    ("virtual_machines", "begin_create_or_update"): _VM_CREATE_NEEDS,
    ("virtual_machines", "get"): ("Microsoft.Compute/virtualMachines/read",),
    ("virtual_machines", "list"): ("Microsoft.Compute/virtualMachines/read",),
    ("virtual_machines", "begin_deallocate"): (
        "Microsoft.Compute/virtualMachines/deallocate/action",
    ),
    ("virtual_machines", "generalize"): ("Microsoft.Compute/virtualMachines/generalize/action",),
    ("virtual_machines", "begin_delete"): (
        "Microsoft.Compute/virtualMachines/delete",
        # deleteOption=Delete removes the VM's NIC and OS disk with it, on the caller's rights
        "Microsoft.Network/networkInterfaces/delete",
        "Microsoft.Compute/disks/delete",
    ),
    ("virtual_machine_run_commands", "begin_create_or_update"): (
        "Microsoft.Compute/virtualMachines/runCommands/write",
    ),
    ("virtual_machine_run_commands", "get_by_virtual_machine"): (
        "Microsoft.Compute/virtualMachines/runCommands/read",
    ),
    ("virtual_machine_images", "list"): (MARKETPLACE_READ,),
    # Compute: disks and snapshots
    ("disks", "begin_create_or_update"): (
        "Microsoft.Compute/disks/write",
        "Microsoft.Compute/snapshots/read",
    ),
    ("disks", "get"): ("Microsoft.Compute/disks/read",),
    ("disks", "list_by_resource_group"): ("Microsoft.Compute/disks/read",),
    ("disks", "begin_delete"): ("Microsoft.Compute/disks/delete",),
    ("snapshots", "begin_create_or_update"): (
        "Microsoft.Compute/snapshots/write",
        "Microsoft.Compute/disks/read",
    ),
    ("snapshots", "get"): ("Microsoft.Compute/snapshots/read",),
    ("snapshots", "list_by_resource_group"): ("Microsoft.Compute/snapshots/read",),
    ("snapshots", "begin_delete"): ("Microsoft.Compute/snapshots/delete",),
    # Compute Gallery
    ("galleries", "get"): ("Microsoft.Compute/galleries/read",),
    ("galleries", "begin_create_or_update"): ("Microsoft.Compute/galleries/write",),
    ("gallery_images", "get"): ("Microsoft.Compute/galleries/images/read",),
    ("gallery_images", "begin_create_or_update"): ("Microsoft.Compute/galleries/images/write",),
    ("gallery_images", "begin_update"): ("Microsoft.Compute/galleries/images/write",),
    ("gallery_image_versions", "get"): ("Microsoft.Compute/galleries/images/versions/read",),
    ("gallery_image_versions", "list_by_gallery_image"): (
        "Microsoft.Compute/galleries/images/versions/read",
    ),
    ("gallery_image_versions", "begin_create_or_update"): (
        "Microsoft.Compute/galleries/images/versions/write",
        # the capture reads its source: a generalized VM, a disk or a snapshot
        "Microsoft.Compute/virtualMachines/read",
        "Microsoft.Compute/disks/read",
        "Microsoft.Compute/snapshots/read",
    ),
    ("gallery_image_versions", "begin_update"): (
        "Microsoft.Compute/galleries/images/versions/write",
    ),
    ("gallery_image_versions", "begin_delete"): (
        "Microsoft.Compute/galleries/images/versions/delete",
    ),
    # Azure Virtual Desktop
    ("host_pools", "get"): ("Microsoft.DesktopVirtualization/hostpools/read",),
    # a host pool named without its resource id is looked up in the subscription: this list
    # sees only the resource groups the role is assigned at (give host pools by id to avoid it)
    ("host_pools", "list"): ("Microsoft.DesktopVirtualization/hostpools/read",),
    ("host_pools", "update"): ("Microsoft.DesktopVirtualization/hostpools/write",),
    ("host_pools", "retrieve_registration_token"): (
        "Microsoft.DesktopVirtualization/hostpools/retrieveRegistrationToken/action",
    ),
    ("session_hosts", "list"): ("Microsoft.DesktopVirtualization/hostpools/sessionhosts/read",),
    ("session_hosts", "update"): ("Microsoft.DesktopVirtualization/hostpools/sessionhosts/write",),
    ("session_hosts", "delete"): ("Microsoft.DesktopVirtualization/hostpools/sessionhosts/delete",),
}

# Raw ARM requests the gateways send through a client's pipeline (``send_request``, no SDK
# operation group): the function that sends them -> the actions its requests need.
RAW_REQUESTS: Final[Mapping[str, tuple[str, ...]]] = {
    "arm_nic_request": (  # GET or DELETE of a NIC the VM created
        "Microsoft.Network/networkInterfaces/read",
        "Microsoft.Network/networkInterfaces/delete",
    ),
    # the status URL (Azure-AsyncOperation) of a create the app started, to quote its error
    "operation_error": ("Microsoft.Compute/locations/operations/read",),
    # ring gates: failed connections from the host pools' Log Analytics workspace (an ARM
    # query; infra/ gives the app Log Analytics Reader on the workspace it creates)
    "connection_counts": ("Microsoft.OperationalInsights/workspaces/query/read",),
}

# SDK operation groups of azure-mgmt-compute and azure-mgmt-desktopvirtualization: a call on one
# of these attribute names is an Azure call the scan must find in SDK_OPERATIONS.
SDK_GROUPS: Final = frozenset(
    {
        "virtual_machines",
        "virtual_machine_run_commands",
        "virtual_machine_images",
        "virtual_machine_extensions",
        "virtual_machine_scale_sets",
        "disks",
        "snapshots",
        "images",
        "galleries",
        "gallery_images",
        "gallery_image_versions",
        "resource_skus",
        "usage",
        "host_pools",
        "session_hosts",
        "user_sessions",
        "application_groups",
        "workspaces",
        "scaling_plans",
        "operations",
    }
)


def _union(groups: Iterable[tuple[str, ...]]) -> set[str]:
    return {action for actions in groups for action in actions}


def role_actions() -> list[str]:
    """The app role's actions: every action any listed call needs, minus the subscription read."""
    actions = _union(SDK_OPERATIONS.values()) | _union(RAW_REQUESTS.values())
    return sorted(actions - {MARKETPLACE_READ})


def role_document() -> dict[str, object]:
    """The custom role as ``infra/roles/app-role.json`` holds it (Bicep loads this file)."""
    return {
        "roleName": "AVD Image Factory app",
        "description": (
            "Exactly the Azure operations avd-image-factory's code calls "
            "(generated from shared/azure/permissions.py; do not edit by hand)."
        ),
        "actions": role_actions(),
        "notActions": [],
        "marketplaceRead": [MARKETPLACE_READ],
    }


def render() -> str:
    return json.dumps(role_document(), indent=2) + "\n"


# Resource groups infra/main.bicep creates itself (its parameters' defaults); every other group
# the catalogue names must exist already and gets the app role through catalogue-scopes.json.
CREATED_GROUPS: Final = frozenset({"rg-image-factory", "rg-avd-images"})
_RG_IN_ID: Final = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)(/|$)", re.IGNORECASE)


def _strings_and_groups(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings_and_groups(v, str(k))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings_and_groups(item, key)
    elif isinstance(value, str):
        yield key, value


def catalogue_scopes(catalogue: Any) -> dict[str, Any]:
    """Every resource group the catalogue names (fields ``resource_group`` and ARM ids), split
    into those in the deployment's own subscription (``existingResourceGroups``, minus the ones
    main.bicep creates) and those in other subscriptions (``otherSubscriptions``: the README says
    how to grant the role there)."""
    own: set[str] = set()
    other: dict[str, set[str]] = {}
    for key, text in _strings_and_groups(catalogue):
        found = _RG_IN_ID.match(text)
        if found:
            subscription, group = found.group(1).lower(), found.group(2)
            if subscription.strip("0-") in {"", "1"}:  # the catalogue's placeholder subscription
                own.add(group)
            else:
                other.setdefault(subscription, set()).add(group)
        elif key == "resource_group":
            own.add(text)
    return {
        "existingResourceGroups": sorted(own - CREATED_GROUPS),
        "otherSubscriptions": {sub: sorted(groups) for sub, groups in sorted(other.items())},
    }


def _check_or_write(target: Path, text: str, check: bool) -> int:
    if check:
        if (target.read_text() if target.exists() else "") != text:
            print(f"{target} is out of date: run python -m shared.azure.permissions")
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target}")
    return 0


def main(argv: list[str]) -> int:
    """``python -m shared.azure.permissions [--check]``: write (or check) the role file and the
    catalogue's resource groups (``infra/catalogue-scopes.json``) that main.bicep loads."""
    from shared.domain.catalogue import load_catalogue

    infra = Path(__file__).resolve().parents[2] / "infra"
    catalogue = load_catalogue(infra.parent / "catalogue" / "images.yaml")
    scopes = json.dumps(catalogue_scopes(catalogue.model_dump(mode="json")), indent=2) + "\n"
    check = "--check" in argv
    results = [
        _check_or_write(infra / "roles" / "app-role.json", render(), check),
        _check_or_write(infra / "catalogue-scopes.json", scopes, check),
    ]
    return max(results)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
