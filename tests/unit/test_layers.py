"""The import layers (issue "one plan per verb", item 3): a module may import its own group and groups
of lower layers only, and never another module's ``_private`` names. Lower layers are the pure core;
only ``hosts``, ``etcd``, ``observe`` and ``runtime`` do I/O; the verbs (a package each) sit on the
runtime; the CLI on top. A new module must be placed in a layer here, which is the point: its place
is a decision."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "etcdforge"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "fsutil", "hostpaths", "progress"}),
    frozenset({"durations", "statuscache", "yamlio", "binaries", "etcd", "hosts", "versions", "exposition"}),
    frozenset({"spec", "pki"}),
    frozenset({"topology", "plan"}),
    frozenset({"render", "certs"}),
    frozenset({"workspace", "layout", "access", "clientconfig", "monitoring"}),
    frozenset({"workspace_pki", "observe", "backup"}),
    frozenset({"executor", "runtime", "diagnosis"}),
    frozenset({"verbs"}),
    frozenset({"cli", "testing"}),
    frozenset({"fastpath"}),  # the entry point: the quick status path, else the CLI
    frozenset({"__main__", "__init__"}),
)
RANK = {group: i for i, layer in enumerate(LAYERS) for group in layer}


def group_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        if rel[:2] == ("etcd", "_gen"):
            continue  # generated gRPC stubs
        name = ".".join(("etcdforge", *rel)).removesuffix(".__init__")
        out.append((name, ast.parse(path.read_text())))
    return out


def imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import of etcdforge code."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "etcdforge":
            if node.module == "etcdforge":
                out += [(f"etcdforge.{a.name}", []) for a in node.names]
            else:
                out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == "etcdforge"]
    return out


def test_every_group_has_a_layer() -> None:
    groups = {group_of(name) for name, _ in modules()}
    assert groups <= set(RANK), f"place these in LAYERS: {sorted(groups - set(RANK))}"


def test_lower_layers_never_import_upper_ones() -> None:
    problems = []
    for name, tree in modules():
        src = group_of(name)
        for target, _ in imports(tree):
            dst = group_of(target)
            if dst != src and RANK.get(dst, -1) >= RANK[src] and not target.startswith("etcdforge.etcd._gen"):
                problems.append(f"{name} imports {target} ({src} is layer {RANK[src]}, {dst} is {RANK[dst]})")
    assert not problems, "\n".join(problems)


def test_no_module_imports_another_modules_private_names() -> None:
    problems = [
        f"{name} imports {target}.{n}"
        for name, tree in modules()
        for target, names in imports(tree)
        for n in names
        if n.startswith("_") and not n.startswith("__") and target != name
    ]
    assert not problems, "\n".join(problems)


def test_only_the_spec_and_the_runtime_factory_read_the_mode() -> None:
    """Planners and verbs ask :class:`~etcdforge.runtime.factory.Placement` for what they need to know of
    where members run; the mode itself is read in two modules."""
    allowed = {"etcdforge.spec", "etcdforge.runtime.factory"}
    problems = []
    for name, tree in modules():
        if name in allowed:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "mode" and isinstance(node.ctx, ast.Load):
                base = node.value
                owner = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
                if owner in {"new_spec", "sub", "restored"} or owner.endswith("spec"):
                    problems.append(f"{name}:{node.lineno} reads {owner}.mode")
    assert not problems, "\n".join(problems)
