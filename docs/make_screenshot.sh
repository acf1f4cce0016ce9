#!/usr/bin/env bash
# Regenerate docs/screenshot.png: the workbench in a real window under Xvfb, captured with ImageMagick.
# It opens two annotated samples of one category with a point on their first shared keypoint.
#   apt-get install -y --no-install-recommends xvfb xauth mesa-vulkan-drivers libvulkan1 imagemagick
#   docs/make_screenshot.sh [BINARY]      (default: target/release/diffscope)
# MODEL (default `default`) and SAMPLES (default assets/samples) choose what is shown.
# VIEW=attention writes docs/attention.png instead: the Attention view, where the source's first
# shared keypoint looks (self-attention).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/release/diffscope}
model=${MODEL:-default}
samples=${SAMPLES:-assets/samples}
view=${VIEW:-correspondence}
out=docs/screenshot.png
[ "$view" = attention ] && out=docs/attention.png
work=$(mktemp -d)
export XDG_RUNTIME_DIR=$work
python3 - "$samples" "$model" "$view" > "$work/session.json" <<'PY'
import json, pathlib, sys
samples, model, view = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
by_category = {}
for ann in sorted(samples.glob("ImageAnnotation/*/*.json")):
    a = json.loads(ann.read_text())
    image = samples / "JPEGImages" / ann.parent.name / a["filename"]
    by_category.setdefault(ann.parent.name, []).append((image, a))
images = next(v for v in by_category.values() if len(v) >= 2)[:3]
source = images[0][1]
shared = [k for k, p in source["kps"].items() if p and all(a["kps"].get(k) for _, a in images[1:])]
points = [source["kps"][k] for k in shared[:2]]
features = {"size": "Native"}
# The tap and t the model suggests (the bundled model's best PCK), as the workbench starts with.
hints = pathlib.Path("assets/default-model" if model == "default" else model) / "diffscope.json"
if hints.is_file():
    suggested = json.loads(hints.read_text())["suggested"]
    features.update(tap=suggested["tap"], t=suggested["t"])
settings = {"features": features, "points": points, "active_point": 0}
if view == "attention":
    settings.update(view="Attention", attention={"kind": "SelfAttention", "point": [0, points[0]]})
print(json.dumps({"version": 1, "model": model, "images": [str(i) for i, _ in images],
                  "settings": settings}))
PY
Xvfb :77 -screen 0 1440x900x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $app $xvfb 2>/dev/null || true' EXIT
sleep 1
DISPLAY=:77 "$binary" gui --session "$work/session.json" &
app=$!
sleep "${WAIT:-20}"
DISPLAY=:77 import -window root "$out"
echo "wrote $out"
