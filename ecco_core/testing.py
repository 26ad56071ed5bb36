"""Tiny random models of every supported family, built offline in about a second each.

Used by the test suite and the examples: a tokenizer is trained on a small built-in corpus
(docstrings of standard-library modules plus a few sentences), a random model is built from a
small config, and both are saved to a folder so that they load like any downloaded model.
Nothing here touches the network and no binary is committed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

FAMILIES = (
    "gpt2",
    "llama",
    "gpt_neox",
    "opt",
    "bloom",
    "qwen2",
    "bert",
    "roberta",
    "distilbert",
    "t5",
    "bart",
)
CAUSAL_FAMILIES = ("gpt2", "llama", "gpt_neox", "opt", "bloom", "qwen2")
MASKED_FAMILIES = ("bert", "roberta", "distilbert")
ENCODER_DECODER_FAMILIES = ("t5", "bart")
CLASSIFIER_FAMILIES = ("bert_classifier", "gpt2_classifier")
_LABELS: dict[str, Any] = {
    "id2label": {0: "negative", 1: "neutral", 2: "positive"},
    "label2id": {"negative": 0, "neutral": 1, "positive": 2},
}

_SENTENCES = (
    "The Eiffel Tower is in the city of Paris. Heathrow airport is located in the city of London.",
    "She said that he would come back, and they were happy; it was late, but we waited.",
    "Numbers like 1, 2, 3 and 42 appear in text, as do commas, dots and question marks?",
)
_STDLIB_MODULES = (
    "json",
    "collections",
    "functools",
    "itertools",
    "pathlib",
    "textwrap",
    "argparse",
    "logging",
    "string",
    "random",
    "statistics",
    "fractions",
)


def fixed_provenance(model: str = "test", function: str = "test", **params: Any) -> Any:
    """A :class:`~ecco_core.records.Provenance` with fixed versions, for hand-built records."""
    from .records import Provenance

    return Provenance(
        model=model,
        revision="",
        library_version="0",
        transformers_version="0",
        torch_version="0",
        function=function,
        params=params,
    )


def corpus() -> list[str]:
    """A small English corpus: fixed sentences plus standard-library docstrings."""
    texts = list(_SENTENCES) * 20
    for name in _STDLIB_MODULES:
        module = importlib.import_module(name)
        for obj in [module, *vars(module).values()]:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and len(doc) > 40:
                texts.extend(line.strip() for line in doc.splitlines() if line.strip())
    return texts


def _byte_bpe(vocab_size: int, specials: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    return tok


def _wordpiece(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        corpus(),
        trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        ),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def _unigram(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing

    specials = ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(4)]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        corpus(),
        trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False
        ),
    )
    eos = tok.token_to_id("</s>")
    tok.post_processor = TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    return tok


def _roberta_post(tok: Any) -> Any:
    from tokenizers.processors import TemplateProcessing

    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return tok


def _wrap(tok: Any, **special: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_input_names=["input_ids", "attention_mask"], **special
    )


def _gpt_style_tokenizer() -> Any:
    tok = _byte_bpe(600, ["<|endoftext|>", "<pad>"])
    return _wrap(
        tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )


def _roberta_style_tokenizer() -> Any:
    tok = _roberta_post(_byte_bpe(600, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    return _wrap(
        tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )


def _bert_tokenizer() -> Any:
    return _wrap(
        _wordpiece(600),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _t5_tokenizer() -> Any:
    extra = [f"<extra_id_{i}>" for i in range(4)]
    return _wrap(
        _unigram(600),
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=extra,
    )


def _ids(tok: Any, *names: str) -> dict[str, Any]:
    return {
        name: tok.convert_tokens_to_ids(getattr(tok, name.replace("_id", ""))) for name in names
    }


def _gpt2_config(tokenizer: Any, **extra: Any) -> Any:
    """Tiny GPT-2 config (also used by the GPT-2 classifier)."""
    import transformers as tf

    return tf.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=32,
        n_inner=64,
        n_layer=2,
        n_head=4,
        **extra,
        **_ids(tokenizer, "bos_token_id", "eos_token_id", "pad_token_id"),
    )


def _bert_config(tokenizer: Any, **extra: Any) -> Any:
    """Tiny BERT config (also used by the BERT classifier)."""
    import transformers as tf

    return tf.BertConfig(
        vocab_size=len(tokenizer),
        intermediate_size=64,
        max_position_embeddings=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_size=32,
        **extra,
        **_ids(tokenizer, "pad_token_id"),
    )


def _build(family: str) -> tuple[Any, Any]:
    import transformers as tf

    small: dict[str, Any] = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32}
    builders: dict[str, Callable[[], tuple[Any, Any]]] = {
        "gpt2": lambda: (
            (t := _gpt_style_tokenizer()),
            tf.GPT2LMHeadModel(_gpt2_config(t)),
        ),
        "llama": lambda: (
            (t := _gpt_style_tokenizer()),
            tf.LlamaForCausalLM(
                tf.LlamaConfig(
                    vocab_size=len(t),
                    intermediate_size=64,
                    num_key_value_heads=2,
                    max_position_embeddings=128,
                    tie_word_embeddings=False,
                    **small,
                    **_ids(t, "bos_token_id", "eos_token_id", "pad_token_id"),
                )
            ),
        ),
        "gpt_neox": lambda: (
            (t := _gpt_style_tokenizer()),
            tf.GPTNeoXForCausalLM(
                tf.GPTNeoXConfig(
                    vocab_size=len(t),
                    intermediate_size=64,
                    max_position_embeddings=128,
                    **small,
                    **_ids(t, "bos_token_id", "eos_token_id", "pad_token_id"),
                )
            ),
        ),
        "opt": lambda: (
            (t := _gpt_style_tokenizer()),
            tf.OPTForCausalLM(
                tf.OPTConfig(
                    vocab_size=len(t),
                    ffn_dim=64,
                    word_embed_proj_dim=32,
                    max_position_embeddings=128,
                    **small,
                    **_ids(t, "bos_token_id", "eos_token_id", "pad_token_id"),
                )
            ),
        ),
        "bloom": lambda: (
            (t := _gpt_style_tokenizer()),
            tf.BloomForCausalLM(
                tf.BloomConfig(
                    vocab_size=len(t),
                    hidden_size=32,
                    n_layer=2,
                    n_head=4,
                    **_ids(t, "bos_token_id", "eos_token_id", "pad_token_id"),
                )
            ),
        ),
        "qwen2": lambda: (
            (t := _gpt_style_tokenizer()),
            tf.Qwen2ForCausalLM(
                tf.Qwen2Config(
                    vocab_size=len(t),
                    intermediate_size=64,
                    num_key_value_heads=2,
                    max_position_embeddings=128,
                    tie_word_embeddings=True,
                    **small,
                    **_ids(t, "bos_token_id", "eos_token_id", "pad_token_id"),
                )
            ),
        ),
        "bert": lambda: (
            (t := _bert_tokenizer()),
            tf.BertForMaskedLM(_bert_config(t)),
        ),
        "roberta": lambda: (
            (t := _roberta_style_tokenizer()),
            tf.RobertaForMaskedLM(
                tf.RobertaConfig(
                    vocab_size=len(t),
                    intermediate_size=64,
                    max_position_embeddings=130,
                    **small,
                    **_ids(t, "bos_token_id", "eos_token_id", "pad_token_id"),
                )
            ),
        ),
        "distilbert": lambda: (
            (t := _bert_tokenizer()),
            tf.DistilBertForMaskedLM(
                tf.DistilBertConfig(
                    vocab_size=len(t),
                    dim=32,
                    n_layers=2,
                    n_heads=4,
                    hidden_dim=64,
                    max_position_embeddings=128,
                    **_ids(t, "pad_token_id"),
                )
            ),
        ),
        "t5": lambda: (
            (t := _t5_tokenizer()),
            tf.T5ForConditionalGeneration(
                tf.T5Config(
                    vocab_size=len(t),
                    d_model=32,
                    d_kv=8,
                    d_ff=64,
                    num_layers=2,
                    num_heads=4,
                    **{"decoder_start_token_id": t.pad_token_id, "tie_word_embeddings": True},
                    **_ids(t, "pad_token_id", "eos_token_id"),
                )
            ),
        ),
        "bart": lambda: (
            (t := _roberta_style_tokenizer()),
            tf.BartForConditionalGeneration(
                tf.BartConfig(
                    vocab_size=len(t),
                    d_model=32,
                    encoder_layers=2,
                    decoder_layers=2,
                    encoder_attention_heads=4,
                    decoder_attention_heads=4,
                    encoder_ffn_dim=64,
                    decoder_ffn_dim=64,
                    max_position_embeddings=128,
                    decoder_start_token_id=t.eos_token_id,
                    **_ids(t, "bos_token_id", "eos_token_id", "pad_token_id"),
                )
            ),
        ),
        "bert_classifier": lambda: (
            (t := _bert_tokenizer()),
            tf.BertForSequenceClassification(_bert_config(t, **_LABELS)),
        ),
        "gpt2_classifier": lambda: (
            (t := _gpt_style_tokenizer()),
            tf.GPT2ForSequenceClassification(_gpt2_config(t, **_LABELS)),
        ),
    }
    if family not in builders:
        known = ", ".join([*FAMILIES, *CLASSIFIER_FAMILIES])
        raise ValueError(f"unknown family {family!r}; known: {known}")
    return builders[family]()


def save_tiny_model(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny random model of ``family`` with its tokenizer and save both to ``folder``."""
    import torch

    torch.manual_seed(seed)
    tokenizer, model = _build(family)
    folder = Path(folder)
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
