"""The image catalogue: schema, every bad field by its dotted path, hashing, lookups."""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.domain.catalogue import (
    Catalogue,
    CatalogueImage,
    catalogue_hash,
    load_catalogue,
    parse_catalogue,
)
from shared.errors import InputError, NotFoundError

BUNDLED = Path(__file__).resolve().parents[2] / "catalogue" / "images.yaml"
SUB = "00000000-0000-0000-0000-000000000001"
SUBNET = (
    f"/subscriptions/{SUB}/resourceGroups/rg-f/providers/Microsoft.Network/virtualNetworks/v"
    "/subnets/s"
)
VM = f"/subscriptions/{SUB}/resourceGroups/rg-f/providers/Microsoft.Compute/virtualMachines/src"


def image(name: str = "win11-office", **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "os": "Win11",
        "workload": "Office",
        "owner": "avd@contoso.com",
        "description": "test image",
        "source": {
            "marketplace": {
                "publisher": "MicrosoftWindowsDesktop",
                "offer": "windows-11",
                "sku": "win11-25h2-avd",
            }
        },
        "gallery": {
            "resource_group": "rg-images",
            "gallery_name": "gal_images",
            "image_definition": name,
            "publisher": "Contoso",
            "offer": "avd",
            "sku": name,
        },
        "build": {
            "vm_size": "Standard_D4s_v5",
            "subnet_id": SUBNET,
            "location": "westeurope",
            "resource_group": "rg-f",
        },
        "target_regions": [{"name": "westeurope"}],
    }
    for path, value in overrides.items():
        target = raw
        *parents, last = path.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        if value is _DELETE:
            target.pop(last, None)
        else:
            target[last] = value
    return raw


_DELETE = object()


def errors_of(raw: Any) -> list[tuple[str, str]]:
    with pytest.raises(InputError) as info:
        parse_catalogue(raw)
    return [(e.path, e.reason) for e in info.value.errors]


def paths_of(raw: Any) -> list[str]:
    return [p for p, _ in errors_of(raw)]


# -- the bundled example --------------------------------------------------------------------


def test_bundled_catalogue_loads() -> None:
    catalogue = load_catalogue(BUNDLED)
    assert catalogue.names() == ["win11-office", "win11-analyst", "win11-dev"]
    assert [i.source.kind for i in catalogue.images] == [
        "marketplace",
        "gallery_version",
        "snapshot",
    ]
    office = catalogue.get("win11-office")
    assert office.gallery.security_type == "TrustedLaunchSupported"
    assert office.build.capture_mode == "temporary-vm"
    assert office.build.location in [r.name for r in office.target_regions]
    assert [s.name for s in office.rendered_steps()][:3] == [
        "windows-update",
        "restart",
        "install-vcredist140",
    ]


def test_load_accepts_a_path_string_and_yaml_text() -> None:
    from_path = load_catalogue(str(BUNDLED))
    from_text = load_catalogue(BUNDLED.read_text(encoding="utf-8"))
    assert from_path == from_text


# -- the malformed catalogue: every bad field by its dotted path ----------------------------

MALFORMED = textwrap.dedent(
    f"""\
    images:
      - name: good-one
        os: Win11
        workload: Office
        owner: avd@contoso.com
        description: fine
        source: {{marketplace: {{publisher: p, offer: o, sku: s}}}}
        gallery: {{resource_group: rg, gallery_name: gal, image_definition: d1,
                   publisher: p, offer: o, sku: s1}}
        build: {{vm_size: Standard_D4s_v5, subnet_id: "{SUBNET}", location: westeurope,
                 resource_group: rg}}
        target_regions: [{{name: westeurope}}]
      - name: Bad_Name
        os: Win11
        workload: "Office | x"
        owner: a@b.com
        description: x
        colour: blue
        source:
          marketplace: {{publisher: p, offer: o, sku: s, version: newest}}
        gallery: {{resource_group: rg, gallery_name: gal-x, image_definition: d2, publisher: p,
                   offer: o, sku: s2, security_type: TrustedLaunch}}
        build: {{vm_size: Standard_D4s_v5, subnet_id: /nope, location: westeurope,
                 resource_group: rg, timeout_minutes: 5}}
        steps:
          - kind: script
            name: s1
            lines:
              - Write-Output hi
              - choco install git -y
              - "format C:"
              - C:\\Windows\\System32\\Sysprep\\sysprep.exe /generalize /oobe /shutdown /quiet
          - kind: install_app
            package: git
            manager: apt
            version: 1.10
          - kind: registry
            key: HKLM\\Software\\X
            value_name: V
            type: REG_DWORD
            data: abc
          - kind: frobnicate
          - {{name: x}}
        target_regions:
          - {{name: westeurope, replica_count: 101}}
          - {{name: northeurope, storage_account_type: Ultra}}
      - name: good-one
        os: Win11
        workload: Office
        owner: avd@contoso.com
        description: duplicate name and definition
        source: {{marketplace: {{publisher: p, offer: o, sku: s}}}}
        gallery: {{resource_group: rg, gallery_name: gal, image_definition: d1,
                   publisher: p, offer: o, sku: s3}}
        build: {{vm_size: Standard_D4s_v5, subnet_id: "{SUBNET}", location: westeurope,
                 resource_group: rg}}
        target_regions: [{{name: westeurope}}]
    """
)


