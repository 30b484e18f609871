"""Parse WfFormat 1.5 workflow traces into a validated graph of tasks and files.

A trace lists tasks, the files that each task reads and writes, and an execution
record per task. `parse_workflow` checks the trace and returns a `Workflow` in which
every dependency goes through a file, so that the service can enforce it as a result:

- The file graph is the source of truth for data dependencies. A task that reads a
  file depends on the file's producer, whether or not its `parents` list that task.
- A task whose trace lists no output file gets a synthetic zero-byte output
  `"<task_id>.done"`, because the service can only complete a task through a result.
- A `parents` or `children` link with no file between the two tasks becomes a
  synthetic zero-byte file `"<parent>-><child>"`, written by the parent and read by
  the child, so that the service enforces that order too.
- Files that no task reads or writes are left out (see `Workflow.unused_files`).

`workflow.execution` is optional. A task without an execution record gets a runtime
of 0.0 seconds, an empty command and priority 1.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

logger = logging.getLogger(__name__)

MIN_PRIORITY = 1
MAX_PRIORITY = 99
DEFAULT_PRIORITY = 1
DONE_SUFFIX = ".done"
ORDER_SEPARATOR = "->"
# WfFormat 1.6 only adds optional fields to 1.5, so both parse the same way.
SUPPORTED_SCHEMA_VERSIONS = ("1.5", "1.6")


class TraceError(ValueError):
    """A trace that cannot be replayed. The message names the task or file to fix."""


@dataclasses.dataclass(frozen=True, slots=True)
class TraceFile:
    """A file of the workflow, which the replay stores as one result.

    Attributes:
        file_id: id from the trace, or a synthetic id (see the module docstring).
        size: size in bytes from the trace, before any scaling.
        synthetic: True for a file that the parser added and the trace does not list.
    """

    file_id: str
    size: int
    synthetic: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class TraceTask:
    """A task of the workflow.

    Attributes:
        task_id: unique id from the trace.
        name: task name from the trace (often its program), or the id when absent.
        inputs: ids of the files the task reads, in trace order, without repeats.
        outputs: ids of the files the task writes, in trace order, without repeats.
        runtime_seconds: runtime recorded in the trace, 0.0 when absent.
        command: program followed by its arguments, empty when absent.
        priority: 1 (lowest) to 99 (highest). The trace's priority is clamped to that
            range, and a task without one gets 1.
    """

    task_id: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    runtime_seconds: float
    command: list[str]
    priority: int


@dataclasses.dataclass(frozen=True, slots=True)
class Workflow:
    """A validated workflow: an acyclic graph of tasks linked by files.

    Attributes:
        name: workflow name from the trace, or the file name without its suffix.
        source: path of the trace, or "<builtin>".
        files: every file that a task reads or writes, synthetic files last.
        tasks: tasks by id, in trace order.
        producer: id of the task that writes each produced file.
        consumers: ids of the tasks that read each file, empty for final outputs.
        input_files: files that no task produces, which the client uploads.
        final_outputs: files that a task produces and no task reads.
        levels: task ids by level. Level 0 reads only input files, and a task in level
            n reads at least one file produced in level n - 1.
        order: task ids in a topological order, level after level.
        unused_files: files listed in the trace that no task reads or writes.
    """

    name: str
    source: str
    files: dict[str, TraceFile]
    tasks: dict[str, TraceTask]
    producer: dict[str, str]
    consumers: dict[str, tuple[str, ...]]
    input_files: tuple[str, ...]
    final_outputs: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    order: tuple[str, ...]
    unused_files: tuple[str, ...]


@dataclasses.dataclass(slots=True)
class _DraftTask:
    """A task being parsed. The linking steps append synthetic files to it."""

    task_id: str
    name: str
    inputs: list[str]
    outputs: list[str]
    parents: list[str]
    children: list[str]
    runtime_seconds: float = 0.0
    command: list[str] = dataclasses.field(default_factory=list)
    priority: int = DEFAULT_PRIORITY


def load_workflow(path: str | os.PathLike[str]) -> Workflow:
    """Read a WfFormat JSON trace file and parse it with `parse_workflow`."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        reason = error.strerror or str(error)
        message = f"{source}: cannot read the trace ({reason}). Check the path."
        raise TraceError(message) from error
    except UnicodeDecodeError as error:
        message = f"{source}: the trace is not UTF-8 text ({error}). Check the file."
        raise TraceError(message) from error

    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        message = (
            f"{source}: invalid JSON at line {error.lineno}, column {error.colno}: "
            f"{error.msg}. Fix the JSON syntax there."
        )
        raise TraceError(message) from error
    return parse_workflow(data, source)


