"""``configs/evaluate.json`` on a MONAI engine: a ``monai.engines.SupervisedEvaluator`` predicts the labelled cases,
scores them with ``MeanDice``, then ``echogains evaluate`` scores the saved predictions in mm.

The config holds the steps as MONAI components:

- the cases: :func:`prepare` runs :meth:`scripts.evaluate.EchoDNDEvaluation.check` (a labelled nnU-Net raw dataset,
  every case labelled, every label readable) and :meth:`scripts.infer.EchoDNDInference.check` (every image readable,
  no output over an input) before anything is written, and gives ``{"image": path, "label": path}`` per case;
- ``preprocessing``: the inference preprocessing (``configs/inference.json``) with the label loaded by the same
  readers, put on the channel axis and binarised to the dataset's LV value (``LabelToMaskd``);
- ``inferer``: :class:`FramesInferer`, the config's :class:`scripts.inferer.EchoDNDInferer` run by
  :func:`scripts.infer.sample_frames` on each case's frames (batches of ``batch_size``, a CPU generator seeded
  with ``seed`` per case, as the inference pipeline does); it gives the evaluator one tensor per batch;
- ``postprocessing``: :class:`SplitOutputd` (that tensor back into ``pred``, ``uncertainty``, ``members``), then
  the inference postprocessing (anti-aliasing, ``Invertd``, threshold, largest component, ``SaveImaged``);
- ``key_val_metric``: ``MeanDice`` of the mask against the label on the input grid (:func:`dice_inputs`), saved per
  case by ``MetricsSaver`` (``lv_dice_raw.csv``); :class:`PredictionRecorder` moves each case's saved files into the
  prediction folder and keeps its record; :class:`EngineEvaluation` writes ``echo_dnd_inference.json`` and runs
  :func:`echogains.evaluation.evaluate.evaluate`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform
from torch import nn

from echogains.data.nnunet import RawDataset
from echogains.utils import EchoDataError, atomic_write_json, get_logger

from .common import as_bool
from .evaluate import EchoDNDEvaluation
from .infer import RECORD_NAME, EchoDNDInference, case_id_from_name, sample_frames
from .pipeline import finish_case
from .transforms import _plain

__all__ = [
    "EvaluationPlan",
    "prepare",
    "FramesInferer",
    "SplitOutputd",
    "dice_inputs",
    "case_names",
    "PredictionRecorder",
    "EngineEvaluation",
]

log = get_logger("echo_dnd.engine")


@dataclass
class EvaluationPlan:
    """The checked cases of an evaluation: the dataset, the resolved subset, the LV value and the data list."""

    dataset: RawDataset
    subset: str
    case_ids: list[str]
    label_value: int
    datalist: list[dict[str, str]] = field(default_factory=list)


def prepare(evaluation: EchoDNDEvaluation) -> EvaluationPlan:
    """Check the dataset and every input as ``EchoDNDEvaluation.run`` does, before anything is written.

    Sets the evaluation's inference ``subset`` (resolved) and ``label_value`` (the dataset's value of ``labels``).

    Raises:
        EchoDataError: not a labelled nnU-Net raw dataset, an unknown label, an unlabelled or unreadable case, an
            output that would replace an input (naming the file).
    """
    dataset, subset, case_ids = evaluation.check()
    inference = evaluation.inferer
    inference.subset = subset
    inference.label_value = int(dataset.label_value(evaluation.labels))
    cases = inference.check()  # every image read; num_steps within the model's T
    if [c.case_id for c in cases] != list(case_ids):
        raise EchoDataError(dataset.root, "the images of the subset do not match its labelled cases")
    datalist = [{"image": str(c.path), "label": str(dataset.label_path(c.case_id))} for c in cases]
    return EvaluationPlan(dataset, subset, list(case_ids), inference.label_value, datalist)


class FramesInferer(Inferer):
    """The evaluator's inferer: each case's model-frame frames through :func:`scripts.infer.sample_frames`.

    ``inferer(inputs (B, T, S, S), network)`` returns ``(B, 2 + R, T, S, S)``: channel 0 the STAPLE probability,
    1 the uncertainty, then the R member masks (the Gaussian chain's first, then the Bernoulli chain's). Each case
    draws from its own CPU generator seeded with ``seed`` and its frames run in batches of ``batch_size``, as
    :meth:`scripts.pipeline.EchoDNDPipeline.segment_case` does. ``extras`` holds, per case of the last call, the
    chain of each member and STAPLE's ``sensitivity`` / ``specificity`` (for the run record).

    Args:
        inferer: the config's :class:`scripts.inferer.EchoDNDInferer`.
        seed: seed of each case's generator.
        batch_size: frames per sampler call.
    """

    def __init__(self, inferer: Callable[..., dict[str, torch.Tensor]], seed: int = 0, batch_size: int = 8) -> None:
        super().__init__()
        if int(batch_size) < 1:
            raise EchoDataError("batch_size", f"must be >= 1, got {batch_size}")
        self.inferer, self.seed, self.batch_size = inferer, int(seed), int(batch_size)
        self.extras: list[dict[str, Any]] = []

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        if inputs.ndim != 4:
            raise EchoDataError(None, f"expected model-frame images (B, T, S, S), got shape {tuple(inputs.shape)}")
        stacked, self.extras = [], []
        for frames in _plain(inputs):
            generator = torch.Generator().manual_seed(self.seed)
            out = sample_frames(self.inferer, network, frames, generator, self.batch_size)
            channels = [out["prob"][None], out["uncertainty"][None]]
            if "members" in out:
                channels.append(torch.movedim(out["members"], 1, 0))  # (T, R, S, S) -> (R, T, S, S)
            stacked.append(torch.cat(channels))
            self.extras.append({k: out[k] for k in ("member_names", "sensitivity", "specificity") if k in out})
        return torch.stack(stacked)

    def __getattr__(self, name: str) -> Any:
        """The sampler's settings (``num_steps``, ``ensemble``, ``threshold``, ...), read through the inferer."""
        inferer = self.__dict__.get("inferer")
        if inferer is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inferer, name)


