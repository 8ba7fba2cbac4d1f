"""Test setup, before JAX initialises its backends (hence at import):

- 8 forced CPU devices, so multi-device logic is tested without a GPU;
- XLA's backend optimisation off: the tests' tiny programs are dominated by
  compile time, which this halves;
- a persistent compilation cache shared by the test process and the training
  subprocesses it starts (the same step compiles once).
"""

import os
import tempfile

os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "lusjax-test-jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
