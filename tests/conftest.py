"""Test-session set-up: one persistent XLA compilation cache for the session.

Many tests compile the same programs (the same tiny config trained, saved and
resumed, or run again in a subprocess); the cache makes every compile after the
first a disk read. The directory is fresh per session, so tests stay hermetic.
"""

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="rmix_jax_xla_cache_")
# Environment first, so subprocesses started by tests share the cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
