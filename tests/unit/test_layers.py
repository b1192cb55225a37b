"""The package's dependencies point one way: no import cycle (counting imports made inside
functions), and the core modules never reach up to the layers built on them."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "floodway"

#: modules everything else builds on: values, rules and storage; they import none of UPPER
CORE = {
    "floodway.errors",
    "floodway.units",
    "floodway.jobs",
    "floodway.limits",
    "floodway.quota",
    "floodway.retry",
    "floodway.inputs",
    "floodway.jsontext",
    "floodway.liveness",
    "floodway.store",
    "floodway.store.base",
    "floodway.store.sqlite",
    "floodway.store.postgres",
}
#: the layers that run jobs and serve people
UPPER = {
    "floodway",
    "floodway.app",
    "floodway.worker",
    "floodway.context",
    "floodway.http",
    "floodway.flows",
    "floodway.alerts",
    "floodway.schedule",
    "floodway.stats",
    "floodway.cli",
    "floodway.web",
    "floodway.web.api",
    "floodway.web.dashboard",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the floodway modules it imports at run time (anywhere in the file, functions
    included; ``if TYPE_CHECKING:`` blocks excluded, as they are never executed)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)

    def visit(name: str, package: str, node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(name, package, other)
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found = [f"{target}.{a.name}" for a in child.names if f"{target}.{a.name}" in modules]
                for dep in found or ([target] if target in modules else []):
                    if dep != name:
                        graph[name].add(dep)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in modules and alias.name != name:
                        graph[name].add(alias.name)
            visit(name, package, child)

    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        visit(name, package, ast.parse(path.read_text()))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_the_graph_is_read_from_the_sources():
    graph = import_graph()
    assert "floodway.store.sql" in graph["floodway.store.sqlite.connection"]
    assert "floodway.quota" in graph["floodway.store.base"]
    assert "floodway.worker" in graph["floodway.app"]


def test_no_import_cycle_not_even_through_imports_inside_functions():
    assert cycles(import_graph()) == []


def test_cycles_are_found_when_there_are_some():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_never_imports_the_layers_built_on_it():
    graph = import_graph()
    core = CORE | {name for name in graph if name.startswith("floodway.store.")}
    reaching_up = {name: sorted(graph[name] & UPPER) for name in core if graph[name] & UPPER}
    assert reaching_up == {}


def test_the_worker_reaches_schedules_alerts_and_flow_logging_through_hooks_only():
    graph = import_graph()
    # the worker does not import alerts or schedule, and neither do the modules it is made of
    worker = [
        f"floodway.{m}" for m in ("worker", "worker_leases", "worker_plan", "worker_pacing", "worker_outcomes", "hooks")
    ]
    beside = {"floodway.alerts", "floodway.schedule", "floodway.flows", "floodway.app"}
    assert {name: sorted(graph[name] & beside) for name in worker if graph[name] & beside} == {}
    assert {"floodway.alerts", "floodway.schedule", "floodway.flows"} <= graph["floodway.app"]


def test_no_source_file_grows_past_800_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 800}
    assert long == {}


def test_every_relative_import_names_a_module_that_exists():
    """Imports inside functions run only when their function does: one left pointing at a module
    that moved would fail only then, so each is resolved here."""
    import importlib.util

    missing = []
    for path in SRC.rglob("*.py"):
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split(".")
                target = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
                if importlib.util.find_spec(target) is None:
                    missing.append(f"{path.relative_to(SRC)}:{node.lineno} {target}")
    assert missing == []


#: the layers, bottom up (docs/ARCHITECTURE.md draws the same picture): a module imports only
#: modules of its own layer or the layers below it
LAYERS = [
    [
        "errors",
        "units",
        "inputs",
        "jsontext",
        "jobs",
        "limits",
        "quota",
        "quota_state",
        "window_ends",
        "refused_windows",
        "slow_start",
        "usage_bucket",
        "retry",
        "liveness",
        "config",
        "tracing",
        "forecast",
    ],
    ["store"],
    ["resumable", "cost", "http_pools", "http_reports", "http", "context", "flows", "throttling", "alerts", "tokens"],
    ["worker", "worker_plan", "worker_pacing", "worker_leases", "worker_outcomes", "worker_batches", "hooks"],
    [
        "tasks",
        "argtypes",
        "options",
        "shaping",
        "enqueueing",
        "app",
        "commit",
        "handle",
        "schedule",
        "stats",
        "forecasting",
        "metrics",
    ],
    ["web", "cli", "demo", "__main__", ""],
]


def layer_of(module: str) -> int:
    name = module.removeprefix("floodway").removeprefix(".")
    for index, names in enumerate(LAYERS):
        if any(name == n or (n and name.startswith(n + ".")) for n in names):
            return index
    raise AssertionError(f"{module} is in no layer: place it in LAYERS")


def test_each_layer_imports_only_its_own_and_the_ones_below():
    upward = sorted(f"{m} -> {d}" for m, deps in import_graph().items() for d in deps if layer_of(d) > layer_of(m))
    assert upward == []
