"""Read every file diffscope exports with numpy / safetensors / torch and check they agree.

Run by hand (not by CI), from the repository root, after `cargo build`:
    /path/to/venv/bin/python tests/scripts/check_exports_with_numpy.py [target/debug/diffscope]
Needs numpy, safetensors and torch. Exits non-zero on the first disagreement.
"""
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/diffscope"
FIX = Path("tests/fixtures")


def run(*args):
    subprocess.run([BIN, *map(str, args)], check=True, capture_output=True)


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    common = ["--model", FIX / "models/sd1_tiny", "--t", 261, "--blocks", "up_blocks.1,mid_block", "--ensemble", 2]
    run("extract", "--image", FIX / "images/sd_64x48.png", *common, "--out", tmp / "a.safetensors")
    run("extract", "--image", FIX / "images/sd_64x48.png", *common, "--out", tmp / "npy", "--format", "npy")
    st = load_file(tmp / "a.safetensors")
    with safe_open(tmp / "a.safetensors", "pt") as f:
        meta = f.metadata()
        as_torch = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["t"] == "261" and meta["ensemble"] == "2", meta
    assert set(st) == {"up_blocks.1", "mid_block", "latents"}, set(st)
    info = json.loads((tmp / "npy/meta.json").read_text())
    for name, arr in st.items():
        assert arr.dtype == np.float32 and arr.ndim == 3, (name, arr.dtype, arr.shape)
        from_npy = np.load(tmp / "npy" / f"{name}.npy")
        assert np.array_equal(from_npy, arr), name
        assert torch.equal(as_torch[name], torch.from_numpy(arr)), name
        assert list(arr.shape) == info["tensors"][name]["shape"], name
    print("feature dumps: safetensors (numpy, torch) and npy agree")

    run("extract", "--image", FIX / "images/sd_square_32.png", *common, "--out", tmp / "b.safetensors")
    out = tmp / "corr"
    run("correspond", "--source", FIX / "images/sd_64x48.png", "--targets", FIX / "images/sd_square_32.png",
        "--points", "20,20;40,30", "--blocks", "up_blocks.1", "--source-features", tmp / "a.safetensors",
        "--target-features", tmp / "b.safetensors", "--out", out)
    records = json.loads((out / "matches.json").read_text())["matches"]
    rows = list(csv.DictReader(line for line in (out / "matches.csv").open() if not line.startswith("#")))
    assert len(records) == len(rows) == 2
    for r, c in zip(records, rows):
        assert [float(c["source_x"]), float(c["source_y"])] == r["source_point"]
        assert np.float32(c["match_x"]) == np.float32(r["match"][0]) and np.float32(c["match_y"]) == np.float32(r["match"][1])
        assert np.float32(c["similarity"]) == np.float32(r["similarity"])
        assert (c["mutual"] == "true") == r["mutual"]
    # The similarity is the best cosine of the source vector (DIFT's: the map upsampled bilinearly to
    # the image, read at the pixel) with the target cells.
    src, trg = st["up_blocks.1"], load_file(tmp / "b.safetensors")["up_blocks.1"]
    up = torch.nn.functional.interpolate(torch.from_numpy(src)[None], size=(48, 64), mode="bilinear", align_corners=False)[0]
    for r in records:
        x, y = (int(v) for v in r["source_point"])
        v = up[:, y, x].numpy()
        v = v / np.linalg.norm(v)
        unit = trg / np.linalg.norm(trg, axis=0, keepdims=True).clip(1e-12)
        best = np.einsum("c,chw->hw", v, unit).max()
        assert abs(best - r["similarity"]) < 1e-5, (best, r["similarity"])
    print("correspondences: JSON and CSV agree, similarities equal numpy's;", records[0])

    seg = tmp / "seg"
    run("segment", "--images", f"{FIX / 'images/sd_64x48.png'},{FIX / 'images/sd_square_32.png'}",
        "--features", f"{tmp / 'a.safetensors'},{tmp / 'b.safetensors'}", "--blocks", "up_blocks.1", "--k", 3, "--joint", "--out", seg)
    labels = np.load(seg / "sd_64x48_labels.npy")
    assert labels.dtype == np.int64 and labels.shape == (48, 64) and labels.min() >= 0 and labels.max() < 3
    print("label maps: int64 [H,W] in 0..K")
print("all exports read back")
