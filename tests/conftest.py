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

#: The slowest tests (each over 8 s of CPU in a full run, ``tests`` CPU time per test measured with
#: ``resource.getrusage`` of the worker and its children; together about half the suite's CPU time), longest first.
#: They carry the ``slow`` mark, so that a developer can run ``pytest -m "not slow"`` locally; ``make test`` runs
#: them all.
#:
#: Scheduling with ``pytest -n auto``: pytest-xdist's ``load`` scheduler first hands each worker a *consecutive* chunk
#: of the collection (a quarter of its share, i.e. 78 tests each on 2 workers), then more as tests finish. Measured on
#: 2 workers with the slow tests simply sorted first: the first chunk gave every one of them to worker 0 (916 s of
#: tests there, 550 s on worker 1). With ``--maxschedchunk=1`` (pyproject.toml) the first chunk is 2 tests and then
#: one test at a time, each worker keeping one test queued behind the running one; so the slow tests come first,
#: longest first, each followed by a short one (:func:`schedule_order`): whichever worker is free takes the next
#: slow test, and what waits behind a slow test is a short one.
SLOW_TESTS = (
    "tests/test_end_to_end.py::test_phantom_to_nnunet_to_evaluation",
    "tests/nnunet_ext/test_seeded_trainer.py::test_same_seed_same_weights_other_seed_other_weights",
    "tests/bundle/test_bundle_ddp.py::test_two_process_resume_restores_every_rank",
    "tests/test_benchmarks_train_memory.py::test_tiny_run_table_guard_and_markdown",
    "tests/bundle/test_bundle_ddp.py::test_two_process_gloo_step",
    "tests/test_cli.py::test_convert_verify_evaluate",
    "tests/bundle/test_bundle_run_train.py::test_train_then_resume",
    "tests/bundle/test_bundle_train_memory.py::test_train_json_passes_the_memory_options",
    "tests/bundle/test_bundle_ablation.py::test_bundle_command_lines",
    "tests/bundle/test_bundle_train_memory.py::test_a_rank_killed_by_signal_9_is_named_by_the_others",
    "tests/bundle/test_bundle_run_inference.py::test_inference_both_forms_from_any_folder",
    "tests/bundle/test_bundle_train_memory.py::test_kill_inside_an_accumulation_cycle_resumes_exactly",
    "tests/test_benchmarks_echogains.py::test_smoke_run_writes_the_json_with_its_keys_types_and_ratios",
    "tests/analysis/test_analyze.py::test_committed_demo_nnunet_on_phantom_dicom_loops",
    "tests/bundle/test_bundle_run_evaluate.py::test_evaluate_writes_predictions_and_report",
    "tests/bundle/test_bundle_errors.py::test_the_command_line_gives_one_line_and_status_2",
    "tests/ddpm/test_ddpm_train_memory.py::test_kill_inside_an_accumulation_cycle_resumes_exactly",
    "tests/analysis/test_analyze.py::test_demo_echo_dnd_weights_on_a_phantom_echonet_avi",
    "tests/bundle/test_echodnd_losses.py::test_a_checkpoint_from_before_the_new_fields_resumes_with_its_own_settings",
    "tests/nnunet_ext/test_trainers.py::test_nnunet_finds_trainers_through_ext_path",
    "tests/augment/test_expand.py::test_output_passes_verify_dataset_with_nnunet_check",
    "tests/experiments/test_killed_messages.py::test_bundle_runner_reports_a_killed_bundle_command",
    "tests/data/test_verify.py::test_clean_dataset_passes_including_nnunet_check",
    "tests/augment/test_expand.py::test_two_shards_started_at_the_same_instant_both_finish",
    "tests/bundle/test_bundle_ablation.py::test_each_ablation_trains_saves_and_infers",
)


def schedule_order(items: list, slow_rank: dict[str, int], key=lambda item: item) -> list:
    """Slow items first, longest first, each followed by one short item; then the remaining short ones.

    Args:
        items: in collection order.
        slow_rank: ``{key: rank}`` of the slow ones (0 = longest).
        key: an item's key in ``slow_rank``.
    """
    slow = sorted((i for i in items if key(i) in slow_rank), key=lambda i: slow_rank[key(i)])
    short = [i for i in items if key(i) not in slow_rank]
    head = [x for pair in zip(slow, short) for x in pair]
    return head + slow[len(short) :] + short[len(slow) :]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {nodeid: i for i, nodeid in enumerate(SLOW_TESTS)}

    def key(item: pytest.Item) -> str:
        return item.nodeid.split("[")[0]

    for item in items:
        if key(item) in rank:
            item.add_marker(pytest.mark.slow)
    # the same order on every worker (xdist requires it): see SLOW_TESTS
    items[:] = schedule_order(items, rank, key)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts with one torch thread, whatever the test before it set (benchmarks take ``--threads``)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
