"""The operation-status reader sends the app's token only to the ARM endpoint it talks to."""

from __future__ import annotations

from shared.azure import compute
from shared.settings import Settings


def _settings(endpoint: str | None) -> Settings:
    return Settings(
        subscription_id="00000000-0000-0000-0000-000000000001",
        allowed_subscriptions=("00000000-0000-0000-0000-000000000001",),
        factory_resource_group="rg",
        factory_location="westeurope",
        catalogue_path="catalogue/images.yaml",
        arm_endpoint=endpoint,
    )


def test_an_operation_url_on_another_host_is_never_read() -> None:
    # Returning before any request is the point: no client, no token, no network here.
    foreign = "https://attacker.example/subscriptions/x/providers/p/locations/l/operations/1"
    assert compute.operation_error(_settings(None), foreign) is None
    assert compute.operation_error(_settings("https://127.0.0.1:8443"), foreign) is None
    assert compute.operation_error(_settings(None), None) is None


def test_the_configured_endpoint_and_public_arm_are_recognised() -> None:
    assert compute._same_endpoint(_settings(None), "https://management.azure.com/x/operations/1")
    assert compute._same_endpoint(
        _settings("https://127.0.0.1:8443"), "https://127.0.0.1:8443/x/operations/1"
    )
    assert not compute._same_endpoint(_settings(None), "http://management.azure.com/x")
