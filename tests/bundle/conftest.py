"""Put the Echo-DND bundle root on ``sys.path`` so that ``import scripts`` works, and keep its tests light."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
if str(BUNDLE_ROOT) not in sys.path:
    sys.path.insert(0, str(BUNDLE_ROOT))


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny networks run faster on one thread on a shared 2-core machine; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
