#!/usr/bin/env python3
"""Writes a ResNet-like onion description: a stem conv, stages of basic blocks (conv-bn-relu-
conv-bn, add, relu; the first block of a wider stage strides 2 and its add projects), global
average pooling and the head. Every conv's filters split FRACTION / rest between the stages.

    scripts/resnet_spec.py NAME CHANNELS SIZE WIDTHS BLOCKS [--maxpool] > specs/NAME.toml

e.g. `scripts/resnet_spec.py resnet18-32 3 32 64,128,256,512 2` (ResNet-18 at 32x32) and
`scripts/resnet_spec.py resnet-fashion 1 28 16,32,64 1` (the small one trained on
Fashion-MNIST)."""
import sys

def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    name, channels, size = args[0], int(args[1]), int(args[2])
    widths = [int(w) for w in args[3].split(",")]
    blocks = int(args[4])
    out = []
    def split(w):
        first = w // 4
        return f"split = [{first}, {w - first}]"
    def conv(n, w, stride=1):
        s = f"\nstride = {stride}" if stride != 1 else ""
        out.append(f'[[layer]]\nname = "{n}"\ntype = "conv"\nfilters = {w}\nkernel = 3\npadding = 1{s}\n{split(w)}\n')
    def plain(t, n=None):
        out.append(f'[[layer]]\n' + (f'name = "{n}"\n' if n else "") + f'type = "{t}"\n')
    conv("stem", widths[0])
    plain("batchnorm")
    plain("relu", "stem_out")
    last = "stem_out"
    for i, w in enumerate(widths):
        for j in range(blocks):
            b = f"s{i + 1}b{j + 1}"
            conv(f"{b}_conv1", w, 2 if (i > 0 and j == 0) else 1)
            plain("batchnorm")
            plain("relu")
            conv(f"{b}_conv2", w)
            plain("batchnorm")
            out.append(f'[[layer]]\nname = "{b}_add"\ntype = "add"\nfrom = "{last}"\n')
            plain("relu", f"{b}_out")
            last = f"{b}_out"
    plain("avgpool", "pool")
    head = f"""# {name}: a ResNet-like onion (written by scripts/resnet_spec.py {' '.join(sys.argv[1:])}).
# Stem conv, {len(widths)} stages of {blocks} basic block(s) of widths {', '.join(map(str, widths))} (the first
# block of each later stage strides 2 and projects its residual with a 1x1 conv), global
# average pooling, the head. Every conv gives a quarter of its filters to stage 1, which
# predicts class groups (k-means on the monolithic network's class-averaged activations);
# stage 2 wraps it with the other three quarters, at the same depth, and predicts the class.
name = "{name}"
classes = 10
input = {{ channels = {channels}, height = {size}, width = {size} }}

"""
    tail = """
[[stage]]
name = "groups"
loss = "cross_entropy"
weight = 1.0
classes = 4
label_map = "kmeans"

[[stage]]
name = "classes"
loss = "cross_entropy"
weight = 1.0
"""
    sys.stdout.write(head + "\n".join(out) + tail)

main()