def parse_workflow(data: object, source: str) -> Workflow:
    """Validate decoded WfFormat JSON and build its Workflow, or raise TraceError."""
    reader = _Reader(source)
    root = reader.mapping(data, "the trace")
    version = root.get("schemaVersion")
    if version is not None and version not in SUPPORTED_SCHEMA_VERSIONS:
        reader.fail(
            f"schemaVersion {_describe(version)} is not supported. Convert the trace "
            "to WfFormat 1.5 or 1.6, which keep tasks under workflow.specification."
        )
    section = reader.mapping(reader.key(root, "workflow", "the trace"), "workflow")
    spec_value = reader.key(section, "specification", "workflow")
    specification = reader.mapping(spec_value, "workflow.specification")
    name = reader.string(root.get("name", Path(source).stem), "name")

    sizes = _read_files(reader, specification.get("files", []))
    tasks_value = reader.key(specification, "tasks", "workflow.specification")
    tasks = _read_tasks(reader, tasks_value)
    _read_executions(reader, section.get("execution"), tasks)

    files, unused_files = _link_files(reader, tasks, sizes)
    _add_done_files(reader, tasks, files)
    _add_order_files(reader, tasks, files)
    producer = {
        output: task.task_id for task in tasks.values() for output in task.outputs
    }
    levels = _sort_levels(reader, tasks, producer)

    workflow = _assemble(name, source, files, tasks, producer, levels, unused_files)
    logger.debug(
        "Parsed workflow %s from %s: %d tasks, %d files (%d synthetic), %d levels",
        name,
        source,
        len(workflow.tasks),
        len(workflow.files),
        sum(file.synthetic for file in workflow.files.values()),
        len(workflow.levels),
    )
    return workflow


def builtin_workflow() -> Workflow:
    """Return the built-in 12-task workflow, used when no trace file is given."""
    return parse_workflow(_builtin_trace(), "<builtin>")


def scaled_size(size: int, scale: float) -> int:
    """Return `size * scale` rounded to whole bytes (ties to even), at least 0."""
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"size scale must be a finite number >= 0, got {scale!r}")
    return max(0, round(size * scale))


def total_bytes(
    workflow: Workflow, scale: float = 1.0, file_ids: Iterable[str] | None = None
) -> int:
    """Sum the scaled sizes of the given files, or of every file of the workflow."""
    if file_ids is None:
        file_ids = workflow.files
    return sum(scaled_size(workflow.files[file_id].size, scale) for file_id in file_ids)


