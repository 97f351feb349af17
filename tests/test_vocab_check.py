"""A GGUF whose vocabulary llama.cpp cannot load (byte-level BPE written as sentencepiece, as
the converter once did): `models list` flags it (probed once per file version, cached), and
`ask` refuses it with a message instead of the process aborting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baize_tui.cli import main
from baize_tui.paths import get_paths


@pytest.fixture(scope="module")
def broken_and_good(family, tmp_path_factory) -> tuple[Path, Path]:
    import baize_convert.pipeline as pipeline
    from baize_convert.pipeline import MergeRequest, run_merge
    from baize_convert.vocab import load_vocab

    out_dir = tmp_path_factory.mktemp("vocab")
    good = out_dir / "good-smollm.gguf"
    run_merge(MergeRequest(base=str(family["smollm"]), loras=[], output=good), quiet=True)

    def as_sentencepiece(directory: Path, rows: int):
        vocab = load_vocab(directory, rows)
        vocab.model, vocab.pre, vocab.merges = "llama", "default", []
        vocab.scores = [0.0] * len(vocab.tokens)
        return vocab

    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline, "load_vocab", as_sentencepiece)
    mp.setattr(pipeline, "check_vocab_loads", lambda path, final: None)  # the old converter
    try:
        broken = out_dir / "broken-smollm.gguf"
        run_merge(MergeRequest(base=str(family["smollm"]), loras=[], output=broken), quiet=True)
    finally:
        mp.undo()
    return broken, good


def _install(paths: tuple[Path, Path]) -> tuple[Path, Path]:
    models = get_paths().models_dir
    models.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        target = models / path.name
        target.write_bytes(path.read_bytes())
        out.append(target)
    return out[0], out[1]


def test_models_list_flags_an_unloadable_vocabulary_once(broken_and_good, capsys) -> None:
    import baize_tui.vocab_check as vc

    broken, good = _install(broken_and_good)
    assert main(["models", "list", "--json", "--no-hf-cache"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed[broken.name]["broken"] and "vocabulary" in listed[broken.name]["error"]
    assert not listed[good.name]["broken"]
    cache = json.loads((get_paths().cache_dir / vc.CACHE_NAME).read_text())
    assert cache[str(broken.resolve())]["error"] and cache[str(good.resolve())]["error"] is None

    # The verdict is cached: a second listing starts no probe.
    calls = []
    vc._memory.clear()
    import baize_convert.probe as probe

    original = probe.probe_vocab
    probe.probe_vocab = lambda path, timeout=0: calls.append(path) or original(path)
    try:
        assert main(["models", "list", "--no-hf-cache"]) == 0
    finally:
        probe.probe_vocab = original
    text = capsys.readouterr().out
    assert calls == [] and "BROKEN" in text and "cannot load its vocabulary" in text
    # A new version of the file is probed again.
    broken.write_bytes(broken_and_good[1].read_bytes())
    assert main(["models", "list", "--json", "--no-hf-cache"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert not listed[broken.name]["broken"]


def test_ask_refuses_the_file_instead_of_aborting(broken_and_good, capsys) -> None:
    broken, _ = broken_and_good
    code = main(["ask", "--model", str(broken), "--no-history", "-n", "4", "Hello"])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot use this model's vocabulary" in err and "Traceback" not in err


def test_ask_still_works_on_a_good_bpe_model(broken_and_good, capsys) -> None:
    _, good = broken_and_good
    assert main(["ask", "--model", str(good), "--no-history", "-n", "4", "--seed", "1",
                 "Hello"]) == 0


async def test_the_app_refuses_the_file_with_a_message(broken_and_good) -> None:
    from ui_helpers import wait_until

    from baize_tui.ui.app import BaizeApp

    broken, _ = broken_and_good
    app = BaizeApp(model=str(broken))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_state == "error", what="load refused")
        assert "cannot use this model's vocabulary" in app.model_error
        assert app.is_running
