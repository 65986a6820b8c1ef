"""The house rules that a reader cannot see in one file: no import cycle inside pro_lib, no kfp or
streamlit in pro_lib, and one definition each of the weight parser, the objective check, the
checkpoint finder and the registry names. Standard library only (ast, re); fast.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRO_LIB = REPO / "pro_lib"
# the code that must speak the one vocabulary (tests and scripts may spell things out)
LAYERS = ("pro_lib", "components", "pipelines", "ui")


def py_files(*roots: str) -> list[Path]:
    return sorted(p for r in roots for p in (REPO / r).rglob("*.py") if ".venv" not in p.parts)


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def module_level_imports(tree: ast.Module, name: str, is_pkg: bool, *, lazy: bool = False) -> set[str]:
    """Modules imported while ``name`` itself is imported: module and class bodies, ``if``/``try``
    blocks at that level, not function bodies (those run later) nor ``if TYPE_CHECKING``.
    ``lazy=True``: the imports inside functions too."""
    out: set[str] = set()
    package = name if is_pkg else name.rpartition(".")[0]

    def visit(stmts):
        for node in stmts:
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and lazy:
                visit(node.body)
            elif isinstance(node, (ast.For, ast.While)) and lazy:
                visit(node.body)
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With)):
                visit(node.body)
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
    visit(tree.body)
    return out


def import_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    files = {module_name(p): p for p in py_files("pro_lib")}
    graph = {}
    for name, path in files.items():
        deps = module_level_imports(ast.parse(path.read_text()), name, path.name == "__init__.py", lazy=lazy)
        # edges to other pro_lib modules (a package's own parents are imported first anyway)
        graph[name] = {d for d in deps if d in files and d != name and not name.startswith(d + ".")}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_cycle_finder_sees_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse("import os\nfrom . import io\nif TYPE_CHECKING:\n    import x\n"
                     "def f():\n    import y\ntry:\n    from .registry import z\nexcept ImportError:\n    pass\n")
    assert module_level_imports(tree, "pro_lib.tracking", False) == {
        "os", "pro_lib", "pro_lib.io", "pro_lib.registry", "pro_lib.registry.z"}
    assert "y" in module_level_imports(tree, "pro_lib.tracking", False, lazy=True)


def test_no_import_cycle_inside_pro_lib():
    graph = import_graph()
    assert "pro_lib.io" in graph and "pro_lib.cli" in graph
    assert find_cycles(graph) == []


# Function-level imports that would close a cycle (none left; an entry here must name the change that
# removes it). The test fails on any other cycle and on a stale entry.
KNOWN_LAZY_EDGES: set[tuple[str, str]] = set()


def test_no_import_cycle_through_imports_inside_functions():
    """A function-level import only hides a cycle (e.g. io -> registry -> tracking -> io): the
    modules still cannot be read or tested apart. Low-level modules do not reach up."""
    graph = import_graph(lazy=True)
    stale = [e for e in KNOWN_LAZY_EDGES if e[1] not in graph.get(e[0], set())]
    assert not stale, f"remove these from KNOWN_LAZY_EDGES, they are gone: {stale}"
    pruned = {a: {b for b in targets if (a, b) not in KNOWN_LAZY_EDGES} for a, targets in graph.items()}
    assert find_cycles(pruned) == []


MAX_MODULE_LINES = 500  # a module of the library reads in one sitting


def test_no_pro_lib_module_over_500_lines():
    long = {str(p): n for p in py_files("pro_lib") if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules at a seam (at most {MAX_MODULE_LINES} lines each): {long}"


def test_pro_lib_never_imports_kfp_or_streamlit():
    bad = []
    for path in py_files("pro_lib"):
        for node in ast.walk(ast.parse(path.read_text())):  # lazy imports inside functions included
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{rel(path)}:{node.lineno} {n}" for n in names if n.split(".")[0] in ("kfp", "streamlit")]
    assert bad == []


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _calls(fn: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return out


def test_one_weight_parser():
    """Every weight parser outside pro_lib.targets is a thin front of pro_lib.targets.parse_weights."""
    found, stray = [], []
    for path in py_files(*LAYERS):
        for fn in _functions(path):
            if re.search(r"parse\w*weight", fn.name):
                found.append(f"{rel(path)}:{fn.name}")
                if rel(path) != "pro_lib/targets.py" and "parse_weights" not in _calls(fn):
                    stray.append(f"{rel(path)}:{fn.lineno} {fn.name}")
    assert "pro_lib/targets.py:parse_weights" in found
    assert stray == [], "parse weights with pro_lib.targets.parse_weights"


def _mentions_objectives(node: ast.AST) -> bool:
    return bool(re.search(r"\b(objectives|names)\b", ast.unparse(node)))


def test_one_objective_check():
    """Objective lists are compared (and a mismatch raised) only in pro_lib.targets.check_objectives."""
    stray = []
    for path in py_files(*LAYERS):
        if rel(path) == "pro_lib/targets.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.If) or not any(isinstance(n, ast.Raise) for n in ast.walk(node)):
                continue
            for cmp in ast.walk(node.test):
                if (isinstance(cmp, ast.Compare) and any(isinstance(op, ast.NotEq) for op in cmp.ops)
                        and _mentions_objectives(cmp.left) and all(map(_mentions_objectives, cmp.comparators))
                        and "len(" not in ast.unparse(cmp)):
                    stray.append(f"{rel(path)}:{node.lineno} {ast.unparse(cmp)}")
    assert stray == [], "check objectives with pro_lib.targets.check_objectives"


@pytest.mark.skipif(not (PRO_LIB / "checkpoints.py").is_file(),
                    reason="pro_lib/checkpoints.py (the one checkpoint finder) comes with the resume branch")
def test_one_checkpoint_finder():
    finder = re.compile(r"^\s*def\s+_?(find|latest|last|newest|resume)_?\w*checkpoint\w*\s*\(", re.M)
    stray = [f"{rel(p)}: {m.group(0).strip()}" for p in py_files(*LAYERS) if rel(p) != "pro_lib/checkpoints.py"
             for m in finder.finditer(p.read_text())]
    assert stray == [], "find checkpoints with pro_lib.checkpoints"


# a string that *is* a registered name, a models:/ reference to one, or a name prefix
NAME_LITERAL = re.compile(r"(models:/)?pro-(orchestrator|reward-|policy-)(?!.*/\d)\S*")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_registry_names_defined_once():
    stray = []
    for path in py_files(*LAYERS):
        if rel(path) == "pro_lib/registry.py":
            continue
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                    and NAME_LITERAL.fullmatch(node.value.strip())
                    and "not a registered model" not in lines[node.lineno - 1]):
                stray.append(f"{rel(path)}:{node.lineno} {node.value!r}")
    assert stray == [], "use pro_lib.registry's ORCHESTRATOR_MODEL, reward_model_name, policy_model_name, model_ref"


def test_pro_home_and_tracking_default_defined_once():
    stray = []
    for path in py_files(*LAYERS):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"""["']\.pro["']|/ ?["']mlflow\.db["']|get\(\s*["']PRO_HOME["']""", code) \
                    and rel(path) not in ("pro_lib/io.py", "pro_lib/tracking.py"):
                stray.append(f"{rel(path)}:{i} {line.strip()}")
    assert stray == [], "use pro_lib.io.pro_home and pro_lib.tracking.tracking_uri"


def test_artifact_file_names_defined_once():
    """Every manifest / artifact file name is spelled only in pro_lib/artifacts.py: the others read and
    write through its dataclasses and constants (a path-like string ending in one of the names is a
    stray copy; prose in messages and help texts may mention them)."""
    from pro_lib.artifacts import ARTIFACT_FILES

    assert {"pro_reward.json", "pro_orchestrator.json", "wic.json", "soups.json", "suite.yaml",
            "target_report.json", "pro_endpoint.json", "fingerprint.json", "eval.json"} <= set(ARTIFACT_FILES)
    literal = re.compile(r"[\w./{}-]*\b(" + "|".join(map(re.escape, ARTIFACT_FILES)) + r")")
    stray = []
    for path in py_files(*LAYERS):
        if rel(path) == "pro_lib/artifacts.py":
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                    and literal.fullmatch(node.value.strip())):
                stray.append(f"{rel(path)}:{node.lineno} {node.value!r}")
    assert stray == [], "use the manifests and file names of pro_lib.artifacts"


def test_one_device_choice_and_one_prompt_cut():
    """Device choice and prompt truncation live in pro_lib.policy only (resolve_device, truncate_prompt)."""
    choice = re.compile(r"""["']cuda["']\s+if\s+torch\.cuda\.is_available\(\)""")
    stray = [f"{rel(p)}:{fn.lineno} {fn.name}" for p in py_files(*LAYERS) if rel(p) != "pro_lib/policy.py"
             for fn in _functions(p) if fn.name in ("truncate_prompt", "resolve_device", "local_device", "_device")
             or choice.search(ast.unparse(fn))]
    assert stray == [], "choose the device with pro_lib.policy.resolve_device, cut prompts with truncate_prompt"


# -- imports by name (importlib strings) and private names ---------------------------------------------

def string_import_edges(root: str = "pro_lib") -> dict[str, set[str]]:
    """Imports written as strings: ``"pkg.module:attr"`` anywhere (resolved by importlib later, as
    ``add_stage(..., "pro_lib.orchestrator:train_orchestrator")`` does), and dotted module names in a module
    that calls ``importlib.import_module`` (``pro_lib.cli``'s COMMAND_MODULES)."""
    files = {module_name(p): p for p in py_files(root)}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        text = path.read_text()
        uses_importlib = "import_module(" in text
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            m = re.fullmatch(r"([A-Za-z_][\w.]*)(:\w+)?", node.value)
            if m and m.group(1) in files and m.group(1) != name and (m.group(2) or uses_importlib):
                edges.setdefault(name, set()).add(m.group(1))
    return edges


def test_string_import_finder_sees_the_command_table():
    edges = string_import_edges()
    assert {"pro_lib.commands.wic", "pro_lib.commands.data"} <= edges["pro_lib.cli"]
    assert "pro_lib.orchestrator" in edges["pro_lib.commands.orchestrator"]


def test_no_import_cycle_through_importlib_strings():
    """``pro_lib.cli`` imports the command modules by name; a command module that imported ``pro_lib.cli``
    back (it did, for add_stage) closes a cycle no import statement shows."""
    graph = import_graph(lazy=True)
    for a, targets in string_import_edges().items():
        graph.setdefault(a, set()).update(t for t in targets if not a.startswith(t + "."))
    assert find_cycles(graph) == []


# Imports of another module's private (_underscore) names that exist today, each with why it stays for now.
# The test fails on a new one and on a stale entry; shrink it, never grow it.
KNOWN_PRIVATE_IMPORTS: dict[tuple[str, str, str], str] = {
    **{("pro_lib.promotion", "pro_lib.registry", n): "promotion was split out of registry and still uses its "
                                                     "MLflow client helpers"
       for n in ("_already_exists", "_client", "_not_found", "_version_info")},
}


def private_imports() -> set[tuple[str, str, str]]:
    """(importer, module, name) for every ``from <project module> import _name`` in another module."""
    out = set()
    for path in py_files(*LAYERS):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] not in LAYERS or base == name:
                continue
            out.update((name, base, a.name) for a in node.names
                       if a.name.startswith("_") and not a.name.startswith("__"))
    return out


