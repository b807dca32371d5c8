"""``experiments.echo_dnd_seeds``: pooled seeds against differences known by construction."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from echogains.utils import EchoDataError, atomic_write_json
from experiments import echo_dnd_seeds as eds


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from echogains.data.phantom import make_phantom

    root = tmp_path_factory.mktemp("eds") / "Dataset811_EchoDNDPhantom"
    return make_phantom(
        root, n_patients=30, preset="hard", layout="nnunet", labels="lv,myo,la", image_size=(32, 32), seed=2,
        progress=False,
    )  # fmt: skip


def _cases(dataset: Path) -> list[str]:
    return sorted(p.name[: -len(".nii.gz")] for p in (dataset / "labelsTs").glob("*.nii.gz"))


def _work(root: Path, dataset: Path, seed: int, dice: dict[str, list[float]], **settings) -> Path:
    work = root / f"work{seed}"
    atomic_write_json(work / "settings.json", {"mode": "quick", "seed": seed, "dataset": str(dataset), **settings})
    for arm, values in dice.items():
        folder = work / "arms" / arm / "evaluation"
        folder.mkdir(parents=True)
        with (folder / "metrics_per_case.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case_id", "patient", "LV_dice", "LV_hd_mm"])
            for case, value in zip(_cases(dataset), values):
                writer.writerow([case, case.split("_")[0], value, 10.0 * (1.0 - value)])
    return work


def test_pooled_seeds_resolve_a_constant_difference_and_not_a_symmetric_one(dataset: Path, tmp_path: Path) -> None:
    cases = _cases(dataset)
    assert len({c.split("_")[0] for c in cases}) >= 2 and len(cases) % 4 == 0  # whole patients, 2CH+4CH, ED+ES
    rng = np.random.default_rng(0)
    works = []
    for seed in range(3):
        base = list(0.85 + 0.05 * rng.random(len(cases)))
        patients = sorted({c.split("_")[0] for c in cases})
        sign = [1.0 if patients.index(c.split("_")[0]) % 2 == 0 else -1.0 for c in cases]  # by patient: +, -, +, ...
        works.append(
            _work(
                tmp_path,
                dataset,
                seed,
                {
                    "nnunet": base,
                    "full": [b + 0.05 for b in base],  # better by 0.05 on every image
                    "bernoulli_only": [b + 0.05 + 0.02 * s for b, s in zip(base, sign)],  # +-0.02 by patient
                },
            )
        )
    md = eds.run(",".join(map(str, works)), out=str(tmp_path / "out"), n_boot=500)
    result = json.loads((tmp_path / "out" / "echo_dnd_seeds.json").read_text())
    rows = {r["arm"]: r for r in result["rows"]}
    mean, lower, upper = rows["full"]["dice_vs_nnunet_values"]
    assert mean == pytest.approx(0.05) and lower == pytest.approx(0.05) and upper == pytest.approx(0.05)
    assert rows["full"]["dice_vs_nnunet_resolved"] == "yes, better"
    assert rows["full"]["hd_vs_nnunet_resolved"] == "yes, better"  # HD is 10 (1 - Dice): lower is better
    b_mean, b_lower, b_upper = rows["bernoulli_only"]["dice_vs_full_values"]
    assert b_mean == pytest.approx(0.02 * float(np.mean(sign))) and b_lower < 0.0 < b_upper
    assert rows["bernoulli_only"]["dice_vs_full_resolved"] == "no"
    # the pooled mean is the mean over every seed and image
    all_full = [v[0] for s in result["per_case"]["values"]["full"].values() for v in s.values()]
    assert rows["full"]["dice_mean"] == pytest.approx(float(np.mean(all_full)))
    verdicts = {o["pair"]: o["verdict"] for o in result["orderings"]}
    assert verdicts == {"full − nnunet": "resolved, as the paper orders", "full − bernoulli_only": "not resolved"}
    # grades come from the dataset's records, and every test image has one
    assert set(result["grades"].values()) <= set(eds.GRADES) and len(result["grades"]) == len(cases)
    assert sum(rows["full"].get(f"n_{g}", 0) for g in eds.GRADES) == len(cases)
    assert (tmp_path / "out" / "dice_per_arm_seeds.png").stat().st_size > 0
    assert "resolved, as the paper orders" in Path(md).read_text()


def test_runs_must_share_everything_but_the_seed(dataset: Path, tmp_path: Path) -> None:
    cases = _cases(dataset)
    a = _work(tmp_path / "a", dataset, 0, {"full": [0.9] * len(cases)}, steps=400)
    b = _work(tmp_path / "b", dataset, 1, {"full": [0.9] * len(cases)}, steps=300)
    with pytest.raises(EchoDataError, match=r"more than the seed: \['steps'\]"):
        eds.load_runs([a, b])
    c = _work(tmp_path / "c", dataset, 0, {"full": [0.9] * len(cases)}, steps=400)
    with pytest.raises(EchoDataError, match="a second run of seed 0"):
        eds.load_runs([a, c])
    with pytest.raises(EchoDataError, match="no settings.json"):
        eds.load_runs([tmp_path])
    d = _work(tmp_path / "d", dataset, 1, {"nnunet": [0.9] * len(cases)}, steps=400)
    with pytest.raises(EchoDataError, match="arm 'full' was not evaluated"):
        eds.collect(eds.load_runs([a, d])[1], ["full"])
