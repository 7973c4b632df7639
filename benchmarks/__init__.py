"""Benchmarks: one shared workload and report module, one HTTP driver, and scripts on top.

- ``benchmarks.workload``: the prompts a run sends (synthetic of given token lengths with a fixed
  seed, or read from a file) and how (chat or completions, output length, response format).
- ``benchmarks.driver``: drives any OpenAI-compatible server over HTTP and times every request.
- ``benchmarks.offline``: the same workload straight into ``engine.Engine`` (no HTTP).
- ``benchmarks.report``: per-request records, summaries, goodput, one JSON line per result in a
  results file and the same row in a DuckDB table, and the README table.
- ``benchmarks.launch``: starts (and always stops) Hearth or llama.cpp's ``llama-server``.
- ``benchmarks.bandwidth``: a small memory-bandwidth probe for the achieved-bandwidth figure.
- ``benchmarks.plots``: PNG plots of a run.

Run ``python -m benchmarks --help``.
"""
