"""Griffe extension (mkdocs.yml, mkdocstrings `extensions:`): the library's argument lines as a list.

The library's docstrings describe arguments as plain lines, `name: meaning` (several names may
share a line, and the meaning may continue on indented lines), not as Google/NumPy sections. Rendered
as markdown those lines would run together into one paragraph; this turns each line that starts with
the names of the function's own parameters into a list item, `- \`name\`: meaning`, so the API page
lists every argument. Nothing else in a docstring changes.
"""
from __future__ import annotations

import re

import griffe

_ITEM = re.compile(r"^([A-Za-z_]\w*(?:, ?[A-Za-z_]\w*)*): (\S.*)$")


def as_list(text: str, params: set[str]) -> str:
    out: list[str] = []
    in_item = False
    for line in text.splitlines():
        m = _ITEM.match(line)
        names = [n.strip() for n in m.group(1).split(",")] if m else []
        if m and all(n in params for n in names):
            if out and out[-1].strip() and not in_item:
                out.append("")                              # a list needs a blank line before it
            out.append("- " + ", ".join(f"`{n}`" for n in names) + ": " + m.group(2))
            in_item = True
        elif in_item and line.startswith((" ", "\t")) and line.strip():
            out.append("  " + line.strip())                  # the meaning continues
        else:
            if in_item and line.strip():
                out.append("")                              # and a blank line after it
            in_item = False
            out.append(line)
    return "\n".join(out)


class ParameterLines(griffe.Extension):
    def on_function_instance(self, *, func: griffe.Function, **kwargs) -> None:
        if func.docstring is not None:
            func.docstring.value = as_list(func.docstring.value, {p.name for p in func.parameters})
