#!/usr/bin/env python3
"""Lists import cycles between the modules of each crate of the workspace.

A module is a file under `src/` (a folder module `a/mod.rs` and its children
`a/b.rs` count as `a` and `a::b`). An edge `m -> n` is any path `crate::n...`
(or `super::n` resolved) written in `m` outside its `#[cfg(test)]` tests module.
Edges from a folder module to its own children, and from a child to its parent
folder module (`a::b -> a`), are re-exports and sibling use and are reported
separately only if they close a cycle between siblings.

Usage: python3 scripts/module_cycles.py [crate-src-dir ...]
Exits 1 if any cycle is found.
"""
import os
import re
import sys


def module_name(src, path):
    rel = os.path.relpath(path, src)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts)


def strip_tests(text):
    # Drop `#[cfg(test)] mod tests { ... }` blocks (brace matched).
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def root_reexports(src, names):
    """Maps each name the crate root re-exports (`pub use module::{A, B}`) to its module,
    so `crate::A` counts as a use of that module."""
    found = {}
    for root_file in ("lib.rs", "main.rs"):
        path = os.path.join(src, root_file)
        if not os.path.exists(path):
            continue
        text = strip_comments(open(path).read())
        for m in re.finditer(r"pub\s+use\s+(?:crate::|self::)?(\w+)::([^;]*);", text, flags=re.S):
            module, rest = m.group(1), m.group(2)
            if module not in names:
                continue
            for ident in re.findall(r"\b([A-Za-z_]\w*)\b", rest):
                if ident not in ("self", "as") and ident not in names:
                    found.setdefault(ident, module)
    return found


def edges_of(src):
    modules = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                p = os.path.join(root, f)
                modules[module_name(src, p)] = p
    names = set(modules)
    reexports = root_reexports(src, names)
    edges = {m: set() for m in modules}
    for m, p in modules.items():
        text = strip_comments(strip_tests(open(p).read()))
        parent = m.rsplit("::", 1)[0] if "::" in m else ""
        # Expand `use crate::{a, b::c}` groups into paths.
        paths = []
        for g in re.finditer(r"crate::\{([^;]*?)\}\s*;", text, flags=re.S):
            for item in re.split(r",(?![^{]*\})", g.group(1)):
                item = item.strip()
                if item:
                    paths.append(re.sub(r"\{.*", "", item).strip(":"))
        paths += re.findall(r"crate::((?:\w+::)*\w+)", text)
        paths += [
            (parent + "::" if parent else "") + s
            for s in re.findall(r"super::((?:\w+::)*\w+)", text)
        ]
        for path in paths:
            parts = path.split("::")
            # Longest prefix that is a module.
            target = None
            for k in range(len(parts), 0, -1):
                cand = "::".join(parts[:k])
                if cand in names:
                    target = cand
                    break
            if target is None and parts[0] in reexports:
                target = reexports[parts[0]]
            if target is None or target == m or target == "":
                continue
            # A folder module using its children, or a child using its parent, is not a
            # layering edge.
            if target.startswith(m + "::") or m.startswith(target + "::"):
                continue
            edges[m].add(target)
    return edges


def cycles(edges):
    found, state, stack = [], {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                found.append(stack[stack.index(w):] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(edges):
        if v not in state:
            visit(v)
    return found


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    srcs = sys.argv[1:] or [os.path.join(root, "src")] + sorted(
        os.path.join(root, "crates", c, "src") for c in os.listdir(os.path.join(root, "crates"))
    )
    bad = False
    for src in srcs:
        for cyc in cycles(edges_of(src)):
            bad = True
            print(f"{os.path.relpath(src, root)}: " + " -> ".join(cyc))
    if not bad:
        print("no module import cycles")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