class _Reader:
    """Typed access to decoded JSON that raises TraceError naming the bad value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> NoReturn:
        raise TraceError(f"{self.source}: {message}")

    def key(self, obj: dict[str, Any], key: str, where: str) -> Any:
        if key not in obj:
            self.fail(f"{where} has no '{key}' key. Add it.")
        return obj[key]

    def mapping(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(f"{where} must be a JSON object, got {_describe(value)}.")
        return value

    def array(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(f"{where} must be a JSON array, got {_describe(value)}.")
        return value

    def optional_array(self, obj: dict[str, Any], key: str, where: str) -> list[Any]:
        """Return the array under `key`, or an empty list when it is missing or null."""
        value = obj.get(key)
        return [] if value is None else self.array(value, where)

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(f"{where} must be a non-empty string, got {_describe(value)}.")
        return value

    def strings(self, value: object, where: str) -> list[str]:
        items = self.array(value, where)
        for index, item in enumerate(items):
            if not isinstance(item, str):
                self.fail(f"{where}[{index}] must be a string, got {_describe(item)}.")
        return items

    def integer(self, value: object, where: str) -> int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(f"{where} must be an integer, got {_describe(value)}.")
        return value

    def seconds(self, value: object, where: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            self.fail(f"{where} must be a number of seconds >= 0, got {value!r}.")
        return float(value)


def _describe(value: object) -> str:
    """Describe a JSON value for an error message, shortening long text."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if not isinstance(value, str | int | float | None):
        return f"a Python {type(value).__name__}"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_files(reader: _Reader, value: object) -> dict[str, int]:
    """Read `files[]` into sizes by id. A file listed twice with one size is kept."""
    sizes: dict[str, int] = {}
    for index, item in enumerate(reader.array(value, "workflow.specification.files")):
        where = f"workflow.specification.files[{index}]"
        entry = reader.mapping(item, where)
        file_id = reader.string(reader.key(entry, "id", where), f"{where}.id")
        size_value = reader.key(entry, "sizeInBytes", f"file '{file_id}'")
        size = reader.integer(size_value, f"sizeInBytes of file '{file_id}'")

        if size < 0:
            reader.fail(
                f"file '{file_id}' has a negative sizeInBytes ({size}). "
                "Set it to the file's size in bytes."
            )
        previous = sizes.setdefault(file_id, size)
        if previous != size:
            reader.fail(
                f"file '{file_id}' is listed twice with different sizes "
                f"({previous} and {size} bytes). Keep one entry."
            )
    return sizes


def _read_tasks(reader: _Reader, value: object) -> dict[str, _DraftTask]:
    """Read `specification.tasks[]`, dropping repeats from each list of ids."""
    items = reader.array(value, "workflow.specification.tasks")
    if not items:
        reader.fail("workflow.specification.tasks is empty. Add at least one task.")

    tasks: dict[str, _DraftTask] = {}
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"workflow.specification.tasks[{index}]"
        entry = reader.mapping(item, where)
        task_id = reader.string(reader.key(entry, "id", where), f"{where}.id")
        if task_id in tasks:
            reader.fail(
                f"task id '{task_id}' is used by workflow.specification.tasks"
                f"[{first_index[task_id]}] and [{index}]. Give each task its own id."
            )

        label = f"task '{task_id}'"
        lists = {}
        for key in ("inputFiles", "outputFiles", "parents", "children"):
            ids = reader.strings(entry.get(key, []), f"{key} of {label}")
            lists[key] = list(dict.fromkeys(ids))
        tasks[task_id] = _DraftTask(
            task_id=task_id,
            name=reader.string(entry.get("name", task_id), f"name of {label}"),
            inputs=lists["inputFiles"],
            outputs=lists["outputFiles"],
            parents=lists["parents"],
            children=lists["children"],
        )
        first_index[task_id] = index
    return tasks


def _read_executions(
    reader: _Reader, value: object, tasks: dict[str, _DraftTask]
) -> None:
    """Copy runtime, command and priority from `workflow.execution.tasks[]`."""
    if value is None:
        return
    section = reader.mapping(value, "workflow.execution")
    items = reader.optional_array(section, "tasks", "workflow.execution.tasks")

    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"workflow.execution.tasks[{index}]"
        entry = reader.mapping(item, where)
        task_id = reader.string(reader.key(entry, "id", where), f"{where}.id")
        if task_id not in tasks:
            reader.fail(
                f"{where} is about task '{task_id}', which is not in "
                "workflow.specification.tasks. Fix the id or remove the entry."
            )
        if task_id in seen:
            reader.fail(
                f"workflow.execution.tasks lists task '{task_id}' twice. "
                "Keep one entry."
            )
        seen.add(task_id)

        task = tasks[task_id]
        label = f"the execution record of task '{task_id}'"
        runtime = entry.get("runtimeInSeconds")
        if runtime is not None:
            where = f"runtimeInSeconds in {label}"
            task.runtime_seconds = reader.seconds(runtime, where)
        task.command = _read_command(reader, entry.get("command"), label)
        priority = entry.get("priority")
        if priority is not None:
            priority = reader.integer(priority, f"priority in {label}")
            task.priority = min(MAX_PRIORITY, max(MIN_PRIORITY, priority))


