"""The fingerprint that lets the stage cache reuse the export of a Python source (`package.module:callable`, or a
module handed to the API): equal for the same model, different for any change in what the model computes that
lives in the module (weights, buffers, plain settings, its classes' code)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

from kiln.exporters.module_digest import module_digest, source_digest  # noqa: E402
from tests.conftest import REPO  # noqa: E402


class Scaled(torch.nn.Module):
    def __init__(self, scale: float = 2.0, seed: int = 0, table: dict | None = None):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = torch.nn.Linear(4, 3)
        self.scale = scale
        self.table = table or {"mode": "sum"}
        self.register_buffer("offset", torch.zeros(3))

    def forward(self, x):
        return self.fc(x) * self.scale + self.offset


def test_the_same_model_built_twice_has_one_digest():
    assert module_digest(Scaled(), None) == module_digest(Scaled(), None)
    assert module_digest(Scaled(), None).startswith("module-")


def test_weights_buffers_and_settings_each_change_it():
    base = module_digest(Scaled(), None)
    nudged = Scaled()
    with torch.no_grad():
        nudged.fc.weight[0, 0] += 1e-6
    shifted = Scaled()
    shifted.offset[1] = 1.0
    changed = [module_digest(m, None) for m in (nudged, shifted, Scaled(seed=1), Scaled(scale=2.5),
                                                  Scaled(table={"mode": "mean"}), Scaled().half())]
    assert base not in changed and len(set(changed)) == len(changed)


def test_the_code_of_a_class_outside_torch_is_part_of_it(tmp_path):
    """Two versions of one file: the same weights and settings, another forward()."""
    source = tmp_path / "user_model.py"

    def load(body: str):
        source.write_text(textwrap.dedent(f"""
            import torch
            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    torch.manual_seed(0)
                    self.fc = torch.nn.Linear(4, 3)
                def forward(self, x):
                    return {body}
            """))
        spec = importlib.util.spec_from_file_location(f"user_model_{abs(hash(body))}", source)
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # as `import` registers it
        spec.loader.exec_module(module)
        return module_digest(module.Net(), None)

    assert load("self.fc(x)") != load("torch.relu(self.fc(x))")


TINY_BERT = ("import torch, transformers; torch.manual_seed(0); "
             "model = transformers.BertModel(transformers.BertConfig(hidden_size=8, num_hidden_layers=1, "
             "num_attention_heads=2, intermediate_size=16, vocab_size=50)).eval()")


def test_it_is_the_same_in_another_process():
    """String hashing is randomised per process: nothing in the digest may depend on it. A Hugging Face model
    holds sets of strings (`_no_split_modules`), whose order changes with the seed."""
    from tests.tiny_models import two_inputs

    code = ("from kiln.exporters.module_digest import module_digest; from tests.tiny_models import two_inputs; "
            f"{TINY_BERT}; print(module_digest(two_inputs(), None)); print(module_digest(model, None))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}).stdout.split()
            for seed in ("1", "12345")]
    assert runs[0] == runs[1] and runs[0][0] == module_digest(two_inputs(), None)
    assert all(line.startswith("module-") for line in runs[0])


def test_what_it_cannot_read_turns_the_cache_off():
    """A class defined where no file holds its code (a notebook cell, exec) could change without the digest seeing
    it: no fingerprint then."""
    namespace: dict = {}
    exec("import torch\nclass Cell(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n", namespace)
    assert module_digest(namespace["Cell"](), None) is None


def test_arrays_nested_modules_and_the_api_inputs_are_part_of_it():
    import numpy as np

    from kiln.exporters.torch_module import from_module

    with_array, other_array = Scaled(), Scaled()
    with_array.lookup, other_array.lookup = np.zeros(2000), np.zeros(2000)
    other_array.lookup[1500] = 1.0  # beyond what numpy's repr shows
    in_a_list, other_in_a_list = Scaled(), Scaled()
    in_a_list.helpers, other_in_a_list.helpers = [torch.nn.Linear(2, 2)], [torch.nn.Linear(2, 2)]
    assert module_digest(with_array, None) != module_digest(other_array, None)
    assert module_digest(in_a_list, None) != module_digest(other_in_a_list, None)  # another random init
    model = Scaled()
    small, large = (from_module(model, (torch.zeros(1, 4),), ()), from_module(model, (torch.zeros(3, 4),), ()))
    assert source_digest(small, (torch.zeros(1, 4),), None) != source_digest(large, (torch.zeros(3, 4),), None)
    assert source_digest(small, (torch.zeros(1, 4),), None) != source_digest(small, (torch.ones(1, 4),), None)


def test_a_torch_export_program_has_none():
    program = torch.export.export(Scaled(), (torch.zeros(1, 4),))
    assert module_digest(program, None) is None
