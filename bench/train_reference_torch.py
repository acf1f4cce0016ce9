#!/usr/bin/env python3
"""A reference for what an architecture can learn on the synthetic keypoint dataset: trains a
diffusers UNet2DModel with the same objective as `diffscope train` (DDPM epsilon loss, linear
betas, uniform t, AdamW, warm-up, gradient clipping, EMA) on a GPU for a fixed time, and writes
diffusers folders that `diffscope sample` and `diffscope eval pck` read.

It answers a planning question, not a shipping one: the bundled model is trained by diffscope
itself; this says how far the same architecture goes with far more steps than two CPU cores give.

    python bench/train_reference_torch.py --data DATA/JPEGImages --out OUT --minutes 4 \
        [--batch 128] [--lr 5e-4] [--channels 16,32,64] [--layers-per-block 1] [--save-every-min 1]
"""

import argparse
import copy
import glob
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def load_images(data: str, device: str) -> torch.Tensor:
    files = sorted(glob.glob(f"{data}/**/*.jpg", recursive=True) + glob.glob(f"{data}/**/*.png", recursive=True))
    if not files:
        raise SystemExit(f"no images under {data}")
    x = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)


def save(unet: UNet2DModel, out: Path) -> None:
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--channels", default=None, help="e.g. 32,64,128 (default: the bundled model's)")
    p.add_argument("--layers-per-block", type=int, default=None)
    p.add_argument("--save-every-min", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    config = json.loads((REPO / "assets/default-model/unet/config.json").read_text())
    if args.channels:
        config["block_out_channels"] = [int(c) for c in args.channels.split(",")]
    if args.layers_per_block:
        config["layers_per_block"] = args.layers_per_block
    unet = UNet2DModel.from_config(config).to(args.device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    params = sum(p.numel() for p in unet.parameters())
    images = load_images(args.data, args.device)
    out = Path(args.out)
    print(f"{len(images)} images, {params} parameters, config {config['block_out_channels']} x{config['layers_per_block']}", flush=True)

    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-6)
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, device=args.device), 0)
    start = time.perf_counter()
    next_save = args.save_every_min * 60
    step = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= next_save or elapsed >= args.minutes * 60:
            save(ema, out / f"step-{step:06d}")
            print(f"saved step {step} after {elapsed:.0f} s ({step * args.batch / elapsed:.0f} img/s)", flush=True)
            next_save += args.save_every_min * 60
            if elapsed >= args.minutes * 60:
                break
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        idx = torch.randint(0, len(images), (args.batch,), device=args.device)
        x = images[idx]
        t = torch.randint(0, 1000, (args.batch,), device=args.device)
        noise = torch.randn_like(x)
        ab = alpha_bar[t].view(-1, 1, 1, 1)
        loss = torch.nn.functional.mse_loss(unet(ab.sqrt() * x + (1 - ab).sqrt() * noise, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, w in zip(ema.parameters(), unet.parameters()):
                e.lerp_(w, 1 - args.ema)
        step += 1
        if step % 500 == 0:
            print(f"step {step} loss {loss.item():.5f}", flush=True)


if __name__ == "__main__":
    main()
