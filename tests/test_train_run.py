"""Real training runs on the tiny LLaMA (CPU): the loss falls, the adapter loads in peft and
converts to a GGUF that matches peft's logits, and stop/resume continues the same run exactly."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from baize_tui.cli import main
from baize_tui.selfchat.transcript import render_baize
from baize_tui.train.runs import Run, request_stop, wait_run

DIALOGUES = [
    [("What is a LoRA adapter?", "A small low-rank update to the weights of a model."),
     ("Why use it?", "It trains fast and saves memory.")],
    [("Tell me a joke.", "Why did the chicken cross the road? To get to the other side!")],
    [("How do I print in Python?", "Use print('hello').")],
    [("What is 2 + 2?", "2 + 2 = 4."), ("And 3 + 3?", "3 + 3 = 6."), ("Thanks!", "You're welcome.")],
]
MAX_STEPS = 20


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two shared cores: OpenMP spinning on both makes tiny steps ten times slower."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small repeated dataset in Baize's released format (64 dialogues)."""
    path = tmp_path_factory.mktemp("data") / "baize.json"
    items = [{"topic": t[0][0], "input": render_baize(t)} for t in DIALOGUES * 16]
    path.write_text(json.dumps(items))
    return path


def run_args(tiny: dict[str, Path], data: Path, out: Path) -> list[str]:
    return ["train", "run", "--base", str(tiny["llama"]), "--data", str(data), "--out", str(out),
            "--max-steps", str(MAX_STEPS), "--batch-size", "8", "--micro-batch-size", "4",
            "--cutoff-len", "96", "--lr", "1e-2", "--warmup-steps", "0", "--val-size", "4",
            "--eval-steps", "10", "--save-steps", "10", "--template", "release", "--loss", "ai"]


def train_records(run: Run) -> list[dict]:
    return [r for r in run.metrics() if r["kind"] == "train"]


