from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import ecco_core as ec
from ecco_adapters.cli import main


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_report_writes_html_json_and_summary(tiny_path, tmp_path, capsys) -> None:
    out, records = tmp_path / "r.html", tmp_path / "r.json"
    code, stdout, _ = _run(
        [
            "report",
            "--model",
            str(tiny_path("gpt2")),
            "--prompt",
            "The Eiffel Tower is in",
            "--max-new-tokens",
            "3",
            "--attribution",
            "ig",
            "grad_x_input",
            "--nmf",
            "3",
            "--out",
            str(out),
            "--json",
            str(records),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    page = out.read_text()
    for kind in ("Generation", "LayerPredictions", "Rankings", "Attributions", "Factorization"):
        assert f'"kind": "{kind}"' in page
    loaded = [ec.load_record(e) for e in json.loads(records.read_text())]
    assert [type(r).__name__ for r in loaded] == [
        "Generation",
        "LayerPredictions",
        "Rankings",
        "Attributions",
        "Attributions",
        "Factorization",
    ]
    gen = loaded[0]
    assert isinstance(gen, ec.Generation)
    assert f"generated: {gen.text!r}" in stdout
    assert "first rank-1 layer" in stdout and "integrated_gradients: inputs behind" in stdout
    assert f"report: {out.resolve()}" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--prompt", "  "], "--prompt is empty"),
        (["report", "--prompt", "x", "--attribution", "magic"], "unknown attribution method"),
        (["report", "--prompt", "x", "--out", "/no/such/folder/r.html"], "does not exist"),
        (["report", "--prompt", "x", "--max-new-tokens", "0"], "at least 1"),
        (["report"], "required: --prompt"),
        (
            ["report", "--prompt", "x", "--model", "/no/such/model-folder", "--quiet"],
            "no such folder",
        ),
        (
            ["report", "--prompt", "x", "--model", "no-org/no-model-xyz", "--quiet"],
            "cannot load model",
        ),
        (["explain"], "invalid choice"),
    ],
)
def test_user_mistakes_are_one_line_exit_2(
    args: list[str], message: str, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, stderr = _run(args, capsys)
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_failure_while_computing_is_exit_1(tiny_path, tmp_path, capsys) -> None:
    code, _, stderr = _run(
        [
            "report",
            "--model",
            str(tiny_path("bert")),
            "--prompt",
            "hello there",
            "--out",
            str(tmp_path / "r.html"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 1 and "does not generate" in stderr and stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def _subprocess(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["report", "--help"],
        ["--version"],
        ["report"],
        ["report", "--prompt", " "],
        ["report", "--prompt", "x", "--out", "/no/such/folder/r.html"],
        ["report", "--prompt", "x", "--attribution", "ig", "no_such_method"],
        ["report", "--prompt", "x", "--dtype", "int8"],
        ["explain"],
    ],
)
def test_help_version_and_usage_errors_import_nothing_heavy(args: list[str], tmp_path) -> None:
    """They answer before torch, transformers or ecco_core is imported (seconds saved)."""
    code = (
        "import sys\n"
        "from ecco_adapters.cli import main\n"
        f"try:\n    code = main({args!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'ecco_core') if m in sys.modules)\n"
        "print('RESULT', code, heavy, file=sys.stderr)\n"
    )
    out = _subprocess(code, tmp_path)
    result = out.stderr.strip().splitlines()[-1]
    expected_code = 0 if args[-1] in ("--help", "--version") else 2
    assert result == f"RESULT {expected_code} []", out.stderr


def test_help_shows_defaults_and_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [
        ("--max-new-tokens", "4"),
        ("--nmf", "8"),
        ("--out", "report.html"),
        ("--model", "smollm2"),
        ("--device", "cpu"),
        ("--attribution", "integrated_gradients"),
    ]:
        assert option in text and f"(default: {default})" in text, option
    for option in ("--dtype", "--seed", "--sample", "--temperature", "--top-k", "--top-p"):
        assert option in text
    assert "--watch TOKEN [TOKEN ...]" in text and "--quiet" in text
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ecco-core {ec.__version__}"


def test_quiet_silences_every_progress_bar(tiny_path, tmp_path) -> None:
    argv = [
        "report",
        "--model",
        str(tiny_path("gpt2")),
        "--prompt",
        "the tower is",
        "--max-new-tokens",
        "2",
        "--nmf",
        "2",
        "--out",
        "r.html",
    ]
    code = "import sys\nfrom ecco_adapters.cli import main\nsys.exit(main({!r}))\n"
    loud = _subprocess(code.format(argv), tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr and "ecco-core:" in loud.stderr  # bars by default
    quiet = _subprocess(code.format([*argv, "--quiet"]), tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert "report:" in quiet.stdout


def test_report_options_reach_the_records(tiny_path, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        argv = [
            "report",
            "--model",
            str(tiny_path("gpt2")),
            "--prompt",
            "the tower is",
            "--max-new-tokens",
            "3",
            "--nmf",
            "50",
            "--attribution",
            "none",
            "--watch",
            " the",
            "er",
            "--sample",
            "--seed",
            "7",
            "--temperature",
            "0.8",
            "--top-k",
            "20",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--out",
            "r.html",
            "--json",
            "r.json",
            "--quiet",
        ]
        code, stdout, stderr = _run(argv, capsys)
        assert code == 0, stderr
        records = ec.load_records("r.json")
        first = (tmp_path / "r.json").read_text()
        assert main(argv) == 0  # the same seed gives the same records
        assert (tmp_path / "r.json").read_text() == first
    finally:
        os.umask(old)
    kinds = [type(r).__name__ for r in records]
    assert kinds == ["Generation", "LayerPredictions", "Rankings", "RankingsWatch", "Factorization"]
    gen, _, _, watch, nmf = records
    assert isinstance(gen, ec.Generation) and isinstance(watch, ec.RankingsWatch)
    params = gen.provenance.params
    assert (params["do_sample"], params["seed"], params["temperature"], params["top_k"]) == (
        True,
        7,
        0.8,
        20,
    )
    assert list(watch.watch_tokens) == [" the", "er"] and watch.position == gen.n_input_tokens
    assert "watched at position" in stdout
    assert isinstance(nmf, ec.Factorization) and nmf.n_components == gen.n_tokens
    assert f"ecco-core: note: --nmf 50 is more than the {gen.n_tokens} tokens" in stderr
    for name in ("r.html", "r.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-new-tokens", "500"], "lower --max-new-tokens to at most"),
        (["--dtype", "bf8"], "--dtype='bf8' is not a floating-point type"),
        (["--temperature", "0.5"], "--temperature only apply with --sample"),
        (["--json", "r.html"], "--out and --json name the same file"),
        (["--json", "/no/such/folder/r.json"], "--json: folder '/no/such/folder' does not exist"),
    ],
)
def test_report_mistakes_found_before_or_at_the_model_are_exit_2(
    extra: list[str], message: str, tiny_path, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [
        "report",
        "--model",
        str(tiny_path("gpt2")),
        "--prompt",
        "the tower is",
        "--out",
        "r.html",
        "--quiet",
        *extra,
    ]
    code, _, stderr = _run(argv, capsys)
    assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr
    assert list(tmp_path.iterdir()) == []