def test_malformed_catalogue_names_each_bad_field() -> None:
    with pytest.raises(InputError) as info:
        load_catalogue(MALFORMED)
    found = {e.path: e.reason for e in info.value.errors}
    assert sorted(found) == sorted(
        [
            "images[1].name",
            "images[1].workload",
            "images[1].colour",
            "images[1].source.marketplace.version",
            "images[1].gallery.gallery_name",
            "images[1].gallery.security_type",
            "images[1].build.subnet_id",
            "images[1].build.timeout_minutes",
            "images[1].steps[0].lines[2]",
            "images[1].steps[0].lines[3]",
            "images[1].steps[1].manager",
            "images[1].steps[1].version",
            "images[1].steps[2].data",
            "images[1].steps[3].kind",
            "images[1].steps[4].kind",
            "images[1].target_regions[0].replica_count",
            "images[1].target_regions[1].storage_account_type",
            "images[2].name",
            "images[2].gallery.image_definition",
        ]
    )
    assert found["images[1].steps[0].lines[2]"] == "unknown command 'format C:'"
    assert "reserved for the factory" in found["images[1].steps[0].lines[3]"]
    assert found["images[1].colour"] == "unknown field (not part of the catalogue schema)"
    assert found["images[1].gallery.security_type"].startswith("'TrustedLaunch' is refused")
    assert "BitLocker" in found["images[1].gallery.security_type"]
    assert found["images[1].name"].startswith("'Bad_Name': 2-40 lower-case letters")
    assert (
        "not a Microsoft.Network/virtualNetworks/subnets resource id"
        in (found["images[1].build.subnet_id"])
    )
    assert found["images[1].steps[3].kind"].startswith("unknown step kind 'frobnicate'")
    assert found["images[1].steps[4].kind"].startswith("required: one of script, install_app")
    assert "put the value in quotes" in found["images[1].steps[1].version"]
    assert found["images[2].name"] == "duplicate image name 'good-one' (also images[0])"
    assert "one catalogue image per image definition" in found["images[2].gallery.image_definition"]
    # The message lists them all, each with its path.
    assert "images[1].steps[0].lines[2]: unknown command 'format C:'" in str(info.value)


# -- single rules ---------------------------------------------------------------------------


def test_a_valid_minimal_image_takes_the_defaults() -> None:
    catalogue = parse_catalogue({"images": [image()]})
    entry = catalogue.images[0]
    assert entry.source.marketplace is not None
    assert entry.source.marketplace.version == "latest"
    assert entry.gallery.security_type == "TrustedLaunchSupported"
    assert entry.gallery.hyper_v_generation == "V2"
    assert entry.build.capture_mode == "temporary-vm"
    assert entry.build.timeout_minutes == 240
    assert entry.build.sysprep_timeout_minutes == 90
    assert entry.build.min_free_disk_gb == 10
    assert entry.target_regions[0].replica_count == 1
    assert entry.target_regions[0].storage_account_type == "Standard_LRS"
    assert entry.steps == []
    assert entry.host_pools == []
    assert entry.retention is None


def test_source_needs_exactly_one_base() -> None:
    both = image(
        source__snapshot={"session_host_vm_id": VM},
    )
    assert errors_of({"images": [both]}) == [
        (
            "images[0].source",
            "exactly one of marketplace, gallery_version, snapshot is required "
            "(got marketplace, snapshot)",
        )
    ]
    none = image(source={})
    assert paths_of({"images": [none]}) == ["images[0].source"]