def _read_command(reader: _Reader, value: object, label: str) -> list[str]:
    if value is None:
        return []
    command = reader.mapping(value, f"command in {label}")
    program = command.get("program")
    arguments = reader.strings(command.get("arguments", []), f"arguments in {label}")
    if program is None or program == "":
        return list(arguments)
    return [reader.string(program, f"program in {label}"), *arguments]


def _link_files(
    reader: _Reader, tasks: dict[str, _DraftTask], sizes: dict[str, int]
) -> tuple[dict[str, TraceFile], tuple[str, ...]]:
    """Check that every file a task names is listed and has one producer.

    Returns the used files in `files[]` order and the ids of the unused ones.
    """
    producer: dict[str, str] = {}
    used: set[str] = set()
    for task in tasks.values():
        for key, file_ids in (
            ("inputFiles", task.inputs),
            ("outputFiles", task.outputs),
        ):
            for file_id in file_ids:
                if file_id not in sizes:
                    reader.fail(
                        f"task '{task.task_id}' names file '{file_id}' in {key}, but "
                        "workflow.specification.files does not list it. Add the file "
                        "with its sizeInBytes."
                    )
                used.add(file_id)

        for file_id in task.outputs:
            other = producer.setdefault(file_id, task.task_id)
            if other != task.task_id:
                reader.fail(
                    f"file '{file_id}' is an output of both task '{other}' and task "
                    f"'{task.task_id}'. Each file needs a single producer, so rename "
                    "one of the outputs."
                )

    files = {
        file_id: TraceFile(file_id, size)
        for file_id, size in sizes.items()
        if file_id in used
    }
    unused = tuple(file_id for file_id in sizes if file_id not in used)
    return files, unused


def _add_synthetic_file(
    reader: _Reader, files: dict[str, TraceFile], file_id: str
) -> None:
    if file_id in files:
        reader.fail(
            f"file '{file_id}' in the trace has the id of a synthetic file that the "
            "replay adds. Rename the file."
        )
    files[file_id] = TraceFile(file_id, 0, synthetic=True)


def _add_done_files(
    reader: _Reader, tasks: dict[str, _DraftTask], files: dict[str, TraceFile]
) -> None:
    """Give each task without outputs the zero-byte output `<task_id>.done`."""
    for task in tasks.values():
        if not task.outputs:
            file_id = task.task_id + DONE_SUFFIX
            _add_synthetic_file(reader, files, file_id)
            task.outputs.append(file_id)


def _add_order_files(
    reader: _Reader, tasks: dict[str, _DraftTask], files: dict[str, TraceFile]
) -> None:
    """Turn each parent/child link without a shared file into a zero-byte file."""
    links: dict[tuple[str, str], None] = {}
    for task in tasks.values():
        for relation, others in (
            ("parents", task.parents),
            ("children", task.children),
        ):
            for other in others:
                if other not in tasks:
                    reader.fail(
                        f"task '{task.task_id}' lists '{other}' in {relation}, but no "
                        "task has that id. Remove it or add the task."
                    )
                if other == task.task_id:
                    reader.fail(
                        f"dependency cycle: task '{other}' lists itself in {relation}. "
                        "Remove it."
                    )
                link = (
                    (other, task.task_id)
                    if relation == "parents"
                    else (task.task_id, other)
                )
                links[link] = None

    input_sets = {task_id: set(task.inputs) for task_id, task in tasks.items()}
    for parent_id, child_id in links:
        parent, child = tasks[parent_id], tasks[child_id]
        if input_sets[child_id].isdisjoint(parent.outputs):
            file_id = parent_id + ORDER_SEPARATOR + child_id
            _add_synthetic_file(reader, files, file_id)
            parent.outputs.append(file_id)
            child.inputs.append(file_id)


