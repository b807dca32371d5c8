"""The test order of ``tests/conftest.py``: slow tests first, longest first, each followed by a short one; and its
work units: the modules of ``GROUPED_MODULES`` whole (their module-scoped fixtures built once), other tests one by one.

The scheduler keeps tests queued behind the running one on each worker; with the slow tests adjacent, a worker could
hold two of them while the other worker runs out of work (measured: 916 s vs 550 s).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import GROUPED_MODULES, SLOW_TESTS, schedule_order, work_unit

ROOT = Path(__file__).resolve().parents[1]


def test_each_slow_item_is_followed_by_a_short_one_while_short_ones_last() -> None:
    items = ["s1", "x", "s0", "y", "z", "s2"]
    assert schedule_order(items, {"s0": 0, "s1": 1, "s2": 2}) == ["s0", "x", "s1", "y", "s2", "z"]


def test_more_slow_than_short_keeps_every_item_once() -> None:
    items = ["a", "s1", "s0", "s2"]
    assert schedule_order(items, {"s0": 0, "s1": 1, "s2": 2}) == ["s0", "a", "s1", "s2"]
    assert schedule_order([], {"s0": 0}) == []


def test_slow_list_has_no_duplicates() -> None:
    assert len(set(SLOW_TESTS)) == len(SLOW_TESTS)


def test_slow_list_names_existing_tests() -> None:
    """A renamed test would silently lose its place at the front (and its ``slow`` mark)."""
    for nodeid in SLOW_TESTS:
        module, name = nodeid.split("::")
        assert f"def {name}(" in (ROOT / module).read_text(), nodeid


def test_grouped_modules_are_one_unit_other_tests_their_own() -> None:
    assert work_unit("tests/test_cli.py::test_help_lists_commands") == "tests/test_cli.py"
    assert work_unit("tests/augment/test_expand.py::test_bad_inputs_raise_before_writing[k]") == (
        "tests/augment/test_expand.py"
    )
    single = "tests/test_geometry.py::test_pixel_mm_conversion"
    assert work_unit(single) == single


def test_grouped_modules_exist_and_have_module_fixtures() -> None:
    """A renamed or moved module would silently lose its grouping."""
    for module in GROUPED_MODULES:
        assert 'scope="module"' in (ROOT / module).read_text(), module
