"""Command line: ``ecco-core report`` explains one prompt in a self-contained HTML report.

    ecco-core report --prompt "Heathrow airport is located in the city of" --out report.html

Each subcommand is one entry of :data:`COMMANDS`: a help line, a function adding its options
to its parser, and a function running it. Nothing heavy (torch, transformers, ecco_core) is
imported until the arguments have been checked, so ``--help``, ``--version`` and usage mistakes
answer at once.

Exit codes: 0 success; 1 a failure while computing; 2 a usage mistake (bad option, missing
model, unwritable output). Mistakes are reported in one line, without a traceback (``--debug``
shows it). Outputs are written to a temporary file and renamed, so nothing is half-written, and
they follow the umask like any other program's files.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import ecco_core as ec

from .corpus import cli as corpus_cli
from .names import check_dtype, resolve_method


class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _Formatter(argparse.HelpFormatter):
    """Help that shows each option's default (where it has a meaningful one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        shown = " ".join(default) if isinstance(default, list) else "%(default)s"
        return f"{text} (default: {shown})"


def version() -> str:
    """The installed ecco-core version, read without importing the library."""
    try:
        return importlib.metadata.version("ecco-core")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


# ---------------------------------------------------------------- report


def build_report(report: argparse.ArgumentParser) -> None:
    """Options of ``ecco-core report``."""
    model = report.add_argument_group("model")
    model.add_argument(
        "--model",
        default="smollm2",
        help="hub id, folder, or the short name of an embedded model (smollm2, minilm)",
    )
    model.add_argument("--device", default="cpu", help="where to run: cpu, cuda, cuda:1, ...")
    model.add_argument(
        "--dtype", default=None, help="weight type: bf16, fp16, fp32 (default: the model's own)"
    )
    gen = report.add_argument_group("generation")
    gen.add_argument("--prompt", required=True, help="text for the model to continue")
    gen.add_argument("--max-new-tokens", type=int, default=4, help="tokens to generate")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    gen.add_argument("--top-k", type=int, default=None, help="sample from the k most probable")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass")
    gen.add_argument("--seed", type=int, default=None, help="seed for sampling (reproducible)")
    views = report.add_argument_group("views")
    views.add_argument(
        "--attribution",
        nargs="*",
        default=["integrated_gradients"],
        metavar="METHOD",
        help="attribution methods, e.g. ig grad_x_input saliency (none: skip); an unknown "
        "name lists the valid ones",
    )
    views.add_argument(
        "--nmf",
        type=int,
        default=8,
        metavar="K",
        help="NMF components of the neuron view (0: skip)",
    )
    views.add_argument(
        "--watch",
        nargs="+",
        default=None,
        metavar="TOKEN",
        help="tokens whose rank to follow through the layers at the first generated position, "
        "e.g. ' Paris' ' London'",
    )
    out = report.add_argument_group("output")
    out.add_argument("--out", default="report.html", help="HTML report to write")
    out.add_argument("--json", default=None, help="also write every record to this JSON file")
    out.add_argument("--quiet", action="store_true", help="no progress bars at all")
    out.add_argument("--debug", action="store_true", help="show tracebacks")


def _writable(path_text: str, option: str) -> Path:
    path = Path(path_text).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{option} {path_text!r} is a folder; give a file name")
    if not folder.is_dir():
        raise UsageError(f"{option}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: folder {str(folder)!r} is not writable")
    return path


