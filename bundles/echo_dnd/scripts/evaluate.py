"""Echo-DND evaluation: predictions for the cases of a labelled nnU-Net raw dataset, then ``echogains evaluate``.

:class:`EchoDNDEvaluation` checks that the dataset is labelled (before anything is written), writes the
predictions in the labels' geometry (``{case}.nii.gz`` with the dataset's LV value, ``{case}_uncertainty.nii.gz``)
with an :class:`~scripts.infer.EchoDNDInference` and scores them with :func:`echogains.evaluation.evaluate.evaluate`:
Dice, HD, HD95 and MSD in mm per case, summaries by view and phase, LV volumes and EF agreement, plots and an HTML
report. ``configs/evaluate.json`` uses its checks (``checker``) and predicts on a MONAI ``SupervisedEvaluator``
instead (:mod:`scripts.engine`); :meth:`EchoDNDEvaluation.run` is the same evaluation without the engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from echogains.data.nnunet import RawDataset
from echogains.utils import EchoDataError, get_logger

from .infer import EchoDNDInference, as_bool, resolve_subset

__all__ = ["EchoDNDEvaluation"]

log = get_logger("echo_dnd.evaluate")


class EchoDNDEvaluation:
    """Segment the cases of a labelled nnU-Net raw dataset and evaluate the predictions.

    Args:
        inferer: the inference run; its ``dataset_dir`` must be an nnU-Net raw dataset, its ``output_dir`` becomes
            the prediction folder, its ``subset``/``fold`` choose the cases.
        out_dir: the report folder (metrics CSV/JSON, EF agreement, plots, ``report.html``).
        labels: the dataset label scored (Echo-DND segments the LV).
        overlays: write overlay images per case.
        progress: show progress bars.
    """

    def __init__(
        self,
        inferer: EchoDNDInference,
        out_dir: str | os.PathLike,
        labels: str = "LV",
        overlays: bool = True,
        progress: bool = True,
    ) -> None:
        self.inferer = inferer
        self.out_dir = Path(out_dir)
        self.labels = labels
        self.overlays = as_bool(overlays, "overlays")
        self.progress = as_bool(progress, "progress")

    def check(self) -> tuple[RawDataset, str, list[str]]:
        """Open the dataset, resolve the subset and check that every case has a label; nothing is written.

        Raises:
            EchoDataError: not an nnU-Net raw dataset, no label named ``labels``, cases without labels or with an
                unreadable label file.
        """
        root = self.inferer.dataset_dir
        if not (root / "dataset.json").is_file():
            raise EchoDataError(root, "evaluation needs a labelled nnU-Net raw dataset (dataset.json not found)")
        dataset = RawDataset(root)
        dataset.label_value(self.labels)  # raises naming dataset.json when the label does not exist
        subset = resolve_subset(dataset, self.inferer.subset)
        case_ids = dataset.case_ids(subset, self.inferer.fold)
        if not case_ids:
            raise EchoDataError(root, f"no cases in subset {subset!r}")
        unlabelled = [c for c in case_ids if not dataset.has_label(c)]
        if unlabelled:
            problem = f"label file missing ({len(unlabelled)} case(s) of subset {subset!r} unlabelled)"
            raise EchoDataError(dataset.label_path(unlabelled[0]), problem)
        for case_id in case_ids:  # an unreadable label would otherwise surface only after the predictions
            dataset.read_label(case_id)
        return dataset, subset, case_ids

    def run(self) -> dict[str, Any]:
        """Predict, then evaluate; returns the evaluation summary (as in ``metrics_summary.json``)."""
        from echogains.evaluation.evaluate import evaluate

        dataset, subset, case_ids = self.check()
        self.inferer.subset = subset
        self.inferer.label_value = dataset.label_value(self.labels)
        self.inferer.run()
        log.info("evaluating %d case(s) of %s (subset %s)", len(case_ids), dataset.root, subset)
        return evaluate(
            self.inferer.output_dir,
            dataset.root,
            self.out_dir,
            subset=subset,
            labels=self.labels,
            overlays=self.overlays,
            progress=self.progress,
            fold=self.inferer.fold,
        )
