"""Marketplace images: publishers, offers, SKUs and versions (``VirtualMachineImagesOperations``).

The catalogue is seeded from the scenario's ``marketplace`` section and grows when the admin
API publishes a version (``POST /_emulator/marketplace/versions``), which is how a test makes
"Microsoft published a new Windows 11 build" happen. As on Azure, there is no event for a new
version: peers must poll. Lists are plain JSON arrays, as the real API returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emulator.arm import ArmError, Request, Response
from emulator.core import Emulator
from emulator.events import iso
from emulator.guest import GuestState, marketplace_guest
from emulator.scenario import GuestSeed, MarketplaceSku, MarketplaceVersion, Scenario

BASE = "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/publishers"
OP = "Microsoft.Compute/locations/publishers/artifacttypes/offers/skus/versions/read"


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in v.split("."))


@dataclass
class ImageVersion:
    publisher: str
    offer: str
    sku: str
    version: str
    os_type: str
    hyper_v_generation: str
    architecture: str
    regions: set[str] | None
    guest: GuestSeed
    published: datetime | None = None

    @property
    def urn(self) -> str:
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version}"

    def in_region(self, location: str) -> bool:
        return self.regions is None or norm_region(location) in self.regions

    def new_guest(self) -> GuestState:
        g = self.guest
        return marketplace_guest(
            self.publisher,
            self.offer,
            self.sku,
            self.version,
            os_type=self.os_type,
            apps=list(g.apps),
            bitlocker=g.bitlocker,
            free_disk_gb=g.free_disk_gb,
            disk_size_gb=g.disk_size_gb,
            windows_update_level=g.windows_update_level,
        )

    def platform_id(self, sub: str, location: str) -> str:
        return (
            f"/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/{norm_region(location)}"
            f"/Publishers/{self.publisher}/ArtifactTypes/VMImage/Offers/{self.offer}"
            f"/Skus/{self.sku}/Versions/{self.version}"
        )


def norm_region(location: str) -> str:
    return location.replace(" ", "").lower()


@dataclass
class Catalogue:
    versions: dict[tuple[str, str, str, str], ImageVersion] = field(default_factory=dict)
    regions: set[str] = field(default_factory=set)

    def add(self, sku: MarketplaceSku, version: MarketplaceVersion | str) -> ImageVersion:
        v = (
            version
            if isinstance(version, MarketplaceVersion)
            else MarketplaceVersion(version=version)
        )
        iv = ImageVersion(
            sku.publisher,
            sku.offer,
            sku.sku,
            v.version,
            sku.os_type,
            sku.hyper_v_generation,
            sku.architecture,
            {norm_region(r) for r in sku.regions} if sku.regions is not None else None,
            v.guest or sku.guest,
            v.published,
        )
        key = (sku.publisher.lower(), sku.offer.lower(), sku.sku.lower(), v.version)
        self.versions[key] = iv
        return iv

    def _visible(self, location: str) -> list[ImageVersion]:
        loc = norm_region(location)
        if self.regions and loc not in self.regions:
            return []
        return [v for v in self.versions.values() if v.in_region(loc)]

    def publishers(self, location: str) -> list[str]:
        return sorted({v.publisher for v in self._visible(location)}, key=str.lower)

    def offers(self, location: str, publisher: str) -> list[str]:
        p = publisher.lower()
        return sorted(
            {v.offer for v in self._visible(location) if v.publisher.lower() == p}, key=str.lower
        )

    def skus(self, location: str, publisher: str, offer: str) -> list[str]:
        p, o = publisher.lower(), offer.lower()
        return sorted(
            {
                v.sku
                for v in self._visible(location)
                if v.publisher.lower() == p and v.offer.lower() == o
            },
            key=str.lower,
        )

    def versions_of(
        self, location: str, publisher: str, offer: str, sku: str
    ) -> list[ImageVersion]:
        p, o, s = publisher.lower(), offer.lower(), sku.lower()
        found = [
            v
            for v in self._visible(location)
            if v.publisher.lower() == p and v.offer.lower() == o and v.sku.lower() == s
        ]
        return sorted(found, key=lambda v: version_key(v.version))

    def find(
        self, location: str, publisher: str, offer: str, sku: str, version: str
    ) -> ImageVersion | None:
        versions = self.versions_of(location, publisher, offer, sku)
        if not versions:
            return None
        if version.lower() == "latest":
            return versions[-1]
        return next((v for v in versions if v.version == version), None)


def catalogue(emu: Emulator) -> Catalogue:
    cat = emu.modules.get("marketplace")
    if not isinstance(cat, Catalogue):
        cat = Catalogue()
        emu.modules["marketplace"] = cat
    return cat


def find_image(
    emu: Emulator, location: str, publisher: str, offer: str, sku: str, version: str
) -> ImageVersion | None:
    """A marketplace image version visible in ``location`` ("latest" resolves), or None."""
    return catalogue(emu).find(location, publisher, offer, sku, version)


def _not_found() -> ArmError:
    return ArmError(404, "NotFound", "Artifact: VMImage was not found.")


class PublishVersion(BaseModel):
    """Admin body: publish a version (creating the SKU if it is new)."""

    model_config = ConfigDict(extra="forbid")

    publisher: str = Field(min_length=1)
    offer: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    os_type: str = "Windows"
    hyper_v_generation: str = "V2"
    regions: list[str] | None = None
    guest: GuestSeed | None = None


def _entry(name: str, location: str, rid: str) -> dict[str, Any]:
    return {"name": name, "location": norm_region(location), "id": rid}


def register(emu: Emulator) -> None:
    def seed(scenario: Scenario) -> None:
        cat = Catalogue(regions={norm_region(r) for r in scenario.regions})
        for sku in scenario.marketplace:
            for v in sku.versions:
                cat.add(sku, v)
        emu.modules["marketplace"] = cat

    emu.add_seeder(seed)

    def prefix(req: Request) -> str:
        return (
            f"/Subscriptions/{req.params['sub']}/Providers/Microsoft.Compute/Locations/"
            f"{norm_region(req.params['location'])}/Publishers"
        )

    @emu.route("GET", BASE, op=OP)
    def list_publishers(req: Request) -> Response:
        loc = req.params["location"]
        names = catalogue(emu).publishers(loc)
        return Response(200, [_entry(n, loc, f"{prefix(req)}/{n}") for n in names])

    @emu.route("GET", BASE + "/{publisher}/artifacttypes/vmimage/offers", op=OP)
    def list_offers(req: Request) -> Response:
        loc, pub = req.params["location"], req.params["publisher"]
        names = catalogue(emu).offers(loc, pub)
        base = f"{prefix(req)}/{pub}/ArtifactTypes/VMImage/Offers"
        return Response(200, [_entry(n, loc, f"{base}/{n}") for n in names])

    @emu.route("GET", BASE + "/{publisher}/artifacttypes/vmimage/offers/{offer}/skus", op=OP)
    def list_skus(req: Request) -> Response:
        loc, pub, offer = req.params["location"], req.params["publisher"], req.params["offer"]
        names = catalogue(emu).skus(loc, pub, offer)
        base = f"{prefix(req)}/{pub}/ArtifactTypes/VMImage/Offers/{offer}/Skus"
        return Response(200, [_entry(n, loc, f"{base}/{n}") for n in names])

    versions_route = BASE + "/{publisher}/artifacttypes/vmimage/offers/{offer}/skus/{sku}/versions"

    @emu.route("GET", versions_route, op=OP)
    def list_versions(req: Request) -> Response:
        p = req.params
        found = catalogue(emu).versions_of(p["location"], p["publisher"], p["offer"], p["sku"])
        orderby = req.query.get("$orderby", "").lower()
        if orderby.endswith("desc"):
            found = list(reversed(found))
        top = req.query.get("$top")
        if top is not None:
            try:
                found = found[: int(top)]
            except ValueError:
                raise ArmError(400, "InvalidParameter", "$top must be an integer.") from None
        expand = req.query.get("$expand", "").lower() == "properties"
        return Response(200, [_version_body(req, v, with_properties=expand) for v in found])

    @emu.route("GET", versions_route + "/{version}", op=OP)
    def get_version(req: Request) -> Response:
        p = req.params
        v = catalogue(emu).find(p["location"], p["publisher"], p["offer"], p["sku"], p["version"])
        if v is None or p["version"].lower() == "latest":
            raise _not_found()
        return Response(200, _version_body(req, v, with_properties=True))

    @emu.admin_route("POST", "/_emulator/marketplace/versions")
    def publish(req: Request) -> Response:
        try:
            body = PublishVersion.model_validate(req.body if isinstance(req.body, dict) else {})
        except ValidationError as e:
            details = [
                {"target": ".".join(str(x) for x in err["loc"]), "message": err["msg"]}
                for err in e.errors()
            ]
            message = "; ".join(f"{d['target']}: {d['message']}" for d in details)
            raise ArmError(400, "InvalidRequestContent", message, details=details) from None
        sku = MarketplaceSku.model_validate(
            {
                "publisher": body.publisher,
                "offer": body.offer,
                "sku": body.sku,
                "os_type": body.os_type,
                "hyper_v_generation": body.hyper_v_generation,
                "regions": body.regions,
                "versions": [body.version],
                **({"guest": body.guest.model_dump()} if body.guest else {}),
            }
        )
        iv = catalogue(emu).add(sku, MarketplaceVersion(version=body.version, published=emu.now()))
        return Response(201, {"urn": iv.urn, "published": iso(emu.now())})

    @emu.admin_route("GET", "/_emulator/marketplace")
    def dump(req: Request) -> Response:
        return Response(
            200,
            {
                "value": [
                    {"urn": v.urn, "regions": sorted(v.regions) if v.regions else None}
                    for v in sorted(
                        catalogue(emu).versions.values(),
                        key=lambda v: (v.publisher, v.offer, v.sku, version_key(v.version)),
                    )
                ]
            },
        )


def _version_body(req: Request, v: ImageVersion, *, with_properties: bool) -> dict[str, Any]:
    loc = req.params["location"]
    body: dict[str, Any] = {
        "name": v.version,
        "location": norm_region(loc),
        "id": v.platform_id(req.params["sub"], loc),
    }
    if with_properties:
        security = "TrustedLaunchSupported" if v.hyper_v_generation == "V2" else "Standard"
        body["properties"] = {
            "osDiskImage": {"operatingSystem": v.os_type, "sizeInGb": v.guest.disk_size_gb},
            "dataDiskImages": [],
            "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": False},
            "hyperVGeneration": v.hyper_v_generation,
            "architecture": v.architecture,
            "disallowed": {"vmDiskType": "Unmanaged"},
            "features": [
                {"name": "SecurityType", "value": security},
                {"name": "IsAcceleratedNetworkSupported", "value": "True"},
                {"name": "DiskControllerTypes", "value": "SCSI, NVMe"},
                {"name": "IsHibernateSupported", "value": "True"},
            ],
            "imageDeprecationStatus": {"imageState": "Active"},
        }
    return body
