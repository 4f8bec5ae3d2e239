"""What a user would write instead: the same three networks in PyTorch, same forced pass
fractions, on the CPU with the same thread count. Reads onionnet's model description (TOML),
builds the monolithic network, the non-sharing cascade and the onion with random weights, and
times one batch per p: stage 1 on the whole batch, `index_select` of the survivors (input rows,
and for the onion the stage-1 maps stage 2 reads), stage 2 on them. Warm-up, then the median of
repeated runs, the three networks interleaved, each timed run right after untimed runs of the
same network lasting at least as long as a monolithic run (--cold: right after the others), as
`onionnet bench` does.

Usage (see bench/run_pytorch.sh, which makes the virtual environment):
    python bench/pytorch_bench.py specs/2ch-deep.toml --batch 128 --threads 2 [--onionnet docs/bench/2ch-deep/bench.csv]

With --onionnet, also prints onionnet's time per example from that CSV (written by
`onionnet bench`) and the ratio onionnet / PyTorch for each network and p.
"""

import argparse
import csv
import math
import statistics
import sys
import time
import tomllib

import torch
import torch.nn.functional as F


def load_spec(path):
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    layers = []
    for i, l in enumerate(raw["layer"]):
        kind = l["type"]
        split = l.get("split")
        if split is not None and any(isinstance(v, float) for v in split):
            sys.exit(f"{path}: layer[{i}].split: fractions are not supported here, write counts")
        layers.append({
            "kind": kind,
            "width": l.get("filters", l.get("units", 0)),
            "kernel": l.get("kernel", 1),
            "stride": l.get("stride", l.get("kernel", 1) if kind == "maxpool" else 1),
            "padding": l.get("padding", 0),
            "ceil": l.get("ceil", False),
            "split": split or [],
        })
    names = [l.get("name", f"{l['type']}{i + 1}") for i, l in enumerate(raw["layer"])]
    stages = []
    for s in raw["stage"]:
        e = s.get("ends_at", len(layers))
        depth = names.index(e) + 1 if isinstance(e, str) else e
        if s.get("loss", "cross_entropy") == "hinge":
            outputs = 1
        else:
            outputs = s.get("classes", raw["classes"])
        stages.append({"depth": depth, "outputs": outputs})
    inp = raw["input"]
    return (inp["channels"], inp["height"], inp["width"]), layers, stages


def spatial(inp, layers):
    """(h, w) after each layer; index 0 is the input."""
    sizes = [(inp[1], inp[2])]
    for l in layers:
        h, w = sizes[-1]
        if l["kind"] == "conv":
            f = lambda n: (n + 2 * l["padding"] - l["kernel"]) // l["stride"] + 1
            h, w = f(h), f(w)
        elif l["kind"] == "fc":
            h, w = 1, 1
        elif l["kind"] == "maxpool":
            k, s = l["kernel"], l["stride"]
            rnd = math.ceil if l["ceil"] else math.floor
            f = lambda n: int(rnd((n - k) / s)) + 1
            h, w = f(h), f(w)
        sizes.append((h, w))
    return sizes


class Branchy(torch.nn.Module):
    """The same wiring as onionnet's OnionModule: branch b's layer l reads the concatenated
    maps after layer l - 1 of branches 0..b that have channels there."""

    def __init__(self, inp, layers, sizes, branches):
        super().__init__()
        self.layers, self.branches = layers, branches  # branches: list of (channels[l], depth, outputs)
        self.mods = torch.nn.ModuleList()
        for b, (ch, depth, outputs) in enumerate(branches):
            m = torch.nn.ModuleDict()
            for l in range(depth):
                L = layers[l]
                if L["kind"] in ("conv", "fc") and ch[l] > 0:
                    cin = inp[0] if l == 0 else sum(branches[t][0][l - 1] for t in range(b + 1))
                    k = (L["kernel"], L["kernel"]) if L["kind"] == "conv" else sizes[l]
                    s = L["stride"] if L["kind"] == "conv" else 1
                    p = L["padding"] if L["kind"] == "conv" else 0
                    m[str(l)] = torch.nn.Conv2d(cin, ch[l], k, stride=s, padding=p)
            cin = sum(branches[t][0][depth - 1] for t in range(b + 1) if branches[t][1] >= depth)
            m["head"] = torch.nn.Conv2d(cin, outputs, sizes[depth])
            self.mods.append(m)

    def branch(self, b, x, prev):
        ch, depth, _ = self.branches[b]
        m = self.mods[b]
        own = []

        def read(l):
            parts = [prev[t][l] for t in range(b) if self.branches[t][0][l] > 0] + ([own[l]] if ch[l] > 0 else [])
            return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

        for l in range(depth):
            L = self.layers[l]
            if L["kind"] in ("conv", "fc"):
                own.append(m[str(l)](x if l == 0 else read(l - 1)) if ch[l] > 0 else None)
            elif own[l - 1] is None:
                own.append(None)
            elif L["kind"] == "relu":
                own.append(F.relu(own[l - 1]))
            elif L["kind"] == "maxpool":
                own.append(F.max_pool2d(own[l - 1], L["kernel"], L["stride"], ceil_mode=L["ceil"]))
            else:  # batchnorm / dropout: identity at inference for timing purposes
                own.append(own[l - 1])
        return own, m["head"](read(depth - 1)).flatten(1)


