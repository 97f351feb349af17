"""The package installs, starts light, and puts its files where ``paths`` says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from baize_tui.config import dumps_toml, load_config, set_value
from baize_tui.errors import UserError
from baize_tui.paths import get_paths

BIN = Path(sys.executable).parent
HEAVY = ("torch", "transformers", "peft", "datasets", "accelerate")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "code",
    [
        "import baize_tui",
        "from baize_tui.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "from baize_convert.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ],
    ids=["import", "baize-tui --help", "baize-convert --help"],
)
def test_startup_does_not_import_heavy_libraries(code: str) -> None:
    probe = code + f"\nimport sys\nprint('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    out = run_cli(sys.executable, "-c", probe)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.split("LOADED", 1)[1].strip()
    assert loaded == "[]", f"heavy modules imported at start-up: {loaded}"


def test_console_scripts_help() -> None:
    for script, word in (("baize-tui", "paths"), ("baize-convert", "merge")):
        out = run_cli(str(BIN / script), "--help")
        assert out.returncode == 0, out.stderr
        assert word in out.stdout


def test_paths_follow_baize_home(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    env = {**os.environ, "BAIZE_HOME": str(home)}
    out = run_cli(str(BIN / "baize-tui"), "paths", "--json", env=env)
    assert out.returncode == 0, out.stderr
    locations = json.loads(out.stdout)
    assert {"config", "data", "cache", "history", "models"} <= set(locations)
    for name, value in locations.items():
        assert Path(value).is_relative_to(home), (name, value)
    assert locations["history"].endswith(".sqlite3")
    one = run_cli(str(BIN / "baize-tui"), "paths", "history", env=env)
    assert one.stdout.strip() == locations["history"]
    bad = run_cli(str(BIN / "baize-tui"), "paths", "nowhere", env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "history" in bad.stderr


def test_paths_without_baize_home_use_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BAIZE_HOME")
    paths = get_paths()
    assert "baize-tui" in str(paths.config_dir) and "baize-tui" in str(paths.data_dir)


def test_config_defaults_roundtrip_and_errors(baize_home: Path) -> None:
    assert load_config()["model"]["default"] == ""
    set_value("model.default", "/models/baize \"q4\".gguf")
    set_value("ui.keymap", {"send": "ctrl+s"})
    cfg = load_config()
    assert cfg["model"]["default"] == "/models/baize \"q4\".gguf"
    assert cfg["ui"]["keymap"] == {"send": "ctrl+s"}
    assert cfg["openai"]["base_url"] == ""  # defaults survive partial files
    get_paths().config_file.write_text("this is = = not toml")
    with pytest.raises(UserError, match="config.toml"):
        load_config()


def test_dumps_toml_is_valid_toml() -> None:
    import tomllib

    data = {"a": {"x": 1, "y": [1.5, "two"], "z": True, "s": "tab\tand \"quote\" 你好"},
            "b": {"c": {"d": "deep"}}}
    assert tomllib.loads(dumps_toml(data)) == data


def test_wheel_holds_every_package_and_no_bare_convert(tmp_path: Path) -> None:
    """A non-editable install gets every subpackage, the .tcss files, and baize_convert."""
    import zipfile

    root = Path(__file__).resolve().parents[1]
    out = run_cli(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(tmp_path), str(root))
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("baize_tui-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"baize_tui/{p.relative_to(root / 'baize_tui')}" for p in (root / "baize_tui").rglob("*.py")}
    expected |= {f"baize_convert/{p.relative_to(root / 'convert')}" for p in (root / "convert").rglob("*.py")}
    expected |= {f"baize_tui/{p.relative_to(root / 'baize_tui')}" for p in (root / "baize_tui").rglob("*.tcss")}
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith(("convert/", "tests/")) for n in names)
