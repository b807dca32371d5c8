"""Echo-DND bundle conventions: metadata valid offline, network in/out verified, configs well formed, self-locating."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from scripts import EchoDND, EchoDNDConfig

from echogains.utils import EchoDataError

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIGS = BUNDLE / "configs"
SCHEMA = Path(__file__).resolve().parent / "meta_schema_20240725.json"
SCHEMA_MD5 = "b15c0ddcb570a1858b838bf85029d047"  # MONAI's meta_schema_20240725.json
CONFIG_NAMES = ("inference.json", "train.json", "evaluate.json", "multi_gpu_train.json")


def save_tiny_weights(path: Path, size: int) -> Path:
    """An untrained tiny model in the deployable format: a plain state_dict, ``network_config.json`` beside it."""
    from scripts.checkpoint import save_weights

    torch.manual_seed(0)
    return save_weights(EchoDND(EchoDNDConfig.tiny(size)), path)


def test_bundle_layout() -> None:
    for rel in [f"configs/{n}" for n in CONFIG_NAMES] + [
        "configs/metadata.json",
        "configs/logging.conf",
        "docs/README.md",
        "LICENSE",
        "scripts/infer.py",
    ]:
        assert (BUNDLE / rel).is_file(), rel
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()


def test_metadata_verifies_offline(tmp_path: Path) -> None:
    from monai.bundle import verify_metadata

    schema = tmp_path / SCHEMA.name
    shutil.copyfile(SCHEMA, schema)  # present, so verify_metadata does not download it
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema), hash_val=SCHEMA_MD5)
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["outputs"]["pred"]["num_channels"] == 1
    assert meta["monai_version"] == __import__("monai").__version__
    # pinned versions: those installed (constraints.txt); the inputs and outputs of the shipped (64 px) network
    from importlib.metadata import version

    assert meta["pytorch_version"] == version("torch").split("+")[0] and meta["numpy_version"] == version("numpy")
    for package, pinned in meta["required_packages_version"].items():
        assert version(package) == pinned, package
    assert {"pydicom", "pytorch-ignite"} <= set(meta["required_packages_version"])
    demo = json.loads((CONFIGS / "inference.json").read_text())["demo_network_config"]
    size = [demo["image_size"]] * 2
    assert fmt["inputs"]["image"]["spatial_shape"] == size and fmt["outputs"]["pred"]["spatial_shape"] == size
    assert fmt["inputs"]["image"]["num_channels"] == demo["in_channels"]
    changelog = meta["changelog"]["0.3.0"]
    assert all(word in changelog for word in ("state_dict", "bundle_root", "DICOM", "Inferer", "export"))
    assert all(word in meta["changelog"]["0.4.0"] for word in ("LoadImaged", "Invertd", "SaveImaged"))
    assert all(word in meta["changelog"]["0.5.0"] for word in ("SupervisedTrainer", "CheckpointLoader"))


def test_metadata_schema_rejects_missing_fields(tmp_path: Path) -> None:
    """Oracle for the check above: the same schema fails a metadata file without ``network_data_format``."""
    from monai.bundle import verify_metadata

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    del meta["network_data_format"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    schema = tmp_path / SCHEMA.name
    shutil.copyfile(SCHEMA, schema)
    with pytest.raises(ValueError):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(schema), hash_val=SCHEMA_MD5)


def test_verify_net_in_out_on_the_segmenter(tmp_path: Path) -> None:
    """MONAI's check passes on ``segmenter`` (image -> mask), the output is what the metadata promises, and the check
    fails on wrong metadata."""
    from monai.bundle import verify_net_in_out

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    size = int(meta["network_data_format"]["inputs"]["image"]["spatial_shape"][0])
    weights = save_tiny_weights(tmp_path / "model.pt", size)
    network = str(tmp_path / "network_config.json")
    run = {
        "net_id": "segmenter",
        "config_file": str(CONFIGS / "inference.json"),
        "device": "cpu",
        "model_path": str(weights),
        "network_config": network,
        "num_steps": 2,
    }
    verify_net_in_out(meta_file=str(CONFIGS / "metadata.json"), **run)
    # what verify_net_in_out leaves unchecked (it compares channels and dtype only): shape, value range, binary
    parser = _parse(str(CONFIGS / "inference.json"), model_path=str(weights), network_config=network, num_steps=2)
    net = parser.get_parsed_content("segmenter")
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 1, size, size))
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert tuple(out.shape) == (1, pred["num_channels"], *pred["spatial_shape"]) and out.dtype == torch.float32
    assert pred["is_binary"] and set(torch.unique(out).tolist()) <= set(map(float, pred["value_range"]))
    # the oracle: metadata promising another number of output channels is refused
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 2
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="output channel"):
        verify_net_in_out(meta_file=str(tmp_path / "metadata.json"), **run)


def _parse(config_file: str | list[str], **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_file)
    parser.read_meta(str(CONFIGS / "metadata.json"))
    parser.update(overrides)
    return parser


@pytest.mark.parametrize("name", ["inference.json", "train.json", "evaluate.json", "multi_gpu_train.json"])
def test_bundle_root_is_the_model_zoo_convention(name: str) -> None:
    """``"bundle_root": "."`` (the working folder), overridden by ``--bundle_root``; no stack walking anywhere."""
    text = (CONFIGS / name).read_text()
    for word in ("walk_stack", "_getframe", "f_locals", "traceback", "config_file_"):
        assert word not in text, (name, word)
    if name == "multi_gpu_train.json":
        return
    assert json.loads(text)["bundle_root"] == "."
    parser = _parse(str(CONFIGS / name), bundle_root=str(BUNDLE))
    assert {"initialize", "run"} <= set(parser.get())
    if name == "inference.json":
        assert {"inference", "make_sample_data"} <= set(parser.get())
        assert Path(parser.get_parsed_content("dataset_dir")) == BUNDLE / "sample_data"
        assert Path(parser.get_parsed_content("model_path")) == BUNDLE / "models" / "model.pt"
        assert Path(_parse(str(CONFIGS / name)).get_parsed_content("model_path")) == Path("models/model.pt")


def test_no_stack_walking_in_the_scripts() -> None:
    for path in sorted((BUNDLE / "scripts").glob("*.py")):
        text = path.read_text()
        assert "walk_stack" not in text and "_getframe" not in text and "f_locals" not in text, path.name


def test_bundle_root_through_the_workflow_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ConfigWorkflow`` from another folder with ``bundle_root``: initialize puts the bundle first on sys.path."""
    import sys

    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != BUNDLE])
    workflow = ConfigWorkflow(
        str(CONFIGS / "inference.json"), workflow_type=None, logging_file=False, bundle_root=str(BUNDLE)
    )
    workflow.initialize()
    assert Path(sys.path[0]) == BUNDLE
    assert Path(workflow.parser.get_parsed_content("dataset_dir")) == BUNDLE / "sample_data"


