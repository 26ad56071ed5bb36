from __future__ import annotations

import json

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
