"""GPU check: LoRA fine-tuning of a Qwen2-VL-2B-shaped multimodal model (random weights, built from
its config; nothing downloaded) through the ``hf`` backend, bf16 autocast + gradient checkpointing.

Usage (on a CUDA machine)::

    python benchmarks/gpu_finetune.py [--size 2b] [--steps 10] [--batch 4] [--image 448]

Prints one JSON object: device, parameter counts, tokens per sample, training samples/s and
optimizer steps/s over the timed steps (after warm-up steps), first/last loss, peak GPU memory
(GiB, ``torch.cuda.max_memory_allocated``) and MCQ answering throughput (questions/s, one forward
pass each). On a machine without CUDA it prints ``{"ok": false, "reason": ...}`` and exits 0;
``--allow-cpu --size tiny`` runs the same path on the CPU (a smoke test of the script).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="2b", choices=["2b", "tiny"])
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image", type=int, default=448, help="image side in pixels (448 -> 256 tokens)")
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--allow-cpu", action="store_true")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        print(json.dumps({"ok": False, "reason": "torch is not installed"}))
        return 0
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        msg = "no CUDA GPU (torch.cuda.is_available() is False): nothing to measure"
        print(f"gpu_finetune: {msg}", file=sys.stderr)
        print(json.dumps({"ok": False, "reason": msg}))
        return 0

    from medq.engine.models.base import MCQ
    from medq.engine.models.hf import HFModel, register_loaded, sft_records
    from medq.engine.models.hf_random import build_random_qwen2vl
    from tests.engine.lite_world import make_world

    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    out: dict = {"ok": True, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                 "torch": torch.__version__, "size": args.size, "batch": args.batch,
                 "image_side": args.image, "lora_rank": args.lora_rank, "dtype": str(dtype)}
    import transformers
    out["transformers"] = transformers.__version__
    folder = Path(tempfile.mkdtemp(prefix="medq-gpu-check-"))
    t = time.perf_counter()
    model, processor = build_random_qwen2vl(folder, size=args.size, image_pixels=args.image ** 2,
                                            dtype=dtype, device=device, save_weights=False)
    if cuda:
        torch.cuda.synchronize()
    out["build_s"] = round(time.perf_counter() - t, 2)
    out["params_total"] = sum(p.numel() for p in model.parameters())
    register_loaded(folder, model, processor, device)

    data = make_world(max(8, args.batch * 2), seed=0, size=args.image)
    records = sft_records(data, seed=0, mcqs_per_image=2)
    enc_probe = None
    hf = HFModel("gpu-base", path=folder, device=device, batch_size=args.batch, max_steps=args.warmup,
                 lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank, learning_rate=1e-4,
                 gradient_checkpointing=True)
    enc_probe = hf.collate(records[:args.batch])
    out["tokens_per_sample"] = int(enc_probe["attention_mask"].sum(1).float().mean())
    warm, rep0 = hf.fine_tune(data, new_version="gpu-warm", records=records)
    out["params_trainable"] = sum(p.numel() for p in hf.runtime.model.parameters() if p.requires_grad)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timed = HFModel("gpu-warm", path=folder, device=device, batch_size=args.batch, max_steps=args.steps,
                    lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank, learning_rate=1e-4,
                    gradient_checkpointing=True, adapter=warm.adapter)
    t = time.perf_counter()
    tuned, rep = timed.fine_tune(data, new_version="gpu-timed", records=records)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    out.update({"steps": args.steps, "train_s": round(seconds, 3),
                "samples_per_s": round(args.steps * args.batch / seconds, 3),
                "steps_per_s": round(args.steps / seconds, 3),
                "loss_first": round(rep.losses[0], 4), "loss_last": round(rep.losses[-1], 4),
                "warmup_loss_first": round(rep0.losses[0], 4)})
    if cuda:
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        out["gpu_total_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    mcqs = [MCQ(f"q{i}", ex.image, "How is the overall quality of this image?",
                {"A": "Good", "B": "Usable", "C": "Reject"}) for i, ex in enumerate(data * 4)][:32]
    tuned.answer(mcqs[:args.batch])
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    answers = tuned.answer(mcqs)
    if cuda:
        torch.cuda.synchronize()
    out["answer_questions_per_s"] = round(len(mcqs) / (time.perf_counter() - t), 2)
    out["probs_sum_ok"] = all(abs(sum(a.probs.values()) - 1) < 1e-6 for a in answers)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
