"""The fast header reader agrees with gguf's own GGUFReader and names every breakage."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from baize_tui.gguf_header import ArrayInfo, GGUFHeaderError, read_header


def test_header_matches_gguf_reader(tiny_gguf: Path) -> None:
    ours = read_header(tiny_gguf)
    ref = gguf.GGUFReader(tiny_gguf)
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for mine, theirs in zip(ours.tensors, ref.tensors, strict=True):
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        assert mine.type_id == int(theirs.tensor_type)
        assert ours.data_start + mine.offset == theirs.data_offset
        assert mine.n_bytes == theirs.n_bytes
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        value = ours.metadata[key]
        if isinstance(value, ArrayInfo):
            assert value.count == len(field.data), key
        elif isinstance(value, float):
            assert value == pytest.approx(field.contents()), key
        else:
            assert value == field.contents(), key
    assert ours.get("{arch}.context_length") == 512


def test_broken_files_raise_with_a_reason(tiny_gguf: Path, tmp_path: Path) -> None:
    data = tiny_gguf.read_bytes()
    cases = {
        "empty.gguf": (b"", "empty file"),
        "magic.gguf": (b"GGML" + data[4:], "not a GGUF file"),
        "cut-data.gguf": (data[: len(data) - 1000], "truncated"),
        "cut-header.gguf": (data[:200], "truncated header"),
        "v1.gguf": (data[:4] + (1).to_bytes(4, "little") + data[8:], "GGUF v1"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(GGUFHeaderError, match=reason):
            read_header(path)
    with pytest.raises(GGUFHeaderError, match="no such file"):
        read_header(tmp_path / "missing.gguf")