@pytest.fixture(scope="module")
def finished(tiny: dict[str, Path], data_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted 20-step run, followed with --wait."""
    out = tmp_path_factory.mktemp("runs") / "full"
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.setenv("CUDA_VISIBLE_DEVICES", "")
    mp.setenv("BAIZE_HOME", str(out.parent / "home"))
    try:
        code = main(run_args(tiny, data_file, out) + ["--wait"])
    finally:
        mp.undo()
    run = Run(out)
    assert code == 0, run.log_file.read_text()[-3000:]
    return run


def test_a_short_run_lowers_the_loss_and_reports(finished: Run) -> None:
    status = finished.status()
    assert status["state"] == "completed" and status["step"] == MAX_STEPS
    records = train_records(finished)
    assert [r["step"] for r in records] == list(range(1, MAX_STEPS + 1))
    first = sum(r["loss"] for r in records[:3]) / 3
    last = sum(r["loss"] for r in records[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    evals = [r for r in finished.metrics() if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20] and evals[1]["eval_loss"] < evals[0]["eval_loss"]
    for key in ("epoch", "lr", "tokens_per_s", "eta_s", "tokens_seen", "mem_alloc_mb"):
        assert key in records[-1]
    assert records[-1]["tokens_seen"] > records[0]["tokens_seen"] > 0
    assert [p.name for p in finished.checkpoints()] == ["checkpoint-10", "checkpoint-20"]
    assert not finished.alive()


def test_saved_adapter_loads_in_peft(finished: Run, tiny: dict[str, Path]) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adapter = finished.adapter_dir
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny["llama"])
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (8, 16, "LORA")
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "down_proj", "gate_proj", "up_proj"])
    weights = load_file(adapter / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in weights.items())  # it trained
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny["llama"]), adapter)
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert loaded and all(v.abs().max() > 0 for v in loaded.values())
    ids = torch.tensor([[1, 300, 400, 500]])
    with torch.no_grad():
        assert model(ids).logits.shape == (1, 4, 1000)


def test_adapter_converts_to_a_gguf_matching_peft(finished: Run, tiny: dict[str, Path],
                                                  tmp_path: Path) -> None:
    from baize_convert.pipeline import MergeRequest, run_merge
    from baize_convert.verify import verify_gguf

    out = tmp_path / "trained.gguf"
    # No --base: the converter takes it from the adapter's recorded base.
    run_merge(MergeRequest(base=None, loras=[str(finished.adapter_dir)], quant="f32", output=out),
              quiet=True)
    report = verify_gguf(out, str(tiny["llama"]), [str(finished.adapter_dir)])
    assert report.ok, report


def test_status_and_list_commands(finished: Run, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAIZE_HOME", str(finished.dir.parent / "home"))
    assert main(["train", "status", str(finished.dir)]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and f"{MAX_STEPS}/{MAX_STEPS}" in out and "adapter" in out
    assert "useful" in out and "raw" in out and "padding" in out
    assert main(["train", "list"]) == 0
    assert str(finished.dir) in capsys.readouterr().out
    assert main(["train", "resume", str(finished.dir)]) == 2
    assert "finished at step 20" in capsys.readouterr().err


def test_stop_then_resume_continues_the_same_run(finished: Run, tiny: dict[str, Path],
                                                 data_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "interrupted"
    assert main(run_args(tiny, data_file, out)) == 0  # returns once started
    run = Run(out)
    # A graceful stop after step 8 (the request is read at each step boundary): checkpoint, exit.
    assert main(["train", "stop", str(out), "--at-step", "8", "--timeout", "120"]) == 0
    status = run.status()
    assert status["state"] == "stopped" and status["step"] == 8, run.log_file.read_text()[-3000:]
    assert run.last_checkpoint().name == "checkpoint-8" and not run.alive()
    assert [r["step"] for r in train_records(run)] == list(range(1, 9))
    capsys.readouterr()

    # Resume, then stop after step 12 without saving, as a crash would: the newest checkpoint
    # is the periodic one at step 10, so steps 11 and 12 will be trained again.
    assert main(["train", "resume", str(out)]) == 0
    assert "from checkpoint-8" in capsys.readouterr().out
    request_stop(out, save=False, at_step=12)
    status = wait_run(out, poll=0.1, timeout=120)
    assert status["state"] == "stopped" and status["step"] == 12, run.log_file.read_text()[-3000:]
    assert run.last_checkpoint().name == "checkpoint-10"
    assert [r["step"] for r in train_records(run)] == list(range(1, 13))
    tail = run.metrics_tail()
    assert len(tail.read_new()[0]) == len(run.metrics())

    assert main(["train", "resume", str(out), "--wait"]) == 0, run.log_file.read_text()[-3000:]
    assert "from checkpoint-10" in capsys.readouterr().out
    records, reset = tail.read_new()
    assert reset  # metrics.jsonl was rewritten without steps 11-12: a tailing UI starts over
    assert records == run.metrics()
    records = train_records(run)
    assert [r["step"] for r in records] == list(range(1, MAX_STEPS + 1))  # none repeated/skipped
    assert [r["start_step"] for r in records] == [0] * 8 + [8, 8] + [10] * 10
    reference = train_records(finished)
    # Same samples at every step, and the same losses: the data order survived both restarts.
    assert [r["samples"] for r in records] == [r["samples"] for r in reference]
    for mine, ref in zip(records, reference, strict=True):
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-3), mine["step"]
    assert all(b["tokens_seen"] > a["tokens_seen"] for a, b in zip(records, records[1:], strict=False))
    assert run.status()["state"] == "completed" and (run.adapter_dir / "adapter_config.json").exists()
    assert len(json.loads(run.run_file.read_text())["launches"]) == 3


def test_stop_kill_cancels_at_the_next_step(tiny: dict[str, Path], data_file: Path,
                                            tmp_path: Path, capsys) -> None:
    out = tmp_path / "killed"
    args = run_args(tiny, data_file, out)
    args[args.index("--max-steps") + 1] = "500"
    assert main(args) == 0
    run = Run(out)
    pid = run.info()["pid"]
    assert os.getsid(pid) == pid != os.getsid(0)  # its own session: a closed terminal is no stop
    wait_for = time.monotonic() + 120
    while not train_records(run) and time.monotonic() < wait_for and run.alive():
        time.sleep(0.05)
    assert train_records(run), run.log_file.read_text()[-3000:]
    # SIGTERM to the group: the trainer leaves at the next step boundary, without saving.
    assert main(["train", "stop", str(out), "--kill"]) == 0
    status = run.status()
    assert not run.alive() and status["state"] == "cancelled", status
    steps = [r["step"] for r in train_records(run)]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] < 500
    assert main(["train", "stop", str(out)]) == 0
    assert "not running (cancelled)" in capsys.readouterr().out


def test_ai_loss_teaches_the_reply_and_the_stop_marker(tiny: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """Overfit one dialogue: greedy decoding of the chat prompt gives the reply, then [|Human|]."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from baize_tui.prompt import cut_reply, render

    question, answer = "What is the capital of France?", "Paris is the capital of France."
    record = {"messages": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": question},
                           {"role": "assistant", "content": answer}]}
    data = tmp_path / "one.jsonl"
    data.write_text((json.dumps(record) + "\n") * 32)
    out = tmp_path / "overfit"
    assert main(["train", "run", "--base", str(tiny["llama"]), "--data", str(data), "--out",
                 str(out), "--max-steps", "30", "--batch-size", "4", "--micro-batch-size", "4",
                 "--cutoff-len", "96", "--lr", "3e-2", "--warmup-steps", "0", "--val-size", "0",
                 "--save-steps", "100", "--loss", "ai", "--wait"]) == 0
    tokenizer = AutoTokenizer.from_pretrained(tiny["llama"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny["llama"]),
                                      Run(out).adapter_dir).eval()
    prompt = tokenizer(render("Be brief.", [], question), return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=40, do_sample=False)
    text = tokenizer.decode(generated[0, prompt["input_ids"].shape[1]:])
    assert text.startswith(answer + "\n[|Human|]"), text
    assert cut_reply(text) == answer


