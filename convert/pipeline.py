"""The ``merge`` and ``lora`` commands end to end: resolve inputs, validate everything before
heavy work, check disk space, stream into a temporary file, self-check, rename into place."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from baize_convert import ConvertError, ConvertFailed
from baize_convert.checkpoint import Checkpoint
from baize_convert.gguf_export import (
    gguf_name_for,
    hf_to_gguf_qk,
    plan_tensors,
    qk_heads,
    write_gguf,
)
from baize_convert.hf_export import HFShardWriter
from baize_convert.hub import resolve_dir, resolve_model_dir
from baize_convert.inspect_gguf import open_header
from baize_convert.lora import Adapter
from baize_convert.quantize import QuantType, llama_quantize, parse_quant
from baize_convert.vocab import Vocab, load_vocab
from baize_tui.catalog import base_for_adapter
from baize_tui.faults import ENVIRONMENT_ERRNOS
from baize_tui.formatting import human_bytes

ADAPTER_PATTERNS = ["adapter_config.json", "adapter_model.bin", "adapter_model.safetensors"]
DISK_MARGIN = 64 * 1024**2


@dataclass
class MergeRequest:
    """What ``baize-convert merge`` was asked to do."""

    base: str | None
    loras: list[str]
    quant: str = "f16"
    output: Path | None = None
    hf_out: Path | None = None
    name: str | None = None
    force: bool = False
    template: str | None = None  # baize | base | FILE; None: what the adapter was trained in


@dataclass
class MergeResult:
    """What was written."""

    output: Path
    quant: QuantType
    size: int
    seconds: float
    peak_rss: int
    hf_out: Path | None = None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024




def _spec_name(spec: str) -> str:
    return Path(spec.rstrip("/")).name


def resolve_base_spec(base: str | None, loras: list[str], adapters: list[Adapter]) -> str:
    """The base to use: given, a known Baize adapter's base, or the adapter's recorded base."""
    if base:
        return base
    for spec in loras:
        known = base_for_adapter(spec)
        if known:
            return known
    for adapter in adapters:
        if adapter.base_model:
            return adapter.base_model
    if loras:
        raise ConvertError(
            f"--base is required: adapter {loras[0]} does not name its base model "
            "(Baize v1 adapters say null); pass e.g. --base huggyllama/llama-7b"
        )
    raise ConvertError("nothing to convert: give --base (and optionally --lora)")


# Adapter folder names that say nothing about the model (a training run's ``run/adapter``).
_GENERIC_ADAPTER_NAMES = re.compile(r"^(adapter|adapters|lora|final|output|checkpoint-\d+)$")


def model_name(base_spec: str, loras: list[str], given: str | None = None) -> str:
    """``general.name``: ``--name``, else the adapter's name (``baize-lora-7B``), else
    ``<base>-<run dir>`` for a run's generic ``adapter`` folder, else the base's name."""
    if given:
        return given
    base = _spec_name(base_spec) or "model"
    if not loras:
        return base
    spec = loras[-1].rstrip("/")
    name = _spec_name(spec)
    if _GENERIC_ADAPTER_NAMES.match(name):
        parent = Path(spec).parent.name or "lora"
        return f"{base}-{parent}"
    return name


def default_output(request: MergeRequest, qt: QuantType, base_spec: str) -> Path:
    """A descriptive name in the current directory, e.g. ``baize-lora-7B-Q4_K_M.gguf``."""
    stem = model_name(base_spec, request.loras, request.name)
    return Path.cwd() / f"{stem}-{qt.label}.gguf"


def check_output(path: Path, force: bool) -> None:
    """Refuse to overwrite without --force; the directory must exist."""
    if path.exists() and not force:
        raise ConvertError(f"{path} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise ConvertError(f"{path.parent}: output directory does not exist")
    if path.is_dir():
        raise ConvertError(f"{path} is a directory; give a file name ending in .gguf")


# What --hf-out writes; a directory holding anything else is not replaced even with --force.
_HF_OUT_FILES = re.compile(r"^(config\.json|generation_config\.json|model[-\w.]*\.safetensors"
                           r"|model\.safetensors\.index\.json|tokenizer[\w.]*|special_tokens_map\.json"
                           r"|added_tokens\.json)$")


def check_hf_out(path: Path | None, output: Path, force: bool) -> Path | None:
    """Validate ``--hf-out`` before any work: never a file, never the GGUF's directory, and
    with ``--force`` only a directory that holds nothing but a model is replaced."""
    if path is None:
        return None
    path = path.expanduser().absolute()
    if output == path or output.is_relative_to(path):
        raise ConvertError(f"--hf-out {path} would contain the GGUF {output}; use a separate directory")
    if not path.exists():
        if not path.parent.is_dir():
            raise ConvertError(f"{path.parent}: directory for --hf-out does not exist")
        return path
    if not path.is_dir():
        raise ConvertError(f"--hf-out {path} exists and is not a directory")
    if not force:
        raise ConvertError(f"{path} exists; pass --force to overwrite it")
    strangers = sorted(p.name for p in path.iterdir() if not _HF_OUT_FILES.match(p.name))
    if strangers:
        raise ConvertError(
            f"--hf-out {path} holds files that are not part of a model ({', '.join(strangers[:3])}); "
            "refusing to replace it, choose a new directory"
        )
    return path


def replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` into place as ``target``, replacing an old one only once ``new`` is there."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.{os.getpid()}.old"
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_disk(directory: Path, needed: int, what: str) -> None:
    """Fail before starting when ``directory`` has less free space than ``needed``."""
    free = shutil.disk_usage(directory).free
    if free < needed + DISK_MARGIN:
        raise ConvertFailed(
            f"not enough disk space in {directory}: {what} needs about {human_bytes(needed)} "
            f"plus a {human_bytes(DISK_MARGIN)} safety margin, {human_bytes(free)} free; free "
            "some space or choose another -o directory"
        )


def _pid_alive(pid: int) -> bool:
    from baize_tui.procs import process_alive

    return process_alive(pid)


def remove_stale_partials(final: Path, tag: str) -> None:
    """Delete ``.NAME.PID.TAG`` files/dirs beside ``final`` whose process no longer runs."""
    if not final.parent.is_dir():
        return
    prefix = f".{final.name}."
    for path in final.parent.glob(f"{glob.escape(prefix)}*.{tag}"):
        pid = path.name[len(prefix):-len(tag) - 1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def temporary_output(final: Path, tag: str = "partial") -> Iterator[Path]:
    """A temp path beside ``final`` that is removed unless the caller renamed it.

    Leftovers of earlier runs that were killed (their process is gone) are removed first.
    """
    remove_stale_partials(final, tag)
    tmp = final.parent / f".{final.name}.{os.getpid()}.{tag}"
    try:
        yield tmp
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRNOS and str(exc.filename or "").startswith(str(tmp)):
            from baize_tui.safe_write import describe_os_error

            # name the output the user asked for, not the temp file that is about to go
            raise ConvertFailed(describe_os_error(final, OSError(exc.errno, exc.strerror),
                                                  "not written, the partial file was removed")
                                ) from exc
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def check_vocab_loads(path: Path, final: Path) -> None:
    """Load the written vocabulary in llama.cpp (in a child process); fail if it cannot.

    ``path`` is the temporary file: on failure the caller's cleanup deletes it, so a file
    llama.cpp would abort on never reaches ``final``.
    """
    from baize_convert.probe import probe_vocab

    result = probe_vocab(path)
    if not result.ok:
        raise ConvertFailed(
            f"{final}: not written: llama.cpp cannot use the vocabulary that was converted "
            f"({result.reason}). The tokenizer of the base was not written the way llama.cpp "
            "reads it; please report this with the base's tokenizer files"
        )


def _progress(total_bytes: int, n_tensors: int, label: str):
    """A rich progress bar over bytes, with a tensor count and an ETA."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
        TextColumn("{task.fields[tensors]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        transient=True, redirect_stdout=False,
    )
    task = progress.add_task(label, total=total_bytes, tensors=f"0/{n_tensors} tensors")
    return progress, task


