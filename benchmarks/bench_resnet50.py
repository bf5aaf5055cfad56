"""Every stage of a randomly initialised torchvision ResNet-50 at 224 x 224 (conv1, layer1-4, avgpool) measured
exactly by measure_separation's two passes (O(K d) memory per point; conv1 and layer1 have d = 802,816), on
--images seeded images of 10 classes: peak resident memory, wall time, and what the second pass costs
against the first.

    .venv/bin/python benchmarks/bench_resnet50.py [--images 1000] [--batch-size 25] [--threads 2]

The images are made batch by batch (never all held): a class's fixed low-frequency pattern plus noise, so
the classes differ as real classes do, in the mean. Peak memory is the process's ru_maxrss (the model, one
batch's activations, and per point the class means, the basis and the deviations of one batch in float64).
"""
from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
import dependencies  # noqa: E402,F401  (one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: E402,F401  (before torch: the entry scripts' CPU kernels)

import torch  # noqa: E402
import torchvision  # noqa: E402

from representation_analysis import measure_separation  # noqa: E402

STAGES = ["conv1", "layer1", "layer2", "layer3", "layer4", "avgpool"]
CLASSES = 10


class SeededImages:
    """(images [B, 3, 224, 224], labels [B]) batches, the same at every iteration (two passes read them twice)."""

    def __init__(self, count: int, batch_size: int, seed: int = 0):
        self.count, self.batch_size, self.seed = count, batch_size, seed
        coarse = torch.randn(CLASSES, 3, 7, 7, generator=torch.Generator().manual_seed(seed))
        self.patterns = torch.nn.functional.interpolate(coarse, size=(224, 224), mode="bilinear")  # [K, 3, 224, 224]

    def __iter__(self):
        for number, start in enumerate(range(0, self.count, self.batch_size)):
            generator = torch.Generator().manual_seed(self.seed + 1 + number)
            size = min(self.batch_size, self.count - start)
            labels = torch.arange(start, start + size) % CLASSES
            yield 0.5 * self.patterns[labels] + torch.randn(size, 3, 224, 224, generator=generator), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="images measured (default 1000)")
    parser.add_argument("--batch-size", type=int, default=25, help="images per forward batch (default 25)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None, num_classes=CLASSES)
    data = SeededImages(arguments.images, arguments.batch_size)
    batches_per_pass = math.ceil(arguments.images / arguments.batch_size)
    starts: list[float] = []   # the time each forward pass over a batch starts
    handle = net.register_forward_pre_hook(lambda _module, _inputs: starts.append(time.perf_counter()))
    began = time.perf_counter()
    profile = measure_separation(net, data, modules=STAGES, num_classes=CLASSES, passes=2)
    wall = time.perf_counter() - began
    handle.remove()
    first, second = starts[batches_per_pass] - began, began + wall - starts[batches_per_pass]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    for record in profile["layers"]:
        print(f"{record['name']:8s} d = {record['dim']:>9,}  D = {record['D']:.6g}")
    widest = max(record["dim"] for record in profile["layers"])
    print(f"ResNet-50, {arguments.images} images of {CLASSES} classes at 224x224, batches of {arguments.batch_size}, "
          f"{torch.get_num_threads()} threads: peak RSS {peak_gb:.2f} GB, wall {wall:.0f} s "
          f"(pass 1 {first:.0f} s, pass 2 {second:.0f} s: two passes cost {wall / first:.2f}x one); "
          f"largest d = {widest:,}; fit slope {profile['fit']['slope']:.4f}, pearson_r {profile['fit']['pearson_r']:.4f}")


if __name__ == "__main__":
    main()