def _check_report(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """Checks that need no model (and no heavy import); returns the output paths."""
    if not args.prompt.strip():
        raise UsageError("--prompt is empty; give some text for the model to continue")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.nmf < 0:
        raise UsageError(f"--nmf must be 0 (skip) or more, got {args.nmf}")
    if args.temperature is not None and not args.temperature > 0:
        raise UsageError(f"--temperature must be more than 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must lie in (0, 1], got {args.top_p}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}")
    options = {"--temperature": args.temperature, "--top-k": args.top_k, "--top-p": args.top_p}
    sampling = [name for name, value in options.items() if value is not None]
    if sampling and not args.sample:
        raise UsageError(f"{', '.join(sampling)} only apply with --sample")
    for name in args.attribution:
        if name.lower() != "none":
            resolve_method(name, UsageError)
    if args.dtype is not None:
        check_dtype(args.dtype, "--dtype", UsageError)
    out = _writable(args.out, "--out")
    json_path = _writable(args.json, "--json") if args.json else None
    if json_path is not None and json_path.resolve() == out.resolve():
        raise UsageError("--out and --json name the same file; give two names")
    return out, json_path


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence every progress bar (tqdm's, transformers' and huggingface_hub's) within."""
    if not enabled:
        yield
        return
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as tf_logging

    saved = os.environ.get("TQDM_DISABLE")
    hub_was_off = hub_utils.are_progress_bars_disabled()
    tf_was_on = tf_logging.is_progress_bar_enabled()
    os.environ["TQDM_DISABLE"] = "1"
    hub_utils.disable_progress_bars()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved
        if not hub_was_off:
            hub_utils.enable_progress_bars()
        if tf_was_on:
            tf_logging.enable_progress_bar()


def first_top_layer(ranks: ec.Rankings, step: int) -> int | None:
    """The first layer at which generated token ``step`` is ranked 1, else None."""
    hits = [i for i, r in enumerate(ranks.ranks[:, step]) if r == 1]
    return hits[0] if hits else None


def summary(
    lm: ec.LM,
    gen: ec.Generation,
    ranks: ec.Rankings,
    attributions: Sequence[ec.Attributions],
    watch: ec.RankingsWatch | None = None,
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
    if watch is not None:
        listed = ", ".join(
            f"{t!r} {int(r)}" for t, r in zip(watch.watch_tokens, watch.ranks[-1], strict=True)
        )
        lines.append(f"watched at position {watch.position}, rank at the last layer: {listed}")
    for attr in attributions:
        scores = attr.scores[0]
        top = sorted(range(len(scores)), key=lambda j: -abs(float(scores[j])))[:5]
        listed = ", ".join(f"{attr.tokens[j]!r} {scores[j]:.2f}" for j in top)
        lines.append(f"{attr.method}: inputs behind {gen.tokens[gen.n_input_tokens]!r}: {listed}")
    return "\n".join(lines)


def _note(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"ecco-core: note: {message}", file=sys.stderr)  # clears a running bar first


def run_report(args: argparse.Namespace) -> int:
    """Run ``ecco-core report``: every check first, then the model work, then the files."""
    out, json_path = _check_report(args)
    with _quiet(args.quiet):
        return _report(args, out, json_path)


def _report(args: argparse.Namespace, out: Path, json_path: Path | None) -> int:
    # Heavy imports only now that the arguments are known to be usable.
    import json

    from tqdm.auto import tqdm

    import ecco_core as ec
    from ecco_core.dtypes import resolve_dtype
    from ecco_core.records import Record
    from ecco_core.serialization import to_envelope, write_text_atomic

    from . import html

    methods = [resolve_method(m) for m in args.attribution if m.lower() != "none"]
    dtype = resolve_dtype(args.dtype, "--dtype") if args.dtype is not None else None

    steps = ["load model", "generate", "logit lens", *[f"attribution: {m}" for m in methods]]
    steps += ["neuron factors"] if args.nmf else []
    bar = tqdm(steps, desc="ecco-core", disable=args.quiet, file=sys.stderr, leave=False)
    bar.set_postfix_str("load model")
    try:
        lm = ec.load(args.model, device=args.device, dtype=dtype)
    except (ec.ModelLoadError, ec.InvalidArgumentError) as exc:
        bar.close()
        raise UsageError(str(exc).splitlines()[0]) from exc
    bar.update()
    bar.set_postfix_str("generate")
    try:
        gen = ec.generate(
            lm,
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            do_sample=args.sample,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
    except ec.InvalidArgumentError as exc:
        bar.close()
        if "max_new_tokens" not in str(exc):
            raise
        raise UsageError(str(exc).replace("max_new_tokens", "--max-new-tokens")) from exc
    assert isinstance(gen, ec.Generation)
    bar.update()
    bar.set_postfix_str("logit lens")
    with ec.lens_cache():  # one forward pass serves both
        ranks = ec.rankings(lm, gen)
        preds = ec.layer_predictions(lm, gen, gen.n_input_tokens)
    records: list[Record] = [gen, preds, ranks]
    watch = None
    if args.watch:
        watch = ec.rankings_watch(lm, gen, args.watch, gen.n_input_tokens)
        records.append(watch)
    bar.update()
    attributions = []
    for method in methods:
        bar.set_postfix_str(method)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ec.ConvergenceWarning)
            attributions.append(
                ec.attribute(lm, gen, method, progress=False if args.quiet else None)
            )
        for warning in caught:
            _note(f"{method}: {warning.message}")
        bar.update()
    records += attributions
    if args.nmf:
        bar.set_postfix_str("neuron factors")
        acts = ec.activations(lm, gen)
        k = min(args.nmf, gen.n_tokens)
        if k < args.nmf:
            _note(f"--nmf {args.nmf} is more than the {gen.n_tokens} tokens; using {k} factors")
        records.append(ec.factorize(acts, n_components=k, lm=lm))
        bar.update()
    bar.close()

    html.save(records, out, title=f"ecco-core: {args.prompt}")
    if json_path is not None:
        payload = [to_envelope(r) for r in records]
        write_text_atomic(json_path, json.dumps(payload, allow_nan=False, sort_keys=True))
    print(summary(lm, gen, ranks, attributions, watch))
    print(f"\nreport: {out.resolve()}")
    if json_path is not None:
        print(f"records: {json_path.resolve()} (read back with ecco_core.load_records)")
    return 0


# ---------------------------------------------------------------- commands

Build = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

COMMANDS: dict[str, tuple[str, Build, Run]] = {
    "report": ("write a multi-view HTML report for one prompt", build_report, run_report),
    "corpus": (corpus_cli.DESCRIPTION, corpus_cli.add_arguments, corpus_cli.run),
}
"""Subcommand name -> (help line, options builder, runner). A new subcommand adds an entry."""


def parser() -> argparse.ArgumentParser:
    """The command-line parser: one subparser per entry of :data:`COMMANDS`."""
    main = _Parser(
        prog="ecco-core",
        description="Explain a transformer language model.",
        formatter_class=_Formatter,
    )
    main.add_argument("--version", action="version", version=f"ecco-core {version()}")
    sub = main.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_line, build, run) in COMMANDS.items():
        command = sub.add_parser(
            name, help=help_line, description=help_line, formatter_class=_Formatter
        )
        build(command)
        command.set_defaults(run=run)
    return main


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ecco-core`` command; returns the exit code."""
    arguments = sys.argv[1:] if argv is None else argv
    debug = "--debug" in arguments
    try:
        args = parser().parse_args(arguments)
        return int(args.run(args))
    except UsageError as exc:
        if debug:
            raise
        print(f"ecco-core: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ecco-core: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:
        from ecco_core.errors import EccoError

        if debug or not isinstance(exc, (EccoError, OSError, RuntimeError)):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ecco-core: failed: {message} (run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
