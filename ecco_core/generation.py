"""Generation with the model's top-k predictions at every step, and mask filling.

:func:`generate` wraps ``model.generate`` (KV-cached greedy search, sampling or beam search)
and keeps the raw logits of each step, so the top-k predictions cost one softmax per step and
no extra forward pass. :func:`predict_masked` is the entry point for masked language models.
"""

from __future__ import annotations

from typing import Any, cast, overload

import numpy as np
import torch

from .capture import analysis_mode
from .checks import check_int, check_prompts
from .errors import InvalidArgumentError
from .head import top_k_softmax
from .inputs import chunks, encode_text, pad_id
from .loading import LM, what_works
from .records import Classification, Generation, MaskedPredictions
from .tokens import display_tokens, token_table


def _eos_ids(lm: LM) -> set[int]:
    config = getattr(lm.model, "generation_config", None)
    value = getattr(config, "eos_token_id", None)
    if value is None:
        value = lm.tokenizer.eos_token_id
    if value is None:
        return set()
    return {int(v) for v in (value if isinstance(value, (list, tuple)) else [value])}


def _encode(lm: LM, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    encoded = []
    limit = lm.spec.max_positions
    for i, text in enumerate(prompts):
        ids = list(lm.tokenizer(text, add_special_tokens=True)["input_ids"])
        if not ids:
            raise InvalidArgumentError(f"prompt {i} tokenizes to no tokens")
        if limit is not None:
            needed = len(ids) + (max_new_tokens if lm.spec.kind == "causal" else 0)
            if needed > limit:
                room = limit - len(ids)
                advice = (
                    f"lower max_new_tokens to at most {room} or shorten the prompt"
                    if room >= 1
                    else f"shorten the prompt to fewer than {limit} tokens"
                )
                raise InvalidArgumentError(
                    f"prompt of {len(ids)} tokens plus max_new_tokens={max_new_tokens} "
                    f"exceeds the model's context of {limit} tokens; {advice}"
                    if lm.spec.kind == "causal"
                    else f"prompt of {len(ids)} tokens exceeds the encoder's limit of {limit}; "
                    "shorten the prompt"
                )
        encoded.append(ids)
    return encoded


def _batch(ids: list[list[int]], pad: int, left: bool, device: torch.device) -> dict[str, Any]:
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        sl = slice(width - len(row), width) if left else slice(0, len(row))
        input_ids[i, sl] = torch.tensor(row, dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def _top_k(logits: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """logits [..., vocab] -> (ids, probs) [..., k] of the softmax's k largest entries."""
    probs, ids = top_k_softmax(logits, k)
    return ids.cpu().numpy().astype(np.int64), probs.cpu().numpy().astype(np.float32)


def _check_sampling(
    temperature: float | None, top_k: int | None, top_p: float | None, seed: int | None
) -> None:
    if temperature is not None and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise InvalidArgumentError(f"temperature={temperature!r} must be a number > 0")
    if top_k is not None:
        check_int("top_k", top_k, 1)
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise InvalidArgumentError(f"top_p={top_p!r} must lie in (0, 1]")
    if seed is not None:
        check_int("seed", seed, 0)


def _generate_batch(
    lm: LM,
    prompts: list[str],
    encoded: list[list[int]],
    options: dict[str, Any],
    params: dict[str, Any],
) -> list[Generation]:
    """One padded ``model.generate`` call (left padding for causal models, whose position ids
    ``model.generate`` derives from the attention mask) and its records."""
    causal = lm.spec.kind == "causal"
    inputs = _batch(encoded, options["pad_token_id"], left=causal, device=lm.device)
    with analysis_mode(lm.model), torch.inference_mode():
        out = cast(Any, lm.model).generate(**inputs, **options)
    width = inputs["input_ids"].shape[1]
    start = width if causal else 1
    steps = torch.stack(out.logits, dim=0)  # [n_steps, batch * beams, vocab]
    if options["num_beams"] > 1:
        beams = out.beam_indices[:, : steps.shape[0]].clamp(min=0)  # [batch, n_steps]
        steps = steps[torch.arange(steps.shape[0])[:, None], beams.T.to(steps.device)]
    top_ids, top_probs = _top_k(steps, params["top_predictions"])  # [n_steps, batch, k]
    eos = _eos_ids(lm)
    records = []
    for b, text in enumerate(prompts):
        generated = out.sequences[b, start:].tolist()
        stop = next((i + 1 for i, t in enumerate(generated) if t in eos), len(generated))
        generated = generated[:stop]
        if causal:
            head = encoded[b]
            n_encoder = 0
        else:
            head = encoded[b] + [int(out.sequences[b, 0])]
            n_encoder = len(encoded[b])
        ids = head + generated
        raw, shown = display_tokens(lm.tokenizer, ids)
        records.append(
            Generation(
                token_ids=np.array(ids, dtype=np.int64),
                tokens=shown,
                raw_tokens=raw,
                n_input_tokens=len(head),
                n_encoder_tokens=n_encoder,
                top_ids=top_ids[:stop, b],
                top_probs=top_probs[:stop, b],
                top_tokens=token_table(lm.tokenizer, top_ids[:stop, b]),
                prompt=text,
                text=lm.tokenizer.decode(generated, skip_special_tokens=True),
                model_kind=lm.spec.kind,
                provenance=lm.provenance("generate", params),
            )
        )
    return records


@overload
def generate(
    lm: LM,
    prompt: str,
    *,
    max_new_tokens: int = ...,
    min_new_tokens: int | None = ...,
    do_sample: bool = ...,
    temperature: float | None = ...,
    top_k: int | None = ...,
    top_p: float | None = ...,
    num_beams: int = ...,
    seed: int | None = ...,
    top_predictions: int = ...,
    batch_size: int | None = ...,
) -> Generation: ...


@overload
def generate(
    lm: LM,
    prompt: list[str] | tuple[str, ...],
    *,
    max_new_tokens: int = ...,
    min_new_tokens: int | None = ...,
    do_sample: bool = ...,
    temperature: float | None = ...,
    top_k: int | None = ...,
    top_p: float | None = ...,
    num_beams: int = ...,
    seed: int | None = ...,
    top_predictions: int = ...,
    batch_size: int | None = ...,
) -> tuple[Generation, ...]: ...


def generate(
    lm: LM,
    prompt: str | list[str] | tuple[str, ...],
    *,
    max_new_tokens: int = 8,
    min_new_tokens: int | None = None,
    do_sample: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    num_beams: int = 1,
    seed: int | None = None,
    top_predictions: int = 10,
    batch_size: int | None = None,
) -> Generation | tuple[Generation, ...]:
    """Generate a continuation and record the top-k predictions at each step.

    Parameters
    ----------
    lm : handle from :func:`ecco_core.load` (causal or encoder-decoder model).
    prompt : one prompt, or a list of prompts (generated in padded batches; prompts of
        different lengths give the records they give alone, up to float rounding).
    max_new_tokens, min_new_tokens : length of the continuation (``min_new_tokens`` stops an
        early end-of-sequence token).
    do_sample, temperature, top_k, top_p, num_beams : as in ``model.generate``.
    seed : seed for sampling; the global random state is left as it was.
    top_predictions : k, the number of most probable tokens kept for each step.
    batch_size : prompts per ``model.generate`` call, for a list (default: all at once).
        Sampling with a seed draws from one random stream across the batches, so sampled
        tokens depend on the batch size.

    Returns
    -------
    Generation, or a tuple of them (one per prompt) when ``prompt`` is a list.
    """
    if lm.spec.kind not in ("causal", "encoder-decoder"):
        raise InvalidArgumentError(
            f"{lm.name} is a {lm.spec.kind} model and does not generate text; "
            f"{what_works(lm.spec.kind)}"
        )
    prompts, single = check_prompts(prompt)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    if min_new_tokens is not None:
        min_new_tokens = check_int("min_new_tokens", min_new_tokens, 0, max_new_tokens)
    num_beams = check_int("num_beams", num_beams, 1)
    top_predictions = check_int("top_predictions", top_predictions, 1, lm.spec.vocab_size)
    _check_sampling(temperature, top_k, top_p, seed)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    encoded = _encode(lm, prompts, max_new_tokens)

    pad = pad_id(lm)
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": bool(do_sample),
        "num_beams": num_beams,
        "output_logits": True,
        "return_dict_in_generate": True,
        "pad_token_id": pad,
    }
    if min_new_tokens:
        options["min_new_tokens"] = min_new_tokens
    if do_sample:
        options.update(
            {
                k: v
                for k, v in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p))
                if v is not None
            }
        )
    params = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min_new_tokens,
        "do_sample": bool(do_sample),
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "num_beams": num_beams,
        "seed": seed,
        "top_predictions": top_predictions,
    }
    records: list[Generation] = []
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for part in chunks(len(prompts), batch_size):
            texts = [prompts[i] for i in part]
            records += _generate_batch(lm, texts, [encoded[i] for i in part], options, params)
    return records[0] if single else tuple(records)


