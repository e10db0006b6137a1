"""Tag keys and limits, and ARM resource ids parsed without an SDK."""

from __future__ import annotations

import pytest

from shared.domain import resources
from shared.domain.resources import (
    ResourceId,
    check_tags,
    parse_resource_id,
    subscription_of,
    tag_problems,
    tag_value,
)
from shared.errors import InputError

VM_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-x/providers/"
    "Microsoft.Compute/virtualMachines/vm-1"
)


def test_every_tag_key_has_the_prefix_and_is_a_valid_tag_name() -> None:
    keys = [
        v
        for k, v in vars(resources).items()
        if k.startswith("TAG_") and isinstance(v, str) and k != "TAG_PREFIX"
    ]
    assert len(keys) >= 15
    for key in keys:
        assert key.startswith(resources.TAG_PREFIX)
        assert not tag_problems({key: "x"})
    assert resources.TAG_STATE == "imagefactory:state"
    assert resources.TAG_BUILD_ID == "imagefactory:build-id"
    assert resources.TAG_BASE_IMAGE_VERSION == "imagefactory:base-image-version"
    assert resources.TAG_CATALOGUE_HASH == "imagefactory:catalogue-hash"
    assert resources.TAG_OWNER == "imagefactory:owner"


def test_tag_value_matches_keys_case_insensitively() -> None:
    assert tag_value({"ImageFactory:Build-Id": "b1"}, resources.TAG_BUILD_ID) == "b1"
    assert tag_value({}, resources.TAG_BUILD_ID) is None
    assert tag_value(None, resources.TAG_BUILD_ID) is None


def test_tag_rules() -> None:
    assert tag_problems({"ok": "x" * 256}) == []
    problems = tag_problems({"a/b": "x", "long": "x" * 257, "": "y"})
    reasons = {p.path: p.reason for p in problems}
    assert "may not contain /" in reasons["tags.a/b"]
    assert "256" in reasons["tags.long"]
    assert "1-512" in reasons["tags."]
    assert tag_problems({f"k{i}": "v" for i in range(51)})[0].reason.startswith("51 tags")
    same = tag_problems({"Owner": "a", "owner": "b"})
    assert same[0].path == "tags.owner"
    assert "same name" in same[0].reason
    with pytest.raises(InputError) as info:
        check_tags({"x?": "1"}, path="naming.tags")
    assert info.value.errors[0].path == "naming.tags.x?"


def test_parse_resource_id() -> None:
    parsed = parse_resource_id(VM_ID)
    assert parsed is not None
    assert parsed.subscription_id == "00000000-0000-0000-0000-000000000001"
    assert parsed.resource_group == "rg-x"
    assert parsed.type == "Microsoft.Compute/virtualMachines"
    assert parsed.is_type("microsoft.compute/VIRTUALMACHINES")
    assert parsed.name == "vm-1"
    assert str(parsed) == VM_ID


def test_parse_nested_resource_id() -> None:
    version = (
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/i"
        "/versions/1.2.3"
    )
    parsed = parse_resource_id(version)
    assert parsed is not None
    assert parsed.type == resources.GALLERY_VERSION_TYPE
    assert parsed.names == ("g", "i", "1.2.3")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "vm-1",
        "/subscriptions/s",
        "/subscriptions/s/resourceGroups/rg",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute//x",
    ],
)
def test_not_resource_ids(text: str) -> None:
    assert parse_resource_id(text) is None
    with pytest.raises(InputError) as caught:
        ResourceId.parse(text, "vm_id")
    assert caught.value.errors[0].path == "vm_id"


def test_parse_checks_the_expected_type() -> None:
    assert ResourceId.parse(VM_ID, "vm_id", resources.VM_TYPE) == parse_resource_id(VM_ID)
    with pytest.raises(InputError) as caught:
        ResourceId.parse(VM_ID, "os_disk_id", resources.DISK_TYPE)
    assert caught.value.errors[0].path == "os_disk_id"
    assert "expected a Microsoft.Compute/disks id" in caught.value.errors[0].reason


def test_subscription_of_scopes_and_ids() -> None:
    assert subscription_of("/subscriptions/abc") == "abc"
    assert subscription_of(VM_ID) == "00000000-0000-0000-0000-000000000001"
    assert subscription_of("/emulator") is None
    assert subscription_of(None) is None
    assert subscription_of("") is None
