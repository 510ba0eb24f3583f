"""Constants shared by the zoo tests (a uniquely named module: conftest.py is not importable by name)."""

# The method of the test samples: the best at NFE 10 in docs/digits.md's table.
BEST = "dpmpp-3m"
N_SAMPLES = 400