class SplitOutputd(MapTransform):
    """The first postprocessing step: :class:`FramesInferer`'s ``(2 + R, T, S, S)`` into ``pred`` (the
    probability), ``uncertainty`` (both ``(T, S, S)``) and, for a 2D input with ``save_samples``, ``members``
    ``(R, S, S)``; each a MetaTensor without metadata, so that ``Invertd`` gives it the image's.

    Args:
        keys: the inferer's output key (``pred``).
        image_key: the preprocessed image (its ``sequence`` metadata: a 2D+t input gets no members).
        save_samples: keep the members.
    """

    def __init__(self, keys: KeysCollection = "pred", image_key: str = "image", save_samples: bool = True) -> None:
        super().__init__(keys)
        self.image_key = image_key
        self.save_samples = as_bool(save_samples, "save_samples")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d.get(self.image_key)
        two_d = not bool((getattr(image, "meta", {}) or {}).get("sequence", True))
        for key in self.key_iterator(d):
            out = _plain(d[key]).detach().float().cpu()
            d[key], d["uncertainty"] = MetaTensor(out[0]), MetaTensor(out[1])
            d.pop("members", None)
            if self.save_samples and two_d and out.shape[0] > 2:
                d["members"] = MetaTensor(out[2:, 0])
        return d


def dice_inputs(output: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> tuple[list, list]:
    """``MeanDice``'s ``output_transform``: per case the binary mask and the binary label on the input grid.

    The mask is the postprocessed ``pred`` (``(1, W, H)``, or ``(1, W, H, T)`` for a 2D+t input), the label the
    preprocessed one (frames on the channel axis, put in the mask's layout); both float on the CPU.
    """
    items = [output] if isinstance(output, Mapping) else list(output)
    preds, labels = [], []
    for item in items:
        pred = (_plain(item["pred"]).detach().cpu() > 0).float()
        label = _plain(item["label"]).detach().cpu().float()
        if label.shape != pred.shape:  # a loop: (T, W, H) -> (1, W, H, T), as FramesToSpatiald saves the mask
            label = torch.movedim(label, 0, -1)[None]
        if label.shape != pred.shape:
            raise EchoDataError(None, f"mask {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
        preds.append(pred)
        labels.append(label)
    return preds, labels


def _case_id(item: Mapping[str, Any], key: str = "image") -> str:
    meta = getattr(item.get(key), "meta", {}) or {}
    return case_id_from_name(os.path.basename(str(meta.get("filename_or_obj", "case"))))


def case_names(batch: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> list[dict[str, str]]:
    """``MetricsSaver``'s ``batch_transform``: the case id of each item (the CSV's ``filename`` column)."""
    items = [batch] if isinstance(batch, Mapping) else list(batch)
    return [{"filename_or_obj": _case_id(item)} for item in items]


class PredictionRecorder:
    """An ignite handler: after each iteration (the postprocessing's ``SaveImaged`` wrote into ``staging_dir``),
    move the case's files into the prediction folder and keep its record, as
    :meth:`scripts.pipeline.EchoDNDPipeline.segment_case` does.

    Args:
        inference: the :class:`scripts.infer.EchoDNDInference` whose ``output_dir`` is the prediction folder.
        inferer: the evaluator's :class:`FramesInferer` (the members' chains and STAPLE's estimates).
        staging_dir: the folder the postprocessing saves into (removed at the end).
    """

    def __init__(self, inference: EchoDNDInference, inferer: FramesInferer, staging_dir: str | os.PathLike) -> None:
        self.inference, self.inferer = inference, inferer
        self.staging_dir = Path(staging_dir)
        self.records: list[dict[str, Any]] = []
        self._start = 0.0

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.completed)

    def started(self, engine: Any = None) -> None:
        self.records = []

    def iteration_started(self, engine: Any = None) -> None:
        self._start = time.perf_counter()
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    def iteration_completed(self, engine: Any) -> None:
        outputs = engine.state.output
        items = [outputs] if isinstance(outputs, Mapping) else list(outputs)
        batch = engine.state.batch
        originals = [batch] if isinstance(batch, Mapping) else list(batch)
        for i, item in enumerate(items):
            extras = self.inferer.extras[i] if i < len(self.inferer.extras) else {}
            self.records.append(self._finish(item, originals[i] if i < len(originals) else item, extras))
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def completed(self, engine: Any = None) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def _finish(self, item: Mapping[str, Any], original: Mapping[str, Any], extras: Mapping[str, Any]) -> dict:
        image = item["image"]
        meta = getattr(original.get("image", image), "meta", None) or image.meta
        return finish_case(
            self.inference,
            self.staging_dir,
            _case_id(item),
            str(meta.get("filename_or_obj")),
            item,
            extras,
            meta,
            self._start,
        )


class EngineEvaluation:
    """Run the ``SupervisedEvaluator`` (predictions into ``pred_dir``, MONAI's Dice), write the run record, then
    score the predictions with ``echogains evaluate``; returns its summary (as in ``metrics_summary.json``) with the
    engine's mean Dice under ``engine_metrics``.

    Args:
        evaluation: the :class:`scripts.evaluate.EchoDNDEvaluation` (report folder, labels, overlays, progress;
            its ``inferer`` the checked inference run).
        plan: :func:`prepare`'s result for ``evaluation``.
        evaluator: the ``monai.engines.SupervisedEvaluator``.
        recorder: the evaluator's :class:`PredictionRecorder`.
    """

    def __init__(
        self, evaluation: EchoDNDEvaluation, plan: EvaluationPlan, evaluator: Any, recorder: PredictionRecorder
    ) -> None:
        self.evaluation, self.plan, self.evaluator, self.recorder = evaluation, plan, evaluator, recorder

    def run(self) -> dict[str, Any]:
        from echogains.evaluation.evaluate import evaluate

        inference, plan = self.evaluation.inferer, self.plan
        log.info("segmenting %d case(s) of %s into %s", len(plan.case_ids), plan.dataset.root, inference.output_dir)
        self.evaluator.run()
        metrics = {k: float(v) for k, v in self.evaluator.state.metrics.items()}
        settings = {**inference.settings(), "pipeline": "monai.engines.SupervisedEvaluator"}
        record = {"dataset_dir": str(inference.dataset_dir), "subset": plan.subset, **settings}
        atomic_write_json(inference.output_dir / RECORD_NAME, {**record, "cases": self.recorder.records})
        log.info("evaluating %d case(s) of %s (subset %s)", len(plan.case_ids), plan.dataset.root, plan.subset)
        summary = evaluate(
            inference.output_dir,
            plan.dataset.root,
            self.evaluation.out_dir,
            subset=plan.subset,
            labels=self.evaluation.labels,
            overlays=self.evaluation.overlays,
            progress=self.evaluation.progress,
            fold=inference.fold,
        )
        return {**summary, "engine_metrics": metrics}
