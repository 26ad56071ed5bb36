"""Files follow the umask, errors name the target, records load back from lists, hash by
content, and every spelling of a float type means the same thing."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given, settings

import ecco_core as ec
from ecco_core.convergence import unconverged, unconverged_steps
from ecco_core.dtypes import resolve_dtype, resolve_precision
from ecco_core.serialization import write_bytes_atomic, write_text_atomic
from ecco_core.testing import fixed_provenance

from .test_serialization import _envelope, any_record


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o000])
def test_new_files_follow_the_umask(mask: int, tmp_path: Path, umask: None) -> None:
    os.umask(mask)
    rec = ec.load_record(json.dumps(_envelope()))
    written = [
        rec.save(tmp_path / "r.json"),
        ec.Generation.save(rec, tmp_path / "s.json"),
    ]
    write_text_atomic(tmp_path / "t.txt", "text")
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    written += [tmp_path / "t.txt", tmp_path / "b.bin"]
    for path in written:
        assert _mode(path) == 0o666 & ~mask, path
    # A plain open() gives the same permissions: the reference.
    with open(tmp_path / "plain", "w"):
        pass
    assert _mode(tmp_path / "plain") == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b.bin",
        "plain",
        "r.json",
        "s.json",
        "t.txt",
    ]


def test_replacing_a_file_keeps_its_permissions(tmp_path: Path, umask: None) -> None:
    path = tmp_path / "r.json"
    path.write_text("{}")
    path.chmod(0o640)
    write_text_atomic(path, "[]")
    assert path.read_text() == "[]" and _mode(path) == 0o640


def test_write_errors_name_the_target_never_the_temporary_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "r.json"
    with pytest.raises(FileNotFoundError) as info:
        write_text_atomic(missing, "x")
    assert str(missing) in str(info.value) and ".tmp" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as folder_info:
        write_text_atomic(folder, "x")
    assert str(folder) in str(folder_info.value) and ".tmp" not in str(folder_info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder"]  # temporary file removed


def test_every_save_returns_the_path_it_wrote(tmp_path: Path) -> None:
    from ecco_adapters import html

    rec = ec.load_record(json.dumps(_envelope()))
    assert rec.save(str(tmp_path / "a.json")) == tmp_path / "a.json"
    assert isinstance(rec.save(tmp_path / "b.json"), Path)
    assert html.save(rec, tmp_path / "c.html") == tmp_path / "c.html"
    assert ec.load_record(tmp_path / "b.json") == rec


def test_load_records_reads_a_list_file_back(tmp_path: Path) -> None:
    first = ec.load_record(json.dumps(_envelope()))
    assert isinstance(first, ec.Generation)
    second = attrs.evolve(first, prompt="another prompt")
    path = tmp_path / "records.json"
    path.write_text(json.dumps([first.to_dict(), second.to_dict()]))
    assert ec.load_records(path) == (first, second)
    assert ec.load_records(str(path)) == (first, second)
    assert ec.load_records(path.read_text()) == (first, second)
    assert ec.load_records([first.to_dict()]) == (first,)
    assert ec.load_records(first.to_json()) == (first,)  # one record: a tuple of one
    with pytest.raises(ec.RecordFormatError, match=r"list of 2 records.*ec\.load_records"):
        ec.load_record(path)
    bad = [first.to_dict(), {"kind": "Nope", "version": 1, "data": {}}]
    with pytest.raises(ec.RecordFormatError, match="record 1: unknown record kind 'Nope'"):
        ec.load_records(json.dumps(bad))
    with pytest.raises(ec.RecordFormatError, match="expected a list of records"):
        ec.load_records(3)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(any_record)
def test_records_hash_by_content(record: ec.Provenance) -> None:
    again = ec.load_record(record.to_json())
    assert again == record and hash(again) == hash(record)
    assert len({record, again}) == 1


def test_equal_records_hash_equal_across_float_types_and_signed_zero() -> None:
    values = np.array([[[0.0, 1.5]], [[-0.0, 2.0]]])
    common = {
        "layers": [0, 1],
        "layer_labels": ["layer 0", "layer 1"],
        "stack": "decoder",
        "token_ids": [5, 6],
        "tokens": ["a", "b"],
        "n_input_tokens": 2,
        "provenance": fixed_provenance("m", "activations", layers=[0, 1]),
    }
    a = ec.Activations(values=values.astype(np.float32), **common)
    b = ec.Activations(values=(values * -1 * -1).astype(np.float16) + 0.0, **common)
    assert a == b and hash(a) == hash(b)
    c = attrs.evolve(a, tokens=["a", "c"])
    assert a != c and hash(a) != hash(c)
    assert {a: 1}[b] == 1


@pytest.mark.parametrize(
    ("spellings", "dtype"),
    [
        (["bf16", "bfloat16", "BF16", "torch.bfloat16", torch.bfloat16], torch.bfloat16),
        (["fp16", "float16", "half", torch.float16, torch.half], torch.float16),
        (["fp32", "float32", "float", "torch.float32", torch.float32], torch.float32),
        (["fp64", "float64", "double", torch.float64], torch.float64),
    ],
)
def test_every_dtype_spelling_means_the_same_type(spellings: list, dtype: torch.dtype) -> None:
    assert [resolve_dtype(s) for s in spellings] == [dtype] * len(spellings)


@pytest.mark.parametrize("bad", ["bf8", "int8", torch.int64, 16, None, ""])
def test_unknown_dtype_spellings_are_refused_with_the_valid_ones(bad: object) -> None:
    with pytest.raises(ec.InvalidArgumentError, match=r"dtype=.* use one of 'bf16', 'bfloat16'"):
        resolve_dtype(bad)


def test_precision_accepts_the_dtype_spellings() -> None:
    for value in ("bf16", "bfloat16", torch.bfloat16, "BFloat16"):
        assert resolve_precision(value) == "bf16"
    for value in ("fp32", "float32", torch.float32, "float"):
        assert resolve_precision(value) == "fp32"
    assert resolve_precision("tf32") == "tf32"
    for bad in ("fp16", torch.float16, "int8", None):
        with pytest.raises(ec.InvalidArgumentError, match=r"precision=.*'fp32'.*'tf32'.*'bf16'"):
            resolve_precision(bad)


def test_unconverged_steps_follow_the_completeness_rule() -> None:
    values = np.array([0.5, -0.2, 0.0, 1.0])
    delta = np.array([0.03, 0.0105, 1e-12, -0.0499])
    # |delta| > 0.05 * |value|: 0.03 > 0.025; 0.0105 > 0.01; 1e-12 > 5e-11 is false; 0.0499 < 0.05
    assert unconverged(delta, values).tolist() == [True, True, False, False]
    assert unconverged(delta, values, tolerance=0.2).tolist() == [False, False, False, False]
    assert unconverged(np.zeros(0), values).tolist() == [False] * 4
    with pytest.raises(ec.InvalidArgumentError, match="same shape"):
        unconverged(delta[:2], values)
    with pytest.raises(ec.InvalidArgumentError, match="tolerance"):
        unconverged(delta, values, tolerance=-1)


def test_unconverged_steps_of_a_record() -> None:
    rec = ec.Attributions(
        scores=np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]),
        values=np.zeros((0, 0, 0)),
        token_ids=np.array([1, 2, 3]),
        tokens=["a", "b", "c"],
        n_input_tokens=2,
        n_encoder_tokens=0,
        target_positions=np.array([2, 2]),
        target_ids=np.array([3, 3]),
        foil_id=-1,
        target_values=np.array([0.4, 0.4]),
        convergence_delta=np.array([0.1, 0.001]),
        method="integrated_gradients",
        target="probability",
        aggregation="l2",
        baseline="zeros",
        precision="fp32",
        precision_deviation=0.0,
        provenance=fixed_provenance("m", "attribute"),
    )
    assert unconverged_steps(rec).tolist() == [True, False]
    assert unconverged_steps(attrs.evolve(rec, convergence_delta=np.zeros(0))).tolist() == [
        False,
        False,
    ]
    assert issubclass(ec.ConvergenceWarning, UserWarning)
    assert issubclass(ec.ConvergenceWarning, ec.EccoWarning)
