"""LoRA fine-tuning runs: data and label masking, the trainer entry, run control.

Nothing here imports torch, transformers or peft at module level; the heavy work happens in
functions (tokenization, :mod:`baize_tui.train.worker`) that import them when called.

Modules:

``settings``
    :class:`~baize_tui.train.settings.TrainConfig`: every setting with Baize's defaults,
    presets, TOML in and out, validation.
``data``
    read Baize release JSON, self-chat exports and chat-messages JSONL; split; render in the
    Baize format; tokenize with ``--loss all|ai`` label masks.
``runs``
    the run directory and its files (``config.toml``, ``run.json``, ``status.json``,
    ``metrics.jsonl``, ``control.json``, ``train.log``); start, stop, resume, list, and
    incremental readers for a UI. This is the headless API the TUI screen uses.
``packing``
    ``--packing``: padding-free micro-batches, attention kept inside each sample (FlashAttention
    varlen or per-sample SDPA), the isolation probe; ``--group-by-length``, ``--kernels``.
``worker``
    ``python -m baize_tui.train.worker --run DIR``: the trainer process itself
    (transformers ``Trainer`` + peft LoRA).
"""
