#!/usr/bin/env python3
"""The project's entry points: ``python3 dev.py demo`` (the main job), ``python3 dev.py test``
(gates and tests), ``python3 dev.py lint`` (the gates alone, seconds), ``python3 dev.py up``
(the local world as two processes: see docs/local-world.md) and ``python3 dev.py lifecycle``.

Each creates (or reuses) the virtual environment ``.venv`` and installs what it needs from the
package registries, so they work on a fresh machine with nothing but Python 3.11+.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".requirements.sha256"


def _requirements_digest() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "requirements-dev.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - say it plainly on an old Python
        sys.exit(f"Python 3.11+ is required, this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    wanted = _requirements_digest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    print("installing dependencies (requirements-dev.txt)", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, cwd=ROOT)
    subprocess.run([*pip, "-r", "requirements-dev.txt"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


TOOLS = ROOT / ".venv-tools"  # checkov lives apart: its pins would fight the app's
TOOLS_SPEC = "checkov==3.3.*"


def ensure_tools() -> None:
    """The offline infra checker (checkov), in its own environment, installed once."""
    stamp = TOOLS / ".spec"
    if stamp.exists() and stamp.read_text().strip() == TOOLS_SPEC:
        return
    print(f"installing {TOOLS_SPEC} into {TOOLS}", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
    pip = [str(TOOLS / BIN.name / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "-q", TOOLS_SPEC], check=True, cwd=ROOT)
    stamp.write_text(TOOLS_SPEC)


def run(*args: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    print("$", " ".join(args), flush=True)
    return subprocess.run(list(args), cwd=ROOT, env=env, check=False).returncode


def tool(name: str) -> str:
    return str(BIN / name)


def lint(extra: list[str]) -> int:
    """The quick gates (seconds): ruff, ruff format, mypy, import-linter."""
    gates = [
        (tool("ruff"), "check", "."),
        (tool("ruff"), "format", "--check", "."),
        (tool("mypy"),),
        (tool("lint-imports"),),
    ]
    for gate in gates:
        code = run(*gate)
        if code:
            print(f"quality gate failed: {' '.join(gate)}", flush=True)
            return code
    return 0


def test(extra: list[str]) -> int:
    """The gates, then every test (the infra checks need checkov: installed once, apart)."""
    code = lint([])
    if code:
        return code
    ensure_tools()
    workers = os.environ.get("TEST_WORKERS", "2")
    return run(str(PY), "-m", "pytest", "-n", workers, "--dist", "loadfile", *extra)


def demo(extra: list[str]) -> int:
    return run(str(PY), "-m", "devhost.demo", *extra)


class UpWorld:
    """How ``up`` wires the pair (also used by tests/local_world to start the same world)."""

    def __init__(
        self,
        state: Path,
        devhost_port: int,
        emulator_port: int,
        scenario: Path,
        catalogue: Path,
        subscription: str,
        *,
        virtual: bool = True,
    ) -> None:
        self.state = state
        self.emu_dir = state / "emulator"
        self.host_dir = state / "devhost"
        self.emu_dir.mkdir(parents=True, exist_ok=True)
        self.host_dir.mkdir(parents=True, exist_ok=True)
        self.devhost_port = devhost_port
        self.emulator_port = emulator_port
        self.host_url = f"http://127.0.0.1:{devhost_port}"
        self.emu_url = f"https://127.0.0.1:{emulator_port}"
        self.scenario = scenario
        self.catalogue = catalogue
        self.subscription = subscription
        self.virtual = virtual
        key = os.environ.get("DEVHOST_FUNCTION_KEY")
        self.hook = f"{self.host_url}/runtime/webhooks/eventgrid?" + (f"code={key}&" if key else "")
        self.hook += "functionName="

    def settings(self) -> dict[str, str]:
        """The app settings that point it at the emulator (docs/local-world.md)."""
        return {
            "AZURE_SUBSCRIPTION_ID": self.subscription,
            "AZURE_ARM_ENDPOINT": self.emu_url,
            "AZURE_CA_BUNDLE": str(self.emu_dir / "ca.pem"),
            "IMAGE_CATALOGUE_PATH": str(self.catalogue),
            "EVENTGRID_TOPIC_ENDPOINT": (
                f"{self.emu_url}/_emulator/eventgrid/topics/imagefactory/api/events"
            ),
            # Never with a key: the URL is written into a run command anyone with Reader can read.
            "SYSPREP_SIGNAL_URL": (
                f"{self.host_url}/runtime/webhooks/eventgrid?functionName=on_sysprep_signal"
            ),
            "TASKHUB_NAME": os.environ.get("TASKHUB_NAME", "local"),
        }

    def env(self) -> dict[str, str]:
        return dict(
            os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", **self.settings()
        )

    def devhost_command(self) -> list[str]:
        cmd = [str(PY), "-m", "devhost", "--port", str(self.devhost_port)]
        cmd += ["--store", str(self.host_dir / "state.sqlite")]
        if self.virtual:
            cmd += ["--virtual-time", "--await-clock-participant", "emulator"]
        return cmd

    def emulator_command(self) -> list[str]:
        cmd = [str(PY), "-m", "emulator", "--port", str(self.emulator_port)]
        cmd += ["--scenario", str(self.scenario), "--state-dir", str(self.emu_dir)]
        if self.virtual:
            cmd += ["--clock-url", f"{self.host_url}/_clock"]
        return cmd

    def subscribe(self, ctx: ssl.SSLContext) -> None:
        """Subscribe the app's Event Grid functions on the emulator (replacing, so repeatable)."""
        from shared.event_subscriptions import APP_EVENT_SUBSCRIPTIONS, SYSTEM_TOPIC_SUBSCRIPTIONS

        tables = {**APP_EVENT_SUBSCRIPTIONS, **SYSTEM_TOPIC_SUBSCRIPTIONS}
        for function, types in tables.items():
            body = json.dumps(
                {
                    "name": function,
                    "endpoint": f"{self.hook}{function}",
                    "includedEventTypes": list(types),
                }
            ).encode()
            request = urllib.request.Request(  # noqa: S310 - the loopback emulator
                f"{self.emu_url}/_emulator/eventSubscriptions",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, context=ctx, timeout=10).read()  # noqa: S310


