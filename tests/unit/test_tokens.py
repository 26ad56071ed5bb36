from ecco_core.tokens import _byte_decoder, _from_bytes


def test_byte_level_markers_become_text() -> None:
    assert _from_bytes("ĠParis") == " Paris"
    assert _from_bytes("Ċ") == "\n"
    assert _from_bytes("ĠÃ©") == " é"
    assert len(_byte_decoder()) == 256
    assert sorted(_byte_decoder().values()) == list(range(256))
