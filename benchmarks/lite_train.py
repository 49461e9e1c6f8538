"""Lite model training cost: N labelled images (default 5,000, 128x128) from scratch, then a warm
fine-tune on the same set, on the CPU.

Usage: ``.venv/bin/python benchmarks/lite_train.py [--n 5000] [--size 128] [--threads 1]``.
Prints one JSON object: wall and CPU seconds of each phase (text-encoder load, image features,
training), MCQs, hold-out accuracy and temperature. The images come from the small synthetic world
of the lite-model tests (three modalities, six degradation types, two levels). CPU seconds are the
honest number on a shared machine; wall seconds are what a user waits on an idle one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()

    import torch

    from medq.engine.models.lite import LiteModel
    from medq.engine.models.text_encoder import default_encoder
    from tests.engine.lite_world import make_world

    out = {"n": args.n, "size": args.size, "threads": args.threads, "epochs": args.epochs,
           "cpu_count": os.cpu_count(), "torch_threads_default": torch.get_num_threads(),
           "machine": platform.machine(), "python": platform.python_version()}
    t, c = time.perf_counter(), time.process_time()
    data = make_world(args.n, seed=0, size=args.size)
    out["world_wall_s"] = round(time.perf_counter() - t, 2)
    t, c = time.perf_counter(), time.process_time()
    default_encoder().encode(["warm up"])
    out["encoder_load_wall_s"], out["encoder_load_cpu_s"] = round(time.perf_counter() - t, 2), round(time.process_time() - c, 2)

    model = LiteModel("bench-0", epochs=args.epochs, threads=args.threads, seed=0)
    t, c = time.perf_counter(), time.process_time()
    m1, rep = model.fine_tune(data, new_version="bench-1")
    out["train_wall_s"], out["train_cpu_s"] = round(time.perf_counter() - t, 2), round(time.process_time() - c, 2)
    out["feature_wall_s"] = rep.extra["feature_seconds"]
    out.update({k: rep.extra.get(k) for k in ("n_mcqs", "holdout_accuracy", "temperature")})
    t, c = time.perf_counter(), time.process_time()
    _, rep2 = m1.fine_tune(data, new_version="bench-2")
    out["warm_train_wall_s"], out["warm_train_cpu_s"] = round(time.perf_counter() - t, 2), round(time.process_time() - c, 2)
    out["warm_epochs"] = rep2.extra["epochs"]
    out["warm_holdout_accuracy"] = rep2.extra.get("holdout_accuracy")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
