"""Clinical measurements (Simpson volumes, EF): moved to :mod:`echogains.clinical`, re-exported here.

``echogains.clinical`` is a leaf module (it imports no echogains module) so that both ``echogains.data`` (the
phantom's Simpson reference) and ``echogains.evaluation`` may use it; this module keeps the old import path working
with the same public names (``__all__`` is the leaf module's).
"""

from __future__ import annotations

from echogains.clinical import *  # noqa: F403
from echogains.clinical import __all__ as __all__
