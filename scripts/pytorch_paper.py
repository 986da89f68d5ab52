#!/usr/bin/env python3
"""The paper's experiment in PyTorch: the reference `mixnn bench paper` measures beside its modes.

The model is models/paper-mlp.toml's: Linear 784-128, ReLU, Linear 128-64, ReLU, Linear 64-10,
LogSoftmax, NLLLoss; SGD (lr 0.01, momentum 0.9), batches of 64, on one thread. The data are
the IDX files the Rust side reads (pixels / 255), the first --train-limit and --test-limit
examples, shuffled every epoch. An epoch's time is its training only (batches built from the
tensors in memory, as the Rust side builds them), not the test pass.

Output, on stdout, one JSON object per line:
    {"ready": true, "torch": "2.5.1", ...}                        once the data are loaded
    {"epoch": 1, "train_s": 0.31, "test_acc": 0.887, "train_loss": 0.74}   per epoch
    {"summary": true, "median_train_s": 0.31, "final_acc": 0.93, ...}     at the end

With --step, the script waits for a line on stdin before each epoch (and stops at end of
input): `mixnn bench paper` runs it so, its epochs taking turns with the other modes'.

Set up (in the repository): python3 -m venv .venv && .venv/bin/pip install torch numpy safetensors
Run alone: .venv/bin/python scripts/pytorch_paper.py --data ../shared/data/mnist --epochs 3
"""

import argparse
import gzip
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

IMAGES_MAGIC = 0x803
LABELS_MAGIC = 0x801


def read_idx(path, magic):
    """The dimensions and bytes of an IDX file of unsigned bytes (gzipped or not)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"{path}: not an IDX file of magic {magic:#x}")
    rank = data[3]
    head = 4 + 4 * rank
    if len(data) < head:
        raise ValueError(f"{path}: truncated header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    count = int(np.prod(dims)) if dims else 0
    if len(data) - head != count:
        raise ValueError(f"{path}: {len(data) - head} bytes of data, the header says {count}")
    return dims, np.frombuffer(data, dtype=np.uint8, offset=head)


def find(directory, name):
    """`name`, gzipped (MNIST's names, as the Rust side reads them) or not."""
    for candidate in (name + ".gz", name):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(os.path.join(directory, name + ".gz"))


def load_split(directory, prefix, limit):
    """The first `limit` images (float32, /255, flattened) and labels (int64) of a split."""
    dims, pixels = read_idx(find(directory, f"{prefix}-images-idx3-ubyte"), IMAGES_MAGIC)
    label_dims, labels = read_idx(find(directory, f"{prefix}-labels-idx1-ubyte"), LABELS_MAGIC)
    if len(dims) != 3 or label_dims != dims[:1]:
        raise ValueError(f"{directory}: {prefix} images {dims} and labels {label_dims} disagree")
    n = dims[0] if limit is None else min(limit, dims[0])
    images = pixels.reshape(dims[0], dims[1] * dims[2])[:n].astype(np.float32) / 255.0
    return torch.from_numpy(images), torch.from_numpy(labels[:n].astype(np.int64))


def lenet5():
    """models/lenet5-fashion.toml's LeNet-5, on [N, 1, 28, 28] images."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
        nn.LogSoftmax(dim=1),
    )


def vgg():
    """models/vgg-fashion.toml's VGG-style network (as torchvision's VGG with batch norm): four
    blocks of two 3x3 convolutions (8, 16, 32, 64 channels), each with batch norm and ReLU, max
    pooling after each block, then three Linear layers with dropout."""

    def conv(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    def block(c_in, c_out, pool):
        return [*conv(c_in, c_out), *conv(c_out, c_out), nn.MaxPool2d(pool)]

    return nn.Sequential(
        *block(1, 8, 2),
        *block(8, 16, 2),
        *block(16, 32, 2),
        *block(32, 64, 3),
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
        nn.LogSoftmax(dim=1),
    )


MODELS = {"paper-mlp": lambda: paper_mlp(), "lenet5": lenet5, "vgg": vgg}
# The shape of one example each model takes.
INPUT_SHAPES = {"paper-mlp": (784,), "lenet5": (1, 28, 28), "vgg": (1, 28, 28)}


def paper_mlp():
    """The paper's MLP; PyTorch's default initialisation (the Rust layers use the same)."""
    return nn.Sequential(
        nn.Linear(784, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
        nn.LogSoftmax(dim=1),
    )


def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="directory of the MNIST IDX files")
    p.add_argument("--model", choices=sorted(MODELS), default="paper-mlp")
    p.add_argument(
        "--save-init",
        metavar="FILE",
        help="save the initial weights (safetensors, state_dict names) for mixnn --init-weights",
    )
    p.add_argument(
        "--save-order",
        metavar="FILE",
        help="save each epoch's order of the training examples, for mixnn --order",
    )
    p.add_argument("--train-limit", type=int, help="use only the first N training examples")
    p.add_argument("--test-limit", type=int, help="use only the first N test examples")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1, help="of the initial weights and the shuffles")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--test-batch-size", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the paper's: one)")
    p.add_argument(
        "--step",
        action="store_true",
        help="wait for a line on stdin before each epoch (stop at end of input)",
    )
    args = p.parse_args()
    if args.epochs < 0 or args.batch_size < 1 or args.test_batch_size < 1 or args.threads < 1:
        p.error("--epochs must be at least 0, batch sizes and --threads at least 1")

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y = load_split(args.data, "train", args.train_limit)
    test_x, test_y = load_split(args.data, "t10k", args.test_limit)
    shape = INPUT_SHAPES[args.model]
    train_x = train_x.reshape(len(train_x), *shape)
    test_x = test_x.reshape(len(test_x), *shape)
    net = MODELS[args.model]()
    if args.save_init:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.save_init)
    loss_fn = nn.NLLLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
    shuffle = torch.Generator().manual_seed(args.seed)
    if args.save_order:
        # The same generator draws the same orders again below.
        probe = torch.Generator().manual_seed(args.seed)
        with open(args.save_order, "w") as f:
            for _ in range(args.epochs):
                f.write(" ".join(map(str, torch.randperm(len(train_y), generator=probe).tolist())))
                f.write("\n")
    emit(
        {
            "ready": True,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "train_examples": len(train_y),
            "test_examples": len(test_y),
        }
    )

    rows = []
    for epoch in range(1, args.epochs + 1):
        if args.step and not sys.stdin.readline():
            break
        net.train()
        started = time.perf_counter()
        order = torch.randperm(len(train_y), generator=shuffle)
        loss_sum, batches = 0.0, 0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(train_x[idx]), train_y[idx])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            batches += 1
        train_s = time.perf_counter() - started
        net.eval()
        started = time.perf_counter()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(test_y), args.test_batch_size):
                predicted = net(test_x[i : i + args.test_batch_size]).argmax(dim=1)
                correct += int((predicted == test_y[i : i + args.test_batch_size]).sum())
        row = {
            "epoch": epoch,
            "train_s": train_s,
            "test_acc": correct / max(len(test_y), 1),
            "train_loss": loss_sum / max(batches, 1),
            "test_s": time.perf_counter() - started,
        }
        rows.append(row)
        emit(row)

    emit(
        {
            "summary": True,
            "epochs": len(rows),
            "median_train_s": statistics.median(r["train_s"] for r in rows) if rows else None,
            "final_acc": rows[-1]["test_acc"] if rows else None,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
    )


if __name__ == "__main__":
    main()
