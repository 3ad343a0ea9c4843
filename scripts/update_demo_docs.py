"""Splice the tables printed by `svdlora demo` into docs/demo.md (between its markers).

    svdlora demo --out demo-out | tee demo-out/stdout.txt
    python scripts/update_demo_docs.py demo-out/stdout.txt

Only the tables are replaced; the prose around them is written by hand.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

PAGE = os.path.join(os.path.dirname(__file__), "..", "docs", "demo.md")


def tables(stdout: str) -> dict:
    sections = {}
    for block in stdout.split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        number = title.split(".")[0]
        sections[number] = body.split("\n\nwrote ")[0].strip()
    sections["total"] = re.search(r"demo finished in (\d+) s", stdout).group(1)
    return sections


def main(path: str) -> None:
    with open(path) as f:
        found = tables(f.read())
    with open(PAGE) as f:
        text = f.read()
    for key, body in found.items():
        pattern = re.compile(rf"(<!-- demo:{re.escape(key)} -->).*?(<!-- /demo:{re.escape(key)} -->)",
                             re.S)
        if not pattern.search(text):
            sys.exit(f"docs/demo.md has no demo:{key} markers")
        text = pattern.sub(lambda m: f"{m.group(1)}\n{body}\n{m.group(2)}"
                           if key != "total" else f"{m.group(1)}{body}{m.group(2)}", text)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(PAGE))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, PAGE)


if __name__ == "__main__":
    main(sys.argv[1])
