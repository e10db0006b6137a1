"""The version lifecycle on the embedded default: build, approve, activate, roll back.

The same local world as ``python3 dev.py demo`` (emulator + devhost on one virtual clock), with
the bundled catalogue and the default scenario plus what a running estate has: version 1.0.0 of
``win11-office`` active in the gallery and the host pool ``hp-office-weu`` deploying it. Then,
over the app's HTTP API with App Service Authentication principals:

1. alice (Operator) asks for a build: version 1.0.1 is staged, excluded from ``latest``;
2. the staged event starts validation on a real (emulated) session host: ``validated``;
3. alice may not approve her own build (403); bob (Approver) approves it;
4. an operator activates it: 1.0.1 is ``latest`` in every region, 1.0.0 its backup, the host
   pool deploys exactly 1.0.1;
5. the operator rolls back: 1.0.0 is active again, 1.0.1 is ``rolled-back``.

It ends with the version timeline (every ``ImageFactory.ImageVersion*`` event) and what
``latest`` and the host pool resolve to after each step.

``python -m devhost.demo_lifecycle [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devhost.demo import DEFAULT_CATALOGUE, DEFAULT_SCENARIO, World, follow_build, local_world
from shared import telemetry
from shared.event_subscriptions import APP_EVENT_SUBSCRIPTIONS

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
HEADER = "X-MS-CLIENT-PRINCIPAL"
TERMINAL = frozenset({"Completed", "Failed", "Terminated"})


def principal(name: str, *roles: str) -> str:
    """The ``X-MS-CLIENT-PRINCIPAL`` value App Service Authentication sends for ``name``."""
    from shared.domain.principal import encode_principal

    return encode_principal(name, tuple(roles))


@dataclass
class Estate:
    """One catalogue image's gallery definition and served host pool in a local world."""

    world: World
    image: str
    definition_id: str
    host_pool_id: str
    regions: tuple[str, ...]

    def version_id(self, version: str) -> str:
        return f"{self.definition_id}/versions/{version}"

    # -- the app over HTTP ----------------------------------------------------------------

    def call(
        self, method: str, path: str, body: Any = None, who: str | None = None
    ) -> tuple[int, Any]:
        data = None if method == "GET" else json.dumps(body or {}).encode()
        req = urllib.request.Request(  # noqa: S310 - the loopback devhost this process started
            f"{self.world.host.url}/api/{path}", data=data, method=method
        )
        req.add_header("Content-Type", "application/json")
        if who:
            req.add_header(HEADER, who)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw else None

    def approve(self, version: str, who: str, decision: str = "approve") -> tuple[int, Any]:
        return self.call(
            "POST",
            f"images/{self.image}/versions/{version}/approval",
            {"decision": decision, "change_ticket": "CHG-100", "comment": "tested on pilot"},
            who,
        )

    def decide(self, version: str, who: str, decision: str = "approve") -> tuple[int, Any]:
        """Post a decision and, while it is being written (202), wait for it and ask again:
        the same decision answers its first result."""
        from shared.names import approval_instance_id

        code, body = self.approve(version, who, decision)
        if code == 202:
            self.wait(approval_instance_id(self.image, version))
            code, body = self.approve(version, who, decision)
        return code, body

    def activate(self, version: str, who: str) -> tuple[int, Any]:
        body = {"version": version, "change_ticket": "CHG-200"}
        return self.call("POST", f"images/{self.image}/activation", body, who)

    def rollback(self, who: str, **body: Any) -> tuple[int, Any]:
        payload = {"change_ticket": "CHG-300", "reason": "users report crashes", **body}
        return self.call("POST", f"images/{self.image}/rollback", payload, who)

    def wait(self, instance_id: str, real_timeout: float = 120.0) -> dict[str, Any]:
        """Wait (real seconds) until an orchestration ends; its final status."""
        deadline = time.monotonic() + real_timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.world.status(instance_id) or {}
            if status.get("runtimeStatus") in TERMINAL:
                return status
            time.sleep(0.02)
        raise TimeoutError(f"{instance_id} did not end within {real_timeout} s: {status}")

    def set_state(self, version: str, action: str, actor: str = "imagefactory") -> None:
        """A state change through the app's own activity and its event (what the validation
        capability does), retried while the previous change is still being applied."""
        from activities.lifecycle import publish_lifecycle_event, set_version_state
        from shared.errors import TemporaryError

        at = self.world.clock.now().isoformat()
        change = {"image": self.image, "version": version, "action": action, "actor": actor}
        deadline = time.monotonic() + 60
        while True:
            try:
                result = set_version_state({**change, "at": at, "reason": action})
                break
            except TemporaryError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        publish_lifecycle_event(
            {
                **result,
                "actor": actor,
                "reason": action,
                "at": at,
            }
        )

    # -- what Azure holds -----------------------------------------------------------------

    def version_doc(self, version: str) -> dict[str, Any]:
        doc = self.world.emulator.emu.store.get(self.version_id(version))
        if doc is None:
            raise KeyError(f"no version {version}")
        return dict(doc)

    def state_of(self, version: str) -> str | None:
        state = self.version_doc(version).get("tags", {}).get("imagefactory:state")
        return str(state) if state is not None else None

    def latest(self) -> dict[str, str | None]:
        """What a VM created from the definition without a version gets, per region."""
        from emulator.gallery import latest_version

        out: dict[str, str | None] = {}
        for region in self.regions:
            found = latest_version(self.world.emulator.emu, self.definition_id, region)
            out[region] = str(found["name"]) if found else None
        return out

    def host_pool_image(self) -> str | None:
        doc = self.world.emulator.emu.store.get(self.host_pool_id)
        raw = doc["properties"].get("vmTemplate") if doc else None
        template = json.loads(raw) if isinstance(raw, str) else raw or {}
        value = template.get("customImageId")
        return str(value) if value else None

    def events(self) -> list[dict[str, Any]]:
        """Every lifecycle event the app published, in order (type, version, state, ...)."""
        from shared.names import EG_IMAGE_VERSION_PREFIX

        return [
            {"type": e.event_type, **e.data}
            for e in self.world.emulator.emu.events.events()
            if e.event_type.startswith(EG_IMAGE_VERSION_PREFIX)
        ]


