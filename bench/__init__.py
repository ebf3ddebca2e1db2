"""Benchmarks (not tests): each script prints its figures and ratios; bench/gpu_suite.sh runs the GPU paths."""
