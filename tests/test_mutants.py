"""``tests/mutants.py`` still fits this tree: every mutant's anchors are found exactly once.

Runs no mutant's suite (that is ``python tests/mutants.py``, minutes, not CI); it fails the day
the code moves on under a mutant, so the list is updated then rather than found stale later.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corral_mutants", ROOT / "tests" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


mutants = _load()


def _copy_touched(mutant: object, dest: Path) -> None:
    for variant in mutant.variants:  # type: ignore[attr-defined]
        for patch in variant:
            source = ROOT / patch.path
            if source.is_file():
                target = dest / patch.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_every_mutant_still_applies(mutant: object, tmp_path: Path) -> None:
    _copy_touched(mutant, tmp_path)
    before = {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    mutants.apply(mutant, tmp_path)  # AnchorMissing: "update the mutant"
    changed = [p for p, text in before.items() if p.read_text() != text]
    assert changed, f"{mutant.name} changed nothing"  # type: ignore[attr-defined]


def test_a_missing_anchor_fails_loudly_and_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "m.py"
    target.write_text("a = 1\nb = 2\n")
    broken = mutants.Mutant(
        "broken",
        "for this test",
        (
            (
                mutants.Patch("m.py", "a = 1\n", "a = 0\n"),
                mutants.Patch("m.py", "c = 3\n", ""),
            ),
        ),
        ("tests",),
    )
    with pytest.raises(mutants.AnchorMissing, match="update the mutant"):
        mutants.apply(broken, tmp_path)
    assert target.read_text() == "a = 1\nb = 2\n"


def test_the_first_matching_variant_is_applied(tmp_path: Path) -> None:
    target = tmp_path / "m.py"
    target.write_text("new = 1\n")
    both = mutants.Mutant(
        "both",
        "for this test",
        (
            (mutants.Patch("m.py", "old = 1\n", "old = 0\n"),),
            (mutants.Patch("m.py", "new = 1\n", "new = 0\n"),),
        ),
        ("tests",),
    )
    mutants.apply(both, tmp_path)
    assert target.read_text() == "new = 0\n"