# ---- the demo's world -------------------------------------------------------------------


def _tags(image: str, state: str, base_version: str) -> dict[str, str]:
    return {
        "imagefactory:image": image,
        "imagefactory:state": state,
        "imagefactory:requested-by": "imagefactory",
        "imagefactory:base-image-version": base_version,
    }


def demo_scenario(base_version: str) -> dict[str, Any]:
    """The default scenario with win11-office 1.0.0 active and host pool hp-office-weu."""
    from shared.domain.catalogue import load_catalogue

    entry = load_catalogue(DEFAULT_CATALOGUE).get("win11-office")
    g = entry.gallery
    sc: dict[str, Any] = yaml.safe_load(DEFAULT_SCENARIO.read_text())
    regions = [r.name for r in entry.target_regions]
    sc["galleries"].append(
        {
            "name": g.gallery_name,
            "resource_group": g.resource_group,
            "location": entry.build.location,
            "images": [
                {
                    "name": g.image_definition,
                    "security_type": g.security_type,
                    "hyper_v_generation": g.hyper_v_generation,
                    "publisher": g.publisher,
                    "offer": g.offer,
                    "sku": g.sku,
                    "versions": [
                        {
                            "version": "1.0.0",
                            "regions": regions,
                            "exclude_from_latest": False,
                            "base": f"MicrosoftWindowsDesktop:windows-11:win11-25h2-avd:"
                            f"{base_version}",
                            "tags": _tags(entry.name, "active", base_version),
                        }
                    ],
                }
            ],
        }
    )
    definition = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{g.resource_group}/providers/"
        f"Microsoft.Compute/galleries/{g.gallery_name}/images/{g.image_definition}"
    )
    sc["host_pools"].append(
        {
            "name": entry.host_pools[0],
            "resource_group": "rg-avd",
            "location": entry.build.location,
            "host_pool_type": "Pooled",
            "vm_template": {
                "imageType": "CustomImage",
                "customImageId": f"{definition}/versions/1.0.0",
                "osDiskType": "Premium_LRS",
                "vmSize": {"id": "Standard_D4s_v5", "cores": 4, "ram": 16},
            },
            "hosts": [],
        }
    )
    return sc


def estate_for(world: World, image: str = "win11-office") -> Estate:
    from shared.domain.catalogue import load_catalogue

    entry = load_catalogue(DEFAULT_CATALOGUE).get(image)
    g = entry.gallery
    return Estate(
        world=world,
        image=image,
        definition_id=(
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{g.resource_group}/providers/"
            f"Microsoft.Compute/galleries/{g.gallery_name}/images/{g.image_definition}"
        ),
        host_pool_id=(
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-avd/providers/"
            f"Microsoft.DesktopVirtualization/hostPools/{entry.host_pools[0]}"
        ),
        regions=tuple(r.name for r in entry.target_regions),
    )


def _newest_base_version() -> str:
    from emulator.scenario import load_scenario

    sc = load_scenario(DEFAULT_SCENARIO)
    for item in sc.marketplace:
        if item.sku == "win11-25h2-avd":
            last = item.versions[-1]
            return last if isinstance(last, str) else str(last.version)
    raise SystemExit("the default scenario has no win11-25h2-avd marketplace image")


class _Run:
    """Prints each step and what Azure resolves after it."""

    def __init__(self, estate: Estate, quiet: bool) -> None:
        self.estate = estate
        self.quiet = quiet
        self.steps: list[dict[str, Any]] = []

    def step(self, text: str) -> None:
        e = self.estate
        pool = (e.host_pool_image() or "").rsplit("/", 1)[-1] or None
        resolved = e.latest()
        record = {
            "at": e.world.clock.now().isoformat(),
            "step": text,
            "latest": resolved,
            "host_pool": pool,
        }
        self.steps.append(record)
        if not self.quiet:
            latest = ", ".join(f"{r}={v}" for r, v in resolved.items())
            print(
                f"[{e.world.clock.now():%Y-%m-%d %H:%M}] {text:<58} latest: {latest}; "
                f"host pool: {pool}",
                flush=True,
            )

    def expect(self, answer: tuple[int, Any], status: int, what: str) -> Any:
        code, body = answer
        if code != status:
            raise SystemExit(f"{what}: expected HTTP {status}, got {code}: {body}")
        return body


