"""Where baize-tui keeps its files.

Locations follow the platform's conventions (platformdirs). Setting ``BAIZE_HOME=DIR``
moves all of them under ``DIR`` (``DIR/config``, ``DIR/data``, ``DIR/cache``), which is
what tests and portable installs use. This module is the one place that knows paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "baize-tui"
HOME_ENV = "BAIZE_HOME"


@dataclass(frozen=True)
class AppPaths:
    """The directories and files of one installation."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path

    @property
    def config_file(self) -> Path:
        """The TOML settings file."""
        return self.config_dir / "config.toml"

    @property
    def history_db(self) -> Path:
        """The SQLite database holding every conversation."""
        return self.data_dir / "history.sqlite3"

    @property
    def models_dir(self) -> Path:
        """Where downloaded and converted GGUF files go."""
        return self.data_dir / "models"

    @property
    def selfchat_dir(self) -> Path:
        """Default parent of self-chat run directories."""
        return self.data_dir / "selfchat"

    @property
    def runs_dir(self) -> Path:
        """Default parent of fine-tuning run directories."""
        return self.data_dir / "runs"

    @property
    def log_file(self) -> Path:
        """The application log (never contains API keys)."""
        return self.cache_dir / "baize-tui.log"

    def as_dict(self) -> dict[str, Path]:
        """Every location by name, in the order ``baize-tui paths`` prints them."""
        return {
            "config": self.config_file,
            "data": self.data_dir,
            "cache": self.cache_dir,
            "history": self.history_db,
            "models": self.models_dir,
            "selfchat": self.selfchat_dir,
            "runs": self.runs_dir,
            "log": self.log_file,
        }


def get_paths() -> AppPaths:
    """Resolve the locations now (``BAIZE_HOME`` is read on every call)."""
    home = os.environ.get(HOME_ENV)
    if home:
        root = Path(home).expanduser().absolute()
        return AppPaths(root / "config", root / "data", root / "cache")
    import platformdirs

    return AppPaths(
        Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
    )
