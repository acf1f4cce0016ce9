#!/usr/bin/env python3
"""diffscope on a GPU against diffusers on the same GPU, in one go: parity, timings, memory, a
kernel-time breakdown, training memory.

    python3 bench/gpu/check.py --binary PATH/TO/diffscope --out DIR [--steps a,b,...] [--deadline-s 540]

Steps (default: all, in this order; each is skipped once the deadline is near):

  parity-tiny   the committed diffusers fixtures on CUDA: float32 against the CPU references
                (tests/fixtures/refs), f16 and bf16 against diffusers run in that dtype on this
                GPU (tests/fixtures/scripts/make_half_fixtures.py --device cuda), with candle's
                operations and with diffscope's own CUDA kernels (DIFFSCOPE_CUDA_KERNELS=1)
  build         random-weight SD 2.1 (its exact configs, bench/bench_vs_diffusers.py) under --models-dir
  bench-768     DIFT's recipe at 768 (8 draws, t=261, up_blocks.1): diffscope (candle's operations,
                and its own kernels) and diffusers (DIFT's way, encode once + single passes,
                encode once + one batch) in f16 and f32
  ncu           a per-kernel GPU time breakdown of one diffscope UNet pass to up_blocks.1 at 768, f16,
                with its own kernels
  parity-sd21   SD 2.1 at 512, the same image and noise through diffscope and diffusers, f32 and f16
  bench-512     the same as bench-768 at 512, plus bf16 at 768
  train         `diffscope train --device cuda`: GPU memory in use, step after step

Writes DIR/log.txt (everything), DIR/results.jsonl (one JSON object per measurement) and
DIR/summary.md; ncu's CSV goes to DIR/ncu.csv. Needs torch with CUDA, diffusers, transformers,
safetensors and numpy. The binary needs libcublas etc.: the script puts torch's CUDA libraries on
LD_LIBRARY_PATH for it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "scripts"))

STEPS = ["parity-tiny", "build", "bench-768", "ncu", "parity-sd21", "bench-512", "train"]
T = 261
TAP = "up_blocks.1"
TINY = [("sd1_tiny", "sd_64x48"), ("sd2_tiny", "sd_square_32"), ("ddpm_tiny", "wide_48x32")]
HALF_CASES = {"sd1_tiny": "sd_64x48", "sd2_tiny": "sd_64x48", "ddpm_tiny": "wide_48x32"}


class Run:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.out / "log.txt", "a")
        self.results = open(self.out / "results.jsonl", "a")
        self.summary: list[str] = []
        self.started = time.time()
        self.tmp = Path(tempfile.mkdtemp(prefix="diffscope-gpu-"))
        self.env = dict(os.environ)
        try:
            import torch

            lib = Path(torch.__file__).resolve().parent.parent / "nvidia" / "cu13" / "lib"
            if lib.is_dir():
                self.env["LD_LIBRARY_PATH"] = f"{lib}:{self.env.get('LD_LIBRARY_PATH', '')}"
        except ImportError:
            pass

    def left(self) -> float:
        return self.args.deadline_s - (time.time() - self.started)

    def log(self, text: str) -> None:
        line = f"[{time.time() - self.started:6.1f}s] {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def record(self, **fields) -> None:
        self.results.write(json.dumps(fields) + "\n")
        self.results.flush()

    def note(self, line: str) -> None:
        self.summary.append(line)
        self.log("SUMMARY " + line)
        (self.out / "summary.md").write_text("\n".join(self.summary) + "\n")

    def sh(self, cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
        """Run a command; returns (exit code, stdout + stderr), logging the tail."""
        timeout = max(5.0, min(timeout, self.left()))
        self.log("$ " + " ".join(str(c) for c in cmd))
        try:
            p = subprocess.run(
                [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env or self.env, cwd=REPO
            )
            text = p.stdout + p.stderr
            code = p.returncode
        except subprocess.TimeoutExpired as e:
            text = f"(timed out after {timeout:.0f} s) " + str(e.stdout or "")[-2000:] + str(e.stderr or "")[-2000:]
            code = 124
        except OSError as e:
            text, code = f"cannot run: {e}", 127
        tail = "\n".join(text.strip().splitlines()[-8:])
        self.log(f"  exit {code}; {tail}")
        return code, text

    def diffscope(self, *args, timeout: float = 120, kernels: str = "candle") -> tuple[int, str]:
        """Run the binary; `kernels="own"` turns on diffscope's own CUDA kernels (fused attention,
        group norm), which are off by default until this script has checked them on a GPU."""
        env = dict(self.env)
        env["DIFFSCOPE_CUDA_KERNELS"] = "1" if kernels == "own" else "0"
        return self.sh([self.args.binary, *args], timeout, env)


def load_safetensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def rel_err(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return f.metadata() or {}


# ---------------------------------------------------------------------------------------------------------------


def parity_tiny(run: Run) -> None:
    import numpy as np

    fixtures = REPO / "tests" / "fixtures"
    for model, image in TINY:
        refs_path = fixtures / "refs" / f"{model}__{image}.safetensors"
        refs = load_safetensors(refs_path)
        taps = metadata(refs_path)["taps"].split(",")
        noise = run.tmp / f"{model}_noise.npy"
        np.save(noise, refs[f"t{T}.noise"].astype(np.float32))
        out = run.tmp / f"{model}_f32.safetensors"
        code, _ = run.diffscope(
            "extract", "--model", fixtures / "models" / model, "--image", fixtures / "images" / f"{image}.png",
            "--t", T, "--blocks", ",".join(taps), "--noise", noise, "--device", run.args.device, "--dtype", "f32", "--out", out,
        )
        if code != 0:
            run.note(f"parity f32 {model}: FAILED to run")
            continue
        ours = load_safetensors(out)
        worst = max((rel_err(ours[t], refs[f"t{T}.{t}"]), t) for t in taps)
        run.record(step="parity-tiny", model=model, dtype="f32", worst_rel_err=worst[0], worst_tap=worst[1])
        run.note(f"parity f32 {run.args.device} vs diffusers (CPU refs) {model}/{image}: worst tap {worst[1]} {worst[0]:.2e} "
                 f"({'PASS' if worst[0] <= 1e-4 else 'FAIL'} at 1e-4)")

    # diffusers' own half-precision references on this GPU.
    half_dir = run.tmp / "refs_half_cuda"
    code, _ = run.sh([sys.executable, fixtures / "scripts" / "make_half_fixtures.py", "--device", run.args.device, "--out", half_dir], 300)
    if code != 0:
        run.note("parity half: could not make the GPU references")
        return
    for model, image in HALF_CASES.items():
        noise = run.tmp / f"{model}_{image}_noise.npy"
        np.save(noise, load_safetensors(fixtures / "refs" / f"{model}__{image}.safetensors")[f"t{T}.noise"].astype(np.float32))
        for dtype in ("f16", "bf16"):
            ref_path = half_dir / f"{model}__{image}__{dtype}.safetensors"
            refs = load_safetensors(ref_path)
            taps = metadata(ref_path)["taps"].split(",")
            for kernels in ("candle", "own"):
                out = run.tmp / f"{model}_{dtype}_{kernels}.safetensors"
                code, _ = run.diffscope(
                    "extract", "--model", fixtures / "models" / model, "--image", fixtures / "images" / f"{image}.png",
                    "--t", T, "--blocks", ",".join(taps), "--noise", noise, "--device", run.args.device,
                    "--dtype", dtype, "--out", out, kernels=kernels,
                )
                if code != 0:
                    run.note(f"parity {dtype} {model} ({kernels} kernels): FAILED to run")
                    continue
                ours = load_safetensors(out)
                rows = []
                for t in taps:
                    err = rel_err(ours[t], refs[f"t{T}.{t}"])
                    own = rel_err(refs[f"t{T}.{t}"], refs[f"f32.t{T}.{t}"])
                    rows.append((err / max(own, 1e-12), err, own, t))
                worst_ratio = max(rows)
                worst_err = max(rows, key=lambda r: r[1])
                run.record(step="parity-tiny", model=model, dtype=dtype, kernels=kernels,
                           worst_ratio=worst_ratio[0], worst_ratio_tap=worst_ratio[3],
                           worst_err=worst_err[1], worst_err_tap=worst_err[3], own_err_at_worst=worst_err[2])
                ok = all(r[1] <= max(min(2 * r[2], 0.03 if dtype == "f16" else 0.15), 1e-3) for r in rows)
                run.note(f"parity {dtype} {run.args.device} vs diffusers {dtype} {run.args.device} {model} ({kernels} kernels): worst error "
                         f"{worst_err[1]:.2e} at {worst_err[3]} (diffusers' own {dtype} error there {worst_err[2]:.2e}); "
                         f"worst ratio {worst_ratio[0]:.2f}x at {worst_ratio[3]} ({'PASS' if ok else 'FAIL'} at 2x)")


def build(run: Run) -> None:
    import bench_vs_diffusers as B

    models = Path(run.args.models_dir)
    models.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    B.build_model("sd21", models / "sd21")
    run.log(f"SD 2.1 random weights ready in {time.time() - t0:.0f} s")


# ---------------------------------------------------------------------------------------------------------------
# diffusers side of the benchmark, in its own process per (dtype, size): `--diffusers-worker`


def diffusers_worker(args) -> None:
    import torch
    import bench_vs_diffusers as B
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    dev = "cuda"
    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, torch_dtype=dtype).to(dev)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    side, k = args.size, args.ensemble
    image = B.pattern((1, 3, side, side), 1.0, 1).to(dev, dtype)
    sf = pipe.vae.config.scaling_factor
    weights_mib = torch.cuda.memory_allocated() / 2**20

    def embed():
        embeds, _ = pipe.encode_prompt("", dev, 1, False)
        return embeds

    def once(way: str, generator):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        if way == "dift":
            z = pipe.vae.encode(image.repeat(k, 1, 1, 1)).latent_dist.sample(generator=generator) * sf
            embeds = embed().repeat(k, 1, 1)
            noise = torch.randn(z.shape, generator=generator, device=dev, dtype=dtype)
            noisy = scheduler.add_noise(z, noise, torch.tensor(T, device=dev))
            out = B.run_unet(pipe.unet, noisy, T, embeds, TAP).mean(0)
        else:
            z = pipe.vae.encode(image).latent_dist.mean * sf
            embeds = embed()
            noise = torch.randn((k, *z.shape[1:]), generator=generator, device=dev, dtype=dtype)
            if way == "careful-batched":
                noisy = scheduler.add_noise(z.expand(k, -1, -1, -1), noise, torch.tensor(T, device=dev))
                out = B.run_unet(pipe.unet, noisy, T, embeds.expand(k, -1, -1), TAP).mean(0)
            else:
                total = None
                for i in range(k):
                    noisy = scheduler.add_noise(z, noise[i : i + 1], torch.tensor(T, device=dev))
                    f = B.run_unet(pipe.unet, noisy, T, embeds, TAP)[0]
                    total = f if total is None else total + f
                out = total / k
        out = out.float()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    with torch.no_grad():
        for way in args.ways.split(","):
            generator = torch.Generator(dev).manual_seed(0)
            try:
                once(way, generator)  # warm-up (cuDNN autotuning, kernel loading)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                times = []
                for _ in range(args.repeat):
                    s, out = once(way, generator)
                    times.append(s)
                report = {
                    "tool": "diffusers", "way": way, "dtype": args.dtype, "size": side, "ensemble": k,
                    "attention": type(next(iter(pipe.unet.attn_processors.values()))).__name__,
                    "tf32_conv": torch.backends.cudnn.allow_tf32, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                    "load_s": load_s, "times_s": times, "best_s": min(times), "median_s": sorted(times)[len(times) // 2],
                    "weights_mib": weights_mib,
                    "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                    "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                    "abs_mean": out.abs().mean().item(),
                }
            except torch.OutOfMemoryError as e:
                report = {"tool": "diffusers", "way": way, "dtype": args.dtype, "size": side, "error": f"OOM: {e}"[:300]}
            print(json.dumps(report), flush=True)
            torch.cuda.empty_cache()


def bench(run: Run, size: int, dtypes: list[str], ways: str = "dift,careful,careful-batched", own: bool = True) -> None:
    model = Path(run.args.models_dir) / "sd21"
    for dtype in dtypes:
        code, text = run.sh([sys.executable, __file__, "--diffusers-worker", "--model", model, "--dtype", dtype,
                             "--size", size, "--ensemble", 8, "--ways", ways, "--repeat", run.args.repeat], 240)
        for line in text.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                run.record(step=f"bench-{size}", **r)
                if "error" in r:
                    run.note(f"diffusers {dtype} {size} {r['way']}: {r['error']}")
                else:
                    run.note(f"diffusers {dtype} {size} {r['way']}: {r['best_s'] * 1000:.1f} ms (median "
                             f"{r['median_s'] * 1000:.1f}), peak {r['peak_allocated_mib'] / 1024:.2f} GiB allocated "
                             f"({r['weights_mib'] / 1024:.2f} GiB weights), {r['attention']}")
        for kernels in ["candle", "own"] if own else ["candle"]:
            code, text = run.diffscope("bench", "--model", model, "--stage", "recipe", "--size", f"{size}x{size}",
                                       "--ensemble", 8, "--t", T, "--device", "cuda", "--dtype", dtype,
                                       "--warmup", 1, "--repeat", run.args.repeat, timeout=240, kernels=kernels)
            lines = [l for l in text.splitlines() if l.startswith("{")]
            if code != 0 or not lines:
                run.note(f"diffscope {dtype} {size} ({kernels} kernels): FAILED")
                continue
            r = json.loads(lines[-1])
            run.record(step=f"bench-{size}", kernels=kernels, **r)
            runs = sorted(x["total_s"] for x in r["runs"])
            run.note(f"diffscope {dtype} {size} ({kernels} kernels, {r.get('draws_per_batch')} draws per batch): "
                     f"{r['wall_s'] * 1000:.1f} ms (median {runs[len(runs) // 2] * 1000:.1f}), peak "
                     f"{(r.get('gpu_peak_allocated_mib') or 0) / 1024:.2f} GiB allocated "
                     f"({(r.get('gpu_after_load_mib') or 0) / 1024:.2f} GiB in use after load), "
                     f"abs_mean {r['output']['abs_mean']:.4f}")


def ncu(run: Run) -> None:
    if shutil.which("ncu") is None:
        run.note("ncu: not on PATH")
        return
    model = Path(run.args.models_dir) / "sd21"
    csv = run.out / "ncu.csv"
    env = dict(run.env, DIFFSCOPE_CUDA_KERNELS="1")
    code, _ = run.sh(["ncu", "--clock-control", "none", "--metrics", "gpu__time_duration.sum", "--csv",
                      "--log-file", csv, run.args.binary, "bench", "--model", model, "--stage", "unet-up1",
                      "--size", "768x768", "--t", T, "--device", "cuda", "--dtype", "f16", "--warmup", 0, "--repeat", 1],
                     240, env)
    if not csv.is_file():
        run.note("ncu: no output")
        return
    import csv as csvlib

    rows = list(csvlib.DictReader(line for line in csv.read_text().splitlines() if line.startswith('"')))
    by_name: dict[str, list[float]] = {}
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "nsecond")
        ns = value * {"nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9}.get(unit, 1)
        name = r["Kernel Name"].split("(")[0][:80]
        by_name.setdefault(name, []).append(ns)
    total = sum(sum(v) for v in by_name.values())
    run.note(f"ncu, diffscope f16 one UNet pass to up_blocks.1 at 768 (batch 1, load and VAE-free): "
             f"{total / 1e6:.1f} ms of GPU kernels in {sum(len(v) for v in by_name.values())} launches")
    for name, v in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:15]:
        run.note(f"  {sum(v) / 1e6:7.2f} ms {100 * sum(v) / total:5.1f}%  {len(v):5d} x  {name}")


def parity_sd21(run: Run) -> None:
    """SD 2.1 at 512: one image, two given noise draws, the same for both tools; taps compared."""
    import numpy as np
    import torch
    import bench_vs_diffusers as B
    from PIL import Image
    from diffusers import StableDiffusionPipeline

    model = Path(run.args.models_dir) / "sd21"
    side = 512
    rgb = (np.random.default_rng(0).random((side // 16, side // 16, 3)) * 255).astype(np.uint8)
    png = run.tmp / "sd21_input.png"
    Image.fromarray(rgb).resize((side, side), Image.BILINEAR).save(png)
    x = torch.from_numpy(np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    noise = torch.randn((2, 4, side // 8, side // 8), generator=torch.Generator().manual_seed(7))
    np.save(run.tmp / "sd21_noise.npy", noise.numpy())
    taps = ["down_blocks.0", "mid_block", TAP]
    for dtype_name, dtype in (("f32", torch.float32), ("f16", torch.float16)):
        pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, torch_dtype=dtype).to("cuda")
        with torch.no_grad():
            z = pipe.vae.encode(x.to("cuda", dtype)).latent_dist.mean * pipe.vae.config.scaling_factor
            embeds, _ = pipe.encode_prompt("", "cuda", 1, False)
            sums = {}
            for k in range(2):
                noisy = pipe.scheduler.add_noise(z, noise[k : k + 1].to("cuda", dtype), torch.tensor([T], device="cuda"))
                captured = {}
                hooks = [pipe.unet.get_submodule(t).register_forward_hook(
                    lambda _m, _i, o, t=t: captured.__setitem__(t, (o[0] if isinstance(o, tuple) else o).float()))
                    for t in taps]
                try:
                    B.run_unet(pipe.unet, noisy, T, embeds, TAP)
                finally:
                    for h in hooks:
                        h.remove()
                for t in taps:
                    sums[t] = sums.get(t, 0) + captured[t]
            theirs = {t: (v / 2)[0].cpu().numpy() for t, v in sums.items()}
        del pipe
        torch.cuda.empty_cache()
        out = run.tmp / f"sd21_{dtype_name}.safetensors"
        code, _ = run.diffscope("extract", "--model", model, "--image", png, "--t", T, "--blocks", ",".join(taps),
                                "--noise", run.tmp / "sd21_noise.npy", "--device", "cuda", "--dtype", dtype_name,
                                "--out", out, timeout=180)
        if code != 0:
            run.note(f"parity SD 2.1 512 {dtype_name}: FAILED to run")
            continue
        ours = load_safetensors(out)
        errs = {t: rel_err(ours[t], theirs[t]) for t in taps}
        run.record(step="parity-sd21", dtype=dtype_name, errors=errs)
        run.note(f"parity SD 2.1 512 {dtype_name} CUDA vs diffusers {dtype_name} CUDA (same image and noise): "
                 + ", ".join(f"{t} {e:.2e}" for t, e in errs.items()))


def train(run: Run) -> None:
    data = run.tmp / "synth"
    code, _ = run.diffscope("synth", "--out", data, "--count", 256, "--seed", 1, timeout=120)
    if code != 0:
        run.note("train: synth failed")
        return
    for batch in (16, 64):
        code, text = run.diffscope("train", "--device", "cuda", "--data", data / "JPEGImages", "--out",
                                   run.tmp / f"run{batch}", "--steps", 40, "--batch", batch, "--checkpoint-every", 0,
                                   "--log-every", 5, timeout=180)
        lines = [l for l in text.splitlines() if l.startswith("step ")]
        run.record(step="train", batch=batch, exit=code, lines=lines)
        for l in lines:
            run.note(f"train batch {batch}: {l}")
        if code != 0:
            run.note(f"train batch {batch}: exit {code}: {text.strip().splitlines()[-1] if text.strip() else ''}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", help="the diffscope binary built with --features cuda")
    p.add_argument("--out", help="results folder")
    p.add_argument("--steps", default=",".join(STEPS))
    p.add_argument("--deadline-s", type=float, default=540)
    p.add_argument("--models-dir", default="/tmp/diffscope-models")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda", help="cpu runs parity-tiny here, to check this script")
    p.add_argument("--diffusers-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ensemble", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--ways", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.diffusers_worker:
        diffusers_worker(args)
        return
    run = Run(args)
    steps = [s for s in args.steps.split(",") if s]
    actions = {
        "parity-tiny": lambda: parity_tiny(run),
        "build": lambda: build(run),
        "bench-768": lambda: bench(run, 768, ["f16", "f32"]),
        "ncu": lambda: ncu(run),
        "parity-sd21": lambda: parity_sd21(run),
        "bench-512": lambda: (bench(run, 512, ["f16", "f32"], own=False),
                              bench(run, 768, ["bf16"], ways="careful-batched")),
        "train": lambda: train(run),
    }
    code, text = run.sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv"], 30)
    run.note("GPU: " + " ".join(text.strip().splitlines()[-1:]))
    for step in steps:
        if step not in actions:
            run.note(f"unknown step {step}")
            continue
        if run.left() < 20:
            run.note(f"{step}: skipped (deadline)")
            continue
        run.log(f"=== {step} ({run.left():.0f} s left)")
        try:
            actions[step]()
        except Exception as e:  # one step's failure must not lose the others' results
            import traceback

            run.log(traceback.format_exc())
            run.note(f"{step}: ERROR {type(e).__name__}: {str(e)[:300]}")
    run.note(f"done in {time.time() - run.started:.0f} s")


if __name__ == "__main__":
    main()
