"""Print the scheduler table of docs/diffusers-differences.md: ``python scripts/oracle_report.py``.

For every case of ``_cases.CASES``: the diffusers scheduler and config, the odesolve method it
equals, and the largest relative difference of the final samples, as shipped and with the
scheduler's tables in float64 (the case's tolerance is what test_oracle_diffusers asserts).
"""

import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "oracle"))

import torch

torch.set_num_threads(1)
from _cases import CASES


def group(case_id: str) -> str:
    for token in ("-N8", "-N10", "-N12", "-N20", "-N25"):
        case_id = case_id.replace(token, "")
    return case_id


rows = OrderedDict()
for c in CASES:
    key = (group(c.id), c.method_name)
    d32, _, _ = c.run()
    d64 = c.run(f64=True)[0] if c.f64 is not None else None
    r = rows.setdefault(key, [0.0, None, c.tol, c.note])
    r[0] = max(r[0], d32)
    if d64 is not None:
        r[1] = d64 if r[1] is None else max(r[1], d64)

print("| diffusers scheduler / config | odesolve method | max rel. diff (as shipped) | float64 tables | asserted |")
print("|---|---|---|---|---|")
for (g, m), (d32, d64, tol, note) in rows.items():
    f64 = "-" if d64 is None else f"{d64:.1e}"
    print(f"| {g} | `{m}` | {d32:.1e} | {f64} | <= {tol:g}{' (' + note + ')' if note else ''} |")
