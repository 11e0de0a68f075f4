"""Checks that every relative Markdown link in the front pages and docs/ resolves to a file, and its #anchor
to a heading of that file (GitHub's slugs). Exit status 1 if any does not.

  python docs/check_links.py [FILE.md ...]      # default: README.md, BENCHMARKS.md, docs/*.md, experiments/**/*.md
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
  seen: dict[str, int] = {}
  out = set()
  for line in FENCE.sub("", path.read_text()).splitlines():
    match = re.match(r"#{1,6}\s+(.*)", line)
    if match:
      base = slug(match.group(1))
      count = seen.get(base, 0)
      seen[base] = count + 1
      out.add(base if count == 0 else f"{base}-{count}")
  return out


def check(path: pathlib.Path) -> list[str]:
  problems = []
  for target in LINK.findall(FENCE.sub("", path.read_text())):
    if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
      continue
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    where = f"{path.relative_to(ROOT)}: {target}"
    if not dest.exists():
      problems.append(f"{where}: no such file")
    elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
      problems.append(f"{where}: no heading #{anchor}")
  return problems


def main(argv: list[str]) -> int:
  files = [pathlib.Path(a).resolve() for a in argv] or [
    ROOT / "README.md",
    ROOT / "BENCHMARKS.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "experiments").rglob("*.md")),
  ]
  problems = [p for f in files for p in check(f)]
  print("\n".join(problems) or f"{len(files)} files, every relative link resolves")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