def run(as_json: bool = False) -> int:
    from shared import names

    started = time.monotonic()
    # The app's own telemetry (shared/telemetry.py) to a file, summarised at the end; set
    # IMAGEFACTORY_TELEMETRY yourself to send it elsewhere (console).
    telemetry_file = Path(tempfile.mkdtemp(prefix="imagefactory-telemetry-")) / "telemetry.log"
    os.environ.setdefault("IMAGEFACTORY_TELEMETRY", f"file:{telemetry_file}")
    alice = principal("alice@contoso.com", "Operator", "Approver")
    bob = principal("bob@contoso.com", "Approver")
    ops = principal("ops@contoso.com", "Operator")
    with local_world(
        demo_scenario(_newest_base_version()),
        DEFAULT_CATALOGUE,
        subscribe=tuple(APP_EVENT_SUBSCRIPTIONS),
    ) as world:
        estate = estate_for(world)
        r = _Run(estate, as_json)
        world.clock.resume()
        r.step("start: 1.0.0 active, the host pool deploys it")

        body = r.expect(
            estate.call(
                "POST",
                f"images/{estate.image}/builds",
                {
                    "key": "lifecycle-demo",
                    "reason": "monthly refresh",
                    "requested_by": "alice@contoso.com",
                },
                alice,
            ),
            202,
            "build request",
        )
        build = follow_build(world, estate.image, echo=not as_json)
        if build.get("runtimeStatus") != "Completed":
            raise SystemExit(f"the build failed: {build.get('output')}")
        version = str(build["output"]["version"])
        r.step(f"alice's build staged {version} (excluded from latest)")

        # The staged event started the validation (catalogue: validation.host_pool): a real
        # session host from the exact version in the test pool, drained, checked, removed.
        validation = estate.wait(names.validation_instance_id(estate.image, version), 300)
        outcome = (validation.get("output") or {}).get("outcome")
        if outcome != "validated":
            raise SystemExit(f"validation did not pass: {validation.get('output')}")
        checks = (validation.get("output") or {}).get("checks") or []
        r.step(f"{version} validated on a test session host ({len(checks)} checks passed)")

        code, body = estate.approve(version, alice)
        r.expect((code, body), 403, "self-approval")
        r.step(f"alice may not approve her own build: {body['error']['code']}")
        r.expect(estate.decide(version, bob), 200, "approval")
        r.step(f"bob approved {version} (CHG-100)")

        r.expect(estate.activate(version, ops), 202, "activation")
        done = estate.wait(names.activation_instance_id(estate.image))
        if done.get("runtimeStatus") != "Completed":
            raise SystemExit(f"activation failed: {done.get('output')}")
        r.step(f"activated {version}: 1.0.0 is its backup")

        r.expect(estate.rollback(ops), 202, "rollback")
        done = estate.wait(names.activation_instance_id(estate.image))
        if done.get("runtimeStatus") != "Completed":
            raise SystemExit(f"rollback failed: {done.get('output')}")
        r.step(f"rolled back: 1.0.0 active again, {version} rolled-back")

        timeline = estate.events()
        states = {v: estate.state_of(v) for v in ("1.0.0", version)}
        result = {
            "version": version,
            "steps": r.steps,
            "timeline": timeline,
            "states": states,
            "virtual_time": world.clock.now().isoformat(),
            "real_seconds": round(time.monotonic() - started, 2),
        }
    telemetry.flush()
    result["telemetry"] = {"file": str(telemetry_file), **telemetry.summarise_file(telemetry_file)}
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_timeline(result)
    ok = result["states"] == {"1.0.0": "active", version: "rolled-back"}
    return 0 if ok else 1


def _print_timeline(result: dict[str, Any]) -> None:
    print()
    print("== version timeline ==")
    for e in result["timeline"]:
        ticket = f" [{e['change_ticket']}]" if e.get("change_ticket") else ""
        previous = e.get("previous") or "-"
        print(
            f"{str(e.get('at', ''))[:16]:<16}  {e['version']:<7} {previous:>11} -> "
            f"{e.get('state') or e['type'].rsplit('Version', 1)[-1].lower():<11} "
            f"by {e.get('actor')}{ticket}  {e.get('reason') or ''}"
        )
    print()
    print(f"final states: {result['states']}")
    print(f"virtual time: {result['virtual_time']}; real seconds: {result['real_seconds']}")
    t = result["telemetry"]
    arm = t["metrics"].get("imagefactory.arm.requests", 0)
    throttled = t["metrics"].get("imagefactory.arm.throttled", 0)
    print(
        f"telemetry: {t['spans']} spans in {t['traces']} traces, {arm:.0f} ARM requests, "
        f"{throttled:.0f} throttled ({t['file']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.demo_lifecycle", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    return run(args.json)


if __name__ == "__main__":
    sys.exit(main())
