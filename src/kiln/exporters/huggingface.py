"""Local Hugging Face folders (config.json) of encoder models, exported through the torch exporter.

The model is loaded offline from the folder only. Remote code runs only with explicit consent. Models
are loaded with eager attention: its graph is the one ONNX Runtime's transformer fusions recognise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kiln._deps import require
from kiln.config import Dim, ExportConfig, ImagePreprocessing, InputSpec
from kiln.errors import UsageError
from kiln.exporters.base import SourceInfo, sha256_tree
from kiln.exporters.hf_tasks import PREPROCESSING_FILES, TASKS, TaskSpec, infer_task
from kiln.llm.source import is_decoder, read_config
from kiln.exporters.torch_module import TorchSource


def _sentence_pooling(folder: Path) -> tuple[str, bool] | None:
    """Pooling mode and normalisation from a sentence-transformers folder (modules.json), if any."""
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return None
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    pooling = next((m for m in modules if m.get("type", "").endswith("Pooling")), None)
    if pooling is None:
        return None
    settings = json.loads((folder / pooling["path"] / "config.json").read_text(encoding="utf-8"))
    mode = "mean" if settings.get("pooling_mode_mean_tokens") else "cls" if settings.get("pooling_mode_cls_token") else None
    if mode is None:
        return None
    return mode, any(m.get("type", "").endswith("Normalize") for m in modules)


def _image_preprocessing(folder: Path) -> ImagePreprocessing | None:
    path = folder / "preprocessor_config.json"
    if not path.exists():
        return None
    cfg = json.loads(path.read_text(encoding="utf-8"))
    size = cfg.get("size", 224)
    crop = cfg.get("crop_size") if cfg.get("do_center_crop") else None

    def hw(value) -> tuple[int, int]:
        if isinstance(value, int):
            return value, value
        if "height" in value:
            return value["height"], value["width"]
        edge = value.get("shortest_edge", 224)
        return edge, edge

    final = hw(crop) if crop else hw(size)
    shorter = (size if isinstance(size, int) else size.get("shortest_edge")) if crop else None
    return ImagePreprocessing(
        size=final, resize_shorter=shorter, layout="NCHW",
        scale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
        mean=tuple(cfg.get("image_mean", (0.0, 0.0, 0.0))) if cfg.get("do_normalize", True) else (0.0, 0.0, 0.0),
        std=tuple(cfg.get("image_std", (1.0, 1.0, 1.0))) if cfg.get("do_normalize", True) else (1.0, 1.0, 1.0),
        source="preprocessor_config.json",
    )


def _wrapper(model, names: tuple[str, ...], pooling: tuple[str, bool] | None, task: TaskSpec):
    """A module with positional tensor inputs and a tuple of named outputs, as exporters want."""
    torch = require("torch", why="exporting a Hugging Face model")

    class TaskModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def outputs(self, kwargs: dict):
            out = self.model(**kwargs)
            first = out[task.outputs[0]]
            if pooling is None:
                return (first,)
            mode, normalise = pooling
            if mode == "mean":
                mask = kwargs["attention_mask"].unsqueeze(-1).to(first.dtype)
                pooled = (first * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            else:
                pooled = first[:, 0]
            if normalise:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return first, pooled

    # torch.export wants named parameters (not *args) to attach dynamic shapes to.
    if task.modality == "image":
        class ImageModule(TaskModule):
            def forward(self, pixel_values):
                return self.outputs({"pixel_values": pixel_values})

        return ImageModule().eval()

    class TextModule(TaskModule):
        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.outputs({k: v for k, v in given.items() if k in names})

    return TextModule().eval()


def open_huggingface(folder: Path, config: ExportConfig) -> TorchSource:
    cfg = read_config(folder)
    model_type = cfg.get("model_type", "?")
    if cfg.get("auto_map") and not config.trust_remote_code:
        raise UsageError(f"{folder.name} asks to run its own Python code (auto_map in config.json)",
                         hint="pass --trust-remote-code if you trust this folder's code")
    if is_decoder(cfg) or cfg.get("is_decoder"):
        raise UsageError(f"{folder.name} is a decoder-only '{model_type}' model, and --task {config.task} is for "
                         f"encoders", hint="omit --task (or pass --task text-generation) to export it as a language "
                                           "model")
    if config.task and config.task not in TASKS:
        raise UsageError(f"unknown --task '{config.task}'", hint=f"use one of {', '.join(TASKS)}")
    task_name = config.task or infer_task(cfg.get("architectures") or [])
    if task_name not in TASKS:
        raise UsageError(f"cannot tell which task {folder.name} is for (architectures {cfg.get('architectures')})",
                         hint=f"pass --task, one of {', '.join(TASKS)}")
    task = TASKS[task_name]
    transformers = require("transformers", why="loading a Hugging Face model")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    auto = getattr(transformers, task.auto_class)
    try:
        model = auto.from_pretrained(str(folder), local_files_only=True, trust_remote_code=config.trust_remote_code,
                                     attn_implementation="eager")
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"transformers cannot load {folder.name} as {task.auto_class}: {str(exc).splitlines()[0][:300]}",
                         hint="check the folder has config.json and weights (model.safetensors or pytorch_model.bin)") from None
    model.eval()
    files = {name: folder / name for name in PREPROCESSING_FILES if (folder / name).is_file()}
    weights = [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".txt", ".model")]
    info = SourceInfo("huggingface", str(folder), sha256_tree(weights, folder), {
        "task": task.name, "model_type": model_type, "architectures": cfg.get("architectures"),
        "parameters": sum(p.numel() for p in model.parameters()), "attention": "eager",
        "num_heads": cfg.get("num_attention_heads"), "hidden_size": cfg.get("hidden_size"),
    })
    if task.modality == "text":
        return _text_source(folder, config, model, task, info, files, cfg)
    return _image_source(folder, config, model, task, info, files)


def _prefer_fusable_export(source: TorchSource) -> None:
    """TorchScript at opset 17 first: measured here, ONNX Runtime's transformer fusions (Attention,
    EmbedLayerNormalization) match that graph, and miss the opset-18 and dynamo graphs of the same model."""
    source.preferred_exporters = ("torchscript", "dynamo")
    source.default_opset = 17


def _text_source(folder, config, model, task, info, files, cfg) -> TorchSource:
    transformers = require("transformers", why="loading a tokenizer")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                               trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder.name} has no usable tokenizer: {str(exc).splitlines()[0][:200]}",
                         hint="text models need tokenizer files in the folder") from None
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    names = tuple(n for n in ("input_ids", "attention_mask", "token_type_ids")
                  if n in tokenizer.model_input_names and n in accepted)
    length = config.sequence_length
    max_positions = cfg.get("max_position_embeddings")
    if max_positions and length > max_positions:
        raise UsageError(f"--sequence-length {length} exceeds the model's {max_positions} positions",
                         hint=f"use at most {max_positions}")
    specs = tuple(InputSpec(name=n, dims=(Dim(size=2, name="batch"), Dim(size=length, name="sequence")), dtype="int64")
                  for n in names)
    pooling = _sentence_pooling(folder) if task.name == "feature-extraction" else None
    outputs = task.outputs + (("sentence_embedding",) if pooling else ())
    source = TorchSource(_wrapper(model, names, pooling, task), specs, info, output_names=outputs,
                         output_axes=task.output_axes, int_high={"input_ids": int(cfg.get("vocab_size", 100))})
    source.classifier_outputs = {name: task.classifier and name == "logits" for name in outputs}
    # what a sentence-transformers user consumes; the accuracy gate applies to it unless told otherwise
    source.primary_outputs = ("sentence_embedding",) if pooling else ()
    _prefer_fusable_export(source)
    source.info.details["pooling"] = {"mode": pooling[0], "normalize": pooling[1]} if pooling else None
    source.extra_files = files

    def encode(batch: list[str]) -> dict[str, np.ndarray]:
        enc = tokenizer(batch, padding="max_length", truncation=True, max_length=length, return_tensors="np")
        return {n: enc[n].astype(np.int64) for n in names}

    source.text_encoder = encode
    return source


def _image_source(folder, config, model, task, info, files) -> TorchSource:
    prep = config.image_preprocessing or _image_preprocessing(folder) or ImagePreprocessing()
    channels = int(getattr(model.config, "num_channels", 3))
    height, width = prep.size
    specs = (InputSpec(name="pixel_values", dims=(Dim(size=2, name="batch"), Dim(size=channels), Dim(size=height),
                                                  Dim(size=width)), dtype="float32"),)
    source = TorchSource(_wrapper(model, ("pixel_values",), None, task), specs, info, output_names=task.outputs,
                         output_axes=task.output_axes)
    source.extra_files = files
    source.image_preprocessing = prep
    source.classifier_outputs = {"logits": True}
    _prefer_fusable_export(source)
    return source
