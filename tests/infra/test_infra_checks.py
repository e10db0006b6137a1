"""Offline checks of infra/: every Bicep file parses, checkov finds nothing without a written
reason, and docs/settings.md, the code and the Bicep agree on every app setting."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
PRODUCTION = ("shared", "activities", "orchestrators", "triggers")
# Settings the Functions platform itself reads (not our code); the Bicep sets them for the host.
PLATFORM = frozenset(
    {
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__credential",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    }
)


def _checkov() -> str | None:
    found = ROOT / ".venv-tools" / "bin" / "checkov"
    return str(found) if found.exists() else shutil.which("checkov")


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_parses(path: Path) -> None:
    tree = BicepParser().parse(text=path.read_text())
    assert "resources" in tree or "modules" in tree, f"{path} declares nothing"


def test_the_parser_refuses_broken_bicep() -> None:
    with pytest.raises(Exception, match=r"(?i)unexpected|token"):
        BicepParser().parse(text="resource x 'A/b@2020-01-01' = {\n  name: 'x'\n")


def test_every_module_a_template_references_exists() -> None:
    for path in BICEP_FILES:
        for ref in re.findall(r"^module \w+ '([^']+)'", path.read_text(), re.MULTILINE):
            assert (path.parent / ref).exists(), f"{path.name} references missing {ref}"
    for path in BICEP_FILES:
        for ref in re.findall(r"loadJsonContent\('([^']+)'\)", path.read_text()):
            assert (path.parent / ref).exists(), f"{path.name} loads missing {ref}"


@pytest.mark.skipif(_checkov() is None, reason="checkov is installed by `python3 dev.py test`")
def test_checkov_fails_only_checks_with_a_written_reason(tmp_path: Path) -> None:
    skips = yaml.safe_load((INFRA / "checkov-skips.yaml").read_text())
    assert all(len(str(reason)) >= 60 for reason in skips.values()), "each skip needs a reason"
    run = subprocess.run(
        [
            _checkov() or "",
            "-d",
            str(INFRA),
            "--framework",
            "bicep",
            "--quiet",
            "-o",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "BC_SKIP_MAPPING": "TRUE", "HOME": str(tmp_path)},
    )
    report = json.loads(run.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    failed = {check["check_id"] for check in report["results"]["failed_checks"]}
    assert summary["passed"] >= 25, f"checkov checked too little: {summary}"
    assert not failed - set(skips), (
        f"failed without a written reason: {sorted(failed - set(skips))}"
    )
    assert not set(skips) - failed, f"stale reasons (these pass now): {sorted(set(skips) - failed)}"


# -- settings: docs, code and Bicep agree ---------------------------------------------------


def _documented() -> dict[str, str]:
    """Setting name -> its 'required' column, from the table in docs/settings.md."""
    rows: dict[str, str] = {}
    for line in (ROOT / "docs" / "settings.md").read_text().splitlines():
        found = re.match(r"\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|\s*([^|]*)\|", line)
        if found:
            rows[found.group(1)] = found.group(2).strip()
    return rows


def _read_by_code() -> set[str]:
    """Every environment name production code reads (env.get / os.environ / getenv / _int...)."""
    names: set[str] = set()
    for package in PRODUCTION:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                attr = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = getattr(getattr(func, "value", None), "id", "") or getattr(
                    getattr(func, "value", None), "attr", ""
                )
                reads_env = (attr == "get" and owner in {"env", "environ", "environment"}) or (
                    attr in {"getenv", "_int", "_bool", "_float", "_seconds"}
                )
                if not reads_env:
                    continue
                for arg in node.args[:2]:
                    value = arg.value if isinstance(arg, ast.Constant) else None
                    if isinstance(value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", value):
                        names.add(value)
    return names


def _set_by_bicep() -> set[str]:
    text = (INFRA / "modules" / "app.bicep").read_text()
    return set(re.findall(r"\{ name: '([A-Za-z_][A-Za-z0-9_]*)', value:", text))


def test_the_scan_finds_the_settings_the_code_reads() -> None:
    assert {"AZURE_SUBSCRIPTION_ID", "POLL_INTERVAL_SECONDS"} <= _read_by_code()


def test_every_setting_the_code_reads_is_documented() -> None:
    missing = sorted(_read_by_code() - set(_documented()))
    assert not missing, f"docs/settings.md lacks: {missing}"


def test_every_setting_the_bicep_sets_is_documented_and_read() -> None:
    documented = set(_documented())
    assert not _set_by_bicep() - documented, sorted(_set_by_bicep() - documented)
    unread = sorted(_set_by_bicep() - _read_by_code() - PLATFORM - {"TASKHUB_NAME"})
    assert not unread, f"the Bicep sets settings no code reads: {unread}"


def test_every_setting_required_in_azure_is_set_by_the_bicep() -> None:
    needed = {
        name
        for name, required in _documented().items()
        if required.startswith("yes") or required in {"in Azure", "for events"}
    }
    missing = sorted(needed - _set_by_bicep())
    assert not missing, f"infra/modules/app.bicep does not set: {missing}"


def test_host_json_reads_the_task_hub_the_bicep_sets() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["durableTask"]["hubName"] == "%TASKHUB_NAME%"
    assert "TASKHUB_NAME" in _set_by_bicep()


def test_python_version_matches_the_one_tested() -> None:
    main = (INFRA / "main.bicep").read_text()
    default = re.search(r"param pythonVersion string = '([0-9.]+)'", main)
    ci = (ROOT / "pyproject.toml").read_text()
    assert default
    assert f'python_version = "{default.group(1)}"' in ci
