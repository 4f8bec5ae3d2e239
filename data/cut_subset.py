"""Cuts the committed Fashion-MNIST subset from Debian's dataset-fashion-mnist package.

Usage: python3 data/cut_subset.py  (writes data/fashion-mnist-subset/*.gz)
Takes the first N_TRAIN training and the first N_TEST test images, unchanged.
"""
import gzip, os, struct

SRC = "/usr/share/datasets/fashion-mnist"
DST = os.path.join(os.path.dirname(__file__), "fashion-mnist-subset")
N_TRAIN, N_TEST = 6000, 2000

def cut(name, n):
    with gzip.open(os.path.join(SRC, name + ".gz")) as f:
        data = f.read()
    nd = data[3]
    dims = list(struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd]))
    item = 1
    for d in dims[1:]:
        item *= d
    head = data[:4] + struct.pack(">" + "I" * nd, n, *dims[1:])
    body = data[4 + 4 * nd: 4 + 4 * nd + n * item]
    with gzip.GzipFile(os.path.join(DST, name + ".gz"), "wb", mtime=0) as f:
        f.write(head + body)

os.makedirs(DST, exist_ok=True)
for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
    cut(f"{split}-images-idx3-ubyte", n)
    cut(f"{split}-labels-idx1-ubyte", n)
