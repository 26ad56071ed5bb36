"""Command line front end: ``ecco-core demo`` prints a text explanation of one prediction.

Exit codes: 0 success, 1 failure inside the library or model, 2 a usage mistake.
"""

from __future__ import annotations

import argparse
import sys

import ecco_core as ec

HEATHROW = "Heathrow airport is located in the city of"


def first_top_layer(ranks: ec.Rankings, step: int) -> int | None:
    """Index of the first layer where generated token ``step`` is ranked 1, else None."""
    hits = [i for i, r in enumerate(ranks.ranks[:, step]) if r == 1]
    return hits[0] if hits else None


def summary(lm: ec.LM, prompt: str, max_new_tokens: int) -> str:
    """Generation, top predictions and logit-lens facts as plain text."""
    gen = ec.generate(lm, prompt, max_new_tokens=max_new_tokens)
    assert isinstance(gen, ec.Generation)
    ranks = ec.rankings(lm, gen)
    preds = ec.layer_predictions(lm, gen, gen.n_input_tokens, top_k=3)
    assert isinstance(preds, ec.LayerPredictions)
    lines = [
        f"model: {lm.name} ({lm.spec.kind}, {lm.spec.n_layers} layers)",
        f"prompt: {prompt!r}",
        f"generated: {gen.text!r}",
        "",
        "top predictions per step:",
    ]
    for step in range(gen.n_generated):
        options = ", ".join(
            f"{tok!r} {prob:.2f}"
            for tok, prob in zip(gen.top_tokens[step][:3], gen.top_probs[step][:3], strict=True)
        )
        layer = first_top_layer(ranks, step)
        where = f"rank 1 from layer {layer}" if layer is not None else "never rank 1"
        lines.append(f"  {gen.tokens[gen.n_input_tokens + step]!r:>14}  <- {options}  ({where})")
    lines += ["", f"layer predictions for {gen.tokens[gen.n_input_tokens]!r}:"]
    for label, tokens, probs in zip(preds.layer_labels, preds.tokens, preds.probs, strict=True):
        lines.append(f"  {label:>9}: {tokens[0]!r} {probs[0]:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ecco-core", description="Explain a language model.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="explain the Heathrow example on the default model")
    demo.add_argument("--model", default=None, help="hub id or folder (default: SmolLM2-135M)")
    demo.add_argument("--prompt", default=HEATHROW)
    demo.add_argument("--max-new-tokens", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        lm = ec.load(args.model)
        print(summary(lm, args.prompt, args.max_new_tokens))
    except (ec.InvalidArgumentError, ec.InvalidTypeError, ec.ModelLoadError) as exc:
        print(f"ecco-core: error: {exc}", file=sys.stderr)
        return 2
    except ec.EccoError as exc:
        print(f"ecco-core: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
