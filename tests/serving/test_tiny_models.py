"""The offline tiny-model builders produce real models that the Auto* classes load and run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from tests.tiny_models import (
    build_feature_extraction,
    build_text_classification,
    build_text_generation,
    weights_file,
)

TEXTS = ["hello world", "a longer sentence for testing"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading must never reach for the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def timed_build(builder, target: Path, **kwargs) -> Path:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = builder(target, **kwargs)
    print(f"{builder.__name__}: built in {time.perf_counter() - start:.3f}s")
    assert out == target
    assert weights_file(out) == target / "model.safetensors"
    assert weights_file(out).is_file()
    assert (target / "config.json").is_file()
    assert (target / "tokenizer.json").is_file()
    return out


def test_feature_extraction(tmp_path: Path) -> None:
    model_dir = timed_build(build_feature_extraction, tmp_path / "nested" / "fe")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    assert type(model).__name__ == "BertModel"

    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert {"input_ids", "attention_mask"} <= set(batch.keys())
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # first one was padded
    with torch.no_grad():
        out = model(**batch)
    seq = batch["input_ids"].shape[1]
    assert tuple(out.last_hidden_state.shape) == (2, seq, 32)


BUILDERS = [build_feature_extraction, build_text_classification, build_text_generation]


@pytest.mark.parametrize("builder", BUILDERS)
def test_builds_are_deterministic(tmp_path: Path, builder) -> None:  # type: ignore[no-untyped-def]
    a = builder(tmp_path / "a")
    b = builder(tmp_path / "b")
    assert weights_file(a).read_bytes() == weights_file(b).read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_text_classification(tmp_path: Path) -> None:
    model_dir = timed_build(build_text_classification, tmp_path / "tc")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}

    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert tuple(logits.shape) == (2, 2)


def test_text_classification_custom_labels(tmp_path: Path) -> None:
    model_dir = build_text_classification(tmp_path / "tc3", labels=("a", "b", "c"))
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert model.config.num_labels == 3


def test_text_generation(tmp_path: Path) -> None:
    model_dir = timed_build(build_text_generation, tmp_path / "tg")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert tokenizer.eos_token == tokenizer.pad_token == tokenizer.bos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id == model.config.pad_token_id == model.config.eos_token_id

    tokenizer.padding_side = "left"
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert {"input_ids", "attention_mask"} <= set(batch.keys())
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # left-padded
    input_len = batch["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 2
    assert input_len < out.shape[1] <= input_len + 3
    assert tokenizer.batch_decode(out, skip_special_tokens=True)[1].startswith(TEXTS[1])
