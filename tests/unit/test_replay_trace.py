"""Unit tests of WfFormat trace parsing, on the real traces and on small bad ones."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from results_service.replay.trace import (
    TraceError,
    Workflow,
    builtin_workflow,
    load_workflow,
    parse_workflow,
    scaled_size,
    total_bytes,
)
from tests.workflow_traces import WORKFLOWS_DIR_VARIABLE, trace_paths, workflows_dir

# Decimal units, as the traces' README writes its byte totals.
UNIT_BYTES = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def _require_traces() -> list[Path]:
    paths = trace_paths()
    if not paths:
        pytest.skip(
            f"no traces in {workflows_dir()}: set {WORKFLOWS_DIR_VARIABLE} to the "
            "folder of WfFormat JSON traces"
        )
    return paths


def _readme_rows() -> list[dict[str, str]]:
    """Read the table of the traces' README: trace, tasks, files, edges, bytes."""
    readme = workflows_dir() / "README.md"
    if not readme.exists():
        pytest.skip(f"no README.md in {workflows_dir()}")

    rows = []
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("trace", "") or set(cells[1]) <= {"-"}:
            continue
        keys = ("trace", "tasks", "files", "input_edges", "total_bytes")
        rows.append(dict(zip(keys, cells, strict=True)))
    return rows


def _parse_count(text: str) -> int:
    return int(text.replace(",", ""))


def _task(
    task_id: str,
    inputs: Sequence[str] = (),
    outputs: Sequence[str] = (),
    parents: Sequence[str] = (),
    children: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "id": task_id,
        "name": task_id,
        "parents": list(parents),
        "children": list(children),
        "inputFiles": list(inputs),
        "outputFiles": list(outputs),
    }