def test_gallery_version_source_by_id_or_by_names() -> None:
    version_id = (
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/"
        "i/versions/1.0.0"
    )
    by_id = image(source={"gallery_version": {"id": version_id}})
    by_names = image(
        source={"gallery_version": {"gallery": "g", "image": "i", "version": "latest"}}
    )
    parse_catalogue({"images": [by_id]})
    parse_catalogue({"images": [by_names]})
    partial = image(source={"gallery_version": {"gallery": "g"}})
    assert paths_of({"images": [partial]}) == [
        "images[0].source.gallery_version.image",
        "images[0].source.gallery_version.version",
    ]
    mixed = image(source={"gallery_version": {"id": version_id, "gallery": "g"}})
    assert errors_of({"images": [mixed]}) == [
        ("images[0].source.gallery_version.gallery", "give either id or names, not both")
    ]
    wrong_type = image(source={"gallery_version": {"id": VM}})
    assert paths_of({"images": [wrong_type]}) == ["images[0].source.gallery_version.id"]


def test_snapshot_source_needs_exactly_one_id() -> None:
    both = image(
        source={
            "snapshot": {
                "session_host_vm_id": VM,
                "snapshot_id": VM.replace("virtualMachines", "snapshots"),
            }
        }
    )
    assert errors_of({"images": [both]}) == [
        ("images[0].source.snapshot", "give exactly one of session_host_vm_id and snapshot_id")
    ]


@pytest.mark.parametrize("value", ["TrustedLaunch", "trustedlaunch"])
def test_trusted_launch_build_is_refused_with_the_reason(value: str) -> None:
    errors = errors_of({"images": [image(gallery__security_type=value)]})
    assert errors[0][0] == "images[0].gallery.security_type"
    assert "turns BitLocker on" in errors[0][1]
    assert "TrustedLaunchSupported" in errors[0][1]


def test_other_security_types() -> None:
    for value in ("Standard", "TrustedLaunchSupported", "TrustedLaunchAndConfidentialVmSupported"):
        parse_catalogue({"images": [image(gallery__security_type=value)]})
    assert paths_of({"images": [image(gallery__security_type="ConfidentialVM")]}) == [
        "images[0].gallery.security_type"
    ]


def test_v1_only_with_standard() -> None:
    parse_catalogue(
        {"images": [image(gallery__security_type="Standard", gallery__hyper_v_generation="V1")]}
    )
    errors = errors_of({"images": [image(gallery__hyper_v_generation="V1")]})
    assert errors[0][0] == "images[0].gallery.hyper_v_generation"
    assert "only security_type 'Standard'" in errors[0][1]


def test_source_vm_clone_needs_the_source_vm() -> None:
    errors = errors_of({"images": [image(build__capture_mode="source-vm-clone")]})
    assert errors[0][0] == "images[0].build.source_vm_id"
    assert errors[0][1].startswith("required with capture_mode 'source-vm-clone'")
    clone = image(build__capture_mode="source-vm-clone", build__source_vm_id=VM)
    assert parse_catalogue({"images": [clone]}).images[0].build.source_vm_id == VM
    stray = image(build__source_vm_id=VM)
    assert errors_of({"images": [stray]}) == [
        ("images[0].build.source_vm_id", "only used with capture_mode 'source-vm-clone'")
    ]


@pytest.mark.parametrize(
    ("field", "minutes", "ok"),
    [
        ("timeout_minutes", 29, False),
        ("timeout_minutes", 30, True),
        ("timeout_minutes", 960, True),
        ("timeout_minutes", 961, False),
        ("sysprep_timeout_minutes", 9, False),
        ("sysprep_timeout_minutes", 10, True),
        ("sysprep_timeout_minutes", 480, True),
        ("sysprep_timeout_minutes", 481, False),
    ],
)
def test_timeouts_are_bounded(field: str, minutes: int, ok: bool) -> None:
    raw = {"images": [image(**{f"build__{field}": minutes})]}
    if ok:
        assert getattr(parse_catalogue(raw).images[0].build, field) == minutes
    else:
        assert paths_of(raw) == [f"images[0].build.{field}"]