def predict_masked(lm: LM, text: str, *, top_k: int = 10) -> MaskedPredictions:
    """Top-k fillers of every mask token in ``text`` (masked language models).

    Write the tokenizer's mask token (``lm.tokenizer.mask_token``, e.g. ``[MASK]``) where the
    model should fill in.
    """
    if lm.spec.kind != "masked":
        raise InvalidArgumentError(
            f"predict_masked needs a masked language model; {lm.name} is a {lm.spec.kind} "
            f"model: {what_works(lm.spec.kind)}"
        )
    check_prompts(text)
    top_k = check_int("top_k", top_k, 1, lm.spec.vocab_size)
    mask = lm.tokenizer.mask_token
    if mask is None or mask not in text:
        raise InvalidArgumentError(
            f"text contains no mask token; write {mask!r} where the model should fill in"
        )
    ids = encode_text(lm, text)
    positions = [i for i, t in enumerate(ids) if t == lm.tokenizer.mask_token_id]
    with analysis_mode(lm.model), torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.device)).logits[0]
    top_ids, top_probs = _top_k(logits[positions], top_k)
    raw, shown = display_tokens(lm.tokenizer, ids)
    return MaskedPredictions(
        token_ids=np.array(ids, dtype=np.int64),
        tokens=shown,
        raw_tokens=raw,
        positions=np.array(positions, dtype=np.int64),
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=token_table(lm.tokenizer, top_ids),
        text=text,
        provenance=lm.provenance("predict_masked", {"top_k": top_k}),
    )


def classify(lm: LM, text: str) -> Classification:
    """Class probabilities of a sequence-classification model for ``text``."""
    if lm.spec.kind != "classifier":
        raise InvalidArgumentError(
            f"classify needs a sequence-classification model; {lm.name} is {lm.spec.kind}"
        )
    check_prompts(text)
    ids = encode_text(lm, text)
    with analysis_mode(lm.model), torch.inference_mode():
        logits = cast(Any, lm.model)(input_ids=torch.tensor([ids], device=lm.device)).logits[0]
    probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    names = getattr(lm.model.config, "id2label", None) or {}
    raw, shown = display_tokens(lm.tokenizer, ids)
    return Classification(
        token_ids=np.array(ids, dtype=np.int64),
        tokens=shown,
        raw_tokens=raw,
        labels=[str(names.get(i, f"LABEL_{i}")) for i in range(len(probs))],
        probs=probs,
        text=text,
        provenance=lm.provenance("classify", {}),
    )
