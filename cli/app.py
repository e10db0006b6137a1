"""The ``imagefactory`` commands: images, versions, builds, approvals, activation, audit.

Each command is one or a few calls of the HTTP API (``cli/client.py``), printed as rich tables
(or, with ``--json``, the API's JSON as is, for scripts). ``builds start --follow`` and
``builds follow`` show a live progress bar until the build ends. Exit codes: ``cli.client.Exit``
(0 ok, 2 usage, 3 refused, 4 not found, 5 server/transient, 6 the operation failed).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.client import ApiClient, ApiFailureError, Exit, seg

app = typer.Typer(
    name="imagefactory",
    help="Operate the AVD image factory over its HTTP API (docs/api.md).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
images_app = typer.Typer(help="Catalogue images and where they stand.", no_args_is_help=True)
versions_app = typer.Typer(help="Gallery versions, manifests and diffs.", no_args_is_help=True)
builds_app = typer.Typer(help="Start, list, follow and cancel builds.", no_args_is_help=True)
app.add_typer(images_app, name="images")
app.add_typer(versions_app, name="versions")
app.add_typer(builds_app, name="builds")

out = Console()
err = Console(stderr=True)
ENDED = {"Completed", "Failed", "Terminated", "Canceled"}


@dataclass
class Options:
    client: ApiClient
    json: bool


def _options(ctx: typer.Context) -> Options:
    found: Options = ctx.obj
    return found


@app.callback()
def configure(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(envvar="IMAGEFACTORY_URL", help="the app's base URL")
    ] = "http://127.0.0.1:7071",
    principal: Annotated[
        str | None,
        typer.Option(
            envvar="IMAGEFACTORY_PRINCIPAL",
            help="local devhost only: who you are, name:Role,Role (sent as X-MS-CLIENT-PRINCIPAL)",
        ),
    ] = None,
    app_id_uri: Annotated[
        str | None,
        typer.Option(
            envvar="IMAGEFACTORY_APP_ID_URI",
            help="deployed app: its Entra app id URI (token from azure-identity)",
        ),
    ] = None,
    ca_bundle: Annotated[
        str | None, typer.Option(envvar="IMAGEFACTORY_CA_BUNDLE", help="CA bundle for https")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
    timeout: Annotated[float, typer.Option(help="seconds per HTTP request")] = 60.0,
    retries: Annotated[int, typer.Option(help="retries of transient failures")] = 4,
) -> None:
    """Where the app is and who you are."""
    client = ApiClient(url, principal, app_id_uri, ca_bundle, timeout=timeout, retries=retries)
    ctx.obj = Options(client, as_json)


def _emit(opts: Options, body: Any, render: Any = None) -> None:
    if opts.json or render is None:
        sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")
    else:
        render(body)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    out.print(table)


def _run(fn: Any) -> Any:
    """Run a command body; an API failure prints one line and exits with its code."""
    try:
        return fn()
    except ApiFailureError as failure:
        err.print(f"[red]error:[/red] {failure}", highlight=False)
        raise typer.Exit(int(failure.exit)) from None


# ---- images ----------------------------------------------------------------------------------


@images_app.command("list")
def images_list(ctx: typer.Context) -> None:
    """Every catalogue image."""
    opts = _options(ctx)
    body = _run(lambda: opts.client.get("images"))
    _emit(
        opts,
        body,
        lambda b: _table(
            "images",
            ["name", "os", "workload", "owner", "regions", "host pools"],
            [
                [
                    i["name"],
                    i["os"],
                    i["workload"],
                    i["owner"],
                    ", ".join(i["regions"]),
                    ", ".join(i["host_pools"]),
                ]
                for i in b["images"]
            ],
        ),
    )


@images_app.command("show")
def images_show(ctx: typer.Context, image: str) -> None:
    """One image: active, backup and staged versions, latest per region ring."""
    opts = _options(ctx)
    body = _run(lambda: opts.client.get(f"images/{seg(image)}"))

    def render(b: dict[str, Any]) -> None:
        out.print(f"[bold]{b['name']}[/bold] ({b['os']}, {b['workload']}) owner {b['owner']}")
        out.print(f"active: {b['active'] or '-'}   backup: {', '.join(b['backup']) or '-'}")
        out.print(
            f"staged: {', '.join(b['staged']) or '-'}   validated: "
            f"{', '.join(b['validated']) or '-'}   approved: {', '.join(b['approved']) or '-'}"
        )
        _table("rings", ["region", "latest"], [[r["region"], r["latest"]] for r in b["rings"]])

    _emit(opts, body, render)


# ---- versions ----------------------------------------------------------------------------------


@versions_app.command("list")
def versions_list(ctx: typer.Context, image: str) -> None:
    """Each version's state and what latest resolves to per region."""
    opts = _options(ctx)
    body = _run(lambda: opts.client.get(f"images/{seg(image)}/versions"))
    _emit(
        opts,
        body,
        lambda b: _table(
            f"{b['image']} versions",
            ["version", "state", "since", "by", "ticket", "requested by"],
            [
                [
                    v["version"],
                    v["state"],
                    v["state_at"],
                    v["state_by"],
                    v["change_ticket"],
                    v["requested_by"],
                ]
                for v in b["versions"]
            ],
        ),
    )


