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

from kiln.exporters.module_digest import module_digest  # noqa: E402
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
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module_digest(module.Net(), None)

    assert load("self.fc(x)") != load("torch.relu(self.fc(x))")


def test_it_is_the_same_in_another_process():
    """String hashing is randomised per process: nothing in the digest may depend on it."""
    from tests.tiny_models import two_inputs

    code = "from kiln.exporters.module_digest import module_digest; from tests.tiny_models import two_inputs; " \
           "print(module_digest(two_inputs(), None))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
    assert other.stdout.strip() == module_digest(two_inputs(), None)


def test_a_torch_export_program_has_none():
    program = torch.export.export(Scaled(), (torch.zeros(1, 4),))
    assert module_digest(program, None) is None
