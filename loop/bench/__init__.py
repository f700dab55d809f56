"""uvcffi.bench: the benchmark suite, run as `python -m uvcffi.bench`.

Servers run in their own processes pinned to CPU 0, driven by a small C load
generator (loadgen.c) pinned to CPU 1 and calibrated against a C echo server
(echo_floor.c); scheduling and subprocess benchmarks run in one worker process
per loop.  `python -m uvcffi.bench --help` for the options.
"""