def test_target_regions_rules() -> None:
    elsewhere = image(target_regions=[{"name": "northeurope"}])
    errors = errors_of({"images": [elsewhere]})
    assert errors == [
        ("images[0].build.location", "'westeurope' must be one of the target regions (northeurope)")
    ]
    twice = image(target_regions=[{"name": "westeurope"}, {"name": "WestEurope"}])
    assert errors_of({"images": [twice]}) == [
        (
            "images[0].target_regions[1].name",
            "'WestEurope': an Azure region name such as 'westeurope'",
        )
    ]
    duplicate = image(target_regions=[{"name": "westeurope"}, {"name": "westeurope"}])
    assert errors_of({"images": [duplicate]}) == [
        (
            "images[0].target_regions[1].name",
            "duplicate region 'westeurope' (also target_regions[0])",
        )
    ]
    assert paths_of({"images": [image(target_regions=[])]}) == ["images[0].target_regions"]
    for count, ok in ((0, False), (1, True), (100, True), (101, False)):
        raw = {"images": [image(target_regions=[{"name": "westeurope", "replica_count": count}])]}
        if ok:
            parse_catalogue(raw)
        else:
            assert paths_of(raw) == ["images[0].target_regions[0].replica_count"]


def test_several_cross_field_problems_are_all_reported() -> None:
    raw = image(
        target_regions=[{"name": "northeurope"}, {"name": "northeurope"}],
        steps=[
            {"kind": "windows_update"},
            {"kind": "restart", "name": "again"},
            {"kind": "restart", "name": "Again"},
            {"kind": "windows_update"},
        ],
    )
    assert paths_of({"images": [raw]}) == [
        "images[0].target_regions[1].name",
        "images[0].build.location",
        "images[0].steps[2].name",
        "images[0].steps[3]",
    ]


def test_windows_update_needs_a_restart_after_it() -> None:
    errors = errors_of({"images": [image(steps=[{"kind": "windows_update"}])]})
    assert errors == [
        (
            "images[0].steps[0]",
            "windows_update leaves a reboot pending and sysprep refuses to run: add a restart "
            "step after it",
        )
    ]
    with_script_restart = image(
        steps=[
            {"kind": "windows_update"},
            {"kind": "script", "name": "reboot", "lines": ["Restart-Computer -Force"]},
        ]
    )
    parse_catalogue({"images": [with_script_restart]})


def test_naming_tags_follow_azure_rules_and_keep_our_prefix() -> None:
    ok = image(naming={"tags": {"cost-center": "4711"}})
    assert parse_catalogue({"images": [ok]}).images[0].naming.tags == {"cost-center": "4711"}
    bad = image(naming={"tags": {"imagefactory:state": "active", "a/b": "x", "azure-x": "y"}})
    assert sorted(paths_of({"images": [bad]})) == [
        "images[0].naming.tags.a/b",
        "images[0].naming.tags.azure-x",
        "images[0].naming.tags.imagefactory:state",
    ]


def test_host_pools_by_name_or_id() -> None:
    pool_id = (
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.DesktopVirtualization/"
        "hostPools/hp-1"
    )
    parse_catalogue({"images": [image(host_pools=["hp-office", pool_id])]})
    assert paths_of({"images": [image(host_pools=["x", VM])]}) == [
        "images[0].host_pools[0]",
        "images[0].host_pools[1]",
    ]


def test_owner_email_or_team() -> None:
    parse_catalogue({"images": [image(owner="platform team")]})
    assert paths_of({"images": [image(owner="a@b")]}) == ["images[0].owner"]


def test_pinned_marketplace_version() -> None:
    pinned = image(source__marketplace__version="26200.7171.251105")
    entry = parse_catalogue({"images": [pinned]}).images[0]
    assert entry.marketplace_base() is not None
    assert not entry.marketplace_base().follows_latest  # type: ignore[union-attr]
    assert paths_of({"images": [image(source__marketplace__version="1.2")]}) == [
        "images[0].source.marketplace.version"
    ]


def test_gallery_identifier_unique_within_a_gallery() -> None:
    first = image("img-a")
    second = image("img-b", gallery__sku="img-a")
    assert errors_of({"images": [first, second]}) == [
        (
            "images[1].gallery",
            "publisher/offer/sku 'contoso/avd/img-a' is already used by images[0] in gallery "
            "'gal_images'",
        )
    ]
    other_gallery = image("img-c", gallery__sku="img-a", gallery__gallery_name="gal_other")
    parse_catalogue({"images": [first, other_gallery]})


def test_top_level_shape() -> None:
    assert errors_of({"images": [image()], "extra": 1}) == [
        ("extra", "unknown field (not part of the catalogue schema)")
    ]
    assert errors_of({"images": []}) == [("images", "required: a non-empty list of images")]
    assert errors_of([image()]) == [("", "the catalogue must be a mapping with an 'images' list")]


