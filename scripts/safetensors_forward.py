# The exported retrieval onion run in numpy from the documented tensor names alone: what a
# Python user needs to use `onionnet export`'s file. Needs numpy and safetensors (pip).
#   onionnet export fashion --out fashion.safetensors
#   python3 scripts/safetensors_forward.py fashion.safetensors
import gzip, json, sys, numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open
FILE = sys.argv[1] if len(sys.argv) > 1 else 'fashion.safetensors'
t = load_file(FILE)
with safe_open(FILE, 'np') as f: meta = f.metadata()
pre = json.loads(meta['preprocess'])
b = gzip.open('data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz').read()
x = np.frombuffer(b[16:], np.uint8).reshape(-1, 1, 28, 28)[:200].astype(np.float32) / 255
x = (x - pre['mean']) / pre['std']
def conv(x, w, b, pad):
    x = np.pad(x, ((0,0),(0,0),(pad,pad),(pad,pad)))
    k = w.shape[2]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # n c h w k k
    return np.einsum('nchwij,ocij->nohw', win, w) + b[None, :, None, None]
relu = lambda v: np.maximum(v, 0)
pool = lambda v: v.reshape(v.shape[0], v.shape[1], v.shape[2]//2, 2, v.shape[3]//2, 2).max(axis=(3, 5))
s = lambda n: (t[n + '.weight'], t[n + '.bias'])
# stage 1, then stage 2 reading stage 1's maps first
a1 = pool(relu(conv(x, *s('stage1.conv1'), 1)));  a2 = pool(relu(conv(x, *s('stage2.conv1'), 1)))
c2in = np.concatenate([a1, a2], 1)
b1 = pool(relu(conv(a1, *s('stage1.conv2'), 1))); b2 = pool(relu(conv(c2in, *s('stage2.conv2'), 1)))
f1 = relu(conv(b1, *s('stage1.fc1'), 0)); f2 = relu(conv(np.concatenate([b1, b2], 1), *s('stage2.fc1'), 0))
h2 = conv(np.concatenate([f1, f2], 1), *s('stage2.head'), 0)[:, :, 0, 0]
p = np.exp(h2 - h2.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
for i in np.argsort(-p[:, 1])[:5]: print(f"test image {i}: P(Trouser) {p[i,1]:.6f}")
