"""Per-task export knowledge for Hugging Face encoders, as small declarative records (in Optimum's spirit).

A task says which Auto class loads the model, which inputs it takes, which outputs the graph returns
and their dynamic axes. Adding a task is adding a record, not a branch.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_AXES = {0: "batch", 1: "sequence"}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    auto_class: str  # transformers class name
    modality: str  # text | image
    outputs: tuple[str, ...]
    output_axes: dict[str, dict[int, str]]
    classifier: bool = False  # outputs are class logits (top-k agreement is meaningful)


TASKS: dict[str, TaskSpec] = {
    t.name: t for t in (
        TaskSpec("feature-extraction", "AutoModel", "text", ("last_hidden_state",),
                 {"last_hidden_state": TEXT_AXES, "sentence_embedding": {0: "batch"}}),
        TaskSpec("text-classification", "AutoModelForSequenceClassification", "text", ("logits",),
                 {"logits": {0: "batch"}}, classifier=True),
        TaskSpec("token-classification", "AutoModelForTokenClassification", "text", ("logits",),
                 {"logits": TEXT_AXES}, classifier=True),
        TaskSpec("image-classification", "AutoModelForImageClassification", "image", ("logits",),
                 {"logits": {0: "batch"}}, classifier=True),
    )
}

# architecture-name suffix -> task, checked in order
_SUFFIXES = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForImageClassification", "image-classification"),
    ("Model", "feature-extraction"),
)

def infer_task(architectures: list[str]) -> str | None:
    for arch in architectures:
        for suffix, task in _SUFFIXES:
            if arch.endswith(suffix):
                return task
    return None


# Files that travel with the model: tokenizer, preprocessor and the configs needed to use the outputs.
PREPROCESSING_FILES = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model",
    "added_tokens.json", "preprocessor_config.json", "modules.json", "sentence_bert_config.json",
    "config_sentence_transformers.json", "1_Pooling/config.json",
)
