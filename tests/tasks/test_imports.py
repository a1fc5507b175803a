"""Importing the pure parts of ``corral.tasks`` loads neither asyncio, the engine nor the store.

Checked in a fresh interpreter (this test process has imported everything already). Fails if
``corral/tasks/__init__.py`` imports the engine eagerly, or if ``model``/``steps``/``states``
import the store (e.g. its ``JSON`` alias through ``corral.store.types``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("asyncio", "corral.store", "corral.tasks.engine", "corral.tasks.driver", "sqlalchemy")


def _loaded_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    modules: list[str] = json.loads(out.stdout)
    return modules


@pytest.mark.parametrize(
    "statement",
    [
        "import corral.tasks.states",
        "from corral.tasks.model import Step, TaskInfo",
        "from corral.tasks import TRANSITIONS, TaskState, StepRegistry",
    ],
)
def test_pure_parts_load_no_engine_store_or_asyncio(statement: str) -> None:
    loaded = _loaded_after(statement)
    heavy = [m for m in loaded if m in HEAVY or m.startswith("corral.store.")]
    assert heavy == [], f"{statement!r} loaded {heavy}"


def test_engine_still_importable_from_the_package() -> None:
    loaded = _loaded_after("from corral.tasks import TaskEngine")
    assert "corral.tasks.engine" in loaded


def test_unknown_attribute_is_an_attribute_error() -> None:
    import corral.tasks

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        corral.tasks.Nope  # noqa: B018
