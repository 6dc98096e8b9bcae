"""Sentiment model costs: load time, single-message latency (featurise native vs reference, session.run,
total), batched throughput. `python -m bench.sentiment` (about 20 s) -> bench/results/sentiment.md.

Messages are 32 short customer-chat lines (16 zh, 16 en), cycled. Single-message numbers time one
call each and report p50/p99 over all calls; every block runs for a fixed time budget, not a count,
so the benchmark stays bounded on a slow or busy machine.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata, resources

import numpy as np

from bench.common import machine_info, write_report

MESSAGES = [
    "你好，我的订单什么时候发货？",
    "请问怎么修改收货地址？",
    "麻烦帮我查一下订单号",
    "退款太慢了，等了一个星期了！",
    "这是什么垃圾服务，我要投诉",
    "谢谢，问题解决了",
    "客服态度很好，非常满意",
    "东西坏了，怎么退货？",
    "能开发票吗？",
    "太失望了，再也不买了",
    "好的，收到",
    "快递员把包裹弄丢了，你们负责吗？",
    "质量很好，下次还来",
    "为什么一直没人回复？？",
    "请问有优惠券吗",
    "我已经说了三遍了，到底能不能解决",
    "Hi, where is my order?",
    "How do I change my shipping address?",
    "Thanks, that fixed it!",
    "This is ridiculous, I've been waiting for two weeks.",
    "Can I get an invoice for order 12345?",
    "Your support is useless.",
    "Great, thank you so much!",
    "The item arrived broken, I want a refund now.",
    "Is there a discount code?",
    "I'm very disappointed with this service.",
    "ok",
    "Why is nobody answering??",
    "Love the product, works perfectly.",
    "Cancel my subscription immediately.",
    "Could you check my account?",
    "Worst customer service ever!!!",
]
BLOCK_SECONDS = 2.0


def _timed_calls(function: Callable[[object], object], args: list, seconds: float) -> np.ndarray:
    """Per-call durations (µs) of `function(arg)` cycling over `args` for `seconds`."""
    durations = []
    gc.disable()
    try:
        deadline = time.perf_counter() + seconds
        index = 0
        while time.perf_counter() < deadline:
            arg = args[index % len(args)]
            start = time.perf_counter_ns()
            function(arg)
            durations.append(time.perf_counter_ns() - start)
            index += 1
    finally:
        gc.enable()
    return np.array(durations) / 1000.0


def _percentiles(durations_us: np.ndarray) -> str:
    return f"{np.percentile(durations_us, 50):.1f} / {np.percentile(durations_us, 99):.1f}"


def _cold_start_ms() -> tuple[float, float]:
    """Fresh-process time to import kefu.sentiment and to load the bundled model (median of 5)."""
    probe = (
        "import time; t0 = time.perf_counter(); from kefu.sentiment import SentimentModel; "
        "t1 = time.perf_counter(); SentimentModel.load().predict('hi'); t2 = time.perf_counter(); "
        "print((t1 - t0) * 1e3, (t2 - t1) * 1e3)"
    )
    runs = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"cold-start probe failed:\n{out.stderr}")
        runs.append(tuple(map(float, out.stdout.split())))
    imports, loads = zip(*runs, strict=True)
    return float(np.median(imports)), float(np.median(loads))


def main() -> None:
    from kefu.compiled import Featurizer as NativeFeaturizer
    from kefu.reference.textfeat import Featurizer as ReferenceFeaturizer
    from kefu.sentiment import SentimentModel

    print("sentiment bench: cold start (5 fresh processes)...", flush=True)
    import_ms, load_ms = _cold_start_ms()

    model = SentimentModel.load()
    lexicon = dict(line.split("\t") for line in model.metadata["lexicon_tsv"].splitlines())
    lexicon = {token: int(bucket) for token, bucket in lexicon.items()}
    bits = int(model.metadata["bits"])
    native = NativeFeaturizer(bits, lexicon)
    reference = ReferenceFeaturizer(bits, lexicon)
    session = model._session  # the bench measures the pieces the public API composes
    single_inputs = []
    for text in MESSAGES:
        ids = native.featurize(text)[np.newaxis, :]
        single_inputs.append({"ids": ids, "mask": np.ones(ids.shape, dtype=np.float32)})
    pipe = model.mood_pipe()  # the server's scorer with the native data plane: the graph in Rust
    median_chars = int(np.median([len(text) for text in MESSAGES]))
    median_ids = int(np.median([native.featurize(text).size for text in MESSAGES]))

    rows = []
    for label, function, args in (
        ("featurise, native (Rust)", native.featurize, MESSAGES),
        ("featurise, reference (Python)", reference.featurize, MESSAGES),
        ("session.run (ids given)", lambda feed: session.run(["p_neg"], feed), single_inputs),
        ("total: SentimentModel.predict", model.predict, MESSAGES),
        ("total: MoodPipe.score (featurise + linear graph in Rust, what the server runs)", pipe.score, MESSAGES),
    ):
        print(f"  single: {label}...", flush=True)
        durations = _timed_calls(function, args, BLOCK_SECONDS)
        rows.append((label, _percentiles(durations), len(durations)))
    native_p50 = float(np.percentile(_timed_calls(native.featurize, MESSAGES, 0.5), 50))
    reference_p50 = float(np.percentile(_timed_calls(reference.featurize, MESSAGES, 0.5), 50))

    batch_rows = []
    for batch_size in (32, 256):
        batch = [MESSAGES[i % len(MESSAGES)] for i in range(batch_size)]
        ids, mask = native.featurize_batch(batch)
        for label, function in (
            ("featurize_batch (native)", lambda texts: native.featurize_batch(texts)),
            ("session.run", lambda _texts, feed={"ids": ids, "mask": mask}: session.run(["p_neg"], feed)),
            ("predict_batch (total)", model.predict_batch),
        ):
            print(f"  batch {batch_size}: {label}...", flush=True)
            durations = _timed_calls(function, [batch], BLOCK_SECONDS / 2)
            p50 = np.percentile(durations, 50)
            batch_rows.append((batch_size, label, _percentiles(durations), batch_size / (p50 / 1e6)))

    pipe.close()
    quality = json.loads(model.metadata["metrics"])
    model_bytes = len(resources.files("kefu.sentiment").joinpath("model/sentiment.onnx").read_bytes())
    info = machine_info()
    versions = dict(info["versions"])  # type: ignore[arg-type]
    versions["onnxruntime"] = metadata.version("onnxruntime")
    lines = [
        "# Sentiment model: load, latency, throughput",
        "",
        (
            f"Machine: {info['cpu_model']}, {info['cores']} cores, {info['memory_gib']} GiB, kernel {info['kernel']}, "
            f"Python {info['python']}; {', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}. "
            f"Run {info['date_utc']} UTC. Command: `python -m bench.sentiment`."
        ),
        "",
        (
            f"Model: bundled `sentiment.onnx` ({model.featurizer_version}), one session, intra_op=1, inter_op=1. "
            f"Messages: {len(MESSAGES)} chat lines (16 zh, 16 en), median {median_chars} characters, "
            f"{median_ids} ids. Timer: perf_counter_ns per call, gc off, {BLOCK_SECONDS:g} s per block. "
            "Other jobs may share this machine: compare rows of one run, not runs."
        ),
        "",
        (
            f"Model size {model_bytes:,} bytes ({len(model.classes)} classes, 2^{bits} fp16 table). Quality, from its "
            f"metadata (docs/sentiment.md): review test accuracy zh {quality['zh']['accuracy']:.1%}, "
            f"en {quality['en']['accuracy']:.1%}; hand-written chat lines, 3-class macro-F1 "
            f"zh {quality['chat_eval']['zh']['macro_f1']:.3f}, en {quality['chat_eval']['en']['macro_f1']:.3f}."
        ),
        "",
        "## Cold start (fresh process, median of 5)",
        "",
        "| step | ms |",
        "|---|---|",
        f"| `from kefu.sentiment import SentimentModel` (numpy, onnxruntime, kefu._native) | {import_ms:.1f} |",
        f"| `SentimentModel.load()` + first `predict` | {load_ms:.1f} |",
        "",
        "## Single message (µs)",
        "",
        "| step | p50 / p99 | calls |",
        "|---|---|---|",
        *[f"| {label} | {pct} | {count} |" for label, pct, count in rows],
        "",
        f"Native featuriser vs reference at p50: **{reference_p50 / native_p50:.1f}x** faster.",
        "",
        "## Batches",
        "",
        "| batch | step | p50 / p99 (µs per batch) | msgs/s at p50 |",
        "|---|---|---|---|",
        *[f"| {size} | {label} | {pct} | {rate:,.0f} |" for size, label, pct, rate in batch_rows],
    ]
    path = write_report("sentiment", "\n".join(lines))
    print("\n".join(lines[16:]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
