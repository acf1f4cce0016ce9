#!/usr/bin/env python3
"""diffscope against diffusers, side by side on the same machine in the same run.

    python bench/bench_vs_diffusers.py [--only sd15,sd21] [--sizes 512,768]
        [--stages unet-up1,unet-full,vae,recipe] [--models-dir bench/models]

Writes random-weight Stable Diffusion 1.5 and 2.1 pipeline folders with the exact configs of
runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1 (no network needed), then runs
every measurement in a fresh process (so memory is per measurement) for diffusers and for
`target/release/diffscope bench`, and prints a markdown table. See bench/README.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_TOKENIZER = REPO / "tests" / "fixtures" / "models" / "sd1_tiny" / "tokenizer"
DIFT_T = 261
DIFT_TAP = "up_blocks.1"

# ---------------------------------------------------------------------------------------------------------------
# The exact configs (as published in the two model repositories)
# ---------------------------------------------------------------------------------------------------------------

_SD_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
_SD_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

SD15_UNET = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": _SD_DOWN,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": _SD_UP,
}

SD21_UNET = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.10.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": _SD_DOWN,
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 96,
    "up_block_types": _SD_UP,
    "use_linear_projection": True,
    "upcast_attention": True,
}

_SD_VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD15_VAE = _SD_VAE
SD21_VAE = {**_SD_VAE, "_diffusers_version": "0.10.0.dev0", "sample_size": 768}

SD15_TEXT = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "torch_dtype": "float32",
    "vocab_size": 49408,
}

SD21_TEXT = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "pad_token_id": 1,
    "projection_dim": 512,
    "torch_dtype": "float32",
    "vocab_size": 49408,
}

SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

MODELS = {
    "sd15": {"unet": SD15_UNET, "vae": SD15_VAE, "text_encoder": SD15_TEXT, "scheduler": SD15_SCHEDULER},
    "sd21": {"unet": SD21_UNET, "vae": SD21_VAE, "text_encoder": SD21_TEXT, "scheduler": SD21_SCHEDULER},
}

# What the issue asks for: (stage, image side). `--stages` and `--sizes` filter this list.
PLAN = [("unet-up1", 512), ("unet-full", 512), ("vae", 512), ("recipe", 512), ("recipe", 768)]

# ---------------------------------------------------------------------------------------------------------------
# Random-weight pipelines
# ---------------------------------------------------------------------------------------------------------------


def build_model(name: str, folder: Path) -> None:
    """Write a diffusers pipeline folder with random weights and `name`'s exact configs."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if (folder / "model_index.json").is_file():
        return
    configs = MODELS[name]
    print(f"[build] {name}: random weights into {folder} (takes a minute or two)", flush=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(configs["unet"])
    vae = AutoencoderKL.from_config(configs["vae"])
    text_config = {k: v for k, v in configs["text_encoder"].items() if k not in ("architectures", "torch_dtype")}
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    scheduler_class = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler}[configs["scheduler"]["_class_name"]]
    scheduler = scheduler_class.from_config(configs["scheduler"])
    # The fixtures' tokenizer (CLIP's BPE cut to 2000 merges): its ids all lie inside the 49408-entry vocabulary.
    tokenizer = CLIPTokenizer.from_pretrained(TINY_TOKENIZER)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(partial, safe_serialization=True)
    check_configs(name, partial)
    partial.rename(folder)