@versions_app.command("show")
def versions_show(ctx: typer.Context, image: str, version: str) -> None:
    """One version with its build manifest."""
    opts = _options(ctx)
    body = _run(lambda: opts.client.get(f"images/{seg(image)}/versions/{seg(version)}"))

    def render(b: dict[str, Any]) -> None:
        out.print(f"[bold]{b['image']} {b['version']}[/bold]: {b['state']}")
        manifest = b.get("manifest")
        if manifest is None:
            out.print(f"no manifest ({b.get('manifest_error')})")
            return
        out.print(f"build {manifest['build_id']} from {manifest['base']}")
        _table(
            "steps",
            ["step", "kind", "status", "exit"],
            [[s["name"], s["kind"], s["status"], s["exit_code"]] for s in manifest["steps"]],
        )
        _table("tools", ["application", "version"], [[k, v] for k, v in manifest["tools"].items()])

    _emit(opts, body, render)


@versions_app.command("diff")
def versions_diff(
    ctx: typer.Context,
    image: str,
    version: str,
    against: Annotated[str | None, typer.Option(help="the older version")] = None,
) -> None:
    """What changed from AGAINST (default: the next lower version) to VERSION."""
    opts = _options(ctx)
    body = _run(
        lambda: opts.client.get(
            f"images/{seg(image)}/versions/{seg(version)}/diff", against=against
        )
    )
    _emit(opts, body, lambda b: out.print(b["text"], highlight=False))


# ---- builds ----------------------------------------------------------------------------------


@builds_app.command("start")
def builds_start(
    ctx: typer.Context,
    image: str,
    reason: Annotated[str, typer.Option(help="why (recorded with the build)")] = "manual",
    base_version: Annotated[str | None, typer.Option(help="a base image version")] = None,
    key: Annotated[str | None, typer.Option(help="idempotency key (default: a new one)")] = None,
    callback_url: Annotated[str | None, typer.Option(help="https URL notified at the end")] = None,
    follow: Annotated[bool, typer.Option(help="show progress until the build ends")] = False,
    interval: Annotated[float, typer.Option(help="seconds between progress polls")] = 5.0,
    wait_timeout: Annotated[float, typer.Option(help="give up following after seconds")] = 6 * 3600,
) -> None:
    """Queue a build of IMAGE (exit 6 with --follow when it fails)."""
    opts = _options(ctx)
    key = key or f"cli-{uuid.uuid4().hex[:16]}"
    body: dict[str, Any] = {"reason": reason}
    if base_version:
        body["base_version"] = base_version
    if callback_url:
        body["callback_url"] = callback_url
    answer = _run(lambda: opts.client.post(f"images/{seg(image)}/builds", body, key)).body
    if not follow:
        _emit(
            opts, answer, lambda b: out.print(f"queued {image} (key {b['key']}): {b['status_url']}")
        )
        return
    if not opts.json:
        out.print(f"queued {image} (key {answer['key']})")
    build_id = _await_build_id(opts, image, str(answer["key"]), interval, wait_timeout)
    _follow(opts, build_id, interval, wait_timeout)


def _await_build_id(opts: Options, image: str, key: str, interval: float, limit: float) -> str:
    """The build id the queue gave the request ``key`` (exit 6 when it refused the request)."""
    deadline = time.monotonic() + limit
    path = f"images/{seg(image)}/build-requests/{seg(key)}"
    while time.monotonic() < deadline:
        request = _run(lambda: opts.client.get(path)) or {}
        if request.get("outcome") == "refused":
            err.print(f"the queue refused the request: {request.get('reason')}")
            raise typer.Exit(int(Exit.FAILED))
        if request.get("build_id"):
            return str(request["build_id"])
        time.sleep(interval)
    err.print("the build did not start in time")
    raise typer.Exit(int(Exit.UNAVAILABLE))


