"""Torch checkpoints as people save them: each form loads (its planted dead channels found exactly, what
loading took said in the backend's notes) or is refused with one line that names the setting to change."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from modelbuilders import LIGHTNING_DATA_MODULE, save_lightning_like, small_convnet

from pytest_cnnaudit.backends.torch import load_torch_module
from pytest_cnnaudit.backends.torch.checkpoints import fit_keys
from pytest_cnnaudit.config import load_config
from pytest_cnnaudit.engine.audit import run_audit
from pytest_cnnaudit.engine.planning import open_model
from pytest_cnnaudit.errors import ModelError

PLANTED = {"conv2": (1, 5)}
EXPECTED_DEAD = [(), (1, 5), ()]  # conv1, conv2, conv3: known by construction
ARCH = """\
from modelbuilders import SmallConvNet


def net():
    return SmallConvNet()


class Zoo:
    @classmethod
    def from_name(cls, name):
        return {"small": SmallConvNet}[name]()


def broken():
    raise ValueError("no such width\\nsecond line")


def pair():
    return SmallConvNet(), "transforms"
"""


def write_config(folder: Path, entry: str) -> Path:
    """``cnnaudit.yaml`` with one model entry (YAML flow mapping body) and a small probe set."""
    (folder / "arch.py").write_text(ARCH)
    path = folder / "cnnaudit.yaml"
    path.write_text(f"probe: {{count: 7, batch_size: 4}}\nmodels:\n  - {{input: {{size: [32, 32]}}, {entry}}}\n")
    return path


def audited(model: Path, entry: str, folder: Path | None = None) -> tuple[tuple[str, ...], list[tuple[int, ...]]]:
    """(the backend's notes, each layer's dead channels) of ``model`` audited with ``entry`` of a config
    in ``folder`` (default: the model's)."""
    opened = open_model(model, load_config(write_config(folder or model.parent, entry)))
    notes = opened.backend.notes
    document, _ = run_audit(opened)
    assert document.notes == notes  # the notes reach the report
    return notes, [layer.dead_channels for layer in document.layers]


def refusal(model: Path, entry: str, folder: Path | None = None) -> str:
    """The one-line error opening ``model`` with ``entry`` (of a config in ``folder``) raises."""
    with pytest.raises(ModelError) as info:
        open_model(model, load_config(write_config(folder or model.parent, entry)))
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message, message
    return message


# --------------------------------------------------------------------------- wrapper prefixes


def data_parallel_keys(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return torch.nn.DataParallel(net).state_dict()


def compiled_keys(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return torch.compile(net).state_dict()  # wraps only: nothing is compiled until it is called


def compiled_in_data_parallel_keys(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return torch.nn.DataParallel(torch.compile(net)).state_dict()


@pytest.mark.parametrize(
    ("wrap", "prefix"),
    [
        (data_parallel_keys, "module."),
        (compiled_keys, "_orig_mod."),
        (compiled_in_data_parallel_keys, "module._orig_mod."),
        (lambda net: {f"model.{k}": v for k, v in net.state_dict().items()}, "model."),
    ],
    ids=["DataParallel", "torch.compile", "both", "wrapping module"],
)
def test_wrapper_prefix_is_stripped_and_said(wrap, prefix: str, tmp_path: Path) -> None:
    state_dict = wrap(small_convnet(PLANTED))
    assert all(key.startswith(prefix) for key in state_dict)
    torch.save(state_dict, tmp_path / "net.pth")
    notes, dead = audited(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net'")
    assert notes == (f"stripped prefix {prefix!r} from 8 state_dict keys",)
    assert dead == EXPECTED_DEAD


def test_old_data_parallel_file_without_batch_norm_counters(tmp_path: Path) -> None:
    """Files from before torch 0.4.1 lack BatchNorm's num_batches_tracked; load_state_dict fills them in,
    so the prefix is still all that differs. torch's version records follow the renamed keys."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    state_dict = torch.nn.DataParallel(net).state_dict()
    del state_dict["module.1.num_batches_tracked"]
    state_dict._metadata["module.1"]["version"] = 1  # BatchNorm's layout before the counter existed
    spec = load_config(write_config(tmp_path, "path: net.pth")).models[0]
    fitted, note = fit_keys(state_dict, net.state_dict().keys(), spec, tmp_path / "net.pth")
    assert note == "stripped prefix 'module.' from 6 state_dict keys"
    assert list(fitted) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    assert fitted._metadata == {"": {"version": 1}, "0": {"version": 1}, "1": {"version": 1}, "2": {"version": 1}}
    net.load_state_dict(fitted)


def test_prefix_the_module_itself_has_is_kept(tmp_path: Path) -> None:
    """A module whose own keys start with ``model.`` takes the file as it is."""
    (tmp_path / "wrapped.py").write_text(
        "import torch\nfrom modelbuilders import SmallConvNet\n\n\n"
        "def net():\n    outer = torch.nn.Module()\n    outer.model = SmallConvNet()\n"
        "    outer.forward = outer.model.forward\n    return outer\n"
    )
    state_dict = {f"model.{k}": v for k, v in small_convnet(PLANTED).state_dict().items()}
    torch.save(state_dict, tmp_path / "net.pth")
    loaded = load_torch_module(
        tmp_path / "net.pth",
        load_config(write_config(tmp_path, "path: net.pth, factory: 'wrapped:net'")).models[0],
        tmp_path,
    )
    assert loaded.notes == ()
    assert set(loaded.model.state_dict()) == set(state_dict)


def test_prefix_that_does_not_make_the_keys_fit_is_not_stripped(tmp_path: Path) -> None:
    state_dict = data_parallel_keys(small_convnet())
    state_dict["module.extra.weight"] = torch.zeros(1)
    torch.save(state_dict, tmp_path / "net.pth")
    message = refusal(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net'")
    assert message.startswith(f"{tmp_path / 'net.pth'}: does not fit factory arch:net: the file lacks conv1.weight")


def test_explicit_strip_prefix_keeps_only_the_keys_under_it(tmp_path: Path) -> None:
    """A Lightning module holding a loss with weights besides the network: no automatic strip, a hint, then the setting."""
    state_dict = {f"model.{k}": v for k, v in small_convnet(PLANTED).state_dict().items()}
    state_dict["loss.weight"] = torch.ones(4)
    torch.save(state_dict, tmp_path / "net.pth")
    message = refusal(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net'")
    assert message.endswith(
        "the model has no model.conv1.weight and 8 more; "
        "the file holds every key of the model under 'model.': set models[].strip_prefix: 'model.'"
    )
    notes, dead = audited(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net', strip_prefix: model.")
    assert notes == ("stripped prefix 'model.' from 8 state_dict keys and left out 1 key without it",)
    assert dead == EXPECTED_DEAD


def test_strip_prefix_that_matches_nothing(tmp_path: Path) -> None:
    torch.save(small_convnet().state_dict(), tmp_path / "net.pth")
    message = refusal(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net', strip_prefix: module.")
    assert message == (
        f"{tmp_path / 'net.pth'}: no state_dict key starts with models[].strip_prefix 'module.' "
        "(the first key is 'conv1.weight')"
    )


# --------------------------------------------------------------------------- dict checkpoints


def test_lightning_like_ckpt_loads_without_running_code(tmp_path: Path) -> None:
    """Lightning's layout, hyper-parameters in an AttributeDict of a package that is not installed."""
    path = save_lightning_like(small_convnet(PLANTED).state_dict(), tmp_path / "epoch=3.ckpt")
    assert not any(name.startswith("lightning") for name in sys.modules)
    notes, dead = audited(path, "path: epoch=3.ckpt, factory: 'arch:net'")
    assert notes == (
        "weights read from the checkpoint's key 'state_dict'",
        "stripped prefix 'model.' from 8 state_dict keys",
    )
    assert dead == EXPECTED_DEAD
    assert not any(name.startswith("lightning") for name in sys.modules)


@pytest.mark.parametrize(
    ("layout", "key"),
    [
        (lambda sd: {"model": sd, "epoch": 3}, "model"),
        (lambda sd: {"ema": sd, "updates": 1200}, "ema"),
        (
            lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []}},
            "model_state_dict",
        ),
        (lambda sd: {"ema": {"model": sd, "decay": 0.999}, "epoch": 3}, "ema.model"),
    ],
    ids=["model", "ema", "model_state_dict", "nested"],
)
def test_the_one_state_dict_in_a_dict_is_found(layout, key: str, tmp_path: Path) -> None:
    torch.save(layout(small_convnet(PLANTED).state_dict()), tmp_path / "net.pt")
    notes, dead = audited(tmp_path / "net.pt", "path: net.pt, factory: 'arch:net'")
    assert notes == (f"weights read from the checkpoint's key {key!r}",)
    assert dead == EXPECTED_DEAD


def test_several_state_dicts_ask_for_state_dict_key(tmp_path: Path) -> None:
    """timm saves the raw and the EMA weights side by side; only the EMA ones have the planted channels."""
    checkpoint = {"state_dict": small_convnet().state_dict(), "state_dict_ema": small_convnet(PLANTED).state_dict()}
    torch.save(checkpoint, tmp_path / "net.pth")
    message = refusal(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net'")
    assert message == (
        f"{tmp_path / 'net.pth'}: the checkpoint holds 2 state_dicts (state_dict, state_dict_ema); "
        "choose one with models[].state_dict_key"
    )
    notes, dead = audited(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net', state_dict_key: state_dict_ema")
    assert notes == ("weights read from the checkpoint's key 'state_dict_ema'",)
    assert dead == EXPECTED_DEAD


def test_state_dict_key_that_is_not_there(tmp_path: Path) -> None:
    torch.save({"ema": {"model": small_convnet().state_dict()}, "epoch": 3}, tmp_path / "net.pth")
    message = refusal(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net', state_dict_key: ema.module")
    assert message == (
        f"{tmp_path / 'net.pth'}: models[].state_dict_key 'ema.module': 'ema' has no key 'module'; its keys: ['model']"
    )
    message = refusal(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net', state_dict_key: epoch")
    assert message.endswith(
        "models[].state_dict_key 'epoch' holds a value of type int, not a state_dict (a dict of tensors)"
    )


def test_dict_without_a_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "weights": [torch.zeros(2)]}, tmp_path / "net.pth")
    message = refusal(tmp_path / "net.pth", "path: net.pth, factory: 'arch:net'")
    assert message == (
        f"{tmp_path / 'net.pth'}: the checkpoint holds no state_dict (a dict of tensors) in its keys "
        "['epoch', 'weights']; name the key holding the weights with models[].state_dict_key"
    )


# --------------------------------------------------------------------------- factories


def test_dotted_factory_attribute(tmp_path: Path) -> None:
    torch.save(small_convnet(PLANTED).state_dict(), tmp_path / "net.pth")
    entry = "path: net.pth, factory: 'arch:Zoo.from_name', factory_kwargs: {name: small}"
    assert audited(tmp_path / "net.pth", entry) == ((), EXPECTED_DEAD)


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("arch:broken", "factory arch:broken raised ValueError: no such width"),
        ("arch:pair", "factory arch:pair returned a tuple, not a torch.nn.Module"),
        ("arch:Zoo.from_nam", "arch has no attribute 'Zoo.from_nam'"),
        ("arch:Zoo.from_name.x", "arch has no attribute 'Zoo.from_name.x'"),
    ],
)
def test_factory_that_fails_is_one_line(factory: str, expected: str, tmp_path: Path) -> None:
    torch.save(small_convnet().state_dict(), tmp_path / "net.pth")
    assert refusal(tmp_path / "net.pth", f"path: net.pth, factory: '{factory}'") == f"net.pth: {expected}"


# --------------------------------------------------------------------------- pickles


def write_net_class(folder: Path, module: str, width: int) -> None:
    """A module file ``folder/module.py`` defining ``Net``, a SmallConvNet of ``width`` channels."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(
        "from modelbuilders import SmallConvNet\n\n\n"
        f"class Net(SmallConvNet):\n    def __init__(self):\n        super().__init__(width={width})\n"
    )


def pickle_net(folder: Path, module: str, target: Path, dead: dict[str, tuple[int, ...]], width: int = 8) -> None:
    """Save a whole ``module.Net`` (imported from ``folder``) to ``target``; the import is forgotten after."""
    sys.path.insert(0, str(folder))
    try:
        net_class = __import__(module, fromlist=["Net"]).Net
        net = net_class()
        net.load_state_dict(small_convnet(dead, width=width).state_dict())
        torch.save(net, target)
    finally:
        sys.path.remove(str(folder))
        root = module.split(".")[0]
        for name in [n for n in sys.modules if n == root or n.startswith(f"{root}.")]:
            del sys.modules[name]


def test_trusted_pickle_finds_its_class_beside_the_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_net_class(models, "netdef", 8)
    pickle_net(models, "netdef", models / "whole.pt", PLANTED)
    path_before = list(sys.path)
    notes, dead = audited(models / "whole.pt", "path: models/whole.pt, trust_pickle: true", tmp_path)
    assert (notes, dead) == ((), EXPECTED_DEAD)
    assert sys.path == path_before and "netdef" not in sys.modules


def test_trusted_pickle_finds_its_class_on_pythonpath(tmp_path: Path) -> None:
    package = tmp_path / "src" / "zoo"
    write_net_class(package, "nets", 8)
    (package / "__init__.py").write_text("")
    (tmp_path / "weights").mkdir()
    pickle_net(tmp_path / "src", "zoo.nets", tmp_path / "weights" / "whole.pt", PLANTED)
    message = refusal(tmp_path / "weights" / "whole.pt", "path: weights/whole.pt, trust_pickle: true", tmp_path)
    assert message.endswith("cannot unpickle the file (ModuleNotFoundError: No module named 'zoo')")
    entry = "path: weights/whole.pt, trust_pickle: true, pythonpath: [src]"
    assert audited(tmp_path / "weights" / "whole.pt", entry, tmp_path) == ((), EXPECTED_DEAD)


def test_two_model_folders_with_the_same_module_name_get_their_own_class(tmp_path: Path) -> None:
    for name, width in (("a", 8), ("b", 4)):
        write_net_class(tmp_path / name, "arch_net", width)
        pickle_net(tmp_path / name, "arch_net", tmp_path / name / "whole.pt", {}, width=width)
    for name, width in (("a", 8), ("b", 4)):
        spec = load_config(write_config(tmp_path, f"path: {name}/whole.pt, trust_pickle: true")).models[0]
        loaded = load_torch_module(tmp_path / name / "whole.pt", spec, tmp_path)
        assert loaded.model.conv1.out_channels == width


def test_factory_on_pythonpath(tmp_path: Path) -> None:
    package = tmp_path / "src" / "zoo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "from modelbuilders import SmallConvNet\n\n\ndef build():\n    return SmallConvNet()\n"
    )
    torch.save(small_convnet(PLANTED).state_dict(), tmp_path / "net.pth")
    entry = "path: net.pth, factory: 'zoo.nets:build', pythonpath: [src]"
    assert audited(tmp_path / "net.pth", entry) == ((), EXPECTED_DEAD)
    assert "zoo" not in sys.modules


def test_untrusted_pickle_names_the_class_and_trust_pickle(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_net_class(models, "netdef", 8)
    pickle_net(models, "netdef", models / "whole.pt", PLANTED)
    message = refusal(models / "whole.pt", "path: models/whole.pt", tmp_path)
    assert message == (
        f"{models / 'whole.pt'}: holds pickled Python objects (netdef.Net, torch.nn.modules.activation.ReLU, "
        "torch.nn.modules.conv.Conv2d and 1 more), which can run code when loaded; "
        "save a state_dict and name a factory, or set trust_pickle: true for this model if you trust the file"
    )


def test_half_precision_pickled_module_runs_in_float32(tmp_path: Path) -> None:
    """YOLOv5 saves ``{"model": <module in float16>, ...}``."""
    models = tmp_path / "models"
    write_net_class(models, "halfnet", 8)
    sys.path.insert(0, str(models))
    try:
        import halfnet

        net = halfnet.Net()
        net.load_state_dict(small_convnet(PLANTED).state_dict())
        torch.save({"model": net.half(), "optimizer": None, "epoch": -1}, models / "best.pt")
    finally:
        sys.path.remove(str(models))
        del sys.modules["halfnet"]
    notes, dead = audited(models / "best.pt", "path: models/best.pt, trust_pickle: true", tmp_path)
    assert notes == (
        "weights read from the checkpoint's key 'model'",
        "float16 weights converted to float32 for measurement",
    )
    assert dead == EXPECTED_DEAD


class RunsACommand:
    """An object whose unpickling runs a shell command (it would create ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("trust_pickle", [False, True])
def test_pickle_that_runs_a_command_is_refused_without_running(trust_pickle: bool, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"state_dict": small_convnet().state_dict(), "x": RunsACommand(marker)}, tmp_path / "net.pth")
    entry = f"path: net.pth, factory: 'arch:net', trust_pickle: {str(trust_pickle).lower()}"
    message = refusal(tmp_path / "net.pth", entry)
    assert message == (
        f"{tmp_path / 'net.pth'}: its pickle calls {os.system.__module__}.system, which no model file needs: "
        "refused, even with trust_pickle: true"
    )
    assert not marker.exists()


def test_lightning_names_are_allowed_only_as_plain_dicts(tmp_path: Path) -> None:
    """The stand-in is a dict: the checkpoint's hyper-parameters load, and nothing of Lightning's runs."""
    path = save_lightning_like(small_convnet().state_dict(), tmp_path / "last.ckpt")
    spec = load_config(write_config(tmp_path, "path: last.ckpt, factory: 'arch:net'")).models[0]
    from pytest_cnnaudit.backends.torch.pickles import load_checkpoint

    hyper_parameters = load_checkpoint(path, trust_pickle=spec.trust_pickle, search_path=[])["hyper_parameters"]
    assert type(hyper_parameters) is dict and hyper_parameters["args"].batch_size == 32
    assert LIGHTNING_DATA_MODULE not in sys.modules
