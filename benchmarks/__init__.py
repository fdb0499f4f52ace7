"""Benchmarks for llmgw: a fast fake upstream, a reference pass-through proxy, and a driver that
measures both against llmgw and writes `benchmarks/RESULTS.md` (`python -m benchmarks`).
"""
