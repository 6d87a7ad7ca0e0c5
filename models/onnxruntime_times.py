#!/usr/bin/env python3
"""onnxruntime's single-thread median time for each of the four networks on
this machine: the reference `lambdex bench models` runs (with --json) and
puts beside ours, measured in the same run on the same host.

Needs onnxruntime and numpy, e.g.
    python3 -m pip install --target /tmp/ort onnxruntime numpy
    PYTHONPATH=/tmp/ort python3 models/onnxruntime_times.py
"""
import argparse
import json
import pathlib
import statistics
import time

import numpy as np
import onnxruntime as ort

MODELS = pathlib.Path(__file__).resolve().parent
NETWORKS = [
    ("blazeface-128", "blazeface/face_detection_front_128x128_barracuda.onnx", [1, 128, 128, 3]),
    ("blazeface-256", "blazeface/face_detection_back_256x256_barracuda.onnx", [1, 256, 256, 3]),
    ("age-v1", "age-gender/age-v1.onnx", [1, 3, 64, 64]),
    ("gender-v1", "age-gender/gender-v1.onnx", [1, 3, 32, 32]),
]


def median_ms(session, feed, iterations):
    session.run(None, feed)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print JSON (what `lambdex bench models` reads)")
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    rng = np.random.default_rng(0)
    times = {}
    for name, path, shape in NETWORKS:
        session = ort.InferenceSession(str(MODELS / path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: rng.random(shape, dtype=np.float32)}
        times[name] = median_ms(session, feed, args.iterations)
    if args.json:
        print(json.dumps({"version": ort.__version__, "networks": times}))
        return
    print(f"onnxruntime {ort.__version__}, one thread, median of {args.iterations} runs")
    for name, ms in times.items():
        print(f"{name}: {ms:.2f} ms")


if __name__ == "__main__":
    main()
