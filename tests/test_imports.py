"""The import graph of minitf/, toy_tasks/ and kernels/ (imported as ``minitf_kernels``): no cycles,
no module importing its own package's ``__init__``, and toy_tasks/ and kernels/ free of minitf.

The graph is read from the source with ``ast`` (nothing is imported), and counts every import
statement wherever it stands: top level, inside a function or a class body. An edge goes to the
module an import names: ``from minitf.runs import folder`` → ``minitf.runs.folder`` (a submodule),
``from minitf.runs import run`` → ``minitf.runs`` (a name defined in the package face,
``__init__.py``), ``from minitf import runs`` → ``minitf.runs``. Python also runs the parents'
``__init__`` when it imports a submodule; those implicit edges are left out, so a package face that
re-exports its submodules is no cycle, and a submodule that imports its package face is (the rule
below names it). Run ``python tests/test_imports.py`` to print the graph's cycles and imports of a
package's own face.
"""
import ast
import itertools
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (folder under ROOT, the package name it imports as)
PACKAGES = (("minitf", "minitf"), ("toy_tasks", "toy_tasks"), ("kernels", "minitf_kernels"))


def module_files() -> dict[str, str]:
    """``{module name: file path}`` for every .py file under the PACKAGES folders; a package's
    ``__init__.py`` is named by the package (``minitf.runs``)."""
    found = {}
    for folder, name in PACKAGES:
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            parts = [name, *os.path.relpath(dirpath, base).split(os.sep)]
            parts = [p for p in parts if p != "."]
            for filename in sorted(filenames):
                if filename.endswith(".py"):
                    stem = filename[:-3]
                    module = ".".join(parts if stem == "__init__" else [*parts, stem])
                    found[module] = os.path.join(dirpath, filename)
    return found


def is_package(module: str, files: dict[str, str]) -> bool:
    return module in files and os.path.basename(files[module]) == "__init__.py"


def imports(module: str, path: str, files: dict[str, str]) -> list[tuple[str, int]]:
    """``[(imported module, line)]`` for every import statement in ``path`` (any depth), resolved
    to the modules of ``files``; imports of other libraries are left out."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = module if is_package(module, files) else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = deepest_module(alias.name, files)
                if target:
                    out.append((target, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from .. import z
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                if f"{base}.{alias.name}" in files:  # from pkg import submodule
                    out.append((f"{base}.{alias.name}", node.lineno))
                elif base in files:  # from module import name
                    out.append((base, node.lineno))
    return out


def deepest_module(dotted: str, files: dict[str, str]) -> str | None:
    """The longest prefix of ``dotted`` that is one of our modules (``import a.b.c`` imports ``a.b.c``)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in files:
            return ".".join(parts[:n])
    return None


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    """``({module: {modules it imports}}, {(module, imported): first line})``; self-imports dropped."""
    files = module_files()
    graph, lines = {m: set() for m in files}, {}
    for module, path in files.items():
        for target, line in imports(module, path, files):
            if target != module:
                graph[module].add(target)
                lines.setdefault((module, target), line)
    return graph, lines


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted; sorted."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            visit(v)
    return sorted(found)


def cycle_path(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One shortest cycle through the component's first module: ``[a, b, ..., a]`` (breadth first)."""
    start, members = component[0], set(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & members):
            if w == start:
                return [*path, start]
            if w not in seen:
                seen.add(w)
                paths.append([*path, w])
    return component


def describe(component: list[str], graph, lines) -> str:
    path = cycle_path(component, graph)
    steps = " -> ".join(f"{a} (line {lines[(a, b)]})" for a, b in itertools.pairwise(path))
    return f"{{{', '.join(component)}}}: e.g. {steps} -> {path[-1]}"


def own_face_imports(graph, lines) -> list[str]:
    """``module -> package`` for each module that imports the ``__init__`` of a package it is inside
    (its own package or one above it)."""
    files = module_files()
    bad = []
    for module, targets in graph.items():
        for target in sorted(targets):
            if is_package(target, files) and module.startswith(target + "."):
                bad.append(f"{module} -> {target} (line {lines[(module, target)]})")
    return sorted(bad)


def test_no_import_cycles():
    graph, lines = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(
        describe(c, graph, lines) for c in found)


def test_runs_package_is_in_no_cycle():
    """minitf/runs (the runner) is in no cycle at all, known exceptions or not."""
    graph, lines = import_graph()
    found = [c for c in cycles(graph) if any(m == "minitf.runs" or m.startswith("minitf.runs.") for m in c)]
    assert not found, "\n".join(describe(c, graph, lines) for c in found)


def test_no_module_imports_its_own_package_face():
    """Inside a package, import the submodule that defines a name, not the ``__init__`` of the
    package (or of one above it), which re-exports it and is where the cycles start."""
    graph, lines = import_graph()
    bad = own_face_imports(graph, lines)
    assert not bad, "modules importing their own package's __init__:\n" + "\n".join(bad)


def test_toy_tasks_and_kernels_import_nothing_of_minitf():
    """toy_tasks/ (the tasks' data) and kernels/ (the Triton kernels) stand alone."""
    graph, lines = import_graph()
    bad = [f"{m} -> {t} (line {lines[(m, t)]})" for m, targets in graph.items()
           if m.split(".")[0] in ("toy_tasks", "minitf_kernels")
           for t in sorted(targets) if t.split(".")[0] == "minitf"]
    assert not bad, "\n".join(bad)


def test_graph_sees_function_level_and_package_face_imports():
    """The reader itself: a function-level import counts, ``from pkg import submodule`` goes to the
    submodule, and ``from pkg import name`` to the package face."""
    files = {"p": "p/__init__.py", "p.a": "p/a.py", "p.b": "p/b.py"}
    source = "def f():\n    from p import a, name\n    import p.b\n"
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"minitf_test_imports_{os.getpid()}.py")
    with open(path, "w") as f:
        f.write(source)
    try:
        found = imports("p.b", path, files)
    finally:
        os.unlink(path)
    assert sorted(found) == [("p", 2), ("p.a", 2), ("p.b", 3)]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


if __name__ == "__main__":
    g, where = import_graph()
    comps = cycles(g)
    print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges; {len(comps)} cycle(s)")
    for comp in comps:
        print("  cycle " + describe(comp, g, where))
    faces = own_face_imports(g, where)
    print(f"{len(faces)} import(s) of a module's own package face")
    for line in faces:
        print("  " + line)
