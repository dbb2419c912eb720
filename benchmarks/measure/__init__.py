"""Measurement scripts beside the library (timm keeps ``benchmark.py`` beside its models): speed
and memory per strategy (``perf``), the data path (``dataperf``), the GPU check (``gpucheck``),
the prompt query's precision (``querycheck``) and a checkpoint's top-1 (``validate``)."""
