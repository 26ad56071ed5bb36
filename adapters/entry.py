"""The ``ecco-core`` command: ``corpus`` goes to its own light front end, which checks its input
in well under two seconds (before torch is imported); every other command to :mod:`.cli`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ecco-core`` script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["corpus"]:
        from .corpus.cli import main as corpus_main

        return corpus_main(args[1:])
    from .cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