def _sort_levels(
    reader: _Reader, tasks: dict[str, _DraftTask], producer: dict[str, str]
) -> tuple[tuple[str, ...], ...]:
    """Group the tasks by level with Kahn's algorithm, or raise on a cycle."""
    predecessors = {
        task_id: list(dict.fromkeys(producer[f] for f in task.inputs if f in producer))
        for task_id, task in tasks.items()
    }
    successors: dict[str, list[str]] = collections.defaultdict(list)
    for task_id, parents in predecessors.items():
        for parent_id in parents:
            successors[parent_id].append(task_id)

    waiting = {task_id: len(parents) for task_id, parents in predecessors.items()}
    ready = collections.deque(
        task_id for task_id, count in waiting.items() if not count
    )
    level = dict.fromkeys(ready, 0)
    while ready:
        task_id = ready.popleft()
        for child_id in successors[task_id]:
            waiting[child_id] -= 1
            if waiting[child_id] == 0:
                level[child_id] = 1 + max(level[p] for p in predecessors[child_id])
                ready.append(child_id)

    if len(level) < len(tasks):
        _raise_cycle(reader, tasks, predecessors, set(tasks) - set(level))
    groups: list[list[str]] = [[] for _ in range(max(level.values()) + 1)]
    for task_id in tasks:
        groups[level[task_id]].append(task_id)
    return tuple(tuple(group) for group in groups)


def _raise_cycle(
    reader: _Reader,
    tasks: dict[str, _DraftTask],
    predecessors: dict[str, list[str]],
    unsorted: set[str],
) -> NoReturn:
    """Find one cycle among the unsorted tasks and raise TraceError naming it.

    Every unsorted task has an unsorted predecessor, so walking predecessors from any
    of them must come back to a task already on the path.
    """
    task_id = next(task_id for task_id in tasks if task_id in unsorted)
    path: list[str] = []
    position: dict[str, int] = {}
    while task_id not in position:
        position[task_id] = len(path)
        path.append(task_id)
        task_id = next(p for p in predecessors[task_id] if p in unsorted)
    cycle = path[position[task_id] :][::-1]

    # Start at the cycle's first task in trace order, so the message is stable.
    trace_order = {task: index for index, task in enumerate(tasks)}
    first = cycle.index(min(cycle, key=trace_order.__getitem__))
    cycle = cycle[first:] + cycle[:first]

    links = []
    for index, producer_id in enumerate(cycle):
        consumer_id = cycle[(index + 1) % len(cycle)]
        outputs = tasks[producer_id].outputs
        shared = next(f for f in tasks[consumer_id].inputs if f in outputs)
        if shared == producer_id + ORDER_SEPARATOR + consumer_id:
            links.append(f"'{producer_id}' is a parent of '{consumer_id}'")
        else:
            links.append(f"'{producer_id}' writes '{shared}' read by '{consumer_id}'")
    names = " -> ".join(f"'{task_id}'" for task_id in [*cycle, cycle[0]])
    reader.fail(
        f"dependency cycle through tasks {names}: {', '.join(links)}. Remove one of "
        "these file or parent links."
    )


def _assemble(
    name: str,
    source: str,
    files: dict[str, TraceFile],
    drafts: dict[str, _DraftTask],
    producer: dict[str, str],
    levels: tuple[tuple[str, ...], ...],
    unused_files: tuple[str, ...],
) -> Workflow:
    """Build the frozen Workflow from the linked draft tasks."""
    tasks = {
        task_id: TraceTask(
            task_id=task_id,
            name=draft.name,
            inputs=tuple(draft.inputs),
            outputs=tuple(draft.outputs),
            runtime_seconds=draft.runtime_seconds,
            command=draft.command,
            priority=draft.priority,
        )
        for task_id, draft in drafts.items()
    }
    consumers: dict[str, list[str]] = {file_id: [] for file_id in files}
    for task in tasks.values():
        for file_id in task.inputs:
            consumers[file_id].append(task.task_id)

    return Workflow(
        name=name,
        source=source,
        files=files,
        tasks=tasks,
        producer=producer,
        consumers={file_id: tuple(ids) for file_id, ids in consumers.items()},
        input_files=tuple(f for f in files if f not in producer),
        final_outputs=tuple(f for f in files if f in producer and not consumers[f]),
        levels=levels,
        order=tuple(task_id for level in levels for task_id in level),
        unused_files=unused_files,
    )


