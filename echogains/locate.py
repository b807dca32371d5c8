"""Where the other deliverables live, found without importing them.

The toolkit depends on neither the Echo-DND bundle (``bundles/echo_dnd``) nor the nnU-Net plugin (``nnunet_ext``):
the demo, ``analyze`` and the nnU-Net runner only need their folders. This module is the one place that finds them.

- :func:`find_bundle`: the bundle folder from an argument (``--bundle_root``), else ``$ECHOGAINS_ECHO_DND_BUNDLE``,
  else the ``bundles/echo_dnd`` folder of the repository checkout that holds this package (an editable install).
- :func:`nnunet_ext_dir` / :func:`nnunet_trainer_dir`: the installed plugin's package folder and its ``trainers``
  folder (what ``nnUNet_extTrainer`` must name), located with :func:`importlib.util.find_spec`, which does not run
  the plugin's code.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from echogains.utils import EchoDataError

__all__ = ["BUNDLE_VARIABLE", "REPOSITORY_BUNDLE", "find_bundle", "nnunet_ext_dir", "nnunet_trainer_dir"]

#: Environment variable naming the Echo-DND bundle folder.
BUNDLE_VARIABLE = "ECHOGAINS_ECHO_DND_BUNDLE"
#: The bundle of the repository checkout beside the package (present only in an editable install).
REPOSITORY_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "echo_dnd"

_NO_PLUGIN = "the nnunet_ext package is not installed (pip install -e . in this repository)"


def find_bundle(bundle_root: str | os.PathLike | None = None) -> Path:
    """The Echo-DND bundle folder: ``bundle_root``, else ``$ECHOGAINS_ECHO_DND_BUNDLE``, else the repository's.

    An explicit folder (argument or variable) is returned as given: whoever loads it checks its contents and names
    what is missing. Only the last resort is checked here.

    Raises:
        EchoDataError: neither given and no repository checkout beside the package (e.g. a wheel install).
    """
    if bundle_root:
        return Path(bundle_root)
    env = os.environ.get(BUNDLE_VARIABLE)
    if env:
        return Path(env)
    if not (REPOSITORY_BUNDLE / "scripts" / "__init__.py").is_file():
        raise EchoDataError(
            None,
            f"no Echo-DND bundle found (no repository checkout beside the package); pass "
            f"--bundle_root FOLDER or set {BUNDLE_VARIABLE}=FOLDER (the bundles/echo_dnd folder)",
        )
    return REPOSITORY_BUNDLE


def nnunet_ext_dir() -> Path:
    """The installed ``nnunet_ext`` package folder (located, not imported).

    Raises:
        EchoDataError: the plugin is not installed.
    """
    spec = importlib.util.find_spec("nnunet_ext")
    if spec is None or not spec.submodule_search_locations:
        raise EchoDataError(None, _NO_PLUGIN)
    return Path(list(spec.submodule_search_locations)[0])


def nnunet_trainer_dir() -> Path:
    """The plugin's ``trainers`` folder, the value of ``nnUNet_extTrainer`` for this project's trainers.

    Raises:
        EchoDataError: the plugin is not installed.
    """
    return nnunet_ext_dir() / "trainers"
