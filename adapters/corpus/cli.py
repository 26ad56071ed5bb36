"""``ecco-core corpus``: every analysis over a whole data set, as Parquet tables and a report.

    ecco-core corpus --data prompts.jsonl --out runs/facts --analyses generate,rankings

Input mistakes (missing file, unknown extension, missing column, empty data set, unusable or
non-empty --out, unknown analysis or method) are reported in one line with exit code 2 before
torch is imported or any model loaded. A failure while computing exits with 1; an interrupted
run continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..names import METHODS, check_dtype
from .checks import Checked
from .errors import CorpusInputError
from .options import ANALYSES, BatchOptions, RunConfig, parse_analyses, resolve_method

DESCRIPTION = "run analyses over every prompt of a data set; write Parquet tables and a report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The corpus command's options."""
    p.add_argument("--data", required=True, metavar="FILE", help=".txt, .jsonl, .csv or .parquet")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    p.add_argument(
        "--model", default=None, metavar="SRC", help="hub id or folder (default: SmolLM2)"
    )
    p.add_argument("--column", default="text", help="column holding the prompts (default text)")
    p.add_argument("--id-column", default=None, metavar="COL", help="column of prompt ids")
    p.add_argument(
        "--analyses",
        default="generate,rankings",
        help=f"comma-separated, from {','.join(ANALYSES)} (default generate,rankings)",
    )
    p.add_argument(
        "--method",
        nargs="+",
        default=["integrated_gradients"],
        metavar="METHOD",
        help=f"attribution methods ({', '.join(METHODS)}; aliases like ig)",
    )
    p.add_argument("--max-new-tokens", type=int, default=4, metavar="N", help="default 4")
    p.add_argument("--n-steps", type=int, default=50, metavar="N", help="IG steps (default 50)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="layer_predictions per layer")
    p.add_argument("--watch", nargs="+", default=[], metavar="TOKEN", help="tokens to rank")
    p.add_argument("--nmf", type=int, default=8, metavar="K", help="neuron factors (default 8)")
    p.add_argument(
        "--nmf-sample",
        type=int,
        default=None,
        metavar="N",
        help="fit the factors on the first N rows only (default: every row)",
    )
    p.add_argument("--top-examples", type=int, default=10, metavar="N", help="per factor")
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="default 16")
    p.add_argument("--device", default=None, metavar="D", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--dtype", default=None, metavar="T", help="bf16, fp16, fp32, ... (default: the model's)"
    )
    p.add_argument(
        "--engine", default="local", choices=["local", "ray"], help="local (default) or ray"
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join: auto, host:port or ray://host:port (default: a local Ray)",
    )
    p.add_argument(
        "--workers", type=int, default=None, metavar="N", help="Ray actors (default 2 on CPUs)"
    )
    p.add_argument(
        "--gpus-per-worker", type=float, default=None, metavar="G", help="GPUs per Ray actor"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``corpus`` on the subparsers of the ``ecco-core`` command."""
    p: argparse.ArgumentParser = sub.add_parser("corpus", help=DESCRIPTION, description=DESCRIPTION)
    add_arguments(p)
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise CorpusInputError(message)


def config_from(args: argparse.Namespace) -> RunConfig:
    """Turn parsed options into a RunConfig (raises CorpusInputError on a bad value)."""
    analyses = parse_analyses(args.analyses)
    methods = tuple(dict.fromkeys(resolve_method(m) for m in args.method))
    options = BatchOptions(
        analyses=analyses,
        methods=methods if "attribution" in analyses else (),
        max_new_tokens=args.max_new_tokens,
        n_steps=args.n_steps,
        top_k=args.top_k,
        watch=tuple(args.watch),
        top_examples=args.top_examples,
        string_ids=args.id_column is not None,
    )
    return RunConfig(
        data=args.data,
        out=args.out,
        model=args.model,
        column=args.column,
        id_column=args.id_column,
        device=args.device,
        dtype=None if args.dtype is None else check_dtype(args.dtype, "--dtype", CorpusInputError),
        batch_size=args.batch_size,
        options=options,
        nmf=args.nmf,
        nmf_sample=args.nmf_sample,
        resume=args.resume,
        engine=args.engine,
        address=args.address,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker if args.gpus_per_worker is not None else 0.0,
    )


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``corpus`` command; return the exit code."""
    try:
        from .checks import check

        checked = check(config_from(args))
        # The input is fine: only now import torch and the core, and load the model.
        return _compute(checked, args)
    except CorpusInputError as exc:
        if args.debug:
            raise
        print(f"ecco-core: error: {exc}", file=sys.stderr)
        return 2


def _compute(checked: Checked, args: argparse.Namespace) -> int:
    import ecco_core as ec

    config = checked.config
    try:
        if not args.quiet:
            print(
                f"ecco-core corpus: {checked.source.n_rows} prompts -> {config.out}"
                f" ({config.engine} engine)",
                file=sys.stderr,
            )
        if config.engine == "ray":
            from .ray_engine import run as run_ray

            manifest = run_ray(checked, progress=not args.quiet)
        else:
            from .runner import run as run_local

            manifest = run_local(checked, progress=not args.quiet)
    except (ec.ModelLoadError, ec.InvalidArgumentError) as exc:
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ecco-core: error: {first}", file=sys.stderr)
        return 2
    except (ec.EccoError, OSError, RuntimeError) as exc:
        if args.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ecco-core: failed: {message} (run with --debug for details)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ecco-core: interrupted; continue with --resume", file=sys.stderr)
        return 1
    rows = manifest["rows"]
    listed = ", ".join(f"{name} {n}" for name, n in sorted(rows.items()))
    print(f"tables: {listed}")
    print(f"report: {(config.out / 'report.html').resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``ecco-core corpus ...`` without importing the rest of the command line (fast checks)."""
    parser = _Parser(prog="ecco-core corpus", description=DESCRIPTION)
    add_arguments(parser)
    try:
        args = parser.parse_args(sys.argv[2:] if argv is None else argv)
    except CorpusInputError as exc:
        print(f"ecco-core: error: {exc}", file=sys.stderr)
        return 2
    return run(args)