# The built-in workflow is a small read-alignment pipeline: one split fans out to four
# alignments, which the merge fans back in. `check_config` has no output and is
# linked to `split_reads` by `parents` only, so it exercises both synthetic files.
_BUILTIN_SIZES = {
    "reads.fastq": 1_000_000,
    "reference.fa": 400_000,
    "pipeline.json": 2_048,
    "reference.idx": 120_000,
    **{f"chunk_{i}.fastq": 250_000 for i in range(4)},
    **{f"aligned_{i}.bam": 180_000 for i in range(4)},
    "merged.bam": 720_000,
    "alignment_stats.txt": 6_000,
    "variants.vcf": 40_000,
    "annotated.vcf": 60_000,
    "read_qc.txt": 8_000,
    "report.html": 24_000,
}
_CHUNKS = [f"chunk_{i}.fastq" for i in range(4)]
_ALIGNED = [f"aligned_{i}.bam" for i in range(4)]
# Task id, input files, output files, runtime in seconds, priority.
_BUILTIN_TASKS: list[tuple[str, list[str], list[str], float, int]] = [
    ("check_config", ["pipeline.json"], [], 0.01, 60),
    ("index_reference", ["reference.fa"], ["reference.idx"], 0.2, 50),
    ("split_reads", ["reads.fastq", "pipeline.json"], _CHUNKS, 0.1, 50),
    *[
        (
            f"align_{i}",
            [_CHUNKS[i], "reference.fa", "reference.idx"],
            [_ALIGNED[i]],
            0.3,
            40,
        )
        for i in range(4)
    ],
    ("merge_alignments", _ALIGNED, ["merged.bam", "alignment_stats.txt"], 0.15, 30),
    ("call_variants", ["merged.bam", "reference.fa"], ["variants.vcf"], 0.25, 30),
    (
        "annotate_variants",
        ["variants.vcf", "pipeline.json"],
        ["annotated.vcf"],
        0.05,
        20,
    ),
    ("read_qc", ["reads.fastq"], ["read_qc.txt"], 0.05, 20),
    (
        "write_report",
        ["annotated.vcf", "read_qc.txt", "alignment_stats.txt"],
        ["report.html"],
        0.02,
        10,
    ),
]


def _builtin_trace() -> dict[str, Any]:
    """Return the built-in workflow as WfFormat 1.5 JSON, ready for parse_workflow."""
    spec_tasks = []
    execution_tasks = []
    for task_id, inputs, outputs, runtime, priority in _BUILTIN_TASKS:
        spec_tasks.append(
            {
                "id": task_id,
                "name": task_id.rstrip("_0123456789"),
                "parents": ["check_config"] if task_id == "split_reads" else [],
                "children": [],
                "inputFiles": inputs,
                "outputFiles": outputs,
            }
        )
        execution_tasks.append(
            {
                "id": task_id,
                "runtimeInSeconds": runtime,
                "command": {
                    "program": task_id.rstrip("_0123456789"),
                    "arguments": inputs,
                },
                "priority": priority,
            }
        )

    files = [
        {"id": file_id, "sizeInBytes": size} for file_id, size in _BUILTIN_SIZES.items()
    ]
    return {
        "name": "builtin-alignment-12",
        "schemaVersion": "1.5",
        "workflow": {
            "specification": {"tasks": spec_tasks, "files": files},
            "execution": {"tasks": execution_tasks},
        },
    }
