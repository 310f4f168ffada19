"""Write the manual, docs/man/snapvol.1, from the command line's own help (`make man`).

With --check, write nothing and exit 1 if the committed page is not what would be written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from snapvol.cli.manpage import render

PAGE = Path(__file__).resolve().parent.parent / "docs" / "man" / "snapvol.1"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is stale: run `make man`", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: gen-man.py [--check]", file=sys.stderr)
        return 2
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
