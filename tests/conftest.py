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

#: The slowest tests (each over 7 s of CPU in a full run, CPU time per test measured with ``resource.getrusage`` of
#: the worker and its children; together about two thirds of the suite's CPU time), longest first; a parametrized
#: test by the sum of its cases.
#: They carry the ``slow`` mark, so that a developer can run ``pytest -m "not slow"`` locally; ``make test`` runs
#: them all.
#:
#: Scheduling with ``pytest -n auto``: :func:`pytest_xdist_make_scheduler` hands out one work unit at a time (a test,
#: or a whole module of :data:`GROUPED_MODULES`), in collection order, to whichever worker has at most two tests
#: queued behind the running one. So the slow tests come first, longest first, each followed by a short one
#: (:func:`schedule_order`): whichever worker is free takes the next slow test, and what waits behind a slow test is a
#: short one. (pytest-xdist's own ``load`` scheduler first hands each worker a *consecutive* chunk of the collection;
#: measured on 2 workers with the slow tests simply sorted first, the first chunk gave every one of them to worker 0:
#: 916 s of tests there, 550 s on worker 1.)
SLOW_TESTS = (
    "tests/test_end_to_end.py::test_phantom_to_nnunet_to_evaluation",
    "tests/bundle/test_bundle_configs.py::test_network_config_comes_from_beside_the_weights_unless_given",
    "tests/bundle/test_bundle_export.py::test_paper_configuration_step_exports_within_tolerance",
    "tests/nnunet_ext/test_seeded_trainer.py::test_same_seed_same_weights_other_seed_other_weights",
    "tests/bundle/test_bundle_train_memory.py::test_kill_inside_an_accumulation_cycle_resumes_exactly",
    "tests/test_benchmarks_train_memory.py::test_tiny_run_table_guard_and_markdown",
    "tests/bundle/test_bundle_ddp.py::test_two_process_resume_restores_every_rank",
    "tests/bundle/test_bundle_run_train.py::test_train_then_resume",
    "tests/bundle/test_bundle_model_zoo.py::test_train_resume_infer_evaluate_on_random_nifti",
    "tests/test_cli.py::test_convert_verify_evaluate",
    "tests/bundle/test_bundle_train_engine.py::test_config_and_python_api_train_alike",
    "tests/bundle/test_bundle_ddp.py::test_two_process_gloo_step",
    "tests/bundle/test_bundle_errors.py::test_the_command_line_gives_one_line_and_status_2",
    "tests/bundle/test_bundle_run_inference.py::test_inference_from_the_bundle_folder_and_with_bundle_root",
    "tests/bundle/test_bundle_train_memory.py::test_train_json_passes_the_memory_options",
    "tests/bundle/test_bundle_ablation.py::test_bundle_command_lines",
    "tests/test_benchmarks_echogains.py::test_smoke_run_writes_the_json_with_its_keys_types_and_ratios",
    "tests/bundle/test_bundle_train_memory.py::test_a_rank_killed_by_signal_9_is_named_by_the_others",
    "tests/ddpm/test_ddpm_train_memory.py::test_kill_inside_an_accumulation_cycle_resumes_exactly",
    "tests/bundle/test_bundle_ablation.py::test_each_ablation_trains_saves_and_infers",
    "tests/bundle/test_sampler_stability.py::test_default_dice_is_stable_across_seeds_on_the_sample_data",
    "tests/bundle/test_bundle_run_evaluate.py::test_evaluate_writes_predictions_and_report",
    "tests/augment/test_expand.py::test_two_shards_started_at_the_same_instant_both_finish",
    "tests/bundle/test_bundle_export.py::test_demo_step_exports_and_samples_like_the_eager_model",
    "tests/analysis/test_analyze.py::test_committed_demo_nnunet_on_phantom_dicom_loops",
    "tests/analysis/test_analyze.py::test_demo_echo_dnd_weights_on_a_phantom_echonet_avi",
    "tests/nnunet_ext/test_trainers.py::test_nnunet_finds_trainers_through_ext_path",
    "tests/augment/test_expand.py::test_output_passes_verify_dataset_with_nnunet_check",
    "tests/bundle/test_bundle_pipeline.py::test_pipeline_equals_direct_inference_in_the_input_geometry",
)


#: Modules whose module-scoped fixtures cost a second or more of CPU (a phantom dataset, a converted or expanded one,
#: an evaluation): their tests run back to back on one worker, so that the fixture is built once. Sent one test at a
#: time, a module's tests went to both workers, and pytest tears a module's fixtures down whenever the next test on
#: the worker is from another module: ``tests/test_cli.py``'s three ``echogains`` runs were made twice, the others'
#: fixtures likewise (measured: each module's first test on each worker paid the fixture).
GROUPED_MODULES = frozenset(
    {
        "tests/test_cli.py",
        "tests/test_cli_errors.py",
        "tests/bundle/test_bundle_engine_evaluate.py",
        "tests/bundle/test_bundle_train_engine.py",
        "tests/test_benchmarks_echogains.py",
        "tests/evaluation/test_ef_intervals.py",
        "tests/experiments/test_echogains_tables.py",
        "tests/experiments/test_echo_dnd_tables.py",
        "tests/augment/test_quality.py",
        "tests/augment/test_expand.py",
        "tests/test_architecture.py",
    }
)


def work_unit(nodeid: str) -> str:
    """The scheduling unit of a test: its module if the module is in :data:`GROUPED_MODULES`, else the test."""
    module = nodeid.split("::", 1)[0]
    return module if module in GROUPED_MODULES else nodeid


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own implementation (a firstresult hook)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """With ``-n`` (the default ``--dist load``): xdist's ``loadscope`` scheduler with :func:`work_unit` as the scope.

    It sends the units in collection order (``--loadscope-reorder`` would sort them by size) and sends a worker the
    next unit when at most two of its tests are left, so that a worker never waits for work.
    """
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # read by LoadScopeScheduling.schedule: keep the order of SLOW_TESTS
    return ModuleGroups(config, log)


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
