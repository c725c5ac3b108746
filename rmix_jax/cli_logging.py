"""Imported first by the command-line tools, before jax: the XLA log level they run at."""

import os

# XLA logs through absl when it loads a program from the compilation cache: a warning
# ("Assume version compatibility") and, on CPUs that LLVM tunes with prefer-no-gather, an
# error-level line per program saying the cached program does not fit the host (a false
# alarm, jax-ml/jax#38445; the program is compiled again). Level 3 keeps the CLI's stderr
# for real problems, which reach Python as exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