def test_booleans_are_json_booleans() -> None:
    """Flags are real JSON booleans in the configs, handed to the scripts as they are (parsed once, by as_bool)."""
    for name in ("inference.json", "train.json", "evaluate.json"):
        config = json.loads((CONFIGS / name).read_text())
        for flag in ("progress", "save_samples", "augment", "overlays"):
            if flag in config:
                assert isinstance(config[flag], bool), (name, flag)
        text = (CONFIGS / name).read_text()
        assert "'false'" not in text and "lower()" not in text, name


def test_network_def_is_the_architecture_and_the_weights_load_with_checkpoint_loader() -> None:
    """``network_def`` is ``EchoDND`` of ``network_config``; CheckpointLoader loads ``models/model.pt`` into it."""
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader
    from scripts.networks import EchoDND as Net

    parser = _parse(str(CONFIGS / "inference.json"), bundle_root=str(BUNDLE))
    assert parser["network_def"]["_target_"] == "scripts.networks.EchoDND"
    net = parser.get_parsed_content("network_def")
    demo = {k: v for k, v in parser["demo_network_config"].items() if k != "ablation"}
    assert type(net) is Net and net.config == EchoDNDConfig.from_dict(demo)
    state = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values())  # a plain state_dict, no nesting
    before = {k: v.clone() for k, v in net.state_dict().items()}
    CheckpointLoader(load_path=str(BUNDLE / "models" / "model.pt"), load_dict={"model": net}, strict=True)(
        Engine(lambda engine, batch: None)
    )
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert any(not torch.equal(before[k], loaded[k]) for k in state)
    # evaluate.json builds the same network
    assert _parse(str(CONFIGS / "evaluate.json"))["demo_network_config"] == parser["demo_network_config"]


def test_network_config_comes_from_beside_the_weights_unless_given(tmp_path: Path) -> None:
    """Weights written by train.json carry ``network_config.json``: ``--model_path`` alone rebuilds their network."""
    weights = save_tiny_weights(tmp_path / "run" / "model.pt", 32)
    for name in ("inference.json", "evaluate.json"):
        parser = _parse(str(CONFIGS / name), bundle_root=str(BUNDLE), model_path=str(weights), device="cpu")
        model = parser.get_parsed_content("model")
        assert model.config == EchoDNDConfig.tiny(32) and not model.training
        assert all(torch.equal(v, torch.load(weights, weights_only=True)[k]) for k, v in model.state_dict().items())
        # an explicit --network_config wins: the demo network, which these weights do not fit
        other = _parse(
            str(CONFIGS / name),
            bundle_root=str(BUNDLE),
            model_path=str(weights),
            network_config=parser["demo_network_config"],
        )
        with pytest.raises(Exception) as info:
            other.get_parsed_content("model")
        from scripts.common import bad_input_line

        line = bad_input_line(info.value)
        assert line is not None and str(weights) in line and "do not fit" in line


