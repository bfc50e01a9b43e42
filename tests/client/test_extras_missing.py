"""An integration whose extra is not installed says which extra to install, however imported."""

from __future__ import annotations

import importlib
import re
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "needs", "extra"),
    [
        ("grok_imagine_async.redis", "redis", "grok-imagine-async[redis]"),
        ("grok_imagine_async.redis._store", "redis", "grok-imagine-async[redis]"),
        ("grok_imagine_async.redis._limiter", "redis", "grok-imagine-async[redis]"),
        ("grok_imagine_async.fastapi", "fastapi", "grok-imagine-async[fastapi]"),
        ("grok_imagine_async.fastapi._lifespan", "fastapi", "grok-imagine-async[fastapi]"),
    ],
)
def test_a_missing_extra_names_itself(
    monkeypatch: pytest.MonkeyPatch, module: str, needs: str, extra: str
) -> None:
    package = module.split(".")[1]
    for name in list(sys.modules):  # imported afresh, as in a process without the extra
        if name == needs or name.startswith((f"{needs}.", f"grok_imagine_async.{package}")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, needs, None)  # "import needs" now raises ImportError
    with pytest.raises(ImportError, match=re.escape(f'pip install "{extra}"')):
        importlib.import_module(module)
