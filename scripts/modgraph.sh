#!/usr/bin/env bash
# The daemon crate's module graph: for each top-level module of src/, the modules it names
# as `crate::X` outside its tests, then every pair of modules that reach each other (a
# cycle). `scripts/modgraph.sh --check` exits 1 when there is a cycle.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - "${1:-}" <<'PY'
import collections, glob, os, re, sys

mods = sorted(
    ({os.path.splitext(os.path.basename(p))[0] for p in glob.glob("src/*.rs")}
     | {os.path.basename(p) for p in glob.glob("src/*") if os.path.isdir(p)})
    - {"lib", "main"}
)
deps = collections.defaultdict(set)
for m in mods:
    for path in glob.glob(f"src/{m}.rs") + glob.glob(f"src/{m}/**/*.rs", recursive=True):
        text = open(path, encoding="utf-8").read()
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        # Code only: doc and line comments name modules without depending on them.
        code = "\n".join(line.split("//")[0] for line in text.splitlines())
        deps[m] |= {x for x in re.findall(r"crate::(\w+)", code) if x != m and x in mods}

def reaches(a, b):
    seen, todo = set(), [a]
    while todo:
        for n in deps[todo.pop()]:
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return False

for m in mods:
    print(f"{m:10} -> {' '.join(sorted(deps[m]))}")
cycles = sorted({tuple(sorted((a, b))) for a in mods for b in deps[a] if reaches(b, a)})
print(f"\n{len(cycles)} edges on a cycle" + (": " + ", ".join(f"{a}<->{b}" for a, b in cycles) if cycles else ""))
sys.exit(1 if cycles and sys.argv[1] == "--check" else 0)
PY
