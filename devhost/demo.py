"""The main job on the embedded default: a full image build on a local Azure, in virtual time.

Starts the emulator and the devhost on one virtual clock with the bundled scenario and
catalogue, wires Event Grid (the app's custom topic and the emulator's resource events) to the
devhost's webhooks, publishes a newer marketplace image, and lets the app do the rest: the
hourly marketplace watch notices it, the build queue starts a build, and the demo follows its
progress live until the version is staged and replicated. It ends with a summary.

``python -m devhost.demo [--scenario PATH] [--catalogue PATH] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devhost.clock import VirtualClock
from shared.event_subscriptions import (
    APP_EVENT_SUBSCRIPTIONS,
    BUILD_FUNCTIONS,
    SYSTEM_TOPIC_SUBSCRIPTIONS,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = ROOT / "scenarios" / "default.yaml"
DEFAULT_CATALOGUE = ROOT / "catalogue" / "images.yaml"
TOPIC = "imagefactory"


@dataclass
class World:
    """A running local world: emulator + devhost on one clock, and the app's settings."""

    emulator: Any
    host: Any
    clock: VirtualClock
    settings: dict[str, str]
    state_dir: Path
    _env_before: dict[str, str | None] = field(default_factory=dict)

    def webhook(self, function_name: str) -> str:
        return f"{self.host.url}/runtime/webhooks/eventgrid?functionName={function_name}"

    def status(self, instance_id: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.host.engine.get_status(instance_id)
        return result


def app_settings(
    emulator_url: str, ca_path: str, subscription: str, catalogue: Path
) -> dict[str, str]:
    """The app settings that point the real SDK clients at the emulator."""
    return {
        "AZURE_SUBSCRIPTION_ID": subscription,
        "AZURE_ARM_ENDPOINT": emulator_url,
        "AZURE_CA_BUNDLE": ca_path,
        "FACTORY_RESOURCE_GROUP": "rg-image-factory",
        "IMAGE_CATALOGUE_PATH": str(catalogue),
        "EVENTGRID_TOPIC_ENDPOINT": f"{emulator_url}/_emulator/eventgrid/topics/{TOPIC}/api/events",
        "POLL_INTERVAL_SECONDS": "10",
        "ARM_MAX_RETRIES": "0",
        "TASKHUB_NAME": "demo",
    }


@contextmanager
def local_world(
    scenario: Path | str | dict[str, Any] = DEFAULT_SCENARIO,
    catalogue: Path = DEFAULT_CATALOGUE,
    *,
    store: str | None = None,
    activity_workers: int = 8,
    extra_settings: Mapping[str, str] | None = None,
    app_spec: str = "function_app:app",
    subscribe: Sequence[str] = BUILD_FUNCTIONS,
    resource_events: bool = True,
) -> Iterator[World]:
    """Start the emulator and the devhost on one paused virtual clock; stop both on exit.

    ``subscribe`` names the app's Event Grid functions the emulator's topic delivers to (the
    build's two by default; the lifecycle demo takes them all). ``resource_events``: subscribe
    ``on_resource_event`` to the emulator's resource events (the event-first waits); off, every
    wait learns of an operation's end by polling only."""
    import emulator
    from devhost.host import DevHost
    from emulator.scenario import load_scenario

    sc = load_scenario(scenario)
    clock = VirtualClock(sc.start_time)
    clock.pause()
    state_dir = Path(tempfile.mkdtemp(prefix="imagefactory-demo-"))
    modules = [*emulator.MODULES, "emulator.eventgrid_topic"]
    running = emulator.start(sc, clock=clock, ca_dir=state_dir / "emulator", modules=modules)
    settings = app_settings(
        running.url, str(running.ca_path), sc.default_subscription, Path(catalogue)
    )
    if not resource_events:  # nothing will deliver them: poll as before
        settings["SAFETY_POLL_SECONDS"] = "0"
    settings.update(extra_settings or {})
    before = {k: os.environ.get(k) for k in [*settings, "SYSPREP_SIGNAL_URL"]}
    os.environ.update(settings)
    host = None
    try:
        from shared.azure.clients import avd_client, compute_client

        compute_client.cache_clear()
        avd_client.cache_clear()
        host = DevHost(
            app_dir=ROOT,
            app_spec=app_spec,
            store=store or str(state_dir / "devhost.sqlite"),
            clock=clock,
            settings=settings,
            activity_workers=activity_workers,
            require_principal=True,  # like App Service Authentication (docs/api.md)
        ).start()
        world = World(running, host, clock, settings, state_dir, before)
        sysprep_hook = world.webhook("on_sysprep_signal")
        if "SYSPREP_SIGNAL_URL" not in (extra_settings or {}):  # a caller may turn it off
            os.environ["SYSPREP_SIGNAL_URL"] = sysprep_hook
            settings["SYSPREP_SIGNAL_URL"] = sysprep_hook
        events = running.emu.events
        for function in subscribe:
            events.subscribe(
                {
                    "name": function,
                    "endpoint": sysprep_hook
                    if function == "on_sysprep_signal"
                    else world.webhook(function),
                    "includedEventTypes": list(APP_EVENT_SUBSCRIPTIONS[function]),
                }
            )
        if resource_events:
            # Azure's resource events on the subscription's system topic: event-first waits.
            events.subscribe(resource_event_subscription(world, sc.default_subscription))
        yield world
    finally:
        if host is not None:
            host.stop()
        running.stop()
        clock.close()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def resource_event_subscription(world: World, subscription: str) -> dict[str, Any]:
    """The Event Grid subscription of ``on_resource_event`` on a subscription's system topic."""
    endpoint = world.webhook("on_resource_event")
    key = world.settings.get("DEVHOST_FUNCTION_KEY")
    if key:  # as Azure's subscription to a function's webhook carries the key (or needs none)
        endpoint += f"&code={key}"
    return {
        "name": "resource-events",
        "endpoint": endpoint,
        "includedEventTypes": list(SYSTEM_TOPIC_SUBSCRIPTIONS["on_resource_event"]),
        "subjectBeginsWith": f"/subscriptions/{subscription}/",
    }


def follow_build(
    world: World, image: str, *, real_timeout: float = 300.0, echo: bool = True
) -> dict[str, Any]:
    """Watch the image's queue until a build has run, printing progress as it changes."""
    from shared.names import ENTITY_BUILD_QUEUE, build_instance_id

    deadline = time.monotonic() + real_timeout
    last_step: tuple[str, str] = ("", "")
    build_id: str | None = None
    while time.monotonic() < deadline:
        exists, state = world.host.engine.read_entity(ENTITY_BUILD_QUEUE, image)
        custom = json.loads(state) if exists and state else {}
        running = custom.get("running") or {}
        if running.get("build_id"):
            build_id = running["build_id"]
        elif build_id is None:  # a build may start and end between two looks
            done = [r for r in custom.get("recent") or [] if r.get("build_id")]
            if done:
                build_id = done[-1]["build_id"]
        if build_id:
            status = world.status(build_instance_id(build_id)) or {}
            custom_b = status.get("customStatus") or {}
            step = (custom_b.get("phase", "?"), custom_b.get("operation", ""))
            if echo and step != last_step:
                print(
                    f"[{world.clock.now():%Y-%m-%d %H:%M}] {step[0]:>10} "
                    f"{custom_b.get('percent', 0):>3}%  {step[1]}",
                    flush=True,
                )
                last_step = step
            if status.get("runtimeStatus") in {"Completed", "Failed", "Terminated"}:
                return status
        time.sleep(0.02)
    raise TimeoutError(f"no build of {image} finished within {real_timeout} s of real time")


def arm_requests(world: World) -> dict[str, int]:
    """ARM requests the emulator served, by operation (admin calls left out)."""
    metrics = world.emulator.emu.metrics
    return {op: n for op, n in sorted(metrics.requests.items()) if not op.startswith("admin:")}


def summary(world: World, status: dict[str, Any], real_seconds: float) -> dict[str, Any]:
    emu = world.emulator.emu
    report = emu.report()
    output = status.get("output") or {}
    failed = status.get("runtimeStatus") != "Completed"
    requests = arm_requests(world)
    return {
        "runtime_status": status.get("runtimeStatus"),
        "image": output.get("image") if isinstance(output, dict) else None,
        "version": output.get("version") if isinstance(output, dict) else None,
        "version_id": output.get("version_id") if isinstance(output, dict) else None,
        "regions": output.get("regions") if isinstance(output, dict) else None,
        "manifest": output.get("manifest") if isinstance(output, dict) else None,
        "phase_seconds": output.get("phase_seconds") if isinstance(output, dict) else None,
        "error": output if failed else None,
        "virtual_time": str(world.clock.now()),
        "real_seconds": round(real_seconds, 2),
        "arm_requests": sum(requests.values()),
        "arm_requests_by_operation": requests,
        "throttled_429": emu.metrics.throttled,
        "resources_left_behind": list(report.get("orphans") or [])
        + list((report.get("ownership") or {}).get("taggedUnknownBuild") or []),
    }


def run_demo(scenario: Path, catalogue: Path, as_json: bool) -> int:
    started = time.monotonic()
    with local_world(scenario, catalogue) as world:
        image = first_marketplace_image(catalogue)
        published = publish_newer_marketplace_version(world, image)
        print(f"published marketplace image {published} at {world.clock.now():%Y-%m-%d %H:%M}")
        world.clock.resume()
        status = follow_build(world, image["name"])
        result = summary(world, status, time.monotonic() - started)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_summary(result)
    ok = result["runtime_status"] == "Completed" and not result["resources_left_behind"]
    return 0 if ok else 1


def first_marketplace_image(catalogue: Path) -> dict[str, Any]:
    from shared.domain.catalogue import load_catalogue

    for image in load_catalogue(catalogue).images:
        base = image.marketplace_base()
        if base is not None and base.follows_latest:
            return {
                "name": image.name,
                "publisher": base.publisher,
                "offer": base.offer,
                "sku": base.sku,
                "location": image.build.location,
            }
    raise SystemExit(f"{catalogue}: no image follows the latest version of a marketplace base")


def emulator_admin(world: World, method: str, path: str, body: Any = None) -> Any:
    """Call the emulator's admin API over HTTPS (trusting its CA), as an operator would."""
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(world.emulator.ca_path))
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(  # noqa: S310 - a loopback URL the demo itself started
        f"{world.emulator.url}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:  # noqa: S310
        raw = resp.read()
    return json.loads(raw) if raw else None


def next_marketplace_version(world: World, image: dict[str, Any]) -> str:
    """The newest marketplace version of the image's base, with its last part bumped."""
    from emulator.marketplace import catalogue as marketplace_catalogue

    versions = marketplace_catalogue(world.emulator.emu).versions_of(
        image["location"], image["publisher"], image["offer"], image["sku"]
    )
    if not versions:
        raise SystemExit(f"the scenario's marketplace has no {image['sku']}")
    major, minor, patch = (int(p) for p in versions[-1].version.split("."))
    return f"{major}.{minor}.{patch + 100}"


def publish_newer_marketplace_version(world: World, image: dict[str, Any]) -> str:
    version = next_marketplace_version(world, image)
    emulator_admin(
        world,
        "POST",
        "/_emulator/marketplace/versions",
        {
            "publisher": image["publisher"],
            "offer": image["offer"],
            "sku": image["sku"],
            "version": version,
        },
    )
    return f"{image['publisher']}/{image['offer']}/{image['sku']} {version}"


def _print_summary(result: dict[str, Any]) -> None:
    print()
    print("== build summary ==")
    for key in (
        "runtime_status",
        "image",
        "version",
        "version_id",
        "virtual_time",
        "real_seconds",
        "arm_requests",
        "throttled_429",
    ):
        print(f"{key:>22}: {result.get(key)}")
    print(f"{'regions':>22}: {json.dumps(result.get('regions'), default=str)}")
    print(f"{'phase_seconds':>22}: {json.dumps(result.get('phase_seconds'))}")
    print(f"{'resources_left_behind':>22}: {result.get('resources_left_behind') or 'none'}")
    manifest = result.get("manifest") or {}
    base = manifest.get("base") or {}
    print(
        f"{'base image':>22}: {base.get('publisher')}/{base.get('offer')}/{base.get('sku')} "
        f"{base.get('version')}"
    )
    print(f"{'catalogue hash':>22}: {manifest.get('catalogue_hash')}")
    for step in manifest.get("steps") or []:
        print(
            f"{'step':>22}: {step.get('step', step.get('name'))} ({step.get('kind')}) "
            f"{step.get('state')} {step.get('started', '')[11:16]}-{step.get('ended', '')[11:16]}"
            f" sha256:{str(step.get('content_hash'))[:12]}"
        )
    if result.get("error"):
        print(f"{'error':>22}: {result['error']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.demo", description=__doc__)
    parser.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    return run_demo(args.scenario, args.catalogue, args.json)


if __name__ == "__main__":
    sys.exit(main())