def test_a_vanished_trainer_reads_as_interrupted(tmp_path: Path) -> None:
    import subprocess
    import sys

    from baize_tui.train.runs import write_json_atomic
    from baize_tui.train.settings import TrainConfig

    run = Run(tmp_path / "run")
    run.dir.mkdir()
    run.config_file.write_text(TrainConfig(base="b", data=["d"]).to_toml())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    write_json_atomic(run.run_file, {"pid": int(gone), "launched": 1.0})
    write_json_atomic(run.status_file, {"state": "training", "step": 5, "updated": 2.0})
    (run.checkpoints_dir / "checkpoint-4").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (run.checkpoints_dir / "checkpoint-6").mkdir()  # incomplete: no trainer_state.json
    status = run.status()
    assert status["state"] == "interrupted" and "resume" in status["message"]
    assert "checkpoint-4" in status["message"]
    assert run.raw_status()["state"] == "training"  # the file itself is left alone
    # Our own pid with a command line that does not name the run is not the trainer either.
    write_json_atomic(run.run_file, {"pid": os.getpid(), "launched": time.time()})
    assert not run.alive()


def test_jsonl_tail_reads_whole_lines_once(tmp_path: Path) -> None:
    from baize_tui.train.runs import JsonlTail

    path = tmp_path / "m.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == ([], False)
    path.write_text('{"step": 1}\n{"step": 2')
    assert tail.read_new() == ([{"step": 1}], False)
    with open(path, "a") as fh:
        fh.write('}\n')
    assert tail.read_new() == ([{"step": 2}], False)
    assert tail.read_new() == ([], False)
    path.write_text('{"step": 1}\n')  # rewritten shorter
    assert tail.read_new() == ([{"step": 1}], True)


def test_several_gpus_go_through_accelerate_launch(tmp_path: Path) -> None:
    from baize_tui.train.runs import _launcher_argv

    run = Run(tmp_path)
    argv, launcher = _launcher_argv(run, 1, "auto", False)
    assert launcher == "python" and argv[1:] == ["-m", "baize_tui.train.worker", "--run",
                                                 str(run.dir)]
    argv, launcher = _launcher_argv(run, 4, "bf16", True)
    assert launcher == "accelerate" and argv[1:3] == ["-m", "accelerate.commands.launch"]
    for flag, value in (("--num_processes", "4"), ("--mixed_precision", "bf16"),
                        ("--num_machines", "1")):
        assert argv[argv.index(flag) + 1] == value
    assert "--multi_gpu" in argv and "--main_process_port" in argv
    assert argv[-5:] == ["-m", "baize_tui.train.worker", "--run", str(run.dir), "--resume"]


