"""Command line: ``ecco-core report`` explains one prompt in a self-contained HTML report.

    ecco-core report --prompt "Heathrow airport is located in the city of" --out report.html

Exit codes: 0 success; 1 a failure while computing; 2 a usage mistake (bad option, missing
model, unwritable output). Mistakes are reported in one line, without a traceback (``--debug``
shows it). Outputs are written to a temporary file and renamed, so nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tqdm.auto import tqdm

import ecco_core as ec
from ecco_core.attribution import resolve_method
from ecco_core.records import Record
from ecco_core.serialization import to_envelope, write_text_atomic

from . import html
from .corpus import cli as corpus_cli


class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    main = _Parser(prog="ecco-core", description="Explain a transformer language model.")
    sub = main.add_subparsers(dest="command", required=True, parser_class=_Parser)
    report = sub.add_parser("report", help="write a multi-view HTML report for one prompt")
    report.add_argument(
        "--model",
        default=None,
        help="hub id or folder (default: the embedded SmolLM2-135M-Instruct)",
    )
    report.add_argument("--prompt", required=True, help="text for the model to continue")
    report.add_argument("--max-new-tokens", type=int, default=4, help="tokens to generate")
    report.add_argument(
        "--attribution",
        nargs="*",
        default=["integrated_gradients"],
        metavar="METHOD",
        help=f"methods ({', '.join(ec.list_methods())})",
    )
    report.add_argument(
        "--nmf",
        type=int,
        default=8,
        metavar="K",
        help="NMF components of the neuron view (0 to skip)",
    )
    report.add_argument("--out", default="report.html", help="HTML report to write")
    report.add_argument("--json", default=None, help="also write every record to this JSON file")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    report.add_argument("--debug", action="store_true", help="show tracebacks")
    corpus_cli.add_parser(sub)
    return main


def _writable(path_text: str, option: str) -> Path:
    path = Path(path_text).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{option} {path_text!r} is a folder; give a file name")
    if not folder.is_dir():
        raise UsageError(f"{option}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option}: folder {str(folder)!r} is not writable")
    return path


def first_top_layer(ranks: ec.Rankings, step: int) -> int | None:
    """The first layer at which generated token ``step`` is ranked 1, else None."""
    hits = [i for i, r in enumerate(ranks.ranks[:, step]) if r == 1]
    return hits[0] if hits else None


def summary(
    lm: ec.LM, gen: ec.Generation, ranks: ec.Rankings, attributions: Sequence[ec.Attributions]
) -> str:
    """Plain-text summary: text, top predictions, lens depth and top attributed inputs."""
    lines = [
        f"model: {lm.name} ({lm.spec.kind}, {lm.spec.n_layers} layers)",
        f"prompt: {gen.prompt!r}",
        f"generated: {gen.text!r}",
        "",
        "step  token           top predictions                         first rank-1 layer",
    ]
    for step in range(gen.n_generated):
        token = gen.tokens[gen.n_input_tokens + step]
        options = ", ".join(
            f"{t!r} {p:.2f}"
            for t, p in zip(gen.top_tokens[step][:3], gen.top_probs[step][:3], strict=True)
        )
        layer = first_top_layer(ranks, step)
        lines.append(f"{step:>4}  {token!r:<15} {options:<40} {'-' if layer is None else layer}")
    for attr in attributions:
        scores = attr.scores[0]
        top = sorted(range(len(scores)), key=lambda j: -abs(float(scores[j])))[:5]
        listed = ", ".join(f"{attr.tokens[j]!r} {scores[j]:.2f}" for j in top)
        lines.append(f"{attr.method}: inputs behind {gen.tokens[gen.n_input_tokens]!r}: {listed}")
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise UsageError("--prompt is empty; give some text for the model to continue")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.nmf < 0:
        raise UsageError(f"--nmf must be 0 (skip) or more, got {args.nmf}")
    try:
        methods = [resolve_method(m) for m in args.attribution]
    except ec.InvalidArgumentError as exc:
        raise UsageError(str(exc)) from exc
    out = _writable(args.out, "--out")
    json_path = _writable(args.json, "--json") if args.json else None
    progress: Any = None if not args.quiet else False

    steps = ["load model", "generate", "logit lens", *[f"attribution: {m}" for m in methods]]
    steps += ["neuron factors"] if args.nmf else []
    bar = tqdm(steps, desc="ecco-core", disable=progress is False, file=sys.stderr, leave=False)
    bar.set_postfix_str("load model")
    try:
        lm = ec.load(args.model)
    except ec.ModelLoadError as exc:
        bar.close()
        raise UsageError(str(exc).splitlines()[0]) from exc
    bar.update()
    bar.set_postfix_str("generate")
    gen = ec.generate(lm, args.prompt, max_new_tokens=args.max_new_tokens)
    bar.update()
    bar.set_postfix_str("logit lens")
    with ec.lens_cache():  # one forward pass serves both
        ranks = ec.rankings(lm, gen)
        preds = ec.layer_predictions(lm, gen, gen.n_input_tokens)
    bar.update()
    records: list[Record] = [gen, preds, ranks]
    attributions = []
    for method in methods:
        bar.set_postfix_str(method)
        attributions.append(ec.attribute(lm, gen, method, progress=progress))
        bar.update()
    records += attributions
    if args.nmf:
        bar.set_postfix_str("neuron factors")
        acts = ec.activations(lm, gen)
        k = min(args.nmf, gen.n_tokens)
        records.append(ec.factorize(acts, n_components=k, lm=lm))
        bar.update()
    bar.close()

    html.save(records, out, title=f"ecco-core: {args.prompt}")
    if json_path is not None:
        payload = [to_envelope(r) for r in records]
        write_text_atomic(json_path, json.dumps(payload, allow_nan=False, sort_keys=True))
    print(summary(lm, gen, ranks, attributions))
    print(f"\nreport: {out.resolve()}")
    if json_path is not None:
        print(f"records: {json_path.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ecco-core`` command; returns the exit code."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
        return corpus_cli.run(args) if args.command == "corpus" else _report(args)
    except UsageError as exc:
        if debug:
            raise
        print(f"ecco-core: error: {exc}", file=sys.stderr)
        return 2
    except (ec.EccoError, OSError, RuntimeError) as exc:
        if debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ecco-core: failed: {message} (run with --debug for details)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ecco-core: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
