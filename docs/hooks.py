"""mkdocs hooks (``hooks:`` in mkdocs.yml): pages generated at build time.

* ``docs/tutorials/NAME.py`` (``# %%`` cells; ``# %% [markdown]`` cells hold the prose)
  becomes the page ``tutorials/NAME.md``: the prose as markdown, the code as Python
  blocks. The scripts themselves are executed by ``tests/test_docs.py``.
* ``<!-- cli-help: CMD -->`` in a page becomes ``invphys CMD --help`` (from argparse, so
  the CLI reference cannot drift from the parser).
* ``<!-- readme-results -->`` becomes every ``<!-- results:NAME:start/end -->`` section of
  the README (written by ``invphys reproduce --readme``), image paths made relative to
  ``docs/``.
* ``<!-- readme-section: TITLE -->`` becomes the README's ``## TITLE`` section body.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "docs" / "tutorials"


def script_to_markdown(text: str, name: str) -> str:
    """A ``# %%`` script as a markdown page."""
    cells: list[tuple[str, list[str]]] = []
    kind, lines = "code", []
    for line in text.splitlines():
        if line.startswith("# %%"):
            if any(s.strip() for s in lines):
                cells.append((kind, lines))
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        else:
            lines.append(line)
    if any(s.strip() for s in lines):
        cells.append((kind, lines))
    parts = []
    for kind, lines in cells:
        while lines and not lines[0].strip():
            lines = lines[1:]
        while lines and not lines[-1].strip():
            lines = lines[:-1]
        if kind == "markdown":
            parts.append("\n".join(re.sub(r"^# ?", "", s) for s in lines))
        else:
            parts.append("```python\n" + "\n".join(lines) + "\n```")
    parts.append(f"The whole script: [`docs/tutorials/{name}`]({name}) (run it with "
                 f"`python docs/tutorials/{name}`; `--small` for the test sizes).")
    return "\n\n".join(parts) + "\n"


def on_files(files, config):
    for path in sorted(TUTORIALS.glob("*.py")):
        md = script_to_markdown(path.read_text(), path.name)
        files.append(File.generated(config, f"tutorials/{path.stem}.md", content=md))
    return files


def _cli_help(command: str) -> str:
    os.environ["COLUMNS"] = "96"
    from invphys.cli import build_parser

    parser = build_parser()
    if command == "invphys":
        return parser.format_help()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command].format_help()


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _readme_results() -> str:
    text = _readme()
    blocks = re.findall(r"<!-- results:([\w/+-]+):start -->\n(.*?)<!-- results:\1:end -->",
                        text, flags=re.S)
    if not blocks:
        return "*(no generated results in the README yet)*\n"
    out = []
    for _name, body in blocks:
        out.append(body.replace("](docs/", "]("))
    return "\n\n".join(out)


def _readme_section(title: str) -> str:
    text = _readme()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    if m is None:
        raise ValueError(f"README.md has no section '## {title}'")
    return m.group(1).strip() + "\n"


def on_page_markdown(markdown, page, config, files):
    markdown = re.sub(r"<!-- cli-help: ([\w-]+) -->",
                      lambda m: "```text\n" + _cli_help(m.group(1)) + "```", markdown)
    markdown = markdown.replace("<!-- readme-results -->", _readme_results())
    markdown = re.sub(r"<!-- readme-section: (.+?) -->",
                      lambda m: _readme_section(m.group(1)), markdown)
    return markdown