def open_inputs(base: str | None, loras: list[str]) -> tuple[Checkpoint, list[Adapter]]:
    """Resolve and validate base and adapters (cheap: nothing heavy is read yet)."""
    adapters = [Adapter.open(resolve_dir(spec, what="LoRA adapter", allow_patterns=ADAPTER_PATTERNS))
                for spec in loras]
    base_spec = resolve_base_spec(base, loras, adapters)
    ckpt = Checkpoint.open(resolve_model_dir(base_spec, what="base model"))
    for adapter in adapters:
        adapter.check_against(ckpt)
    return ckpt, adapters


ProgressCallback = Callable[[str, int, "int | None"], None]


def _guard_inputs(output: Path, ckpt: Checkpoint, adapters: list[Adapter], base_spec: str,
                  quiet: bool) -> None:
    """Refuse an output that is an input; warn when an adapter names another base."""
    from baize_convert.guards import base_mismatch_warning, check_output_not_input

    check_output_not_input(output, [ckpt.directory, *(a.directory for a in adapters)])
    for adapter in adapters:
        warning = base_mismatch_warning(adapter.directory, adapter.base_model, base_spec,
                                        ckpt.directory)
        if warning:
            print(f"baize-convert: {warning}", file=sys.stderr)


def run_merge(request: MergeRequest, *, quiet: bool = False,
              progress_cb: ProgressCallback | None = None) -> MergeResult:
    """Merge, convert and (optionally) quantize; prints progress and a summary line.

    ``progress_cb(stage, done, total)`` (bytes of float32 input, or None when unknown) lets
    a UI follow along; it is called from this thread after every tensor.
    """
    started = time.monotonic()
    qt = parse_quant(request.quant)
    if not request.loras and not request.base:
        raise ConvertError("nothing to convert: give --base (and optionally --lora)")
    base_hint = request.base or ""
    output = (request.output or default_output(
        request, qt, base_hint or base_for_adapter(request.loras[0]) or "")).expanduser().absolute()
    check_output(output, request.force)  # before any download
    hf_out = check_hf_out(request.hf_out, output, request.force)
    ckpt, adapters = open_inputs(request.base, request.loras)
    _guard_inputs(output, ckpt, adapters, request.base or str(ckpt.directory), quiet)
    if hf_out is not None:
        for source in [ckpt.directory, *(a.directory for a in adapters)]:
            source = source.resolve()
            if hf_out.resolve() == source or source.is_relative_to(hf_out.resolve()) \
                    or hf_out.resolve().is_relative_to(source):
                raise ConvertError(f"--hf-out {hf_out} overlaps the input {source}; choose a new directory")
    base_spec = request.base or str(ckpt.directory)
    vocab = load_vocab(ckpt.directory, ckpt.vocab_rows)
    template = choose_template(request.template, adapters, vocab)
    write_qt = parse_quant("f16") if qt.via_llama else qt
    plans = plan_tensors(ckpt, write_qt)
    single_pass = sum(p.nbytes for p in plans)
    needed = single_pass + (int(ckpt.n_params * qt.bits_per_weight / 8) if qt.via_llama else 0)
    check_disk(output.parent, needed, f"writing {output.name}")
    name = model_name(base_spec, request.loras, request.name)

    total_in = sum(ckpt.refs[p.hf_name].n_elements * 4 for p in plans)
    progress, task = _progress(total_in, len(plans), f"merging → {write_qt.label}")
    done = [0, 0]  # tensors, bytes of float32 input

    def on_tensor(p) -> None:
        nbytes = ckpt.refs[p.hf_name].n_elements * 4
        done[0] += 1
        done[1] += nbytes
        progress.update(task, advance=nbytes, tensors=f"{done[0]}/{len(plans)} tensors")
        if progress_cb is not None:
            progress_cb(f"converting to {write_qt.label}", done[1], total_in)

    hf_writer = None
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(temporary_output(output))
        hf_tmp = None
        if hf_out is not None:
            hf_tmp = stack.enter_context(temporary_output(hf_out, "partial-dir"))
            hf_writer = HFShardWriter(hf_tmp, ckpt, [p.hf_name for p in plans
                                                     if p.hf_name not in ckpt.generated])
            check_disk(hf_out.parent, hf_writer.total + needed, "--hf-out and the GGUF")
        if not quiet:
            stack.enter_context(progress)
        try:
            write_gguf(tmp, ckpt, adapters, vocab, plans, name=name,
                       file_type=int(write_qt.file_type), chat_template=template,
                       on_tensor=on_tensor, hf_sink=hf_writer.write if hf_writer else None)
        except BaseException:
            if hf_writer:
                hf_writer.abort()
            raise
        if qt.via_llama:
            progress.update(task, description=f"quantizing → {qt.label} (llama.cpp)")
            if progress_cb is not None:
                progress_cb(f"quantizing to {qt.label}", 0, None)
            quant_tmp = stack.enter_context(temporary_output(output, "quant"))
            llama_quantize(tmp, quant_tmp, qt)
            tmp.unlink()
            quant_tmp.rename(tmp)
        self_check(tmp, qt, len(plans))
        check_vocab_loads(tmp, output)
        os.replace(tmp, output)
        if hf_writer and hf_tmp is not None and hf_out is not None:
            hf_writer.finish(vocab.bos_id, vocab.eos_id)
            replace_dir(hf_tmp, hf_out)
    result = MergeResult(output, qt, output.stat().st_size, time.monotonic() - started,
                         peak_rss_bytes(), hf_out)
    if not quiet:
        extra = f"; HF shards in {result.hf_out}" if result.hf_out else ""
        print(f"wrote {result.output} ({qt.label}, {human_bytes(result.size)}) in "
              f"{result.seconds:.1f} s, peak memory {human_bytes(result.peak_rss)}{extra}")
    return result