def test_out_of_memory_is_reported_with_settings_to_lower() -> None:
    from conftest import require_train_extra

    require_train_extra()
    import torch

    from baize_tui.train.settings import TrainConfig
    from baize_tui.train.worker import _is_oom, _oom_message

    config = TrainConfig(base="b", data=["d"], micro_batch_size=32, gradient_checkpointing=False)
    oom, where = _is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert (oom, where) == (True, "GPU")
    message = _oom_message(config, where)
    for hint in ("--micro-batch-size (now 32", "global batch at 64", "--cutoff-len (now 512)",
                 "gradient checkpointing", "--load-in 4bit"):
        assert hint in message
    assert _is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't "
                                "allocate memory"))[0]
    assert not _is_oom(ValueError("shapes differ"))[0]



def test_packed_run_resumes_in_order_and_matches_the_padded_run(tiny: dict[str, Path],
                                                                 data_file: Path,
                                                                 tmp_path: Path) -> None:
    """--packing trains the same micro-batches as padding does (same samples, same losses within
    float order, no padding), and a stop + resume neither repeats nor skips a sample. LoRA
    dropout is off: its random masks depend on the batch's shape, so they differ by design."""
    def args(out: Path) -> list[str]:
        found = run_args(tiny, data_file, out) + ["--lora-dropout", "0"]
        found[found.index("--max-steps") + 1] = "10"
        return found

    padded = Run(tmp_path / "padded")
    assert main(args(padded.dir) + ["--wait"]) == 0, padded.log_file.read_text()[-3000:]
    run = Run(tmp_path / "packed")
    assert main(args(run.dir) + ["--packing"]) == 0
    assert main(["train", "stop", str(run.dir), "--at-step", "4", "--timeout", "120"]) == 0
    assert run.status()["state"] == "stopped", run.log_file.read_text()[-3000:]
    assert main(["train", "resume", str(run.dir), "--wait"]) == 0, run.log_file.read_text()[-3000:]
    assert "packing: padding-free micro-batches" in run.log_file.read_text()
    records = train_records(run)
    reference = train_records(padded)
    assert [r["step"] for r in records] == list(range(1, 11))
    assert [r["start_step"] for r in records] == [0] * 4 + [4] * 6
    assert [r["samples"] for r in records] == [r["samples"] for r in reference]
    for mine, ref in zip(records, reference, strict=True):
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-4), mine["step"]
        assert mine["padding_fraction"] == 0.0 and ref["padding_fraction"] > 0
        assert mine["useful_tokens_per_s"] == mine["raw_tokens_per_s"] > 0
    assert records[-1]["tokens_seen"] == reference[-1]["tokens_seen"]


def test_length_grouped_run_resumes_in_order(tiny: dict[str, Path], data_file: Path,
                                              tmp_path: Path) -> None:
    """--group-by-length: a stopped and resumed run trains the same samples at every step as
    an uninterrupted one (the length-grouped order is drawn again identically on resume)."""
    def args(out: Path) -> list[str]:
        found = run_args(tiny, data_file, out) + ["--group-by-length"]
        found[found.index("--max-steps") + 1] = "6"
        return found

    whole = Run(tmp_path / "whole")
    assert main(args(whole.dir) + ["--wait"]) == 0, whole.log_file.read_text()[-3000:]
    run = Run(tmp_path / "stopped")
    assert main(args(run.dir)) == 0
    assert main(["train", "stop", str(run.dir), "--at-step", "3", "--timeout", "120"]) == 0
    assert main(["train", "resume", str(run.dir), "--wait"]) == 0, run.log_file.read_text()[-3000:]
    records, reference = train_records(run), train_records(whole)
    assert [r["start_step"] for r in records] == [0] * 3 + [3] * 3
    assert [r["samples"] for r in records] == [r["samples"] for r in reference]
    assert all(r["padding_fraction"] < 0.1 for r in reference)  # grouped: little padding
