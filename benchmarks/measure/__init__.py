"""Measurement scripts beside the library (timm keeps ``benchmark.py`` beside its models).

Speed and memory per strategy: the CLI ``perf``, what one measurement times (``stepperf``), the
timing harness (``timing``), masks drawn at trained keep rates (``drawnmasks``), ``perf.md``
(``perfreport``); the data path (``dataperf``). The GPU check: the CLI ``gpucheck``, FLOP counts
(``flops``), the paper suite's projection (``projection``), bf16 vs fp32 (``bf16check``),
kill-and-resume (``resumecheck``), ``gpu.md`` (``gpureport``). The prompt query's precision
(``querycheck``) and a checkpoint's top-1 (``validate``)."""