def _trace(
    tasks: Iterable[dict[str, Any]],
    files: Iterable[tuple[str, int]],
    execution: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    workflow: dict[str, Any] = {
        "specification": {
            "tasks": list(tasks),
            "files": [{"id": file_id, "sizeInBytes": size} for file_id, size in files],
        }
    }
    if execution is not None:
        workflow["execution"] = {"tasks": execution}
    return {"name": "test", "schemaVersion": "1.5", "workflow": workflow}


def _load(tmp_path: Path, data: object) -> Workflow:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return load_workflow(path)


def _chain_trace() -> dict[str, Any]:
    """Two tasks: `a` reads `in` and writes `mid`, `b` reads `mid` and writes `out`."""
    return _trace(
        [_task("a", ["in"], ["mid"]), _task("b", ["mid"], ["out"], parents=["a"])],
        [("in", 10), ("mid", 20), ("out", 30)],
    )


# Real traces


@pytest.mark.parametrize("path", trace_paths(), ids=lambda path: path.stem)
def test_real_trace_parses_in_topological_order(path: Path) -> None:
    workflow = load_workflow(path)

    assert workflow.tasks
    assert sorted(workflow.order) == sorted(workflow.tasks)
    position = {task_id: index for index, task_id in enumerate(workflow.order)}
    for task in workflow.tasks.values():
        for file_id in task.inputs:
            producer = workflow.producer.get(file_id)
            if producer is not None:
                assert position[producer] < position[task.task_id], (task, file_id)


def test_readme_lists_every_trace() -> None:
    paths = _require_traces()
    listed = {row["trace"] + ".json" for row in _readme_rows()}

    assert listed == {path.name for path in paths}


@pytest.mark.parametrize("row", _readme_rows() if workflows_dir().exists() else [])
def test_real_trace_matches_readme_counts(row: dict[str, str]) -> None:
    workflow = load_workflow(workflows_dir() / (row["trace"] + ".json"))
    trace_files = [f for f in workflow.files.values() if not f.synthetic]
    input_edges = sum(
        1
        for task in workflow.tasks.values()
        for file_id in task.inputs
        if not workflow.files[file_id].synthetic
    )

    assert len(workflow.tasks) == _parse_count(row["tasks"])
    assert len(trace_files) == _parse_count(row["files"])
    assert input_edges == _parse_count(row["input_edges"])

    match = re.fullmatch(r"([\d.]+) ([KMGT]?B)", row["total_bytes"])
    assert match is not None, row["total_bytes"]
    number, unit = match.groups()
    decimals = len(number.partition(".")[2])
    tolerance = 0.5 * 10**-decimals * UNIT_BYTES[unit]
    expected = float(number) * UNIT_BYTES[unit]
    assert abs(total_bytes(workflow) - expected) <= tolerance


# Malformed traces


def test_load_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "workflow": {\n    "specification": [1, 2,]\n}', "utf-8")

    with pytest.raises(TraceError, match=r"line 3, column \d+") as raised:
        load_workflow(path)
    assert str(path) in str(raised.value)


def test_load_missing_file_raises_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read the trace"):
        load_workflow(tmp_path / "absent.json")


def test_parse_rejects_missing_workflow_key(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="has no 'workflow' key"):
        _load(tmp_path, {"name": "x", "schemaVersion": "1.5"})


def test_parse_rejects_missing_specification_key(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="workflow has no 'specification' key"):
        _load(tmp_path, {"name": "x", "workflow": {"tasks": []}})


def test_parse_rejects_non_object_root() -> None:
    with pytest.raises(
        TraceError, match="the trace must be a JSON object, got an array"
    ):
        parse_workflow([], "inline")


def test_parse_rejects_tasks_that_are_not_an_array(tmp_path: Path) -> None:
    data = _chain_trace()
    data["workflow"]["specification"]["tasks"] = {"a": {}}

    with pytest.raises(TraceError, match="tasks must be a JSON array, got an object"):
        _load(tmp_path, data)


def test_parse_rejects_empty_task_list(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="tasks is empty"):
        _load(tmp_path, _trace([], [("in", 1)]))


def test_parse_rejects_task_without_id(tmp_path: Path) -> None:
    data = _chain_trace()
    del data["workflow"]["specification"]["tasks"][1]["id"]

    with pytest.raises(TraceError, match=r"tasks\[1\] has no 'id' key"):
        _load(tmp_path, data)


def test_parse_rejects_non_string_input_id(tmp_path: Path) -> None:
    data = _chain_trace()
    data["workflow"]["specification"]["tasks"][1]["inputFiles"] = ["mid", 7]

    with pytest.raises(
        TraceError, match=r"inputFiles of task 'b'\[1\] must be a string"
    ):
        _load(tmp_path, data)


def test_parse_rejects_string_size(tmp_path: Path) -> None:
    data = _chain_trace()
    data["workflow"]["specification"]["files"][0]["sizeInBytes"] = "10"

    with pytest.raises(TraceError, match="sizeInBytes of file 'in' must be an integer"):
        _load(tmp_path, data)


def test_parse_rejects_fractional_size(tmp_path: Path) -> None:
    data = _chain_trace()
    data["workflow"]["specification"]["files"][0]["sizeInBytes"] = 10.5

    with pytest.raises(TraceError, match="must be an integer, got 10.5"):
        _load(tmp_path, data)


def test_parse_rejects_negative_size(tmp_path: Path) -> None:
    data = _trace([_task("a", ["in"], ["out"])], [("in", 1), ("out", -4)])

    with pytest.raises(
        TraceError, match=r"file 'out' has a negative sizeInBytes \(-4\)"
    ):
        _load(tmp_path, data)


def test_parse_rejects_file_missing_from_files(tmp_path: Path) -> None:
    data = _trace([_task("a", ["in", "ghost"], ["out"])], [("in", 1), ("out", 2)])

    with pytest.raises(TraceError) as raised:
        _load(tmp_path, data)
    message = str(raised.value)
    assert "task 'a'" in message
    assert "'ghost'" in message
    assert "Add the file" in message


def test_parse_rejects_two_producers_of_one_file(tmp_path: Path) -> None:
    data = _trace(
        [_task("a", ["in"], ["out"]), _task("b", ["in"], ["out"])],
        [("in", 1), ("out", 2)],
    )

    with pytest.raises(TraceError) as raised:
        _load(tmp_path, data)
    message = str(raised.value)
    assert "file 'out'" in message
    assert "task 'a'" in message
    assert "task 'b'" in message


def test_parse_rejects_duplicate_task_ids(tmp_path: Path) -> None:
    data = _trace(
        [_task("a", ["in"], ["x"]), _task("a", ["in"], ["y"])],
        [("in", 1), ("x", 1), ("y", 1)],
    )

    with pytest.raises(TraceError, match=r"task id 'a' is used by .*\[0\] and \[1\]"):
        _load(tmp_path, data)


def test_parse_rejects_file_listed_with_two_sizes(tmp_path: Path) -> None:
    data = _trace([_task("a", ["in"], ["out"])], [("in", 1), ("out", 2), ("in", 3)])

    with pytest.raises(
        TraceError, match=r"file 'in' is listed twice .*\(1 and 3 bytes\)"
    ):
        _load(tmp_path, data)


def test_parse_keeps_repeated_file_same_size(tmp_path: Path) -> None:
    data = _trace([_task("a", ["in"], ["out"])], [("in", 5), ("out", 2), ("in", 5)])

    workflow = _load(tmp_path, data)

    assert workflow.files["in"].size == 5
    assert list(workflow.files) == ["in", "out"]


def test_parse_rejects_cycle_naming_its_tasks(tmp_path: Path) -> None:
    data = _trace(
        [
            _task("start", ["in"], ["s"]),
            _task("a", ["s", "z"], ["x"]),
            _task("b", ["x"], ["y"]),
            _task("c", ["y"], ["z"]),
        ],
        [("in", 1), ("s", 1), ("x", 1), ("y", 1), ("z", 1)],
    )

    with pytest.raises(TraceError, match="dependency cycle") as raised:
        _load(tmp_path, data)
    message = str(raised.value)
    assert "'a' -> 'b' -> 'c' -> 'a'" in message
    assert "'c' writes 'z' read by 'a'" in message
    assert "'start'" not in message


def test_parse_rejects_task_reading_its_own_output(tmp_path: Path) -> None:
    data = _trace([_task("a", ["in", "out"], ["out"])], [("in", 1), ("out", 2)])

    with pytest.raises(TraceError, match="dependency cycle through tasks 'a' -> 'a'"):
        _load(tmp_path, data)


def test_parse_rejects_cycle_through_parent_links(tmp_path: Path) -> None:
    data = _trace(
        [_task("a", ["in"], ["x"], parents=["b"]), _task("b", ["x"], ["y"])],
        [("in", 1), ("x", 1), ("y", 1)],
    )

    with pytest.raises(TraceError, match="dependency cycle through tasks") as raised:
        _load(tmp_path, data)
    assert "'b' is a parent of 'a'" in str(raised.value)


def test_parse_rejects_task_listing_itself_as_parent(tmp_path: Path) -> None:
    data = _trace([_task("a", ["in"], ["out"], parents=["a"])], [("in", 1), ("out", 1)])

    with pytest.raises(TraceError, match="task 'a' lists itself in parents"):
        _load(tmp_path, data)


def test_parse_rejects_unknown_parent(tmp_path: Path) -> None:
    data = _trace(
        [_task("a", ["in"], ["out"], parents=["nobody"])], [("in", 1), ("out", 1)]
    )

    with pytest.raises(TraceError, match="task 'a' lists 'nobody' in parents"):
        _load(tmp_path, data)


def test_parse_rejects_record_of_unknown_task(tmp_path: Path) -> None:
    data = _trace(
        [_task("a", ["in"], ["out"])],
        [("in", 1), ("out", 1)],
        execution=[{"id": "zz", "runtimeInSeconds": 1.0}],
    )

    with pytest.raises(TraceError, match="about task 'zz'"):
        _load(tmp_path, data)


def test_parse_rejects_negative_runtime(tmp_path: Path) -> None:
    data = _trace(
        [_task("a", ["in"], ["out"])],
        [("in", 1), ("out", 1)],
        execution=[{"id": "a", "runtimeInSeconds": -2}],
    )

    with pytest.raises(TraceError, match="runtimeInSeconds .* task 'a' must be"):
        _load(tmp_path, data)


def test_parse_rejects_unsupported_schema_version(tmp_path: Path) -> None:
    data = _chain_trace()
    data["schemaVersion"] = "1.4"

    with pytest.raises(TraceError, match='schemaVersion "1.4" is not supported'):
        _load(tmp_path, data)


# Handled cases


def test_task_without_outputs_gets_done_file(tmp_path: Path) -> None:
    data = _trace(
        [_task("a", ["in"], ["out"]), _task("check", ["out"], [])],
        [("in", 1), ("out", 2)],
    )

    workflow = _load(tmp_path, data)

    assert workflow.tasks["check"].outputs == ("check.done",)
    assert workflow.files["check.done"].size == 0
    assert workflow.files["check.done"].synthetic
    assert workflow.producer["check.done"] == "check"
    assert workflow.final_outputs == ("check.done",)


def test_zero_byte_files_accepted(tmp_path: Path) -> None:
    data = _trace([_task("a", ["in"], ["out"])], [("in", 0), ("out", 0)])

    workflow = _load(tmp_path, data)

    assert workflow.files["in"].size == 0
    assert total_bytes(workflow) == 0


def test_unused_files_left_out(tmp_path: Path) -> None:
    data = _trace([_task("a", ["in"], ["out"])], [("in", 1), ("spare", 9), ("out", 2)])

    workflow = _load(tmp_path, data)

    assert "spare" not in workflow.files
    assert workflow.unused_files == ("spare",)
    assert total_bytes(workflow) == 3


def test_parent_without_shared_file_adds_order_file(tmp_path: Path) -> None:
    data = _trace(
        [_task("a", ["in"], ["x"]), _task("b", ["in"], ["y"], parents=["a"])],
        [("in", 1), ("x", 1), ("y", 1)],
    )

    workflow = _load(tmp_path, data)

    assert workflow.tasks["a"].outputs == ("x", "a->b")
    assert workflow.tasks["b"].inputs == ("in", "a->b")
    assert workflow.files["a->b"].size == 0
    assert workflow.files["a->b"].synthetic
    assert workflow.levels == (("a",), ("b",))


def test_child_link_without_shared_file_adds_order_file(tmp_path: Path) -> None:
    data = _trace(
        [_task("a", ["in"], ["x"], children=["b"]), _task("b", ["in"], ["y"])],
        [("in", 1), ("x", 1), ("y", 1)],
    )

    workflow = _load(tmp_path, data)

    assert workflow.tasks["b"].inputs == ("in", "a->b")
    assert workflow.order == ("a", "b")


def test_parent_with_shared_file_adds_no_order_file(tmp_path: Path) -> None:
    workflow = _load(tmp_path, _chain_trace())

    assert not any(file.synthetic for file in workflow.files.values())


def test_file_dependency_counts_without_parent_listed(tmp_path: Path) -> None:
    data = _trace(
        [_task("b", ["mid"], ["out"]), _task("a", ["in"], ["mid"])],
        [("in", 1), ("mid", 1), ("out", 1)],
    )

    workflow = _load(tmp_path, data)

    assert workflow.order == ("a", "b")
    assert workflow.consumers["mid"] == ("b",)


def test_repeated_ids_in_task_lists_counted_once(tmp_path: Path) -> None:
    data = _trace([_task("a", ["in", "in"], ["out", "out"])], [("in", 1), ("out", 1)])

    workflow = _load(tmp_path, data)

    assert workflow.tasks["a"].inputs == ("in",)
    assert workflow.tasks["a"].outputs == ("out",)


@pytest.mark.parametrize(
    ("trace_priority", "expected"), [(100, 99), (50, 50), (0, 1), (-3, 1), (None, 1)]
)
def test_priority_clamped_to_service_range(
    tmp_path: Path, trace_priority: int | None, expected: int
) -> None:
    record: dict[str, Any] = {"id": "a", "runtimeInSeconds": 1.5}
    if trace_priority is not None:
        record["priority"] = trace_priority
    data = _trace([_task("a", ["in"], ["out"])], [("in", 1), ("out", 1)], [record])

    workflow = _load(tmp_path, data)

    assert workflow.tasks["a"].priority == expected


def test_command_joins_program_and_arguments(tmp_path: Path) -> None:
    record = {
        "id": "a",
        "runtimeInSeconds": 2,
        "command": {"program": "mProject", "arguments": ["-X", "in.fits"]},
    }
    data = _trace([_task("a", ["in"], ["out"])], [("in", 1), ("out", 1)], [record])

    task = _load(tmp_path, data).tasks["a"]

    assert task.command == ["mProject", "-X", "in.fits"]
    assert task.runtime_seconds == 2.0


def test_task_without_execution_record_gets_defaults(tmp_path: Path) -> None:
    task = _load(tmp_path, _chain_trace()).tasks["a"]

    assert task.runtime_seconds == 0.0
    assert task.command == []
    assert task.priority == 1


def test_fork_join_levels_and_order(tmp_path: Path) -> None:
    data = _trace(
        [
            _task("join", ["l", "r"], ["out"]),
            _task("left", ["mid"], ["l"]),
            _task("right", ["mid"], ["r"]),
            _task("fork", ["in"], ["mid"]),
        ],
        [("in", 1), ("mid", 1), ("l", 1), ("r", 1), ("out", 1)],
    )

    workflow = _load(tmp_path, data)

    assert workflow.levels == (("fork",), ("left", "right"), ("join",))
    assert workflow.order == ("fork", "left", "right", "join")
    assert workflow.input_files == ("in",)
    assert workflow.final_outputs == ("out",)
    assert workflow.consumers["mid"] == ("left", "right")


def test_name_defaults_to_file_stem() -> None:
    data = _chain_trace()
    del data["name"]

    workflow = parse_workflow(data, "/traces/montage-small.json")

    assert workflow.name == "montage-small"


# Sizes


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        (1000, 0.001, 1),
        (1499, 0.001, 1),
        (1501, 0.001, 2),
        (999, 0.0001, 0),
        (7, 1.0, 7),
    ],
)
def test_scaled_size_rounds_to_bytes(size: int, scale: float, expected: int) -> None:
    assert scaled_size(size, scale) == expected


