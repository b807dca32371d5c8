"""Shared test settings: no progress bars, one torch thread (tiny models gain nothing from more, and on a
loaded 2-core machine multi-threaded torch slows down by an order of magnitude)."""

from __future__ import annotations

import os

os.environ.setdefault("ECHOGAINS_NO_PROGRESS", "1")
os.environ.setdefault("nnUNet_def_n_proc", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)

import pytest  # noqa: E402

#: The slowest tests (each measured over 10 s on 2 cores in a full run; together over half the suite's CPU time). They
#: carry the ``slow`` mark, so that a developer can run ``pytest -m "not slow"`` locally; ``make test`` runs them all,
#: and they are scheduled first so that, with ``pytest -n auto``, the long ones do not end up as the tail of a worker.
SLOW_TESTS = (  # longest first (``--durations`` of the whole suite with -n 2)
    "tests/test_end_to_end.py::test_phantom_to_nnunet_to_evaluation",
    "tests/nnunet_ext/test_seeded_trainer.py::test_same_seed_same_weights_other_seed_other_weights",
    "tests/bundle/test_bundle_ddp.py::test_two_process_resume_restores_every_rank",
    "tests/bundle/test_bundle_ddp.py::test_two_process_gloo_step",
    "tests/test_benchmarks_train_memory.py::test_tiny_run_table_guard_and_markdown",
    "tests/bundle/test_bundle_train_memory.py::test_train_json_passes_the_memory_options",
    "tests/bundle/test_bundle_run_inference.py::test_inference_both_forms_from_any_folder",
    "tests/test_benchmarks_echogains.py::test_smoke_run_writes_the_json_with_its_keys_types_and_ratios",
    "tests/bundle/test_bundle_errors.py::test_the_command_line_gives_one_line_and_status_2",
    "tests/bundle/test_bundle_run_train.py::test_train_then_resume",
    "tests/bundle/test_bundle_ablation.py::test_bundle_command_lines",
    "tests/test_cli.py::test_convert_verify_evaluate",
    "tests/bundle/test_bundle_run_evaluate.py::test_evaluate_writes_predictions_and_report",
    "tests/bundle/test_bundle_train_memory.py::test_kill_inside_an_accumulation_cycle_resumes_exactly",
    "tests/data/test_verify.py::test_clean_dataset_passes_including_nnunet_check",
    "tests/bundle/test_bundle_train_memory.py::test_a_rank_killed_by_signal_9_is_named_by_the_others",
    "tests/analysis/test_analyze.py::test_committed_demo_nnunet_on_phantom_dicom_loops",
    "tests/bundle/test_echodnd_losses.py::test_a_checkpoint_from_before_the_new_fields_resumes_with_its_own_settings",
    "tests/bundle/test_bundle_ablation.py::test_each_ablation_trains_saves_and_infers",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test of more than 10 s (deselect locally with -m 'not slow')")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {nodeid: i for i, nodeid in enumerate(SLOW_TESTS)}
    for item in items:
        if item.nodeid.split("[")[0] in rank:
            item.add_marker(pytest.mark.slow)
    # stable sort, the same order on every worker: the slow ones first, longest first, then the rest as collected
    items.sort(key=lambda item: rank.get(item.nodeid.split("[")[0], len(rank)))


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts with one torch thread, whatever the test before it set (benchmarks take ``--threads``)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
