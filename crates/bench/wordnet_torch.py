"""PyTorch reference of the WordNet DeepWalk example: the same configuration trained with
torch.optim.SparseAdam on two nn.Embedding(sparse=True) tables, timed phase by phase.

The graph, the model, the loss and every hyper-parameter are the example's (README,
"The WordNet example"): uniform random walks of 20 nodes over the undirected noun graph,
one per node per epoch in a shuffled order, batches of 256 walks, a window of 5 (a centre
and the next 4 walk nodes), 5 uniform negatives per centre, 64-wide input vectors drawn
from N(0, 0.1^2) and zero context vectors, loss = -mean log sigmoid(u.v) over the
positive pairs - mean log sigmoid(-u.v) over the negative ones, SparseAdam at lr 0.01.
The random draws are numpy's (vectorized), not the example's xoshiro streams, so the
figures agree in distribution, not digit for digit; the evaluation samples its own pairs
of the same kinds (5,000 direct hypernym pairs and 5,000 grandparent pairs, each against
as many uniform random pairs) and scores them with the cosine of the input vectors.

Prints one JSON line per epoch:
{"impl": "torch", "epoch", "loss", "train_secs", "direct_auc", "grandparent_auc",
 "steps", "phases": {"sampling", "lookup", "loss", "backward", "gradients", "optimizer"},
 "threads", "torch"}
where each phase is the epoch's seconds in it ("gradients" is zero_grad here: PyTorch
needs no collection step).

usage: python wordnet_torch.py [--data PATH] [--epochs 3] [--seed 0] [--threads N]
"""
import argparse
import gzip
import json
import time

import numpy as np
import torch


def load_graph(path):
    """(num_nodes, edges as an int64 array [E, 2] of (child, parent)) from the edge list."""
    opener = gzip.open if path.endswith(".gz") else open
    nodes, edges = None, []
    with opener(path, "rt", encoding="utf-8") as f:
        lines = (line.rstrip("\n") for line in f if not line.startswith("#"))
        for line in lines:
            if line.startswith("nodes "):
                nodes = int(line.split()[1])
                for _ in range(nodes):
                    next(lines)
            elif line.startswith("edges "):
                count = int(line.split()[1])
                for _ in range(count):
                    child, parent, _kind = next(lines).split("\t")
                    edges.append((int(child), int(parent)))
    if nodes is None:
        raise SystemExit(f"{path}: no 'nodes <count>' line")
    return nodes, np.asarray(edges, dtype=np.int64).reshape(-1, 2)


