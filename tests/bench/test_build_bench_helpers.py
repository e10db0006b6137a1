"""The build benchmark's pure analysis (bench/build_bench.py): no builds, no timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.build_bench import (
    Interval,
    OpRecord,
    belongs_to_build,
    build_intervals,
    command_line,
    critical_path,
    gaps_table,
    kind_of,
    label_of,
    merge,
    overhead_percent,
    replace_section,
    requests_in_window,
    slack_by_kind,
    slack_gaps,
    slack_table,
    sweep_verdict,
    union_seconds,
    waits_of,
)

T0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
SUB = "/subscriptions/s/resourceGroups/rg-image-factory/providers/Microsoft.Compute"
VM = f"{SUB}/virtualMachines/vm-win11-office-877c9db9"
GALLERY = "/subscriptions/s/resourceGroups/rg-avd-images/providers/Microsoft.Compute/galleries/g"
DEFINITION = f"{GALLERY}/images/win11-office"
VERSION = f"{DEFINITION}/versions/1.0.0"
KEYS = {"win11-office-877c9db9"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iv(start: float, end: float, kind: str = "k", label: str | None = None) -> Interval:
    return Interval(at(start), at(end), kind, label or f"{kind}@{start:g}")


# ---- interval union -----------------------------------------------------------------------


def test_union_of_disjoint_intervals_is_their_sum() -> None:
    assert union_seconds([iv(0, 10), iv(20, 25)]) == 15


def test_union_counts_overlaps_once_and_joins_touching_intervals() -> None:
    blocks = merge([iv(50, 60), iv(0, 10), iv(5, 30), iv(30, 40), iv(12, 14)])
    assert [(b.start, b.end) for b in blocks] == [(at(0), at(40)), (at(50), at(60))]
    assert union_seconds([iv(0, 10), iv(5, 30), iv(30, 40), iv(12, 14), iv(50, 60)]) == 50


def test_union_keeps_the_interval_that_closes_a_block() -> None:
    (block,) = merge([iv(0, 100, "vm", "VM create"), iv(10, 20, "def", "definition tags")])
    assert block.first.label == "VM create"
    assert block.last.label == "VM create"  # the short one inside does not close the block


def test_of_intervals_starting_together_the_longest_opens_the_block() -> None:
    ops = [iv(0, 21, "image definition", "definition"), iv(45, 54, "tags", "definition tags")]
    ops.append(iv(45, 205, "VM create", "VM create"))
    (gap,) = slack_gaps(ops, at(0), at(205))
    assert (gap.after, gap.before, gap.seconds) == ("definition", "VM create", 24.0)


def test_union_of_nothing_is_zero() -> None:
    assert union_seconds([]) == 0
    assert merge([]) == []


# ---- slack per wait -----------------------------------------------------------------------


def test_slack_gaps_name_the_operation_noticed_and_the_next_one() -> None:
    ops = [iv(0, 100, "VM create", "VM"), iv(106, 200, "run command", "rc 1")]
    gaps = slack_gaps(ops, at(0), at(203))
    assert [(g.after, g.before, g.seconds) for g in gaps] == [
        ("VM", "rc 1", 6.0),
        ("rc 1", "completion", 3.0),
    ]
    assert gaps[0].after_kind == "VM create"


def test_slack_before_the_first_operation_is_reported_as_start() -> None:
    (gap,) = slack_gaps([iv(4, 10)], at(0), at(10))
    assert (gap.after_kind, gap.after, gap.seconds) == ("start", "build start", 4.0)


def test_no_slack_when_operations_cover_the_window() -> None:
    assert slack_gaps([iv(0, 5), iv(5, 10)], at(0), at(10)) == []


def test_slack_gaps_and_union_add_up_to_the_window() -> None:
    ops = [iv(3, 9), iv(8, 20), iv(31, 40), iv(45, 47)]
    gaps = slack_gaps(ops, at(0), at(50))
    assert sum(g.seconds for g in gaps) + union_seconds(ops) == 50


def test_slack_window_must_not_end_before_it_starts() -> None:
    with pytest.raises(ValueError, match="ends before"):
        slack_gaps([], at(10), at(0))


def test_slack_by_kind_groups_sums_and_orders_by_total() -> None:
    ops = [
        iv(0, 10, "run command"),
        iv(15, 20, "run command"),
        iv(22, 30, "VM create"),
        iv(60, 70, "gallery version"),
    ]
    summary = slack_by_kind(slack_gaps(ops, at(0), at(72)))
    assert [(s.kind, s.count, s.total_seconds, s.max_seconds) for s in summary] == [
        ("VM create", 1, 30.0, 30.0),
        ("run command", 2, 7.0, 5.0),
        ("gallery version", 1, 2.0, 2.0),
    ]


def test_slack_table_reports_gallery_and_definition_as_one_wait_per_build() -> None:
    def gap(kind: str, seconds: float) -> dict[str, object]:
        return {"after_kind": kind, "s": seconds}

    runs = [
        {"gaps": [gap("gallery", 20.0), gap("run command", 4.0), gap("run command", 6.0)]},
        {"gaps": [gap("image definition", 10.0), gap("run command", 2.0)]},
    ]
    rows = slack_table(runs).splitlines()
    assert rows[2].startswith("| gallery + image definition |")
    assert rows[2].endswith("| 1.0 | 15.0 | 20.0 |")
    assert rows[3].startswith("| run command |")
    assert rows[3].endswith("| 1.5 | 6.0 | 6.0 |")
    assert rows[-1].startswith("| **all** |")
    assert "**21.0**" in rows[-1]


def test_gaps_table_lists_each_gap_in_order() -> None:
    run = {
        "gaps": [
            {
                "after": "VM create",
                "before": "run command step-01",
                "start": at(9).isoformat(),
                "s": 9.278,
            },
            {"after": "delete x", "before": "completion", "start": at(70).isoformat(), "s": 5.5},
        ]
    }
    rows = gaps_table(run).splitlines()
    assert rows[2:] == [
        "| VM create | run command step-01 | 07:00:09 | 9.3 |",
        "| delete x | completion | 07:01:10 | 5.5 |",
    ]


# ---- critical path from records -----------------------------------------------------------


def records() -> list[OpRecord]:
    w = "Microsoft.Compute/virtualMachines"
    return [
        OpRecord("Microsoft.Compute/galleries/write", GALLERY, at(0), at(17)),
        OpRecord("Microsoft.Compute/galleries/images/write", DEFINITION, at(0), at(21)),
        OpRecord(f"{w}/write", VM, at(45), at(205)),
        OpRecord(f"{w}/runCommands/write", f"{VM}/runCommands/step-01", at(215), at(300)),
        OpRecord(f"{w}/runCommands/write", f"{VM}/runCommands/sysprep", at(310), at(900)),
        OpRecord(f"{w}/deallocate/action", VM, at(900), at(990)),
        OpRecord("Microsoft.Compute/galleries/images/versions/write", VERSION, at(1000), at(5000)),
        OpRecord(f"{w}/delete", VM, at(5030), at(5090)),
        # Not the build's: another VM, another gallery version, an admin-free AVD host.
        OpRecord(f"{w}/write", f"{SUB}/virtualMachines/avd-kw-0", at(100), at(4000)),
        OpRecord(
            "Microsoft.Compute/galleries/images/versions/write",
            f"{DEFINITION}/versions/0.9.0",
            at(1),
            at(6000),
        ),
    ]


def test_critical_path_from_records_is_the_union_of_the_builds_operations() -> None:
    cp = critical_path(records(), KEYS, VERSION, at(0), at(5100))
    busy = 21 + 160 + 85 + 590 + 90 + 4000 + 60
    assert cp.busy_seconds == busy
    assert cp.makespan_seconds == 5100
    assert cp.overhead_seconds == 5100 - busy
    assert cp.overhead_percent == pytest.approx(100 * (5100 - busy) / 5100)
    assert [(g.after_kind, g.seconds) for g in cp.gaps] == [
        ("image definition", 24.0),
        ("VM create", 10.0),
        ("run command", 10.0),
        ("deallocate", 10.0),
        ("gallery version", 30.0),
        ("delete", 10.0),
    ]
    assert cp.gaps[2].after == "run command step-01"
    assert cp.gaps[2].before == "sysprep"


def test_operations_are_clipped_to_the_window_and_open_ones_run_to_its_end() -> None:
    recs = [
        OpRecord("Microsoft.Compute/virtualMachines/write", VM, at(-50), at(10)),
        OpRecord("Microsoft.Compute/virtualMachines/delete", VM, at(90), None, "InProgress"),
        OpRecord("Microsoft.Compute/virtualMachines/write", VM, at(200), at(300)),
    ]
    ivs = build_intervals(recs, KEYS, None, at(0), at(100))
    assert [(i.start, i.end) for i in ivs] == [(at(0), at(10)), (at(90), at(100))]


def test_build_resources_are_matched_by_token_or_as_the_version_and_its_parents() -> None:
    assert belongs_to_build(f"{VM}/runCommands/step-01", KEYS, VERSION)
    assert belongs_to_build(VERSION, KEYS, VERSION)
    assert belongs_to_build(DEFINITION, KEYS, VERSION)
    assert belongs_to_build(GALLERY.upper(), KEYS, VERSION)
    assert not belongs_to_build("/subscriptions/s/resourceGroups/rg-avd-images", KEYS, VERSION)
    assert not belongs_to_build(f"{DEFINITION}/versions/1.0.1", KEYS, VERSION)
    assert not belongs_to_build(DEFINITION, KEYS, None)
    assert not belongs_to_build(f"{SUB}/virtualMachines/other", KEYS, VERSION)


@pytest.mark.parametrize(
    ("op", "rid", "kind", "label"),
    [
        ("Microsoft.Compute/virtualMachines/write", VM, "VM create", "VM create"),
        (
            "Microsoft.Compute/virtualMachines/runCommands/write",
            f"{VM}/runCommands/step-02",
            "run command",
            "run command step-02",
        ),
        (
            "Microsoft.Compute/virtualMachines/runCommands/write",
            f"{VM}/runCommands/sysprep",
            "sysprep",
            "sysprep",
        ),
        (
            "Microsoft.Compute/virtualMachines/delete",
            VM,
            "delete",
            "delete virtualMachines vm-win11-office-877c9db9",
        ),
        (
            "Microsoft.Compute/galleries/images/versions/write",
            VERSION,
            "gallery version",
            "gallery version 1.0.0",
        ),
        ("Microsoft.Compute/virtualMachines/deallocate/action", VM, "deallocate", "deallocate"),
        ("Microsoft.Compute/snapshots/write", f"{SUB}/snapshots/snap-x", "snapshot", "snapshot"),
    ],
    ids=["vm", "run-command", "sysprep", "delete", "version", "deallocate", "snapshot"],
)
def test_kinds_and_labels(op: str, rid: str, kind: str, label: str) -> None:
    assert kind_of(op, rid) == kind
    assert label_of(op, rid) == label


def test_overhead_percent_needs_a_positive_makespan() -> None:
    assert overhead_percent(200, 196) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="makespan"):
        overhead_percent(0, 0)


# ---- requests -----------------------------------------------------------------------------


def test_requests_in_window_leave_out_admin_calls_and_outside_times_and_count_429s() -> None:
    log = [
        (at(-1), "Microsoft.Compute/virtualMachines/read", 200),
        (at(0), "Microsoft.Compute/virtualMachines/write", 201),
        (at(5), "Microsoft.Compute/virtualMachines/read", 200),
        (at(6), "Microsoft.Compute/virtualMachines/read", 429),
        (at(7), "admin:/_emulator/marketplace/versions", 200),
        (at(10), "Microsoft.Compute/virtualMachines/delete", 202),
        (at(11), "Microsoft.Compute/virtualMachines/read", 200),
    ]
    counts = requests_in_window(log, at(0), at(10))
    assert counts.by_operation == {
        "Microsoft.Compute/virtualMachines/delete": 1,
        "Microsoft.Compute/virtualMachines/read": 2,
        "Microsoft.Compute/virtualMachines/write": 1,
    }
    assert counts.total == 4
    assert counts.throttled_by_operation == {"Microsoft.Compute/virtualMachines/read": 1}
    assert counts.throttled == 1


# ---- the document ---------------------------------------------------------------------------


DOC = "# Performance\n\n## Devhost engine\n\nengine figures\n\n## Later\n\nkept\n"


def test_replace_section_appends_when_absent_and_keeps_other_sections() -> None:
    out = replace_section(DOC, "## Image build pipeline", "new figures")
    assert out.startswith(DOC.rstrip("\n"))
    assert out.endswith("## Image build pipeline\n\nnew figures\n")


def test_replace_section_replaces_only_its_own_section() -> None:
    doc = replace_section(DOC, "## Image build pipeline", "old\n\n### sub\n\nold table")
    doc = doc.replace("## Later", "## Image build pipeline-x")  # a look-alike stays untouched
    out = replace_section(doc, "## Image build pipeline", "fresh")
    assert "old" not in out
    assert out.count("## Image build pipeline\n") == 1
    assert "## Devhost engine\n\nengine figures" in out
    assert "## Image build pipeline-x\n\nkept" in out
    assert "fresh" in out


def test_replace_section_in_the_middle_keeps_what_follows() -> None:
    doc = "# P\n\n## A\n\na\n\n## B\n\nb\n\n## C\n\nc\n"
    assert replace_section(doc, "## B", "B2") == "# P\n\n## A\n\na\n\n## B\n\nB2\n\n## C\n\nc\n"


def test_sweep_verdict_names_runs_within_both_targets_and_what_the_others_miss() -> None:
    def run(safety: int, pct: float, requests: int, throttled: int = 0) -> dict[str, object]:
        buckets = {"GetVMPerVM": throttled} if throttled else {}
        return {
            "poll_seconds": 10,
            "safety_seconds": safety,
            "overhead_pct": pct,
            "arm_requests": requests,
            "throttled_429_in_window": throttled,
            "throttled_429_by_bucket": buckets,
        }

    text = sweep_verdict([run(0, 0.99, 718), run(300, 0.88, 155), run(600, 1.2, 141, 3)])
    assert text == (
        "Within both targets (overhead under 1 %, at most 250 ARM requests): "
        "events + 300 s poll; beyond: poll 10 s (requests); events + 600 s poll (overhead). "
        "429s served with events + 600 s poll (limits hit: GetVMPerVM)."
    )
    assert sweep_verdict([run(300, 0.5, 100)]).endswith("beyond: none. No run drew a 429.")


def test_waits_of_names_polling_events_and_lost_shares() -> None:
    assert waits_of({"poll_seconds": 10, "safety_seconds": 0}) == "poll 10 s"
    assert waits_of({"poll_seconds": 10, "safety_seconds": 300}) == "events + 300 s poll"
    lost = {"poll_seconds": 10, "safety_seconds": 300, "lost_share": 0.25}
    assert waits_of(lost) == "events + 300 s poll, 25% lost"


def test_command_line_names_only_what_differs_from_the_defaults() -> None:
    assert command_line("42,43,44", "0,120,300,600", "0.25", True) == (
        "PYTHONPATH=. .venv/bin/python bench/build_bench.py --write"
    )
    assert command_line("7", "", "", False) == (
        "PYTHONPATH=. .venv/bin/python bench/build_bench.py --seeds 7 --safety '' --lost ''"
    )