def test_multi_gpu_config_overrides_train() -> None:
    config_file = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")]
    parser = _parse(config_file)
    assert parser.get_parsed_content("bundle_root") == "."
    assert parser.get_parsed_content("backend") == ("nccl" if torch.cuda.is_available() else "gloo")
    assert any("init_process_group" in step for step in parser["initialize"])
    assert parser["training"]["_target_"] == "scripts.train.EchoDNDTrainer"
    assert parser["trainer"]["_target_"] == "SupervisedTrainer"
    assert parser["run"][-1] == "$@prepared.finish()"  # every rank waits for the others at the end
    train = json.loads((CONFIGS / "train.json").read_text())
    assert (train["lr"], train["batch_size"], train["steps"], train["network_config"]) == (5e-5, 8, 200000, "paper")


def test_train_flags_accept_command_line_words(tmp_path: Path) -> None:
    config_file = str(CONFIGS / "train.json")
    parser = _parse(
        config_file,
        bundle_root=str(BUNDLE),
        dataset_dir=str(tmp_path),
        output_dir=str(tmp_path / "o"),
        network_config="tiny",
        image_size=32,
        progress="False",
        augment="false",
        device="cpu",
    )
    training = parser.get_parsed_content("training")
    assert training.progress is False and training.augment is False and training.config.image_size == 32


def test_missing_weights_error_names_the_file(tmp_path: Path) -> None:
    config_file = str(CONFIGS / "inference.json")
    missing = tmp_path / "nowhere" / "model.pt"
    parser = _parse(config_file, bundle_root=str(BUNDLE), model_path=str(missing), device="cpu")
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("model")
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__
    assert any(isinstance(e, EchoDataError) and str(missing) in str(e) for e in chain)


def test_logging_conf_is_valid(tmp_path: Path) -> None:
    import logging.config

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        logging.config.fileConfig(CONFIGS / "logging.conf", disable_existing_loggers=False)
        assert root.level == logging.INFO and root.handlers
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_inferer_is_a_monai_inferer_holding_the_sampler(tmp_path: Path) -> None:
    """``inferer`` is ``scripts.inferer.EchoDNDInferer`` (a MONAI ``Inferer``): ``inferer(image, network, generator)``
    gives the sampler's outputs; the I/O runner (``predictor``) segments through it."""
    from monai.inferers import Inferer
    from scripts.sampler import EchoDNDSampler

    weights = save_tiny_weights(tmp_path / "model.pt", 32)
    parser = _parse(str(CONFIGS / "inference.json"), bundle_root=str(BUNDLE), model_path=str(weights), num_steps=2)
    inferer, model = parser.get_parsed_content("inferer"), parser.get_parsed_content("model")
    assert isinstance(inferer, Inferer) and inferer.num_steps == 2 and inferer.ensemble == 3
    assert parser.get_parsed_content("predictor").sampler is inferer
    image = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = inferer(image, model, torch.Generator().manual_seed(5))
    ref = EchoDNDSampler(num_steps=2)(model, image, torch.Generator().manual_seed(5))
    assert out.keys() == ref.keys() and all(torch.equal(out[k], ref[k]) for k in ref)
    assert torch.equal(inferer(image, model)["mask"], inferer(image, model)["mask"])  # its own seeded generator


def test_make_sample_data_refuses_a_folder_that_is_not_the_bundle(tmp_path: Path) -> None:
    """``run make_sample_data`` rewrites ``<bundle_root>/sample_data``: from a wrong folder it stops, writes nothing."""
    import sys

    from monai.bundle import run
    from scripts.common import bad_input_line

    with pytest.raises(Exception) as info:
        run(
            "make_sample_data",
            config_file=str(CONFIGS / "inference.json"),
            logging_file=False,
            bundle_root=str(tmp_path),
        )
    line = bad_input_line(info.value)
    assert line is not None and str(tmp_path) in line and "--bundle_root" in line
    assert not any(tmp_path.iterdir())
    assert getattr(sys.excepthook, "_echo_dnd", False)  # on the command line this error is one line, status 2


@pytest.mark.parametrize("name", ["inference.json", "evaluate.json"])
def test_channels_last_on_cpu_only(name: str) -> None:
    """The inference and evaluation configs load the weights channels-last on CPU (measured there) and not on a GPU
    (not measured); ``--channels_last false`` turns it off."""
    for device, expected in (("cpu", True), ("cuda:0", False)):
        parser = _parse(str(CONFIGS / name), bundle_root=str(BUNDLE), device=device)
        assert parser.get_parsed_content("channels_last") is expected
        assert parser["model"]["channels_last"] == "@channels_last"
    model = _parse(str(CONFIGS / name), bundle_root=str(BUNDLE), device="cpu").get_parsed_content("model")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    conv = next(m for m in convs if m.weight.shape[1] > 1 and m.weight.shape[-1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
