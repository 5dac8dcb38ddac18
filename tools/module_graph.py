#!/usr/bin/env python3
"""The module graph of a crate, from its source: which top-level module uses
which (`crate::<module>` paths, including `use crate::{a, b::c}` groups),
the cycles among them (strongly connected components of more than one
module), and the largest source files.

    python3 tools/module_graph.py [crate src dir, default shared/domain/src]

Exits 1 when the modules form a cycle (so a check can require none).
"""

import re
import sys
from pathlib import Path


def modules(src: Path) -> dict[str, list[Path]]:
    """Each top-level module and the files that make it up."""
    out: dict[str, list[Path]] = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if rel.parts[0] in ("lib.rs", "main.rs"):
            continue
        name = rel.parts[0].removesuffix(".rs")
        out.setdefault(name, []).append(path)
    return out


def strip_comments(text: str) -> str:
    """Leaves code and doc comments (an intra-doc link to a module is a use
    of it too); drops plain comments."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    kept = []
    for line in text.splitlines():
        if line.lstrip().startswith(("///", "//!")):
            kept.append(line)
        else:
            kept.append(re.sub(r"//(?![/!]).*$", "", line))
    return "\n".join(kept)


def group_names(body: str) -> set[str]:
    """The first path segments named at the top level of a `{...}` group."""
    names, depth, current = set(), 0, ""
    for ch in body:
        if ch == "{":
            if depth == 0 and current.strip():
                names.add(current.strip().split("::")[0])
            depth += 1
            current = ""
        elif ch == "}":
            depth -= 1
            current = ""
        elif ch == "," and depth == 0:
            if current.strip():
                names.add(current.strip().split("::")[0].split(" ")[0])
            current = ""
        elif depth == 0:
            current += ch
    if current.strip():
        names.add(current.strip().split("::")[0].split(" ")[0])
    return names


def reexports(src: Path) -> dict[str, str]:
    """Names the crate root re-exports by name (`pub use deps::{Config, Deps};`)."""
    out = {}
    for root in ("lib.rs", "main.rs"):
        if (src / root).exists():
            text = strip_comments((src / root).read_text())
            for module, body in re.findall(r"pub use (\w+)::\{([^}]*)\}", text):
                for name in body.split(","):
                    out[name.strip().split(" ")[0]] = module
            for module, name in re.findall(r"pub use (\w+)::(\w+)\s*;", text):
                out[name] = module
    return out


def edges(mods: dict[str, list[Path]], names: dict[str, str]) -> dict[str, set[str]]:
    graph = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            text = strip_comments(f.read_text())
            used = set(re.findall(r"crate::(\w+)", text))
            for body in re.findall(r"crate::\{([^;]*?)\}\s*;", text, flags=re.S):
                used |= group_names(body)
            used = {names.get(u, u) for u in used}
            graph[m] |= {u for u in used if u in mods and u != m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "shared/domain/src")
    mods = modules(src)
    graph = edges(mods, reexports(src))
    print(f"modules of {src}: {len(mods)}")
    for m in sorted(graph):
        print(f"  {m} -> {', '.join(sorted(graph[m])) or '-'}")
    found = cycles(graph)
    for c in found:
        print(f"cycle: {' <-> '.join(c)}")
    if not found:
        print("no cycle")
    files = sorted(src.rglob("*.rs"), key=lambda p: -len(p.read_text().splitlines()))
    print("largest files:")
    for f in files[:8]:
        print(f"  {len(f.read_text().splitlines()):5} {f}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