def _follow(opts: Options, build_id: str, interval: float, limit: float) -> None:
    deadline = time.monotonic() + limit
    path = f"builds/{seg(build_id)}"
    status: dict[str, Any] = {}
    columns = (
        TextColumn("[bold]{task.fields[build]}[/bold]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[phase]}: {task.fields[operation]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=opts.json, transient=False) as progress:
        task = progress.add_task("build", total=100, build=build_id, phase="", operation="")
        while time.monotonic() < deadline:
            status = _run(lambda: opts.client.get(path))
            custom = status.get("customStatus") or {}
            progress.update(
                task,
                completed=float(custom.get("percent") or 0),
                phase=str(custom.get("phase") or ""),
                operation=str(custom.get("operation") or "")[:60],
            )
            if status.get("runtimeStatus") in ENDED:
                if status.get("runtimeStatus") == "Completed":
                    progress.update(task, completed=100)
                break
            time.sleep(interval)
    state = status.get("runtimeStatus")
    if opts.json:
        _emit(opts, status)
    else:
        _render_build(status)
    if state not in ENDED:
        raise typer.Exit(int(Exit.UNAVAILABLE))
    if state != "Completed":
        raise typer.Exit(int(Exit.FAILED))


def _render_build(b: dict[str, Any]) -> None:
    output = b.get("output")
    version = output.get("version") if isinstance(output, dict) else None
    out.print(f"[bold]{b['build_id']}[/bold]: {b['runtimeStatus']} {version or ''}")
    if b.get("steps"):
        _table(
            "steps",
            ["step", "state", "exit", "seconds"],
            [[s["name"], s["state"], s["exit_code"], s["seconds"]] for s in b["steps"]],
        )
    if b.get("phase_seconds"):
        _table("phases", ["phase", "seconds"], [[k, v] for k, v in b["phase_seconds"].items()])
    if b.get("runtimeStatus") == "Failed":
        out.print(f"[red]{output}[/red]", highlight=False)


@builds_app.command("list")
def builds_list(
    ctx: typer.Context,
    image: Annotated[str | None, typer.Option(help="only this image")] = None,
    status: Annotated[str | None, typer.Option(help="Running, Completed, Failed ...")] = None,
    top: Annotated[int, typer.Option(help="at most this many")] = 50,
) -> None:
    """Builds, newest first."""
    opts = _options(ctx)
    body = _run(lambda: opts.client.get("builds", image=image, status=status, top=top))
    _emit(
        opts,
        body,
        lambda b: _table(
            "builds",
            ["build", "image", "status", "phase", "%", "created"],
            [
                [
                    i["build_id"],
                    i["image"],
                    i["runtime_status"],
                    i["phase"],
                    i["percent"],
                    i["created"],
                ]
                for i in b["builds"]
            ],
        ),
    )


@builds_app.command("show")
def builds_show(ctx: typer.Context, build_id: str) -> None:
    """One build: status, steps and phase timings."""
    opts = _options(ctx)
    body = _run(lambda: opts.client.get(f"builds/{seg(build_id)}"))
    _emit(opts, body, _render_build)


@builds_app.command("follow")
def builds_follow(
    ctx: typer.Context,
    build_id: str,
    interval: Annotated[float, typer.Option(help="seconds between polls")] = 5.0,
    wait_timeout: Annotated[float, typer.Option(help="give up after seconds")] = 6 * 3600,
) -> None:
    """Live progress of a build until it ends (exit 6 when it fails)."""
    _follow(_options(ctx), build_id, interval, wait_timeout)


@builds_app.command("cancel")
def builds_cancel(
    ctx: typer.Context,
    build_id: str,
    reason: Annotated[str, typer.Option(help="why")] = "cancelled from the CLI",
) -> None:
    """Cancel a running build (the janitor removes what it left)."""
    opts = _options(ctx)
    body = _run(lambda: opts.client.post(f"builds/{seg(build_id)}/cancel", {"reason": reason})).body
    _emit(opts, body, lambda b: out.print(f"cancelling {b['build_id']}"))


# ---- lifecycle -------------------------------------------------------------------------------


@app.command()
def approve(
    ctx: typer.Context,
    image: str,
    version: str,
    ticket: Annotated[str, typer.Option(help="the change ticket")],
    comment: Annotated[str, typer.Option(help="a comment")] = "",
    reject: Annotated[bool, typer.Option(help="reject instead of approve")] = False,
) -> None:
    """Approve (or --reject) a validated version; you may not approve your own build."""
    opts = _options(ctx)
    body = {
        "decision": "reject" if reject else "approve",
        "change_ticket": ticket,
        "comment": comment,
    }
    answer = _run(
        lambda: opts.client.post(f"images/{seg(image)}/versions/{seg(version)}/approval", body)
    )
    result = answer.body
    if answer.status == 202:  # still being written: its state tells when it is
        detail = _await_state(opts, image, version, lambda s: s != "validated", 300.0)
        result = {**answer.body, "status": detail.get("state"), "state": detail.get("state")}
    _emit(opts, result, lambda b: out.print(f"{image} {version}: {b.get('state') or b}"))
    wanted = "rejected" if reject else "approved"
    if result.get("state") not in (wanted, None) and result.get("status") != wanted:
        raise typer.Exit(int(Exit.FAILED))


def _await_state(
    opts: Options, image: str, version: str, done: Any, limit: float, interval: float = 0.5
) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    path = f"images/{seg(image)}/versions/{seg(version)}"
    detail: dict[str, Any] = {}
    while time.monotonic() < deadline:
        detail = _run(lambda: opts.client.get(path))
        if done(detail.get("state")):
            return detail
        time.sleep(interval)
    return detail


def _await_activation(opts: Options, image: str, limit: float, interval: float = 0.5) -> None:
    """Wait until the image's activation or rollback ended; exit 6 when it did not complete."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        overview = _run(lambda: opts.client.get(f"images/{seg(image)}/versions"))
        state = (overview.get("activation") or {}).get("runtime_status")
        if state in ENDED:
            if state != "Completed":
                err.print(f"[red]the operation ended {state}[/red]")
                raise typer.Exit(int(Exit.FAILED))
            return
        time.sleep(interval)
    err.print("the operation did not end in time")
    raise typer.Exit(int(Exit.UNAVAILABLE))


@app.command()
def activate(
    ctx: typer.Context,
    image: str,
    version: str,
    ticket: Annotated[str, typer.Option(help="the change ticket")],
    reason: Annotated[str, typer.Option(help="why")] = "",
    wait: Annotated[bool, typer.Option(help="wait until it ended (exit 6 if it failed)")] = False,
) -> None:
    """Activate an approved version (latest everywhere; host pools follow)."""
    opts = _options(ctx)
    body = {"version": version, "change_ticket": ticket, "reason": reason}
    answer = _run(lambda: opts.client.post(f"images/{seg(image)}/activation", body))
    _emit(
        opts, answer.body, lambda b: out.print(f"activating {image} {version}: {b['status_url']}")
    )
    if wait:
        _await_activation(opts, image, 6 * 3600)


@app.command()
def rollback(
    ctx: typer.Context,
    image: str,
    ticket: Annotated[str, typer.Option(help="the change ticket")],
    reason: Annotated[str, typer.Option(help="why")],
    to: Annotated[str | None, typer.Option(help="a backup or deprecated version")] = None,
    wait: Annotated[bool, typer.Option(help="wait until it ended (exit 6 if it failed)")] = False,
) -> None:
    """Roll back to the backup version (or --to a named one)."""
    opts = _options(ctx)
    body: dict[str, Any] = {"change_ticket": ticket, "reason": reason}
    if to:
        body["to_version"] = to
    answer = _run(lambda: opts.client.post(f"images/{seg(image)}/rollback", body))
    _emit(opts, answer.body, lambda b: out.print(f"rolling {image} back to {b['version']}"))
    if wait:
        _await_activation(opts, image, 6 * 3600)


@app.command()
def audit(
    ctx: typer.Context,
    image: Annotated[str | None, typer.Option(help="only this image")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time with zone")] = None,
    top: Annotated[int, typer.Option(help="at most this many")] = 100,
) -> None:
    """Recent lifecycle transitions, newest first."""
    opts = _options(ctx)
    body = _run(lambda: opts.client.get("audit", image=image, since=since, top=top))
    _emit(
        opts,
        body,
        lambda b: _table(
            "transitions",
            ["at", "image", "version", "from", "to", "by", "ticket", "reason"],
            [
                [
                    t["at"],
                    t["image"],
                    t["version"],
                    t["previous"],
                    t["state"],
                    t["by"],
                    t["change_ticket"],
                    t["reason"],
                ]
                for t in b["transitions"]
            ],
        ),
    )


@app.command()
def openapi(ctx: typer.Context) -> None:
    """Print the app's OpenAPI document."""
    opts = _options(ctx)
    body = _run(lambda: opts.client.get("openapi.json"))
    sys.stdout.write(json.dumps(body, indent=2) + "\n")


def main() -> int:
    """The console script: run the app, return its exit status."""
    try:
        app(standalone_mode=True)
    except SystemExit as done:
        return int(done.code or 0) if isinstance(done.code, int) else 0
    return 0