def _up_wait_ready(
    procs: dict[str, subprocess.Popen[bytes]],
    emu_dir: Path,
    emu_url: str,
    host_url: str,
    timeout: float,
) -> ssl.SSLContext | None:
    """Wait until the emulator answers over TLS and the devhost serves its clock; the TLS
    context trusting the emulator (None: a process died or the time ran out)."""
    deadline = time.monotonic() + timeout
    ctx: ssl.SSLContext | None = None
    while time.monotonic() < deadline:
        dead = [n for n, p in procs.items() if p.poll() is not None]
        if dead:
            print(f"up: {', '.join(dead)} exited during start-up", file=sys.stderr)
            return None
        try:
            if ctx is None and (emu_dir / "endpoint.json").exists():
                ctx = ssl.create_default_context(cafile=str(emu_dir / "ca.pem"))
            if ctx is not None:
                health = f"{emu_url}/_emulator/health"
                urllib.request.urlopen(health, context=ctx, timeout=5).read()  # noqa: S310
                urllib.request.urlopen(f"{host_url}/_clock", timeout=5).read()  # noqa: S310
                return ctx
        except OSError:
            pass
        time.sleep(0.2)
    print(f"up: not ready within {timeout:g} s", file=sys.stderr)
    return None


def up(extra: list[str]) -> int:
    """Start the emulator and the devhost as two processes, wired, until Ctrl+C."""
    parser = argparse.ArgumentParser(
        prog="python3 dev.py up",
        description="The local world: the Azure emulator and the devhost running this app, "
        "on one clock, with the app's settings and Event Grid subscriptions wired.",
    )
    parser.add_argument(
        "--real-time", action="store_true", help="wall-clock time (default: virtual)"
    )
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".local-world")
    parser.add_argument(
        "--fresh", action="store_true", help="forget the state dir's contents first"
    )
    parser.add_argument("--devhost-port", type=int, default=7071)
    parser.add_argument("--emulator-port", type=int, default=8443)
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "default.yaml")
    parser.add_argument("--catalogue", type=Path, default=ROOT / "catalogue" / "images.yaml")
    parser.add_argument("--timeout", type=float, default=120.0, help="real seconds to start")
    args = parser.parse_args(extra)
    state = args.state_dir.resolve()
    if args.fresh and state.exists():
        shutil.rmtree(state)
    scenario = subprocess.run(
        [
            str(PY),
            "-c",
            "import json,sys\nfrom emulator.scenario import load_scenario\n"
            "s=load_scenario(sys.argv[1]);print(json.dumps(s.subscription_ids))",
            str(args.scenario),
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        check=False,
    )
    if scenario.returncode:
        print(scenario.stderr.strip(), file=sys.stderr)
        return 2
    world = UpWorld(
        state,
        args.devhost_port,
        args.emulator_port,
        args.scenario.resolve(),
        args.catalogue.resolve(),
        json.loads(scenario.stdout)[0],
        virtual=not args.real_time,
    )
    emu_dir, host_url, emu_url = world.emu_dir, world.host_url, world.emu_url
    settings = world.settings()
    env = world.env()
    host_cmd, emu_cmd = world.devhost_command(), world.emulator_command()
    (emu_dir / "endpoint.json").unlink(missing_ok=True)
    procs = {
        "devhost": subprocess.Popen(host_cmd, cwd=ROOT, env=env),
        "emulator": subprocess.Popen(emu_cmd, cwd=ROOT, env=env),
    }

    def stop_all(*_: object) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()

    signal.signal(signal.SIGTERM, stop_all)
    try:
        ctx = _up_wait_ready(procs, emu_dir, emu_url, host_url, args.timeout)
        if ctx is None:
            stop_all()
            return 1
        world.subscribe(ctx)
        print("\nlocal world up:", flush=True)
        print(f"  devhost   {host_url}  (functions under {host_url}/api, clock {host_url}/_clock)")
        print(f"  emulator  {emu_url}  (admin {emu_url}/_emulator/report)")
        print(f"  time      {'virtual, owned by the devhost' if world.virtual else 'real'}")
        print(f"  state     {state}")
        from shared.event_subscriptions import APP_EVENT_SUBSCRIPTIONS

        print("  Event Grid subscriptions: " + ", ".join(APP_EVENT_SUBSCRIPTIONS))
        print("  app settings (docs/local-world.md):")
        for key, value in settings.items():
            print(f"    {key}={value}")
        print("Ctrl+C stops both.", flush=True)
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        ended = [n for n, p in procs.items() if p.poll() is not None]
        print(f"up: {', '.join(ended)} stopped; stopping the rest", flush=True)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str]) -> int:
    commands = {
        "test": test,
        "lint": lint,
        "demo": demo,
        "up": up,
        # The version lifecycle: build, approve (four eyes), activate, roll back, timeline.
        "lifecycle": lambda extra: run(str(PY), "-m", "devhost.demo_lifecycle", *extra),
    }
    if not argv or argv[0] not in commands:
        print(__doc__)
        print(f"usage: python3 dev.py {{{'|'.join(commands)}}} [args...]")
        return 2
    ensure_venv()
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
