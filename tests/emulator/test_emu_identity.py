"""Managed identities in the emulator: the VM's identity block, IMDS tokens, the topic's 401.

As Azure does: a VM created with a user-assigned identity returns it with its ``principalId``
and ``clientId``; only a script running inside that VM gets a token for it from IMDS; the
custom Event Grid topic refuses a publish without a valid token (401, nothing delivered) and
delivers one made with such a token to its subscribers.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from emulator.identity import issue_token, principal_and_client_id
from tests.emulator.conftest import SUB, vm_body

IDENTITY = (
    f"/subscriptions/{SUB}/resourceGroups/rg-factory"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-build-vm"
)
TOPIC_PATH = "/_emulator/eventgrid/topics/factory/api/events"
IMDS_URL = (
    "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01"
    f"&resource=https://eventgrid.azure.net&msi_res_id={IDENTITY}"
)


def _event(vm_id: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "sysprep-b1",
            "eventType": "ImageFactory.SysprepFinished",
            "subject": "builds/b1",
            "eventTime": "2026-01-05T06:00:00Z",
            "dataVersion": "1",
            "data": {"build_id": "b1", "vm_id": vm_id},
        }
    ]


def _create(env: Any, name: str, identity: dict[str, Any] | None) -> Any:
    body = vm_body(trusted_launch=False)
    if identity is not None:
        body["identity"] = identity
    return env.compute_client().virtual_machines.begin_create_or_update("rg", name, body).result()


def _signal_script(env: Any, vm_id: str) -> list[str]:
    body = json.dumps(_event(vm_id), separators=(",", ":"))
    return [
        "try {",
        f"$imds = Invoke-RestMethod -Method Get -Uri '{IMDS_URL}' -Headers @{{Metadata='true'}}",
        f"Invoke-RestMethod -Method Post -Uri '{env.url}{TOPIC_PATH}' -ContentType "
        f"'application/json' -Headers @{{Authorization=\"Bearer $($imds.access_token)\"}} "
        f"-Body '{body}'",
        "} catch {",
        "Write-Output 'not sent'",
        "}",
        "Write-Output 'after'",
    ]


def test_a_vm_with_a_user_assigned_identity_returns_its_ids(emulator_env: Any) -> None:
    vm = _create(
        emulator_env, "uai", {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}}}
    )
    assert vm.identity.type == "UserAssigned"
    held = vm.identity.user_assigned_identities[IDENTITY]
    assert (held.principal_id, held.client_id) == principal_and_client_id(IDENTITY)
    again = emulator_env.compute_client().virtual_machines.get("rg", "uai")
    assert again.identity.user_assigned_identities[IDENTITY].client_id == held.client_id


@pytest.mark.parametrize(
    "identity",
    [
        {"type": "UserAssigned", "userAssignedIdentities": {"not-an-id": {}}},
        {"type": "UserAssigned"},
        {"type": "Sometimes", "userAssignedIdentities": {IDENTITY: {}}},
    ],
)
def test_a_malformed_identity_is_refused(emulator_env: Any, identity: dict[str, Any]) -> None:
    with pytest.raises(HttpResponseError) as caught:
        _create(emulator_env, "bad-uai", identity)
    assert caught.value.status_code == 400
    assert (
        emulator_env.emu.store.get(
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/bad-uai"
        )
        is None
    )


def test_the_guest_of_a_vm_with_the_identity_publishes_with_an_imds_token(
    emulator_env: Any,
) -> None:
    vm = _create(
        emulator_env, "signer", {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}}}
    )
    out, err = emulator_env.run_script("signer", _signal_script(emulator_env, vm.id))
    assert err == ""
    assert "not sent" not in out
    assert "after" in out
    published = emulator_env.emu.events.events("ImageFactory.SysprepFinished")
    assert [e.data["vm_id"] for e in published] == [vm.id]
    assert "Bearer" not in out  # the token is never printed


def test_a_vm_without_the_identity_gets_no_token_and_publishes_nothing(emulator_env: Any) -> None:
    vm = _create(emulator_env, "no-identity", None)
    out, err = emulator_env.run_script("no-identity", _signal_script(emulator_env, vm.id))
    assert "not sent" in out  # IMDS said "Identity not found": the catch block ran
    assert "after" in out  # and the script went on
    assert err == ""
    assert emulator_env.emu.events.events("ImageFactory.SysprepFinished") == []


def test_imds_needs_the_metadata_header(emulator_env: Any) -> None:
    _create(emulator_env, "hdr", {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}}})
    _, err = emulator_env.run_script(
        "hdr", [f"$imds = Invoke-RestMethod -Method Get -Uri '{IMDS_URL}'"]
    )
    assert "(400)" in err
    assert "Required metadata header not specified" in err


def test_the_topic_refuses_a_publish_without_a_valid_token(emulator_env: Any) -> None:
    vm_id = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"
    forged: list[dict[str, str] | None] = [
        None,  # no Authorization header at all
        {"Authorization": "Bearer forged"},
        {"Authorization": "Bearer a.b.c"},
        {"aeg-sas-key": "some-key"},  # keys are off: local authentication is disabled
    ]
    for headers in forged:
        status, _, body = emulator_env.http(
            "POST", TOPIC_PATH, _event(vm_id), headers=headers, auth=False
        )
        assert status == 401, (headers, body)
        assert body["error"]["code"] == "Unauthorized"
    # A token for another audience (ARM) is refused as well.
    arm = issue_token(emulator_env.emu, IDENTITY, "https://management.azure.com/")
    status, _, _ = emulator_env.http(
        "POST",
        TOPIC_PATH,
        _event(vm_id),
        headers={"Authorization": f"Bearer {arm['access_token']}"},
        auth=False,
    )
    assert status == 401
    assert emulator_env.emu.events.events("ImageFactory.SysprepFinished") == []


def test_the_topic_accepts_a_valid_token_until_it_expires(emulator_env: Any) -> None:
    vm_id = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"
    token = issue_token(emulator_env.emu, IDENTITY, "https://eventgrid.azure.net")["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    status, _, _ = emulator_env.http("POST", TOPIC_PATH, _event(vm_id), headers=headers, auth=False)
    assert status == 200
    assert len(emulator_env.emu.events.events("ImageFactory.SysprepFinished")) == 1
    emulator_env.clock.advance(timedelta(hours=25))
    status, _, _ = emulator_env.http("POST", TOPIC_PATH, _event(vm_id), headers=headers, auth=False)
    assert status == 401
