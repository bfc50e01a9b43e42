"""MkDocs hook: the API reference lists every public name, even ones added since a page was written.

``reference/other.md`` receives a ``::: grok_imagine_async.NAME`` entry for each name of
``grok_imagine_async.__all__`` that no other reference page documents, so a new public name is
never missing from the site.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OTHER_PAGE = "reference/other.md"
_ENTRY = re.compile(r"^::: grok_imagine_async\.(\w+)\s*$", re.MULTILINE)


def _public_names() -> list[str]:
    """``__all__`` of the package, read without importing it."""
    tree = ast.parse((ROOT / "grok_imagine_async" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return [str(v) for v in ast.literal_eval(node.value) if not str(v).startswith("_")]
    raise RuntimeError("grok_imagine_async/__init__.py has no __all__")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri != OTHER_PAGE:
        return markdown
    documented: set[str] = set()
    for path in (ROOT / "docs" / "reference").glob("*.md"):
        if path.name != Path(OTHER_PAGE).name:
            documented.update(_ENTRY.findall(path.read_text(encoding="utf-8")))
    missing = [name for name in _public_names() if name not in documented]
    if not missing:
        return markdown + "\nEvery public name is documented on the pages above.\n"
    return markdown + "".join(f"\n::: grok_imagine_async.{name}\n" for name in missing)