def adjacency(nodes, edges):
    """CSR of the undirected graph: every edge child -> parent links both ways."""
    src = np.concatenate([edges[:, 0], edges[:, 1]])
    dst = np.concatenate([edges[:, 1], edges[:, 0]])
    order = np.argsort(src, kind="stable")
    counts = np.bincount(src, minlength=nodes)
    offsets = np.zeros(nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, dst[order]


def walks(offsets, neighbours, starts, length, rng):
    """[len(starts), length] uniform random walks; a node without neighbours stays put."""
    out = np.empty((len(starts), length), dtype=np.int64)
    node = np.asarray(starts, dtype=np.int64)
    out[:, 0] = node
    for step in range(1, length):
        degree = offsets[node + 1] - offsets[node]
        pick = (rng.random(len(node)) * degree).astype(np.int64)
        moved = neighbours[np.minimum(offsets[node] + pick, len(neighbours) - 1)]
        node = np.where(degree > 0, moved, node)
        out[:, step] = node
    return out


def grandparent_pairs(nodes, edges):
    """(node, grandparent) pairs not linked directly, as the example defines them."""
    parents = [[] for _ in range(nodes)]
    linked = set()
    for child, parent in edges.tolist():
        parents[child].append(parent)
        linked.add((child, parent))
        linked.add((parent, child))
    pairs = set()
    for node in range(nodes):
        for parent in parents[node]:
            for grandparent in parents[parent]:
                if grandparent != node and (node, grandparent) not in linked:
                    pairs.add((node, grandparent))
    return np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def random_pairs(nodes, count, rng):
    a = rng.integers(0, nodes, count)
    b = rng.integers(0, nodes - 1, count)
    return np.stack([a, np.where(b >= a, b + 1, b)], axis=1)


def roc_auc(positive, negative):
    """Mann-Whitney AUC, ties counted as halves."""
    scores = np.concatenate([positive, negative])
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    p, n = len(positive), len(negative)
    return float((ranks[:p].sum() - p * (p + 1) / 2.0) / (p * n))


def cosine(vectors, pairs):
    a, b = vectors[pairs[:, 0]], vectors[pairs[:, 1]]
    norms = (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return ((a * b).sum(dim=1) / norms).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="examples/data/wordnet-nouns.tsv.gz")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--walk-length", type=int, default=20)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--init-std", type=float, default=0.1)
    ap.add_argument("--eval-pairs", type=int, default=5000)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    nodes, edges = load_graph(a.data)
    offsets, neighbours = adjacency(nodes, edges)
    eval_rng = np.random.default_rng([a.seed, 3])
    direct = edges[eval_rng.choice(len(edges), min(a.eval_pairs, len(edges)), replace=False)]
    gp_all = grandparent_pairs(nodes, edges)
    grandparent = gp_all[eval_rng.choice(len(gp_all), min(a.eval_pairs, len(gp_all)), replace=False)]
    direct_random = random_pairs(nodes, len(direct), eval_rng)
    grandparent_random = random_pairs(nodes, len(grandparent), eval_rng)

    centres = a.walk_length + 1 - a.window
    inputs = torch.nn.Embedding(nodes, a.dim, sparse=True)
    context = torch.nn.Embedding(nodes, a.dim, sparse=True)
    with torch.no_grad():
        inputs.weight.normal_(0.0, a.init_std)
        context.weight.zero_()
    optim = torch.optim.SparseAdam(list(inputs.parameters()) + list(context.parameters()), lr=a.lr)

    for epoch in range(1, a.epochs + 1):
        phases = dict.fromkeys(["sampling", "lookup", "loss", "backward", "gradients", "optimizer"], 0.0)
        total, steps = 0.0, 0
        started = time.perf_counter()
        starts = rng.permutation(nodes)
        for first in range(0, nodes, a.batch_size):
            t0 = time.perf_counter()
            batch = walks(offsets, neighbours, starts[first : first + a.batch_size], a.walk_length, rng)
            w = len(batch)
            negative_ids = rng.integers(0, nodes, (w, centres * a.negatives))
            walk_ids = torch.from_numpy(batch)
            centre_ids = walk_ids[:, :centres]
            negative_ids = torch.from_numpy(negative_ids)
            t1 = time.perf_counter()
            u = inputs(centre_ids)  # [w, centres, d]
            v = context(walk_ids)  # [w, walk_length, d]
            n = context(negative_ids).view(w, centres, a.negatives, a.dim)
            t2 = time.perf_counter()
            positive = torch.stack(
                [(u * v[:, shift : shift + centres]).sum(-1) for shift in range(1, a.window)], dim=2
            )
            negative = (u.unsqueeze(2) * n).sum(-1)
            loss = -torch.nn.functional.logsigmoid(positive).mean() - torch.nn.functional.logsigmoid(-negative).mean()
            value = loss.item()
            t3 = time.perf_counter()
            loss.backward()
            t4 = time.perf_counter()
            optim.step()
            t5 = time.perf_counter()
            optim.zero_grad(set_to_none=True)
            t6 = time.perf_counter()
            for key, span in zip(phases, [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5, t5 - t4]):
                phases[key] += span
            total += value
            steps += 1
        train_secs = time.perf_counter() - started
        with torch.no_grad():
            vectors = inputs.weight.detach()
            aucs = [
                roc_auc(cosine(vectors, pos), cosine(vectors, neg))
                for pos, neg in [(direct, direct_random), (grandparent, grandparent_random)]
            ]
        print(
            json.dumps(
                {
                    "impl": "torch",
                    "epoch": epoch,
                    "loss": total / steps,
                    "steps": steps,
                    "train_secs": train_secs,
                    "direct_auc": aucs[0],
                    "grandparent_auc": aucs[1],
                    "phases": phases,
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