def test_no_new_imports_of_another_modules_private_names():
    found = private_imports()
    stale = set(KNOWN_PRIVATE_IMPORTS) - found
    assert not stale, f"remove these from KNOWN_PRIVATE_IMPORTS, they are gone: {sorted(stale)}"
    new = found - set(KNOWN_PRIVATE_IMPORTS)
    assert not new, f"imports of another module's private names (make the name public or move it): {sorted(new)}"


def test_wic_configs_live_beside_their_trainers():
    """pro_lib/wic: a stage's config dataclass is in <stage>_config.py beside the trainer module (trl's layout),
    never in the trainer module itself, and every *_config.py has its trainer (tests/test_wic_configs.py checks
    the classes: one per stage, at most SFTOptions below it)."""
    wic = PRO_LIB / "wic"
    bad = []
    for path in sorted(wic.glob("*.py")):
        configs = [n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)
                   and any("dataclass" in ast.unparse(d) for d in n.decorator_list)]
        if path.stem.endswith("_config"):
            if not (wic / f"{path.stem.removesuffix('_config')}.py").is_file():
                bad.append(f"{rel(path)} has no trainer module beside it")
        elif configs:
            bad.append(f"{rel(path)} defines {configs}: move them to {path.stem}_config.py")
    assert not bad, bad


def test_no_test_module_imports_another():
    """Shared test code lives in tests/helpers/; a test module (one that defines tests) is never imported."""
    tests = REPO / "tests"
    test_modules = {p.stem for p in tests.rglob("test_*.py") if "def test_" in p.read_text()}
    bad = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{rel(path)}: {n}" for n in names if n.split(".")[-1] in test_modules]
    assert not bad, bad