def check_configs(name: str, folder: Path) -> None:
    """Every key of the published config must have been written with the same value."""
    files = {
        "unet": folder / "unet" / "config.json",
        "vae": folder / "vae" / "config.json",
        "text_encoder": folder / "text_encoder" / "config.json",
        "scheduler": folder / "scheduler" / "scheduler_config.json",
    }
    for part, path in files.items():
        written = json.loads(path.read_text())
        for key, value in MODELS[name][part].items():
            if key in ("_diffusers_version", "torch_dtype", "transformers_version"):
                continue
            if written.get(key) != value:
                raise SystemExit(f"{path}: {key} = {written.get(key)!r}, expected {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# The diffusers side (run in a fresh process per measurement: `--worker`)
# ---------------------------------------------------------------------------------------------------------------


def proc_status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def pattern(shape: tuple[int, ...], scale: float, offset: int):
    """The input diffscope's bench makes: (2 u_i - 1) * scale, u_i = ((i + offset) * 2654435761 mod 2^32) / 2^32."""
    import numpy as np
    import torch

    n = int(np.prod(shape))
    idx = np.arange(n, dtype=np.uint64) + np.uint64(offset)
    u = ((idx * np.uint64(2654435761)) % np.uint64(2**32)).astype(np.float64) / 2.0**32
    return torch.from_numpy(((2.0 * u - 1.0) * scale).astype(np.float32).reshape(shape))


class StopForward(Exception):
    """Raised by a forward hook to end a UNet pass once the wanted block has run."""


def run_unet(unet, sample, t, context, stop_after: str | None):
    """The UNet output, or the output of `stop_after` (a module path) with the rest of the pass skipped."""
    if stop_after is None:
        return unet(sample, t, encoder_hidden_states=context).sample
    captured = {}

    def hook(_module, _inputs, output):
        captured["out"] = output
        raise StopForward

    handle = unet.get_submodule(stop_after).register_forward_hook(hook)
    try:
        unet(sample, t, encoder_hidden_states=context)
    except StopForward:
        pass
    finally:
        handle.remove()
    return captured["out"]


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, torch_dtype=torch.float32)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    load_s = time.perf_counter() - start
    load_peak, rss_after_load = proc_status_mib("VmHWM:"), proc_status_mib("VmRSS:")
    peak_reset = reset_peak_rss()

    side = args.size
    stride = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    image = pattern((1, 3, side, side), 1.0, 1)
    latent_shape = (1, pipe.unet.config.in_channels, side // stride, side // stride)
    latents = pattern(latent_shape, 3.0**0.5, 2)
    # The single UNet pass's noise, the same as diffscope's bench gives its engine.
    unet_noise = pattern(latent_shape, 3.0**0.5, 3)
    sf = pipe.vae.config.scaling_factor
    k = args.ensemble
    generator = torch.Generator().manual_seed(0)

    def embed_prompt():
        embeds, _ = pipe.encode_prompt("", "cpu", 1, False)
        return embeds

    with torch.no_grad():
        context = embed_prompt() if args.stage.startswith("unet") else None

        def once():
            times = {}
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            if args.stage == "vae":
                out = pipe.vae.encode(image).latent_dist.mean * sf
            elif args.stage in ("unet-up1", "unet-full"):
                stop = DIFT_TAP if args.stage == "unet-up1" else None
                noisy = scheduler.add_noise(latents, unet_noise, torch.tensor(DIFT_T))
                out = run_unet(pipe.unet, noisy, DIFT_T, context, stop)
                times["unet_pass_s"] = [time.perf_counter() - t0]
            elif args.way == "dift":
                # DIFT's SDFeaturizer: the image repeated K times through the VAE (a posterior sample) and the
                # UNet as one batch; its own UNet class stops after the deepest requested up block.
                batch = image.repeat(k, 1, 1, 1)
                z = pipe.vae.encode(batch).latent_dist.sample(generator=generator) * sf
                times["encode_s"] = time.perf_counter() - t0
                t1 = time.perf_counter()
                embeds = embed_prompt().repeat(k, 1, 1)
                times["text_s"] = time.perf_counter() - t1
                t2 = time.perf_counter()
                noise = torch.randn(z.shape, generator=generator)
                noisy = scheduler.add_noise(z, noise, torch.tensor(DIFT_T))
                out = run_unet(pipe.unet, noisy, DIFT_T, embeds, DIFT_TAP).mean(0)
                times["unet_pass_s"] = [time.perf_counter() - t2]
            else:
                # Careful: encode once (the posterior mean), then the K noisy latents through the UNet,
                # one at a time (`careful`) or as one batch (`careful-batched`).
                z = pipe.vae.encode(image).latent_dist.mean * sf
                times["encode_s"] = time.perf_counter() - t0
                t1 = time.perf_counter()
                embeds = embed_prompt()
                times["text_s"] = time.perf_counter() - t1
                noise = torch.randn((k, *z.shape[1:]), generator=generator)
                if args.way == "careful-batched":
                    t2 = time.perf_counter()
                    noisy = scheduler.add_noise(z.expand(k, -1, -1, -1), noise, torch.tensor(DIFT_T))
                    out = run_unet(pipe.unet, noisy, DIFT_T, embeds.expand(k, -1, -1), DIFT_TAP).mean(0)
                    times["unet_pass_s"] = [time.perf_counter() - t2]
                else:
                    total, passes = None, []
                    for i in range(k):
                        t2 = time.perf_counter()
                        noisy = scheduler.add_noise(z, noise[i : i + 1], torch.tensor(DIFT_T))
                        f = run_unet(pipe.unet, noisy, DIFT_T, embeds, DIFT_TAP)[0]
                        total = f if total is None else total + f
                        passes.append(time.perf_counter() - t2)
                    out = total / k
                    times["unet_pass_s"] = passes
            times["total_s"] = time.perf_counter() - t0
            times["cpu_s"] = time.process_time() - cpu0
            return out, times

        warmup_s = []
        for _ in range(args.warmup):
            warmup_s.append(once()[1]["total_s"])
        runs, out = [], None
        for _ in range(args.repeat):
            out, times = once()
            runs.append(times)
    stage_peak = proc_status_mib("VmHWM:")
    out = out.float()
    report = {
        "tool": "diffusers",
        "way": args.way,
        "stage": args.stage,
        "size": [side, side],
        "threads": torch.get_num_threads(),
        "attention": type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__,
        "load_s": load_s,
        "warmup_s": warmup_s,
        "wall_s": min(r["total_s"] for r in runs),
        "cpu_s": min(runs, key=lambda r: r["total_s"])["cpu_s"],
        "runs": runs,
        "rss_after_load_mib": rss_after_load,
        "load_peak_mib": load_peak,
        "stage_peak_mib": stage_peak if peak_reset else None,
        "peak_mib": max(x for x in (load_peak, stage_peak) if x is not None),
        "output": {
            "shape": list(out.shape),
            "mean": out.mean().item(),
            "abs_mean": out.abs().mean().item(),
            "finite": bool(torch.isfinite(out).all()),
        },
    }
    print(json.dumps(report), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------------------------


def run_measurement(cmd: list[str], env: dict, timeout: float) -> dict:
    """Run one measurement in a fresh process; its last stdout line is the JSON report."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"error": f"timed out after {timeout:.0f} s"}
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = err.read()[-2000:]
            return {"error": f"exit {proc.returncode}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"}
        return json.loads(lines[-1])


def fmt_s(r: dict | None) -> str:
    if not r:
        return "—"
    return "—" if "error" in r else f"{r['wall_s']:.1f} s"


def fmt_cpu(r: dict | None) -> str:
    if not r or "error" in r or r.get("cpu_s") is None:
        return "—"
    return f"{r['cpu_s']:.0f} s"


def fmt_mib(r: dict | None) -> str:
    if not r or "error" in r or r.get("peak_mib") is None:
        return "—"
    return f"{r['peak_mib'] / 1024:.2f} GiB"


def ratio(a: dict | None, b: dict | None, key: str) -> str:
    if not a or not b or "error" in a or "error" in b or not a.get(key) or not b.get(key):
        return "—"
    return f"{b[key] / a[key]:.2f}"


def breakdown(r: dict | None) -> str:
    """Per-step seconds of the (fastest) run: encode, text, UNet passes."""
    if not r or "error" in r:
        return r.get("error", "—") if r else "—"
    run = min(r["runs"], key=lambda x: x["total_s"])
    parts = []
    if run.get("encode_s") is not None:
        parts.append(f"encode {run['encode_s']:.1f}")
    if run.get("text_s") is not None:
        parts.append(f"text {run['text_s']:.2f}")
    passes = run.get("unet_pass_s") or []
    if len(passes) == 1:
        parts.append(f"unet {passes[0]:.1f}")
    elif passes:
        parts.append(f"unet {sum(passes):.1f} ({len(passes)} x {sum(passes) / len(passes):.1f})")
    parts.append(f"load {r['load_s']:.1f}")
    stage_peak = r.get("stage_peak_mib")
    if stage_peak is not None and r.get("rss_after_load_mib") is not None:
        parts.append(f"stage +{(stage_peak - r['rss_after_load_mib']) / 1024:.2f} GiB over loaded")
    return ", ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, default=Path(os.environ.get("DIFFSCOPE_BENCH_MODELS", REPO / "bench" / "models")))
    p.add_argument("--only", default="sd15,sd21", help="models: sd15, sd21 (comma-separated)")
    p.add_argument("--sizes", default="512,768", help="image sides to keep from the plan")
    p.add_argument("--stages", default="unet-up1,unet-full,vae,recipe", help="stages to keep from the plan")
    p.add_argument("--plan", default=None, help="explicit STAGE@SIDE list instead of the issue's, e.g. vae@768,recipe@512")
    p.add_argument("--ways", default="dift,careful", help="diffusers recipe variants: dift, careful, careful-batched")
    p.add_argument("--ensemble", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="threads for both (torch.set_num_threads, RAYON_NUM_THREADS)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a measurement is given up")
    p.add_argument("--diffscope", type=Path, default=None, help="the diffscope binary (default: $CARGO_TARGET_DIR or target/, release)")
    p.add_argument("--skip-diffusers", action="store_true")
    p.add_argument("--skip-diffscope", action="store_true")
    p.add_argument("--results", type=Path, default=None, help="append every JSON report to this .jsonl file")
    # The per-measurement process.
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--way", default="careful", help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    models = [m.strip() for m in args.only.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"--only: unknown model {m!r} (known: {', '.join(MODELS)})")
    if args.plan:
        plan = []
        for item in args.plan.split(","):
            stage, _, side = item.partition("@")
            plan.append((stage.strip(), int(side)))
    else:
        sizes = {int(s) for s in args.sizes.split(",") if s.strip()}
        stages = {s.strip() for s in args.stages.split(",") if s.strip()}
        plan = [(st, sz) for st, sz in PLAN if st in stages and sz in sizes]
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    binary = args.diffscope or Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "diffscope"
    if not args.skip_diffscope and not binary.is_file():
        raise SystemExit(f"{binary} not found: build it with `cargo build --release -p diffscope` or pass --diffscope")

    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        RAYON_NUM_THREADS=str(args.threads),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    args.models_dir.mkdir(parents=True, exist_ok=True)
    for m in models:
        build_model(m, args.models_dir / m)

    started = datetime.now(timezone.utc)
    print(f"[bench] {started:%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()}", flush=True)
    rows = []
    for m in models:
        folder = str(args.models_dir / m)
        for stage, side in plan:
            warmup = 0 if stage == "recipe" else 1
            diffusers_ways = ways if stage == "recipe" else ["-"]
            results = {}
            jobs = []
            if not args.skip_diffusers:
                for way in diffusers_ways:
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", folder, "--stage", stage,
                           "--size", str(side), "--way", way if way != "-" else "careful", "--ensemble", str(args.ensemble),
                           "--threads", str(args.threads), "--warmup", str(warmup), "--repeat", str(args.repeat)]
                    jobs.append((f"diffusers:{way}", cmd))
            if not args.skip_diffscope:
                cmd = [str(binary), "bench", "--model", folder, "--stage", stage, "--size", f"{side}x{side}",
                       "--ensemble", str(args.ensemble), "--t", str(DIFT_T), "--warmup", str(warmup), "--repeat", str(args.repeat)]
                jobs.append(("diffscope", cmd))
            for label, cmd in jobs:
                print(f"[bench] {m} {stage} {side}: {label} ... (load {os.getloadavg()[0]:.1f})", flush=True)
                t0 = time.perf_counter()
                r = run_measurement(cmd, env, args.timeout)
                r["label"], r["model_name"] = label, m
                results[label] = r
                print(f"[bench]   {fmt_s(r)} wall, {fmt_mib(r)} peak, {breakdown(r)} ({time.perf_counter() - t0:.0f} s in all)", flush=True)
                if args.results:
                    with args.results.open("a") as f:
                        f.write(json.dumps({**r, "plan": [m, stage, side], "date": started.isoformat()}) + "\n")
            rows.append((m, stage, side, results))

    print()
    print(f"Measured {started:%Y-%m-%d} on {platform.node()} ({os.cpu_count()} cores, {args.threads} threads each, float32, "
          f"ensemble {args.ensemble}, t={DIFT_T}); load average at the end {os.getloadavg()}.")
    print()
    print("| model | stage | size | diffusers way | diffusers wall | diffscope wall | ratio | diffusers peak RSS | diffscope peak RSS | ratio | diffusers CPU | diffscope CPU | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m, stage, side, results in rows:
        ds = results.get("diffscope")
        for label, r in results.items():
            if label == "diffscope":
                continue
            way = label.split(":", 1)[1]
            print(f"| {m} | {stage} | {side} | {way} | {fmt_s(r)} | {fmt_s(ds)} | {ratio(r, ds, 'wall_s')} | "
                  f"{fmt_mib(r)} | {fmt_mib(ds)} | {ratio(r, ds, 'peak_mib')} | "
                  f"{fmt_cpu(r)} | {fmt_cpu(ds)} | {ratio(r, ds, 'cpu_s')} |")
        if not any(label != "diffscope" for label in results):
            print(f"| {m} | {stage} | {side} | — | — | {fmt_s(ds)} | — | — | {fmt_mib(ds)} | — | — | {fmt_cpu(ds)} | — |")
    print()
    print("Ratios are diffscope / diffusers (below 1: diffscope is faster or smaller). CPU is the process's")
    print("user + system seconds during the timed run (steadier than wall time on a loaded machine). Per step:")
    print()
    for m, stage, side, results in rows:
        for label, r in results.items():
            print(f"- {m} {stage} {side} {label}: {breakdown(r)}")
    print()
    for m, stage, side, results in rows:
        outs = {label: r.get("output") for label, r in results.items() if "error" not in r}
        if stage != "recipe" and "diffscope" in outs and len(outs) > 1:
            a = outs["diffscope"]
            b = next(v for k, v in outs.items() if k != "diffscope")
            rel = abs(a["abs_mean"] - b["abs_mean"]) / max(abs(b["abs_mean"]), 1e-30)
            print(f"check {m} {stage} {side}: output mean |x| diffscope {a['abs_mean']:.6g}, diffusers {b['abs_mean']:.6g} "
                  f"(relative difference {rel:.1e}), finite: {a['finite'] and b['finite']}")


if __name__ == "__main__":
    main()