def test_an_unquoted_line_ending_in_a_colon_gets_a_clear_reason() -> None:
    text = textwrap.dedent(
        f"""\
        images:
          - name: img-a
            os: Win11
            workload: Office
            owner: a@b.com
            description: x
            source: {{marketplace: {{publisher: p, offer: o, sku: s}}}}
            gallery: {{resource_group: rg, gallery_name: g, image_definition: d, publisher: p,
                       offer: o, sku: s}}
            build: {{vm_size: Standard_D4s_v5, subnet_id: "{SUBNET}", location: westeurope,
                     resource_group: rg}}
            target_regions: [{{name: westeurope}}]
            steps:
              - kind: script
                name: bitlocker
                lines:
                  - Disable-BitLocker -MountPoint C:
                  - "Disable-BitLocker -MountPoint C:"
        """
    )
    with pytest.raises(InputError) as info:
        load_catalogue(text)
    assert [(e.path, e.reason) for e in info.value.errors] == [
        (
            "images[0].steps[0].lines[0]",
            "YAML read this line as a mapping ('Disable-BitLocker -MountPoint C:' has a colon "
            "followed by a space or the end of the line): put the whole line in quotes",
        )
    ]


def test_yaml_problems_are_input_errors() -> None:
    with pytest.raises(InputError, match=r"not valid YAML at line 3, column 1"):
        load_catalogue("images:\n  - name: [unclosed\n")
    with pytest.raises(InputError, match="duplicate key 'name'"):
        load_catalogue("images:\n  - name: a\n    name: b\n")
    with pytest.raises(InputError, match="is empty"):
        load_catalogue("# nothing here\n")


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the catalogue file"):
        load_catalogue(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="cannot read the catalogue file"):
        load_catalogue(str(tmp_path / "absent.yml"))


# -- hashing and lookups --------------------------------------------------------------------


def test_catalogue_hash_is_stable_and_content_sensitive() -> None:
    base = parse_catalogue({"images": [image()]}).images[0]
    again = parse_catalogue({"images": [image()]}).images[0]
    assert catalogue_hash(base) == catalogue_hash(again)
    assert re.fullmatch(r"[0-9a-f]{64}", catalogue_hash(base))
    explicit_default = parse_catalogue(
        {"images": [image(gallery__security_type="TrustedLaunchSupported")]}
    ).images[0]
    assert catalogue_hash(explicit_default) == catalogue_hash(base)
    with_step = parse_catalogue(
        {"images": [image(steps=[{"kind": "install_app", "package": "git", "manager": "choco"}])]}
    ).images[0]
    assert catalogue_hash(with_step) != catalogue_hash(base)
    reordered_yaml = yaml.safe_dump(
        {"images": [dict(reversed(list(image().items())))]}, sort_keys=False
    )
    assert catalogue_hash(load_catalogue(reordered_yaml).images[0]) == catalogue_hash(base)


def test_lookup_by_name() -> None:
    catalogue = parse_catalogue({"images": [image("img-a"), image("img-b")]})
    assert catalogue.get("img-b").name == "img-b"
    assert catalogue.find("IMG-B") is None
    with pytest.raises(NotFoundError, match="'nope' is not in the catalogue"):
        catalogue.get("nope")


def test_lookup_by_marketplace_base_is_case_insensitive_and_skips_pinned() -> None:
    follows = image("img-a")
    pinned = image("img-b", source__marketplace__version="1.2.3")
    other = image("img-c", source__marketplace__sku="win10-22h2-avd")
    catalogue = parse_catalogue({"images": [follows, pinned, other]})
    hits = catalogue.images_on_marketplace_base(
        "microsoftwindowsdesktop", "WINDOWS-11", "Win11-25H2-AVD"
    )
    assert [i.name for i in hits] == ["img-a"]
    with_pinned = catalogue.images_on_marketplace_base(
        "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd", include_pinned=True
    )
    assert [i.name for i in with_pinned] == ["img-a", "img-b"]
    assert catalogue.images_on_marketplace_base("x", "y", "z") == []


def test_models_are_immutable_and_revalidate() -> None:
    catalogue = parse_catalogue({"images": [image()]})
    entry = catalogue.images[0]
    with pytest.raises(Exception, match="frozen"):
        entry.name = "other"  # type: ignore[misc]
    assert Catalogue.model_validate(catalogue.model_dump()) == catalogue
    assert CatalogueImage.model_validate(copy.deepcopy(entry.model_dump())) == entry
