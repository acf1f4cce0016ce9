"""How much diffscope's JPEG decoding (the `image` crate's zune-jpeg) differs from PIL's
(libjpeg-turbo, which diffusers pipelines read images with), on pixels and on features.

For every bundled sample JPEG (assets/samples/JPEGImages), PIL's decoding is saved as a lossless
PNG; diffscope extracts every tap of the bundled default model from the JPEG (its own decoding)
and from that PNG (PIL's pixels), at the model's suggested t, one noise draw with seed 0. Prints,
per image, the pixel difference and, per tap, the largest change relative to the tap's largest
absolute value; then the largest over all images. The README's "Input fidelity" quotes this.

Run by hand (not by CI), from the repository root, after `cargo build`:
    /work/venv/bin/python tests/scripts/jpeg_decoding_vs_pil.py [target/debug/diffscope]
Needs numpy, pillow and safetensors.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, features
from safetensors.numpy import load_file

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/diffscope"
SAMPLES = sorted(Path("assets/samples/JPEGImages").glob("*/*.jpg"))
T = 300  # the default model's suggested t (assets/default-model/diffscope.json)


def extract(image: Path, out: Path) -> dict:
    subprocess.run(
        [BIN, "extract", "--model", "default", "--image", str(image), "--t", str(T),
         "--blocks", "all", "--ensemble", "1", "--seed", "0", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return load_file(out)


def main() -> None:
    print(f"PIL {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}")
    worst_tap = (0.0, "", "")
    worst_pixel = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for jpeg in SAMPLES:
            pil = np.asarray(Image.open(jpeg).convert("RGB"))
            png = tmp / f"{jpeg.stem}.png"
            Image.fromarray(pil).save(png)
            ours = extract(jpeg, tmp / "ours.safetensors")
            theirs = extract(png, tmp / "pil.safetensors")
            # diffscope's pixels: the `latents` of a pixel-space model are its input x = u8/127.5 - 1.
            our_pixels = np.round((ours["latents"] + 1) * 127.5).astype(int).transpose(1, 2, 0)
            pixel = np.abs(our_pixels - pil.astype(int))
            worst_pixel = max(worst_pixel, int(pixel.max()))
            changes = {}
            for tap, value in theirs.items():
                if tap == "latents":
                    continue
                change = float(np.abs(ours[tap] - value).max() / np.abs(value).max())
                changes[tap] = change
                if change > worst_tap[0]:
                    worst_tap = (change, tap, jpeg.name)
            tap = max(changes, key=changes.get)
            print(
                f"{jpeg.parent.name}/{jpeg.name}: pixels differ by up to {pixel.max()} levels on "
                f"{np.mean(pixel > 0):.2%} of the values; largest tap change {changes[tap]:.2e} ({tap})"
            )
    change, tap, name = worst_tap
    print(f"largest pixel difference: {worst_pixel} levels")
    print(f"largest tap change: {change:.2e} of the tap's largest value ({tap}, {name})")


if __name__ == "__main__":
    main()
