"""The package's shape, checked: no import cycle between its modules, no private name used
across modules, modules and functions of readable length, and the planner's cost model
importable without torch or Horovod (as its docstring says)."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hvd_hier"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 45  # code lines, the docstring not counted


def modules():
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported(name, path, known):
    """(module, imported name) pairs of hvd_hier's own imports in ``path``."""
    tree = ast.parse(path.read_text())
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.startswith("hvd_hier"):
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    yield (full, None) if full in known else (target, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, None


def test_no_import_cycle_between_modules():
    known = modules()
    graph = {name: {m for m, _ in imported(name, path, known) if m in known and m != name}
             for name, path in known.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_private_name_crosses_modules():
    known = modules()
    crossing = [(name, target, what) for name, path in known.items()
                for target, what in imported(name, path, known)
                if what and what.startswith("_") and what not in ("_C", "__version__")]
    assert crossing == []


def test_modules_and_functions_are_of_readable_length():
    long_modules, long_functions = [], []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append((name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str)
                start = first.end_lineno + 1 if docstring else node.lineno
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long_functions.append((name, node.name, node.end_lineno - start + 1))
    assert long_modules == [] and long_functions == []


def test_the_cost_model_imports_without_torch_or_horovod():
    script = textwrap.dedent('''
        import importlib.abc, sys

        class Hidden(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("torch", "horovod", "numpy"):
                    raise ImportError(f"{name} hidden by the test")
                return None

        sys.meta_path.insert(0, Hidden())
        from hvd_hier.plan.model import Cluster, global_link_bytes, step_time
        import hvd_hier
        print(global_link_bytes(8e6, 8, 4), hvd_hier.Level(4, "local"), hvd_hier.HierSchedule)
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split()[0] == "14000000.0"  # one ring over 8 ranks: 2 * 7/8 of 8 MB
