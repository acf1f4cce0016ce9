#!/usr/bin/env python3
"""Write an SDXL base 1.0 pipeline folder with random weights and the published configs
(tests/fixtures/published/stable-diffusion-xl-base-1.0), for timing diffscope on SDXL's shapes
without the real checkpoint (none is downloaded). One component at a time, so the process holds
at most the UNet (10.3 GB in float32). The tokenizers are the test fixtures' CLIP BPE (2514
tokens): token ids stay inside the text encoders' 49408-entry tables, and the cost of a pass does
not depend on them.

    /work/venv/bin/python bench/make_random_sdxl.py OUT_DIR
"""

import gc
import json
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "tests/fixtures/published/stable-diffusion-xl-base-1.0"
TOKENIZERS = {"tokenizer": "sd1_tiny", "tokenizer_2": "sd2_tiny"}


def config(part: str) -> dict:
    return json.loads((PUBLISHED / part / "config.json").read_text())


def main(out: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    out.mkdir(parents=True, exist_ok=True)
    builders = {
        "unet": lambda: UNet2DConditionModel.from_config(config("unet")),
        "vae": lambda: AutoencoderKL.from_config(config("vae")),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
        "text_encoder_2": lambda: CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))),
    }
    for name, build in builders.items():
        if (out / name).is_dir():
            continue
        model = build().eval()
        model.save_pretrained(out / name, safe_serialization=True, max_shard_size="20GB")
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
        del model
        gc.collect()
    for folder, fixture in TOKENIZERS.items():
        shutil.copytree(REPO / "tests/fixtures/models" / fixture / "tokenizer", out / folder, dirs_exist_ok=True)
    (out / "scheduler").mkdir(exist_ok=True)
    shutil.copy(PUBLISHED / "scheduler/scheduler_config.json", out / "scheduler/scheduler_config.json")
    index = {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.42.1"}
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
