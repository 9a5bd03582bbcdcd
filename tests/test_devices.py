"""Device discipline, checked on the CPU: every tensor the package makes is made on, or moved to, the device of
what it meets, and nothing silently falls back to the CPU beside a model on a GPU.

Both GPU failures of a first CUDA run were of these two kinds: `retrieval_accuracy` built a CPU mask and indexed
it with the argmax of CUDA similarities (a tensor factory without `device=`), and the base-model recipe built
`T2IModel(pipe)` whose device defaulted to "cpu" while accelerate moved the UNet to the GPU (a silent CPU
default). A CPU machine cannot run them on a second device, so the first two tests read the code instead; the
GPU tests (test_gpu.py) run it where CUDA exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[1] / "replication"
FACTORIES = {
    "tensor", "as_tensor", "from_numpy", "arange", "linspace", "zeros", "ones", "full", "empty", "eye",
    "rand", "randn", "randint", "randperm",
}  # fmt: skip
HOST_CHAINS = {"to", "cpu", "cuda", "numpy", "tolist", "item"}  # the result is moved, or leaves torch
HOST_WRAPPERS = {"int", "float", "bool"}
# The tiny world's renderer, parser and rater are host simulators over uint8 arrays: images reach them through
# parser.as_float_images, which moves them to the host (tested below).
HOST_MODULES = ("world/",)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_torch_call(node: ast.AST, names=None) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
        and (names is None or node.func.attr in names)
    )


def _leaves_device_free(call: ast.Call, parents: dict) -> bool:
    """The factory's result is moved (`.to(...)`), brought to the host (`.cpu()`, `.numpy()`, ...) or made a
    Python number (`int(...)`), possibly after other methods (`.repeat(...).to(dev)`)."""
    node = call
    while True:
        up = parents.get(node)
        if isinstance(up, ast.Attribute) and isinstance(parents.get(up), ast.Call):
            if up.attr in HOST_CHAINS:
                return True
            node = parents[up]
        elif isinstance(up, ast.Subscript) and up.value is node:
            node = up
        elif isinstance(up, ast.Call) and node in up.args and _is_torch_call(up):  # torch.log(torch.tensor(x))
            node = up
        else:
            return isinstance(up, ast.Call) and isinstance(up.func, ast.Name) and up.func.id in HOST_WRAPPERS


def factories_without_device(root: Path = PACKAGE) -> list[str]:
    """`torch.<factory>(...)` calls that name no device, are not moved, and carry no `# host` note."""
    out = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(HOST_MODULES):
            continue
        src = f.read_text()
        lines, tree = src.splitlines(), ast.parse(src)
        parents = _parents(tree)
        for node in ast.walk(tree):
            if not _is_torch_call(node, FACTORIES):
                continue
            if any(k.arg == "device" for k in node.keywords) or _leaves_device_free(node, parents):
                continue
            stmt = node
            while not isinstance(stmt, ast.stmt):
                stmt = parents[stmt]
            if any("# host" in lines[i - 1] for i in range(stmt.lineno, node.end_lineno + 1)):
                continue
            out.append(f"{rel}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return out


def silent_cpu_defaults(root: Path = PACKAGE) -> list[str]:
    """Parameters named `device` whose default is the CPU (use None: `tensors.resolve_device`)."""
    out = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                pos = a.posonlyargs + a.args
                pairs = list(zip(pos[len(pos) - len(a.defaults) :], a.defaults)) + list(
                    zip(a.kwonlyargs, a.kw_defaults)
                )
                for arg, default in pairs:
                    if arg.arg == "device" and isinstance(default, ast.Constant) and default.value == "cpu":
                        out.append(f"{f.relative_to(root).as_posix()}:{node.lineno}: {node.name}(device='cpu')")
    return out


def test_every_tensor_factory_names_its_device():
    bad = factories_without_device()
    assert not bad, (
        "tensor factories that land on the CPU whatever the device of what they meet; pass device= (the device of "
        "the tensor they meet), chain .to(...), or mark the line `# host: <why it stays on the host>`:\n  "
        + "\n  ".join(bad)
    )


def test_no_device_parameter_defaults_to_the_cpu():
    bad = silent_cpu_defaults()
    assert not bad, "a `device` default of 'cpu' hides a missing device on a GPU machine; default to None:\n  " + (
        "\n  ".join(bad)
    )


def test_the_checks_catch_both_bugs_of_the_first_cuda_run(tmp_path):
    """The scans flag the two faulty lines as they were."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "clip.py").write_text(
        "import torch\n"
        "def retrieval(sim, caps, pool):\n"
        "    same = torch.tensor([[a == b for b in caps] for a in caps])\n"
        "    return same[torch.arange(pool), sim.argmax(1)].float().sum().item()\n"
    )
    (pkg / "models.py").write_text(
        "class T2IModel:\n    def __init__(self, pipe, device='cpu', decode_chunk=64):\n        pass\n"
    )
    assert [b.split(":")[1] for b in factories_without_device(pkg)] == ["3", "4"]
    assert silent_cpu_defaults(pkg) == ["models.py:2: __init__(device='cpu')"]


def test_models_and_rewards_default_to_the_default_device(micro_sd_dir, monkeypatch):
    """With no device named, the adapter follows `default_device()` (CUDA where there is one): a test double
    returning the meta device shows it is consulted, not a hard-coded CPU."""
    from replication import tensors
    from replication.models import T2IModel

    monkeypatch.setattr(tensors, "default_device", lambda: "meta")
    assert tensors.resolve_device(None) == torch.device("meta")
    assert tensors.resolve_device("cpu") == torch.device("cpu")
    model = T2IModel.from_pretrained(micro_sd_dir)
    assert model.device == torch.device("meta")
    assert next(model.unet.parameters()).device.type == "meta"


def test_world_parser_takes_images_from_any_device():
    """Images on another device reach the host simulators: the parser moves them (a meta tensor cannot be
    moved to the host, which is what shows the move is attempted)."""
    from replication.world.parser import as_float_images

    x = torch.rand(2, 3, 8, 8)
    assert as_float_images(x).device.type == "cpu"
    with pytest.raises(NotImplementedError):
        as_float_images(torch.rand(2, 3, 8, 8, device="meta"))
