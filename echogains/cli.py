"""The ``echogains`` command (python-fire). Each command is a thin call into a module below.

Run ``echogains --help`` or ``echogains COMMAND --help``. Bad input ends with a one-line error naming the
file and the problem, and exit status 2.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from echogains.utils import EchoDataError, get_logger, set_progress

log = get_logger("echogains.cli")


class EchoGains:
    """Echocardiography LV segmentation toolkit: data, augmentation, evaluation."""

    def make_phantom(
        self,
        out: str,
        n_patients: int = 10,
        preset: str = "camus-like",
        layout: str = "camus-nifti",
        seed: int = 0,
        sequence: bool = False,
        labels: str = "lv,myo,la",
        image_size: int | None = None,
        overwrite: bool = False,
        progress: bool = True,
        **overrides,
    ) -> str:
        """Write a synthetic echo phantom.

        Args:
            out: output folder.
            n_patients: number of patients (each gives 2CH and 4CH views at ED and ES).
            preset: ``camus-like`` (varied depth, angle, position) or ``lv-focused`` (HUNT4-like).
            layout: ``camus-nifti``, ``camus-mhd``, ``echonet``, ``nnunet`` (an nnU-Net raw dataset) or ``dicom``
                (multi-frame ultrasound DICOM loops of both views).
            seed: random seed; the same seed gives the same bytes.
            sequence: also write ED->ES half sequences (CAMUS layouts).
            labels: labels kept in the ``nnunet`` layout, from ``lv,myo,la``.
            image_size: override the preset's image size (pixels).
            overwrite: replace a non-empty output folder.
            progress: show a progress bar.
            overrides: phantom parameters, a value or a ``(low, high)`` range: ``depth_mm``, ``opening_deg``,
                ``tilt_deg``, ``apex_depth_mm``, ``heart_angle_deg``, ``axis_angle_deg``, ``ef_percent``,
                ``n_frames``, ``quality``, ``anisotropy``, ``spacing``, ``cycle_frames``, ``fps``, ``n_beats``.
        """
        from echogains.data.phantom import make_phantom

        set_progress(progress)
        return str(make_phantom(out, n_patients=n_patients, preset=preset, layout=layout, seed=seed, sequence=sequence,
                                labels=labels, image_size=image_size, overwrite=overwrite, progress=progress,
                                **overrides))

    def convert_camus(
        self,
        src: str,
        out: str,
        labels: str = "lv,myo,la",
        views: str = "2CH,4CH",
        phases: str = "ED,ES",
        n_folds: int = 5,
        seed: int = 0,
        overwrite: bool = False,
        skip_bad: bool = False,
        progress: bool = True,
    ) -> str:
        """Convert CAMUS (original mhd or NIfTI release) into an nnU-Net raw dataset.

        Args:
            src: the CAMUS folder (holding ``training/`` or ``database_nifti/``).
            out: output dataset folder, e.g. ``$nnUNet_raw/Dataset501_CAMUS``.
            labels: labels to keep, from ``lv,myo,la``.
            views: views to convert.
            phases: phases to convert.
            n_folds: patient-grouped folds when the official split files are absent.
            seed: seed of the fold assignment.
            overwrite: replace an existing dataset.
            skip_bad: skip bad cases and write a report instead of stopping at the first.
            progress: show a progress bar.
        """
        from echogains.data.camus import convert_camus

        set_progress(progress)
        return str(convert_camus(src, out, labels=labels, views=views, phases=phases, n_folds=n_folds, seed=seed,
                                 overwrite=overwrite, skip_bad=skip_bad, progress=progress))

    def convert_echonet(
        self,
        src: str,
        out: str,
        skip_bad: bool = False,
        limit: int | None = None,
        overwrite: bool = False,
        progress: bool = True,
    ) -> str:
        """Convert EchoNet-Dynamic (Videos/, FileList.csv, VolumeTracings.csv) into an nnU-Net raw dataset.

        Args:
            src: the EchoNet-Dynamic folder.
            out: output dataset folder.
            skip_bad: skip bad videos and write a report instead of stopping at the first.
            limit: convert only the first N videos (for a quick look).
            overwrite: replace an existing dataset.
            progress: show a progress bar.
        """
        from echogains.data.echonet import convert_echonet

        set_progress(progress)
        return str(convert_echonet(src, out, skip_bad=skip_bad, limit=limit, overwrite=overwrite, progress=progress))

    def verify_dataset(self, dataset: str, nnunet_check: bool = True, num_processes: int = 1, progress: bool = True) -> str:
        """Verify an nnU-Net raw dataset: nnU-Net's integrity check plus empty masks, NaN, geometry, labels, splits.

        Args:
            dataset: the dataset folder.
            nnunet_check: also run nnU-Net's own ``verify_dataset_integrity``.
            num_processes: worker processes for nnU-Net's check.
            progress: show a progress bar.

        Exit status 1 when any error is found.
        """
        from echogains.data.verify import verify_dataset

        report = verify_dataset(dataset, nnunet_check=nnunet_check, num_processes=num_processes, show_progress=progress)
        print(report.summary())
        if not report.ok:
            raise SystemExit(1)
        return "OK"

    def evaluate(
        self,
        pred: str,
        dataset: str,
        out: str,
        subset: str = "Ts",
        labels: str | None = None,
        overlays: bool = True,
        progress: bool = True,
    ) -> str:
        """Evaluate predictions against a labelled nnU-Net raw dataset: Dice, HD and MSD in mm, Simpson EF.

        Args:
            pred: folder of predicted masks ``{case}.nii.gz`` (nnU-Net or Echo-DND output).
            dataset: the nnU-Net raw dataset with the reference labels.
            out: report folder (CSV, JSON, PNG plots, report.html).
            subset: which cases: ``Ts`` (imagesTs), ``Tr``, ``all``.
            labels: label names to score, e.g. ``LV`` or ``LV,MYO`` (default: the labels the predictions contain,
                or those their folder's nnU-Net ``dataset.json`` declares).
            overlays: write contour overlay PNGs.
            progress: show a progress bar.
        """
        from echogains.evaluation.evaluate import evaluate

        set_progress(progress)
        if isinstance(labels, (tuple, list)):  # fire turns --labels LV,MYO into a tuple
            labels = ",".join(str(x) for x in labels)
        evaluate(pred, dataset, out, subset=subset, labels=labels, overlays=overlays, progress=progress)
        return str(Path(out) / "report.html")

    def train_ddpm(
        self,
        data: str,
        out: str,
        config: str = "tiny",
        steps: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        ema: float | None = None,
        seed: int = 0,
        resume: bool = True,
        sample_every: int = 1000,
        checkpoint_every: int = 1000,
        device: str | None = None,
        max_narrowing_deg: float = 20.0,
        fold: int = 0,
        include_validation: bool = False,
        all_patients: bool = False,
        vb_weighting: str = "rescaled",
        accumulate: int = 1,
        precision: str = "auto",
        checkpointing: str = "auto",
        progress: bool = True,
    ) -> str:
        """Train the unconditional improved DDPM (EchoGAINS) on echo images; resumes from ``out/checkpoint.pt``.

        Never on test patients: from a dataset only the training half of ``--fold`` (``imagesTs`` never), from a CAMUS
        folder only the ``database_split/subgroup_training.txt`` patients; validation cases are left out unless
        ``--include_validation``.

        Args:
            data: an nnU-Net raw dataset, a CAMUS folder (sequences, every N-th frame, N in 8..12) or a folder of images.
            out: output folder (checkpoint, EMA weights ``ddpm_ema.pt``, sample grids).
            config: ``paper`` (256 px, T = 4000, batch 64, 500k steps), ``tiny`` (64 px demo) or ``micro`` (tests).
            steps: optimisation steps (default: the config's).
            batch_size: global batch size over all processes (default: the config's).
            lr: Adam learning rate (default 1e-4).
            ema: EMA decay (default 0.9999).
            seed: seed of every random draw.
            resume: continue from an existing checkpoint.
            sample_every: write a sample grid every this many steps.
            checkpoint_every: write the full-state checkpoint every this many steps.
            device: ``cuda`` or ``cpu`` (default: cuda when available). Multi-GPU: launch with ``torchrun``.
            max_narrowing_deg: random sector narrowing before training (paper: up to 20 degrees).
            fold: fold of the dataset's ``splits_final.json`` whose training cases are used (the one expand-dataset
                augments).
            include_validation: also train on the fold's validation cases (CAMUS: the ``subgroup_validation`` patients).
            all_patients: accept a CAMUS folder without split files: every patient, its test patients included.
            vb_weighting: ``rescaled`` (L_simple + 0.001 T L_t, improved DDPM's rescaled loss; default) or ``unit``
                (L_simple + L_t, the EchoGAINS public configuration).
            accumulate: gradient accumulation: N micro-batches of ``--batch_size`` per step, effective batch
                batch_size x N, the memory of batch_size (the paper's 64 on one 40 GB GPU:
                ``--batch_size 32 --accumulate 2``, 24.5 GB measured by benchmarks/train_memory.py on the CPU; see the
                README).
            precision: ``auto`` (bf16 autocast on a GPU with bf16, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``
                (with a gradient scaler).
            checkpointing: activation checkpointing of the U-Net blocks, ``true``/``false``/``auto`` (on at 256 px).
            progress: show progress bars.
        """
        from echogains.ddpm.train import train_ddpm

        set_progress(progress)
        return str(train_ddpm(data, out, config=config, steps=steps, batch_size=batch_size, lr=lr, ema=ema, seed=seed,
                              resume=resume, sample_every=sample_every, checkpoint_every=checkpoint_every,
                              device=device, max_narrowing_deg=max_narrowing_deg, verbose=progress, fold=fold,
                              include_validation=include_validation, all_patients=all_patients,
                              vb_weighting=vb_weighting, accumulate=accumulate, precision=precision,
                              checkpointing=checkpointing))

    def expand_dataset(
        self,
        src: str,
        out: str,
        model: str | None = None,
        augment: str = "combination",
        k: int = 5,
        labels: str = "lv,myo",
        no_repaint: bool = False,
        sampler: str = "fast",
        seed: int = 0,
        fold: int = 0,
        shard: str | None = None,
        batch_size: int = 8,
        device: str | None = None,
        overwrite: bool = False,
        merge_only: bool = False,
        augment_validation: bool = False,
        depth_mode: str = "zoom",
        kept_region: str = "original_sector",
        progress: bool = True,
    ) -> str:
        """EchoGAINS generative augmentation: write a new nnU-Net raw dataset with K repainted copies per case.

        Args:
            src: source nnU-Net raw dataset.
            out: output dataset folder (``DatasetXXX_Name``).
            model: DDPM weights (``echogains train-ddpm`` output); not needed with ``--no_repaint``.
            augment: ``depth`` (isotropic zoom-out about the apex, 0-150 px; spacing scaled), ``tilt`` (-30..30 deg
                about the apex), ``width`` (image width x 0.5-1.5, the paper's deliberate distortion),
                ``sector_angle`` (opening angle x 0.5-1.5, not in the paper), ``translation`` (0-50 px) or
                ``combination`` (the paper's four: depth, tilt, width, translation, each with probability 0.5).
            k: augmented copies per training case (paper: 5).
            labels: labels kept, from ``lv,myo,la`` (paper: LV + MYO).
            no_repaint: the paper's baseline: transformed, black outside the kept content.
            sampler: ``fast`` (<= 100 network evaluations per image) or ``repaint`` (250 steps, jumps 10 x 10).
            seed: augmentation seed; with (case, k) it fixes every random choice.
            fold: fold of the source ``splits_final.json`` whose training cases are augmented.
            shard: ``i/N`` to write part i of N (default: RANK/WORLD_SIZE under torchrun); the last shard merges.
            batch_size: images per network call.
            device: ``cuda`` or ``cpu`` (default: cuda when available).
            overwrite: replace an existing output dataset.
            merge_only: only merge finished shards into ``dataset.json``.
            augment_validation: also augment the fold's validation cases, validated on with the originals (the
                paper's setting, Sec. 2.6); default: validation on original cases only.
            depth_mode: ``zoom`` (default) or ``rows`` (the paper's literal "add rows, then resize": squeezes the
                anatomy vertically).
            kept_region: ``original_sector`` (the paper, Fig. 8: outside the original sector is repainted) or
                ``transformed_sector`` (keep all transformed content).
            progress: show a progress bar.
        """
        from echogains.augment.expand import expand_dataset
        from echogains.augment.transforms import TransformPolicy

        set_progress(progress)
        return str(expand_dataset(src, out, model=model, augment=augment, k=k, labels=labels, repaint=not no_repaint,
                                  sampler=sampler, seed=seed, fold=fold, shard=shard, batch_size=batch_size,
                                  device=device, overwrite=overwrite, progress=progress, merge_only=merge_only,
                                  augment_validation=augment_validation,
                                  policy=TransformPolicy(depth_mode=depth_mode, kept_region=kept_region)))

    def augmentation_report(
        self,
        dataset: str,
        out: str,
        model: str | None = None,
        n_samples: int = 8,
        max_cases: int = 50,
        seed: int = 0,
        device: str | None = None,
        progress: bool = True,
    ) -> str:
        """Quality checks of an expanded dataset: gallery PNG, SSIM nearest neighbours (memorisation), seam scores.

        Args:
            dataset: the ``expand-dataset`` output.
            out: report folder.
            model: DDPM weights: also compare unconditional samples with the training images.
            n_samples: unconditional samples drawn.
            max_cases: augmented cases checked.
            seed: sampling seed.
            device: ``cuda`` or ``cpu``.
            progress: show a progress bar.
        """
        from echogains.augment.quality import augmentation_report

        set_progress(progress)
        return str(augmentation_report(dataset, out, model=model, n_samples=n_samples, max_cases=max_cases, seed=seed,
                                       device=device, progress=progress))

    def analyze(
        self,
        input: str,
        out: str,
        model: str = "echo_dnd",
        model_path: str | None = None,
        bundle_root: str | None = None,
        views: str = "auto",
        skip_bad: bool = False,
        require_spacing: bool = False,
        fps: float | None = None,
        spacing_mm: str | None = None,
        num_steps: int = 5,
        ensemble: int = 2,
        batch_size: int = 8,
        seed: int = 0,
        fold: int = 0,
        checkpoint: str = "checkpoint_final.pth",
        tta: bool = False,
        device: str = "cpu",
        min_beat_s: float = 0.3,
        overlay: bool = True,
        overwrite: bool = False,
        progress: bool = True,
    ) -> str:
        """Segment echo loops (video, ultrasound DICOM, 2D+t NIfTI/mhd, or a folder) and measure LV volumes and EF per beat.

        Args:
            input: a video (.avi/.mp4), a DICOM cine loop, a 2D+t NIfTI/mhd sequence, or a folder of them.
            out: output folder: masks (NIfTI), curves (CSV, PNG), beats, overlay videos, results.csv, report.html.
            model: ``echo_dnd`` (the bundle's weights) or ``nnunet`` (a trained nnU-Net: ``--model_path``).
            model_path: Echo-DND weights (default: the bundle's models/model.pt) or the nnU-Net model folder.
            bundle_root: Echo-DND bundle folder (default: $ECHOGAINS_ECHO_DND_BUNDLE or the repository's).
            views: ``auto`` (DICOM tags, file names ``{patient}_{2CH|4CH}...``) or the views to use, e.g. ``2CH,4CH``.
            skip_bad: skip bad loops and patients, listed in skipped.csv.
            require_spacing: fail on a loop without physical pixel spacing (default: pixel units, with a warning).
            fps: frame rate for loops that give none.
            spacing_mm: ``sx,sy`` pixel spacing in mm for loops without calibration.
            num_steps: Echo-DND sampling steps per chain.
            ensemble: Echo-DND samples per chain (the EF interval comes from all samples of both chains).
            batch_size: frames per Echo-DND sampler call.
            seed: Echo-DND sampling seed.
            fold: nnU-Net fold.
            checkpoint: nnU-Net checkpoint file name.
            tta: nnU-Net mirroring test-time augmentation.
            device: ``cpu`` or ``cuda``.
            min_beat_s: shortest beat in seconds (ED/ES detection).
            overlay: write the overlay videos.
            overwrite: write into a non-empty output folder.
            progress: show a progress bar per loop.
        """
        from echogains.analysis import analyze

        set_progress(progress)
        analyze(input, out, model=model, model_path=model_path, bundle_root=bundle_root, views=views, skip_bad=skip_bad,
                require_spacing=require_spacing, fps=fps, spacing_mm=spacing_mm, num_steps=num_steps, ensemble=ensemble,
                batch_size=batch_size, seed=seed, fold=fold, checkpoint=checkpoint, tta=tta, device=device,
                min_beat_s=min_beat_s, overlay=overlay, overwrite=overwrite, progress=progress)
        return str(Path(out) / "report.html")

    def nnunet_env(self, shell: str = "bash") -> str:
        """Print the line that makes nnU-Net find this project's trainers (``-tr nnUNetTrainerEcho``).

        Args:
            shell: ``bash`` (also zsh/sh) or ``fish``.
        """
        import importlib.util

        spec = importlib.util.find_spec("nnunet_ext")  # located, not imported: echogains does not depend on it
        if spec is None or not spec.submodule_search_locations:
            raise EchoDataError(None, "the nnunet_ext package is not installed (pip install -e . in this repository)")
        trainers = Path(list(spec.submodule_search_locations)[0]) / "trainers"
        if shell == "fish":
            return f"set -gx nnUNet_extTrainer {trainers}"
        if shell not in ("bash", "zsh", "sh"):
            raise EchoDataError(None, f"--shell: unknown shell {shell!r}; use bash, zsh, sh or fish")
        return f"export nnUNet_extTrainer={trainers}"


#: python-fire's own flags (after a ``--`` separator, or alone).
_FIRE_FLAGS = {"help", "h", "interactive", "i", "trace", "t", "verbose", "v", "completion", "separator"}


def check_flags(argv: Sequence[str]) -> None:
    """Refuse an option the command does not have, before the command runs.

    python-fire calls the command first and complains about arguments it could not consume only afterwards, so a
    misspelt option (``--smapler repaint``) would run a whole expansion with the default. Options are matched against
    the command's signature (``--flag``, ``--flag=value``, ``--noflag`` for booleans, dashes or underscores).
    """
    tokens = list(argv)
    positional = [i for i, tok in enumerate(tokens) if not tok.startswith("-")]
    if not positional:
        return
    command = tokens[positional[0]]
    method = getattr(EchoGains, command.replace("-", "_"), None)
    if method is None or command.startswith("_"):
        return  # fire reports the unknown command itself
    params = inspect.signature(method).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the command checks its own extra options (make-phantom's parameter overrides)
    names = {name for name in params if name != "self"}
    for tok in tokens[positional[0] + 1 :]:
        if tok == "--":
            break
        if not tok.startswith("--"):
            continue
        name = tok[2:].split("=", 1)[0].replace("-", "_")
        if name in names or name in _FIRE_FLAGS or (name.startswith("no") and name[2:] in names):
            continue
        raise EchoDataError(None, f"{command}: unknown option --{name}; see echogains {command} --help")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    import fire

    try:
        check_flags(sys.argv[1:] if argv is None else argv)
        fire.Fire(EchoGains(), command=argv, name="echogains")
    except EchoDataError as err:
        logging.getLogger("echogains").debug("error", exc_info=True)
        print(f"echogains: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