def widths(layers, stages, depth_of, per_layer):
    ch, carry = [], 0
    for l, L in enumerate(layers):
        if l >= depth_of:
            carry = 0
        elif L["kind"] in ("conv", "fc"):
            carry = per_layer[l]
        ch.append(carry)
    return ch


def build(inp, layers, stages):
    sizes = spatial(inp, layers)
    S = len(stages)
    onion_br = [(widths(layers, stages, st["depth"], [L["split"][s] if L["split"] else 0 for L in layers]), st["depth"], st["outputs"])
                for s, st in enumerate(stages)]
    mono = Branchy(inp, layers, sizes, [(widths(layers, stages, stages[-1]["depth"], [L["width"] for L in layers]), stages[-1]["depth"], stages[-1]["outputs"])])
    ns = []
    for s in range(S):
        w = [sum(onion_br[t][0][l] for t in range(s + 1)) for l in range(len(layers))]
        ns.append(Branchy(inp, layers, sizes, [(w, stages[s]["depth"], stages[s]["outputs"])]))
    onion = Branchy(inp, layers, sizes, onion_br)
    return mono, ns, onion


def run_mono(mono, x, keep):
    return mono.branch(0, x, [])[1]


def run_ns(ns, x, keep):
    ns[0].branch(0, x, [])
    if keep.numel():
        ns[1].branch(0, x.index_select(0, keep), [])


def run_onion(onion, x, keep):
    own, _ = onion.branch(0, x, [])
    if keep.numel():
        kept = [m.index_select(0, keep) if m is not None else None for m in own]
        onion.branch(1, x.index_select(0, keep), [kept])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cold", action="store_true", help="time each run right after the other networks' (no untimed run of its own first)")
    ap.add_argument("--p", type=float, nargs="*", default=[0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    ap.add_argument("--onionnet", help="bench.csv written by `onionnet bench` for the same spec and batch")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    inp, layers, stages = load_spec(a.spec)
    if len(stages) != 2:
        sys.exit("this script times two-stage cascades")
    mono, ns, onion = build(inp, layers, stages)
    x = torch.randn(a.batch, *inp)
    ours = {}
    if a.onionnet:
        with open(a.onionnet) as f:
            for r in csv.DictReader(f):
                ours[(r["network"], round(float(r["p"]), 4))] = float(r["ms_per_example"])
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, {a.spec}")
    print(f"{'network':<12} {'p':>5} {'ms/example':>11} {'ratio':>7}" + (f" {'onionnet':>9} {'ours/torch':>10}" if ours else ""))
    runs = [("monolithic", run_mono, mono), ("non-sharing", run_ns, ns), ("onion", run_onion, onion)]
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for p in a.p:
            k = int(round(p * a.batch))
            keep = torch.randperm(a.batch, generator=gen)[:k].sort().values
            times = {n: [] for n, _, _ in runs}
            last_mono = 0.0
            for rep in range(a.warmup + a.reps):
                for n, f, net in runs:
                    if not a.cold:
                        # untimed runs of its own lasting at least a monolithic run (the
                        # caches then hold its data, not the monolithic network's)
                        warm = 0.0
                        for _ in range(64):
                            t = time.perf_counter()
                            f(net, x, keep)
                            warm += time.perf_counter() - t
                            if warm >= last_mono:
                                break
                    t = time.perf_counter()
                    f(net, x, keep)
                    dt = time.perf_counter() - t
                    if n == "monolithic":
                        last_mono = dt
                    if rep >= a.warmup:
                        times[n].append(dt)
            mono_ms = statistics.median(times["monolithic"]) * 1e3 / a.batch
            for n, _, _ in runs:
                ms = statistics.median(times[n]) * 1e3 / a.batch
                line = f"{n:<12} {p:>5.2f} {ms:>11.4f} {ms / mono_ms:>7.3f}"
                o = ours.get((n, round(p, 4)))
                if o is not None:
                    line += f" {o:>9.4f} {o / ms:>10.2f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
