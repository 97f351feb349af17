"""Models: find GGUFs on disk (:mod:`.discovery`), get them from the Hugging Face hub
(:mod:`.hub`, :mod:`.downloader`), and build known Baize models from adapters or HF weights (:mod:`.recipes`).

Every public name is importable from ``baize_tui.models`` itself. Progress is reported through
a plain callback ``progress(stage, done, total)`` (:data:`ProgressFn`) so the CLI (rich) and the
TUI (messages from a worker thread) can both draw it."""

from __future__ import annotations

from baize_tui.models.discovery import (
    DEFAULT_QUANT,
    ModelFile,
    ProgressFn,
    check_vocabularies,
    default_model,
    describe,
    find_model,
    hf_cache_dir,
    list_models,
    read_gguf_header,
    remove_model,
    search_dirs,
    set_default,
)
from baize_tui.models.downloader import (
    CHUNK,
    DISK_MARGIN,
    DOWNLOAD_RETRIES,
    RETRY_WAIT,
    RemoteFile,
    download,
    download_to_cache,
    pull_gguf,
    remote_file,
)
from baize_tui.models.hub import (
    HUB_DEFAULT_ENDPOINT,
    HubFile,
    PullCancelled,
    choose_gguf,
    hub_endpoint,
    hub_errors,
    is_offline,
    list_hub_files,
)
from baize_tui.models.recipes import (  # noqa: F401 (imported by tests and other modules)
    KQUANT_SECONDS_PER_B,
    MERGE_SECONDS_PER_B,
    RecipePlan,
    _weight_files,
    plan_recipe,
    pull,
    run_recipe,
)

__all__ = [
    "ProgressFn",
    "DEFAULT_QUANT",
    "read_gguf_header",
    "ModelFile",
    "describe",
    "hf_cache_dir",
    "search_dirs",
    "default_model",
    "list_models",
    "check_vocabularies",
    "find_model",
    "set_default",
    "remove_model",
    "DOWNLOAD_RETRIES",
    "RETRY_WAIT",
    "CHUNK",
    "DISK_MARGIN",
    "HUB_DEFAULT_ENDPOINT",
    "PullCancelled",
    "is_offline",
    "hub_endpoint",
    "hub_errors",
    "HubFile",
    "list_hub_files",
    "choose_gguf",
    "pull_gguf",
    "RemoteFile",
    "remote_file",
    "download",
    "download_to_cache",
    "MERGE_SECONDS_PER_B",
    "KQUANT_SECONDS_PER_B",
    "RecipePlan",
    "plan_recipe",
    "run_recipe",
    "pull",
]