def choose_template(choice: str | None, adapters: list[Adapter], vocab: Vocab) -> str:
    """The chat template to embed, and the end-of-turn id that goes with it (set on vocab)."""
    from baize_convert.templates import resolve_template

    text, eot = resolve_template(choice, [a.directory for a in adapters], vocab)
    vocab.eot_id = eot
    return text


def self_check(path: Path, qt: QuantType, n_tensors: int) -> None:
    """Reopen the written file: tensor count and file type must be what was asked."""
    header = open_header(path)
    if len(header.tensors) != n_tensors:
        raise ConvertFailed(f"{path}: wrote {len(header.tensors)} tensors, expected {n_tensors}")
    if header.get(gguf.Keys.General.FILE_TYPE) != int(qt.file_type):
        raise ConvertFailed(f"{path}: general.file_type is not {qt.label}")


def run_lora_export(lora: str, *, base: str | None, output: Path | None, outtype: str = "f32",
                    force: bool = False, quiet: bool = False) -> Path:
    """Write one adapter as a GGUF LoRA adapter for ``Llama(lora_path=...)``.

    Only the base's config is needed (shapes and head counts), so a hub base is not
    downloaded whole.
    """
    output = (output or Path.cwd() / f"{_spec_name(lora)}-LoRA-{outtype.upper()}.gguf").absolute()
    check_output(output, force)
    adapter_dir = resolve_dir(lora, what="LoRA adapter", allow_patterns=ADAPTER_PATTERNS)
    adapter = Adapter.open(adapter_dir)
    if adapter.config.get("rank_pattern") or adapter.config.get("alpha_pattern"):
        raise ConvertError(f"{adapter_dir}: rank_pattern/alpha_pattern adapters cannot be GGUF adapters")
    base_spec = resolve_base_spec(base, [lora], [adapter])
    ckpt = Checkpoint.open(resolve_model_dir(base_spec, what="base model", weights=False),
                           weights=False)
    adapter.check_against(ckpt)
    dtype = np.float16 if outtype == "f16" else np.float32
    alpha = adapter.alpha * np.sqrt(adapter.r) if adapter.use_rslora else adapter.alpha
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, ckpt.n_layers)
    heads = (ckpt.n_head, ckpt.n_head_kv)
    with temporary_output(output) as tmp:
        writer = gguf.GGUFWriter(tmp, "llama")
        try:
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_name(model_name(base_spec, [lora]))
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
            for hf_name in sorted(adapter.pairs):
                pair = adapter.pairs[hf_name]
                gname = gguf_name_for(hf_name, name_map)
                b = pair.b
                n_head = qk_heads(hf_name, heads)
                if n_head is not None:
                    b = hf_to_gguf_qk(b, n_head)  # B's rows are the output rows; A is unchanged
                writer.add_tensor(f"{gname}.lora_a", pair.a.astype(dtype))
                writer.add_tensor(f"{gname}.lora_b", np.ascontiguousarray(b, dtype=dtype))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        # An adapter has no vocabulary to probe; check that it reads back as what was meant.
        header = open_header(tmp)
        if header.get(gguf.Keys.Adapter.TYPE) != "lora" or \
                len(header.tensors) != 2 * len(adapter.pairs):
            raise ConvertFailed(f"{output}: not written: the adapter did not read back whole")
        os.replace(tmp, output)
    if not quiet:
        print(f"wrote {output} (LoRA adapter, {len(adapter.pairs)} modules, r={adapter.r}, "
              f"{human_bytes(output.stat().st_size)})")
    return output


__all__ = ["MergeRequest", "MergeResult", "run_merge", "run_lora_export"]
