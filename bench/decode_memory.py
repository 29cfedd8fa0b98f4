"""Peak memory of image decoding: one 25-megapixel image of each kind, and N of the worst kind
(a float TIFF of ~150 KB) decoded in parallel threads with and without the decode budget.

    nice -n 10 .venv/bin/python bench/decode_memory.py            # 25 Mpx, 12 in parallel
    .venv/bin/python bench/decode_memory.py --side 3000 --parallel 4

Each measurement runs in a fresh process (peak RSS is ru_maxrss, which only grows); the figure is
the peak minus the RSS after imports, with the file already in memory. The header estimate the
budget reserves (facegate.vision.decode.decode_cost) is printed next to it.
Results: bench/out/decode_memory.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).parent / "out" / "decode_memory.json"
KINDS = ("float_tiff", "int32_tiff", "gray16_png", "rgba_png", "cmyk_jpeg", "rgb_jpeg")


def make(kind: str, side: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    if kind == "float_tiff":
        img, fmt, opts = Image.fromarray(np.zeros((side, side), np.float32)), "TIFF", {"compression": "tiff_adobe_deflate"}
    elif kind == "int32_tiff":
        img, fmt, opts = Image.fromarray(np.zeros((side, side), np.int32)), "TIFF", {"compression": "tiff_adobe_deflate"}
    elif kind == "gray16_png":
        img, fmt, opts = Image.fromarray(np.full((side, side), 30000, np.uint16)), "PNG", {}
    elif kind == "rgba_png":
        img, fmt, opts = Image.new("RGBA", (side, side), (120, 90, 60, 200)), "PNG", {}
    elif kind == "cmyk_jpeg":
        img, fmt, opts = Image.new("CMYK", (side, side), (10, 20, 30, 40)), "JPEG", {}
    else:
        noise = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
        img, fmt, opts = Image.fromarray(noise).resize((side, side)), "JPEG", {"quality": 90}
    buf = io.BytesIO()
    img.save(buf, fmt, **opts)
    return buf.getvalue()


CHILD = r"""
import io, resource, sys, threading
from PIL import Image
from facegate.vision.decode import budget, decode, decode_cost
data = open(sys.argv[1], "rb").read()
parallel, limit = int(sys.argv[2]), int(sys.argv[3])
budget.configure(limit or None)
cost = decode_cost(Image.open(io.BytesIO(data)))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
errors = []
def run():
    try:
        decode(data, max_pixels=10**9)
    except Exception as exc:
        errors.append(type(exc).__name__)
threads = [threading.Thread(target=run) for _ in range(parallel)]
for t in threads: t.start()
for t in threads: t.join()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(cost, (peak - base) * 1024, ",".join(sorted(set(errors))))
"""


def measure(blob: bytes, parallel: int, limit: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        f.write(blob)
        f.flush()
        out = subprocess.run([sys.executable, "-c", CHILD, f.name, str(parallel), str(limit)],
                             capture_output=True, text=True, check=True).stdout.split()
    return {"estimate_mib": round(int(out[0]) / 2**20), "peak_mib": round(int(out[1]) / 2**20),
            "errors": out[2] if len(out) > 2 else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=5000, help="image side in pixels (5000: 25 Mpx)")
    ap.add_argument("--parallel", type=int, default=12, help="concurrent decodes of the float TIFF")
    ap.add_argument("--budget-mb", type=int, default=256, help="decode budget for the parallel run (the service default)")
    args = ap.parse_args()

    rows = []
    for kind in KINDS:
        blob = make(kind, args.side)
        rows.append({"case": f"{kind} x1", "file_kib": round(len(blob) / 1024), **measure(blob, 1, 0)})
    blob = make("float_tiff", args.side)
    for limit in (0, args.budget_mb * 2**20):
        label = f"float_tiff x{args.parallel}, " + (f"budget {args.budget_mb} MiB" if limit else "no budget")
        rows.append({"case": label, "file_kib": round(len(blob) / 1024), **measure(blob, args.parallel, limit)})

    result = {"machine": f"{platform.machine()}, {platform.processor() or platform.system()}", "side": args.side, "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"| case ({args.side}x{args.side}) | file KiB | header estimate MiB | peak RSS increase MiB | errors |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['file_kib']} | {r['estimate_mib']} | {r['peak_mib']} | {r['errors'] or '-'} |")


if __name__ == "__main__":
    main()
