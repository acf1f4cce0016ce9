#!/usr/bin/env python3
"""PyTorch's training throughput on the bundled default model's architecture (or the UNet config
given with --config, e.g. the one `diffscope train --channels ...` wrote): the peer for
`diffscope train`'s images/s (bench/README.md). Same model config, optimiser, batch and data.

    python bench/train_throughput_torch.py --data DATA/JPEGImages [--batch 16] [--steps 30] [--threads 2]
        [--config RUN/unet/config.json]
"""

import argparse
import glob
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--config", default=str(REPO / "assets/default-model/unet/config.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = json.loads(Path(args.config).read_text())
    unet = UNet2DModel.from_config(config).train()
    files = sorted(glob.glob(f"{args.data}/**/*.jpg", recursive=True))[: args.batch * 64]
    images = torch.stack(
        [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]
    ).float() / 127.5 - 1
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=1e-6)
    betas = torch.linspace(1e-4, 0.02, 1000)
    alpha_bar = torch.cumprod(1 - betas, 0)
    g = torch.Generator().manual_seed(0)

    def step(i: int) -> float:
        idx = torch.randint(0, len(images), (args.batch,), generator=g)
        x = images[idx]
        t = torch.randint(0, 1000, (args.batch,), generator=g)
        noise = torch.randn(x.shape, generator=g)
        ab = alpha_bar[t].view(-1, 1, 1, 1)
        noisy = ab.sqrt() * x + (1 - ab).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(noisy, t).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        return loss.item()

    for i in range(args.warmup):
        step(i)
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    seconds = time.perf_counter() - start
    print(json.dumps({"tool": "pytorch", "threads": args.threads, "batch": args.batch,
                      "images_per_s": args.batch * args.steps / seconds, "seconds": seconds}))


if __name__ == "__main__":
    main()
