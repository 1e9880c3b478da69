"""Benchmark: `etcdforge pki renew --force` vs renewing by hand with cfssl, on a running local cluster.

In one run, on the same 3-member local cluster (made once with `etcdforge up`, not timed):

* raw baseline — what the guide's user does: ``cfssl gencert`` for each of the 7 certificates (server and
  peer per member, admin client) from the JSON `etcdforge pki export-cfssl` wrote, ``cfssljson -bare``,
  then copy each member's four files into its directory (etcd reloads them on the next handshake);
* etcdforge — ``etcdforge pki renew --force --yes`` as a user runs it: Python start-up, observe, issue,
  install in place, and a fresh handshake per member and port to prove the new serial is served (the
  baseline proves nothing).

Alternating runs; medians and the ratio are printed and written as JSON to ``bench/results/``. Only
loopback addresses are used.

    python bench/bench_renew.py [--etcd-bin PATH] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def etcdforge(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "etcdforge", *args], capture_output=True, text=True, check=False, timeout=180
    )
    if proc.returncode != 0:
        raise RuntimeError(f"etcdforge {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def raw_once(ws: Path, cfssl_dir: Path, out: Path) -> float:
    """cfssl gencert | cfssljson for every certificate, then copy the members' files in place."""
    pki = ws / "pki"
    config = json.loads((cfssl_dir / "ca-config.json").read_text())
    profiles = set(config["signing"].get("profiles", {}))
    start = time.perf_counter()
    for csr in sorted(cfssl_dir.glob("*-csr.json")):
        stem = csr.name.removesuffix("-csr.json")
        if stem == "ca":
            continue
        role = "client" if stem.endswith("-client") else "peer" if stem.endswith("-peer") else "server"
        gencert = ["cfssl", "gencert", f"-ca={pki / 'ca.pem'}", f"-ca-key={pki / 'ca-key.pem'}",
                   f"-config={cfssl_dir / 'ca-config.json'}"]  # fmt: skip
        if role in profiles:
            gencert.append(f"-profile={role}")
        signed = subprocess.run([*gencert, str(csr)], capture_output=True, check=True, timeout=60)
        subprocess.run(
            ["cfssljson", "-bare", str(out / stem)], input=signed.stdout, capture_output=True, check=True
        )
    for member in sorted((ws / "members").iterdir()):
        for role in ("server", "peer"):
            shutil.copyfile(out / f"{member.name}-{role}.pem", member / "pki" / f"{role}.pem")
            shutil.copyfile(out / f"{member.name}-{role}-key.pem", member / "pki" / f"{role}-key.pem")
    return time.perf_counter() - start


def tool_once(ws: Path) -> float:
    start = time.perf_counter()
    etcdforge("pki", "renew", "--dir", str(ws), "--force", "--yes")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etcd-bin", default="/usr/bin/etcd")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("cfssl") or not shutil.which("cfssljson"):
        print("cfssl and cfssljson are needed (apt-get install golang-cfssl)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-renew-") as tmp:
        ws = Path(tmp) / "ws"
        etcdforge("up", "--dir", str(ws), "--etcd-bin", args.etcd_bin)
        try:
            cfssl_dir = Path(tmp) / "cfssl"
            etcdforge("pki", "export-cfssl", "--dir", str(ws), "--out", str(cfssl_dir))
            raw, tool = [], []
            for i in range(args.runs):
                out = Path(tmp) / f"raw{i}"
                out.mkdir()
                raw.append(raw_once(ws, cfssl_dir, out))
                tool.append(tool_once(ws))
            etcdforge("health", "--dir", str(ws))
        finally:
            etcdforge("down", "--dir", str(ws))
    result = {
        "when": datetime.now(UTC).isoformat(),
        "runs": args.runs,
        "raw_median_s": statistics.median(raw),
        "etcdforge_median_s": statistics.median(tool),
        "ratio": statistics.median(tool) / statistics.median(raw),
        "raw_s": raw,
        "etcdforge_s": tool,
    }
    print(
        f"renew 7 certificates on 3 members: by hand with cfssl {result['raw_median_s']:.2f}s, "
        f"etcdforge {result['etcdforge_median_s']:.2f}s (verified), ratio {result['ratio']:.2f}"
    )
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"renew-{datetime.now(UTC):%Y%m%dT%H%M%S}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
