"""Readable display strings for tokens.

Tokenizers store tokens in private alphabets: byte-level BPE writes a space as ``Ġ`` and a
newline as ``Ċ``; SentencePiece writes a space as ``▁`` and unknown bytes as ``<0x0A>``;
WordPiece marks word continuations with ``##``. :func:`display_tokens` turns token ids into the
text each token stands for, so that joining the display strings of a sequence gives its text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte-to-unicode table (printable bytes map to themselves)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _decoder_types(tokenizer: Any) -> set[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "type" in node:
                found.add(str(node["type"]))
                if node.get("type") == "Replace" and "▁" in json.dumps(node.get("pattern")):
                    found.add("Metaspace")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    decoder = backend.decoder
    if decoder is not None:
        walk(json.loads(decoder.__getstate__()))
    return found


def _from_bytes(token: str) -> str | None:
    table = _byte_decoder()
    if not all(ch in table for ch in token):
        return None
    return bytes(table[ch] for ch in token).decode("utf-8", errors="replace")


def display_tokens(tokenizer: Any, ids: Sequence[int]) -> tuple[list[str], list[str]]:
    """Return (raw token strings, display strings) for ``ids``.

    Special tokens are shown as they are. Word-initial WordPiece tokens get a leading space
    (except at the start) so that display strings join like the other schemes.
    """
    ids = [int(i) for i in ids]
    raw = [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]
    special = set(getattr(tokenizer, "all_special_tokens", []))
    kinds = _decoder_types(tokenizer)
    shown: list[str] = []
    for index, token in enumerate(raw):
        text: str | None
        if token in special:
            text = token
        elif "ByteLevel" in kinds:
            text = _from_bytes(token)
        elif "WordPiece" in kinds:
            text = token[2:] if token.startswith("##") else (" " + token if index else token)
        elif "Metaspace" in kinds or "ByteFallback" in kinds:
            match = _BYTE_TOKEN.match(token)
            text = chr(int(match.group(1), 16)) if match else token.replace("▁", " ")
        else:
            text = None
        if text is None:
            text = tokenizer.convert_tokens_to_string([token])
        shown.append(text)
    return raw, shown


def token_table(tokenizer: Any, ids: np.ndarray) -> list[list[str]]:
    """Display strings [rows][k] of a table of token ids [rows, k], in one tokenizer call."""
    rows, k = ids.shape
    if ids.size == 0:
        return [[] for _ in range(rows)]
    _, shown = display_tokens(tokenizer, ids.reshape(-1).tolist())
    return [shown[i * k : (i + 1) * k] for i in range(rows)]
