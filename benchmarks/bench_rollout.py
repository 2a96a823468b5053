"""Throughput of the CPU backend's rollout server: concurrent requests batched vs one at a time.

    python -m benchmarks.bench_rollout [--quick] [--requests 32] [--repeats 5]

One in-process ``verl_cpu.hf_server.HFRolloutServer`` on the README demo's tiny Qwen2.5-VL serves
``--requests`` concurrent requests (the demo's synthetic image prompts, 4 rollouts per prompt,
``--max-tokens`` new tokens each, ``ignore_eos`` so every response has the same length, sampled
with per-rollout seeds), the way an RL step's agent loop sends them. Two settings of the same
server, interleaved, ``--repeats`` times each: ``sequential`` (``max_batch=1``: the server before
batching, one ``generate`` per request) and ``batched`` (dynamic micro-batching, the default).
Prints requests per second and the speed-up; writes ``results/bench_rollout[.quick].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    REPO_ROOT,
    add_common_arguments,
    configure_threads,
    default_output_path,
    finish_report,
    format_table,
    positive_int,
    report_header,
    write_json,
)

BENCHMARK = "bench_rollout"
WORKDIR = REPO_ROOT / "demo_runs" / BENCHMARK
SETTINGS = {"sequential": 1, "batched": 64}


def make_requests(num_requests: int, workdir: Path) -> tuple[Any, list[dict[str, Any]]]:
    """The tiny model's server inputs: (model folder, [{prompt_ids, image}]) for num_requests / 4 prompts x 4."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image
    from transformers import AutoProcessor

    from recipe.noisygrpo.demo.run_demo import DemoSettings, prepare_inputs

    model_dir, data_files = prepare_inputs(workdir, DemoSettings())
    processor = AutoProcessor.from_pretrained(model_dir)
    rows = pq.read_table(data_files["train"], columns=["prompt", "images"]).to_pylist()
    requests = []
    for index in range(num_requests):
        row = rows[(index // 4) % len(rows)]
        image = Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB")
        text = row["prompt"][0]["content"].replace("<image>", "")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = processor(text=[chat], images=[image], return_tensors="pt")["input_ids"][0].tolist()
        requests.append({"prompt_ids": ids, "image": image, "seed": 1000 + index})
    return model_dir, requests


def serve(server: Any, requests: Sequence[dict[str, Any]], max_tokens: int) -> float:
    """Seconds to answer every request, all submitted at once."""
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, "max_tokens": max_tokens}

    async def run() -> None:
        await asyncio.gather(
            *(
                server.generate(
                    request["prompt_ids"],
                    {**sampling, "seed": request["seed"], "ignore_eos": True},
                    f"r{index}",
                    image_data=[request["image"]],
                )
                for index, request in enumerate(requests)
            )
        )

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{BENCHMARK}", description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--requests", type=positive_int, default=32, help="concurrent requests (default 32)")
    parser.add_argument("--max-tokens", type=positive_int, default=24, help="new tokens per request (default 24)")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="tiny model and data (built once)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    started = time.perf_counter()
    configure_threads(args.threads)
    config = {"requests": args.requests, "max_tokens": args.max_tokens, "repeats": repeats, "threads": args.threads}
    report = report_header(BENCHMARK, config)

    from omegaconf import OmegaConf
    from verl.workers.config import HFModelConfig

    from verl_cpu.hf_server import HFRolloutServer

    model_dir, requests = make_requests(args.requests, args.workdir)
    rollout = OmegaConf.create(
        {"_target_": "verl.workers.config.RolloutConfig", "name": "hf", "mode": "async", "dtype": "float32"}
    )
    servers = {
        name: HFRolloutServer(rollout, HFModelConfig(path=str(model_dir)), max_batch=max_batch)
        for name, max_batch in SETTINGS.items()
    }
    for server in servers.values():  # warm-up: first calls pay one-time costs
        serve(server, requests[:4], args.max_tokens)
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(repeats):  # interleaved, so both settings see the same machine
        for name, server in servers.items():
            seconds[name].append(serve(server, requests, args.max_tokens))
    rows = []
    for name, values in seconds.items():
        best, median = min(values), statistics.median(values)
        rows.append([name, best, median, args.requests / median])
    speedup = statistics.median(seconds["sequential"]) / statistics.median(seconds["batched"])
    print(
        format_table(
            ("server", "best s", "median s", "requests/s"),
            rows,
            title=f"{args.requests} concurrent requests x {args.max_tokens} tokens, tiny Qwen2.5-VL, {repeats} repeats",
        )
    )
    print(f"batched / sequential throughput: {speedup:.2f}x (medians)")
    report["results"] = {name: {"seconds": values} for name, values in seconds.items()}
    report["speedup_median"] = speedup
    report["targets"] = []
    path = write_json(args.output or default_output_path(BENCHMARK, args.quick), finish_report(report, started))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
