"""The shape of deployments/: no import cycle between its modules, one deployment class per
file, and no Ray/device decision made outside training.cluster."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from training.data import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "deployments"


def _imports(path: Path) -> set[str]:
    """deployments.* modules imported anywhere in the file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n for n in names if n.startswith("deployments.")}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {f"deployments.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: _imports(path) & modules.keys() for name, path in modules.items()}


def test_no_import_cycle_in_deployments():
    graph = _graph()
    assert "deployments.app" in graph and graph["deployments.app"]
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for child in sorted(graph[module]):
            visit(child, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_one_deployment_class_per_file():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        deployments = [
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef)
            and any("deployment" in ast.unparse(d) for d in node.decorator_list)
        ]
        assert len(deployments) <= 1, f"{path.name} defines {deployments}"


def test_cluster_decisions_only_through_training_cluster():
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        for needle in ("cluster_resources(", "cuda.device_count(", "cuda.is_available("):
            assert needle not in text, f"{path.name} calls {needle} (use training.cluster)"


def test_the_ingress_replica_does_not_load_torch():
    """The ingress parses, routes and composes: loading torch would add seconds to every
    start of its replica (the second `make run` waits for it)."""
    code = "import sys, deployments.ingress; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_launchers_background_imports_leave_ray_to_the_main_thread():
    """The launcher imports the heavy modules in a thread while the main thread starts Ray;
    if that thread imported Ray's modules too, the two could meet one half-initialised."""
    code = (
        "import sys; import deployments.launcher as launcher; "
        "before = {m for m in sys.modules if m == 'ray' or m.startswith('ray.')}; "
        "launcher.warm_imports(); "
        "after = {m for m in sys.modules if m == 'ray' or m.startswith('ray.')}; "
        "print(sorted(after - before), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] True"
