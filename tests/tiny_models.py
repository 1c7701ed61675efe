"""Tiny but real Hugging Face models, built offline for tests.

The serving code loads models with the ``Auto*`` classes from a directory, and the tests need
one real model per task (feature extraction, text classification, text generation) to do that
end to end. Downloading even the smallest hub checkpoint needs network access the test machines
do not have, and a checked-in checkpoint would go stale against the installed transformers.
So each builder here makes a tokenizer with the ``tokenizers`` library from a few built-in
sentences (byte-level BPE trained on them for GPT-2; a WordPiece vocab derived from them for
BERT, see ``_bert_tokenizer``), wraps it in transformers' fast tokenizer class, constructs a
randomly initialised but seeded (hence byte-for-byte deterministic) model with a tiny config, and
writes both with ``save_pretrained`` -- in a fraction of a second, with no network.

Each builder creates ``target`` (parents included), writes ``model.safetensors`` (one file),
``config.json`` and the tokenizer files into it, and returns ``target``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
    PreTrainedModel,
)

__all__ = [
    "build_feature_extraction",
    "build_text_classification",
    "build_text_generation",
    "weights_file",
]

# Small English corpus the tokenizers are trained on; covers the words the tests feed in.
CORPUS: tuple[str, ...] = (
    "hello world",
    "a longer sentence for testing",
    "the quick brown fox jumps over the lazy dog",
    "this movie was great and i loved it",
    "this movie was terrible and i hated it",
    "models serve requests while the container stays warm",
    "tests need real models for each task without network access",
    "once upon a time there was a tiny language model",
)

HIDDEN_SIZE = 32
NUM_LAYERS = 2
NUM_HEADS = 2
INTERMEDIATE_SIZE = 64
MAX_POSITIONS = 128
SEED = 0

BERT_SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
GPT2_EOS = "<|endoftext|>"
WEIGHTS_NAME = "model.safetensors"


def weights_file(model_dir: Path) -> Path:
    """Path of the single safetensors weights file a builder wrote into ``model_dir``."""
    return Path(model_dir) / WEIGHTS_NAME


def _bert_tokenizer() -> BertTokenizerFast:
    """WordPiece tokenizer with BERT's normalisation, special tokens and [CLS] ... [SEP] template."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # tokenizers' WordPieceTrainer breaks ties between equally frequent merges in hash-map order,
    # so on a corpus this small its vocab (even its size, hence the seeded weights) changes from run
    # to run. The vocab is therefore derived from the corpus directly, through the same normaliser
    # and pre-tokeniser: every character (word-initial and "##"-continuation) so any ASCII-ish text
    # encodes without [UNK], plus every corpus word whole. Sorted, so ids are stable.
    words = {
        word
        for sentence in CORPUS
        for word, _span in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(sentence))
    }
    chars = set("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()") | {c for w in words for c in w}
    # Order fixes the ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
    order = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    special = [BERT_SPECIAL_TOKENS[k] for k in order]
    pieces = sorted(chars) + sorted(f"##{c}" for c in chars) + sorted(words - chars)
    vocab = {token: i for i, token in enumerate(special + pieces)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token=BERT_SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.add_special_tokens(special)
    cls, sep = BERT_SPECIAL_TOKENS["cls_token"], BERT_SPECIAL_TOKENS["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    tok.decoder = decoders.WordPiece()
    # In transformers 5 BertTokenizerFast is an alias of BertTokenizer (tokenizers backend); the
    # saved tokenizer_class is "BertTokenizer" (PreTrainedTokenizerFast would save "TokenizersBackend").
    return BertTokenizerFast(tokenizer_object=tok, model_max_length=MAX_POSITIONS, **BERT_SPECIAL_TOKENS)


def _gpt2_tokenizer() -> GPT2TokenizerFast:
    """Byte-level BPE tokenizer whose single special token <|endoftext|> is bos, eos, unk and pad."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=[GPT2_EOS],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknowns
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token=GPT2_EOS,
        eos_token=GPT2_EOS,
        unk_token=GPT2_EOS,
        pad_token=GPT2_EOS,
        padding_side="left",  # decoder-only: batched generation needs left padding
        model_max_length=MAX_POSITIONS,
    )


def _save(model: PreTrainedModel, tokenizer: object, target: Path) -> Path:
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)  # type: ignore[attr-defined]
    if not weights_file(target).is_file():
        raise RuntimeError(f"save_pretrained did not write {WEIGHTS_NAME} into {target}")
    return target


def _bert_config(vocab_size: int, **extra: object) -> BertConfig:
    """The tiny BERT config; `extra` adds to it or overrides a size (a wider model for a benchmark)."""
    sizes: dict[str, object] = {"hidden_size": HIDDEN_SIZE, "num_hidden_layers": NUM_LAYERS, "num_attention_heads": NUM_HEADS,
                                "intermediate_size": INTERMEDIATE_SIZE, "max_position_embeddings": MAX_POSITIONS}
    return BertConfig(vocab_size=vocab_size, pad_token_id=0, **{**sizes, **extra})


def build_feature_extraction(target: Path, **sizes: object) -> Path:
    """BERT-style encoder (BertModel) plus fast WordPiece tokenizer; loads with AutoModel/AutoTokenizer.
    `sizes` override the tiny config's (e.g. `hidden_size=512, num_hidden_layers=8`: requests of seconds)."""
    tokenizer = _bert_tokenizer()
    torch.manual_seed(SEED)
    model = BertModel(_bert_config(len(tokenizer), **sizes)).eval()
    return _save(model, tokenizer, target)


def build_text_classification(target: Path, labels: tuple[str, ...] = ("negative", "positive")) -> Path:
    """BertForSequenceClassification with id2label/label2id from ``labels``; loads with
    AutoModelForSequenceClassification/AutoTokenizer."""
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"need at least two distinct labels, got {labels!r}")
    tokenizer = _bert_tokenizer()
    config = _bert_config(
        len(tokenizer),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config).eval()
    return _save(model, tokenizer, target)


def build_text_generation(target: Path) -> Path:
    """GPT-2 style causal LM (GPT2LMHeadModel) plus byte-level BPE tokenizer with eos = bos = pad =
    <|endoftext|> and left padding; loads with AutoModelForCausalLM/AutoTokenizer."""
    tokenizer = _gpt2_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids(GPT2_EOS)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=HIDDEN_SIZE,
        n_layer=NUM_LAYERS,
        n_head=NUM_HEADS,
        n_inner=INTERMEDIATE_SIZE,
        n_positions=MAX_POSITIONS,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(config).eval()
    # generation_config.json is written next to the weights; make pad explicit there too.
    model.generation_config.pad_token_id = eos_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.bos_token_id = eos_id
    return _save(model, tokenizer, target)