def test_scaled_size_zero_scale_gives_zero() -> None:
    assert scaled_size(10**9, 0.0) == 0


@pytest.mark.parametrize("scale", [-0.5, float("nan"), float("inf")])
def test_scaled_size_rejects_invalid_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="size scale"):
        scaled_size(10, scale)


def test_total_bytes_scales_each_file(tmp_path: Path) -> None:
    workflow = _load(tmp_path, _chain_trace())

    assert total_bytes(workflow) == 60
    assert total_bytes(workflow, scale=0.1) == 1 + 2 + 3
    assert total_bytes(workflow, file_ids=workflow.input_files) == 10


# Built-in workflow


def test_builtin_workflow_has_fan_out_and_fan_in() -> None:
    workflow = builtin_workflow()
    fan_in = max(len(task.inputs) for task in workflow.tasks.values())
    fan_out = max(len(task.outputs) for task in workflow.tasks.values())
    trace_sizes = [f.size for f in workflow.files.values() if not f.synthetic]

    assert len(workflow.tasks) == 12
    assert fan_out >= 4
    assert fan_in >= 4
    assert len(workflow.input_files) >= 3
    assert min(trace_sizes) >= 1_000
    assert max(trace_sizes) <= 1_000_000
    assert workflow.source == "<builtin>"


