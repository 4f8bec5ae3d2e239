#!/usr/bin/env python3
"""The committed Fashion-MNIST test images as PNGs, shifted, to try `--audit` on a stream
unlike the calibration data:

    python3 scripts/shift_images.py SHIFT OUT_DIR    # SHIFT: same, dim, noise, flip, blur

same: as they are; dim: half the brightness; noise: Gaussian noise (sd 60 of 255, seed 0);
flip: upside down; blur: down to 10x10 and back. Needs numpy and pillow."""
import gzip, os, sys
import numpy as np
from PIL import Image

shift, out = sys.argv[1], sys.argv[2]
raw = gzip.open("data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz").read()
images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
rng = np.random.default_rng(0)
shifts = {
    "same": lambda x: x,
    "dim": lambda x: (x * 0.5).astype(np.uint8),
    "noise": lambda x: np.clip(x + rng.normal(0, 60, x.shape), 0, 255).astype(np.uint8),
    "flip": lambda x: x[::-1],
    "blur": lambda x: np.array(Image.fromarray(x).resize((10, 10)).resize((28, 28))),
}
if shift not in shifts:
    sys.exit(f"shift_images: unknown shift {shift!r} (one of {', '.join(shifts)})")
os.makedirs(out, exist_ok=True)
for i, x in enumerate(images):
    Image.fromarray(shifts[shift](x)).save(os.path.join(out, f"{i:04d}.png"))
