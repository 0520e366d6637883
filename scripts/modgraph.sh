#!/usr/bin/env bash
# The daemon's module graph, per crate: for each top-level module of core/src/ (rim-core)
# and of src/ (rimd, which re-exports rim-core's modules under their names), the modules it
# names outside its tests (`crate::x`, `crate::{x, y::z}`, `rim_core::x`, and `super::`
# chains that climb to the crate root), then every pair of modules that reach each other (a
# cycle). rim-core cannot name rimd (cargo refuses the cycle), so each crate is checked alone.
# `scripts/modgraph.sh --check` prints only the cycles (on stderr) and exits 1 if any.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "" | --check) ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
python3 - "${1:-}" <<'PY'
import collections, glob, os, re, sys

check = sys.argv[1] == "--check"

def modules(root):
    return sorted(
        ({os.path.splitext(os.path.basename(p))[0] for p in glob.glob(f"{root}/*.rs")}
         | {os.path.basename(p) for p in glob.glob(f"{root}/*") if os.path.isdir(p)})
        - {"lib", "main"}
    )

def module_path(path, root):
    """ROOT/a.rs and ROOT/a/mod.rs -> [a]; ROOT/a/b.rs -> [a, b]."""
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    return parts[:-1] if parts[-1] == "mod" else parts

def strip_tests(text):
    """Drops `#[cfg(test)] mod NAME { ... }` blocks (brace-matched), keeps the rest."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\(\w+\))?\s+)?mod\s+\w+\s*\{", text):
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

def names(code, here):
    """Top-level modules `code` (in module `here`) depends on."""
    found = set(re.findall(r"\b(?:crate|rim_core)::(\w+)", code))
    for group in re.findall(r"\b(?:crate|rim_core)::\{([^}]*)\}", code):
        found |= {g.strip().split("::")[0] for g in group.split(",") if g.strip()}
    for supers, name in re.findall(r"\b((?:super::)+)(\w+)", code):
        if supers.count("super::") == len(here):
            found.add(name)
    return found

def graph(root, mods):
    deps = collections.defaultdict(set)
    for m in mods:
        for path in glob.glob(f"{root}/{m}.rs") + glob.glob(f"{root}/{m}/**/*.rs", recursive=True):
            text = strip_tests(open(path, encoding="utf-8").read())
            # Code only: doc and line comments name modules without depending on them.
            code = "\n".join(line.split("//")[0] for line in text.splitlines())
            deps[m] |= {x for x in names(code, module_path(path, root)) if x != m and x in known}
    return deps

def reaches(deps, a, b):
    seen, todo = set(), [a]
    while todo:
        for n in deps[todo.pop()]:
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return False

failed = False
core = modules("core/src")
for crate, root, mods, known in (
    ("rim-core", "core/src", core, set(core)),
    ("rimd", "src", modules("src"), set(modules("src")) | set(core)),
):
    deps = graph(root, mods)
    cycles = sorted({tuple(sorted((a, b))) for a in mods for b in deps[a] if reaches(deps, b, a)})
    if not check:
        print(f"== {crate} ({root})")
        for m in mods:
            print(f"{m:10} -> {' '.join(sorted(deps[m]))}")
        print()
    summary = f"{crate}: {len(cycles)} edges on a cycle" + (": " + ", ".join(f"{a}<->{b}" for a, b in cycles) if cycles else "")
    print(summary, file=sys.stderr if check else sys.stdout)
    failed |= bool(cycles)
sys.exit(1 if failed and check else 0)
PY