def test_builtin_workflow_exercises_synthetic_files() -> None:
    workflow = builtin_workflow()

    assert workflow.files["check_config.done"].synthetic
    assert workflow.files["check_config->split_reads"].synthetic


# Random acyclic traces


@st.composite
def _random_traces(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a random acyclic trace in which tasks read earlier tasks' outputs."""
    task_count = draw(st.integers(1, 12))
    files = [("in0", draw(st.integers(0, 10**6))), ("in1", 0)]
    tasks = []
    for index in range(task_count):
        available = [file_id for file_id, _ in files]
        inputs = draw(st.lists(st.sampled_from(available), max_size=4, unique=True))
        outputs = [f"t{index}.o{n}" for n in range(draw(st.integers(0, 2)))]
        earlier = [f"t{n}" for n in range(index)]
        parents = (
            draw(st.lists(st.sampled_from(earlier), max_size=2, unique=True))
            if earlier
            else []
        )
        tasks.append(_task(f"t{index}", inputs, outputs, parents=parents))
        files.extend((output, draw(st.integers(0, 10**6))) for output in outputs)
    tasks = draw(st.permutations(tasks))
    return _trace(tasks, files)


@settings(max_examples=200, deadline=None)
@given(_random_traces())
def test_random_trace_order_respects_every_dependency(data: dict[str, Any]) -> None:
    workflow = parse_workflow(data, "random")
    position = {task_id: index for index, task_id in enumerate(workflow.order)}
    produced = set(workflow.producer)
    parents = {
        t["id"]: t["parents"] for t in data["workflow"]["specification"]["tasks"]
    }

    assert sorted(workflow.order) == sorted(workflow.tasks)
    for task in workflow.tasks.values():
        assert task.outputs
        for file_id in task.inputs:
            if file_id in produced:
                assert position[workflow.producer[file_id]] < position[task.task_id]
        for parent in parents[task.task_id]:
            assert position[parent] < position[task.task_id]
    assert set(workflow.input_files) == set(workflow.files) - produced
    for file_id in workflow.final_outputs:
        assert workflow.consumers[file_id] == ()
