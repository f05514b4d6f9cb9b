#!/usr/bin/env bash
# Classic samplers against the reference C loops, one after the other on an idle machine.
# The C program and the criterion benches share their names, so each row compares the
# same work: local_sweep/L (site updates/s), hmc_leapfrog/L (site·steps/s) and
# force/force/L (sites/s) at L = 8, 16, 64, with the ratio C / latflow (≤ 1.25 is the
# target). local_sweep_checkerboard/L, latflow's vectorised checkerboard sweep, is put
# next to the C program's sequential local_sweep/L (the target is C / latflow ≤ 0.67, i.e.
# latflow at least 1.5× the scalar C loop's site updates/s, at L = 64). hmc_trajectory/L (a whole trajectory: momenta, leapfrog, Metropolis test) has
# no C counterpart and is listed for reference. The C program is built three ways, for the
# host processor with and without loop vectorisation (which turns the neighbour reads into
# vector gathers, several times slower on some processors) and for the baseline target, and
# each row takes the fastest build.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
cc -O3 -march=native -o target/phi4_ref_native benches/c_reference/phi4.c -lm
cc -O3 -march=native -fno-tree-vectorize -o target/phi4_ref_scalar benches/c_reference/phi4.c -lm
cc -O3 -o target/phi4_ref_baseline benches/c_reference/phi4.c -lm
c_rates=target/phi4_ref.jsonl
: >"$c_rates"
for l in 8 16 64; do
  for build in phi4_ref_native phi4_ref_scalar phi4_ref_baseline; do target/$build "$l" | tee -a "$c_rates"; done
done
cargo bench --bench samplers -- --noplot 'local_sweep|hmc_leapfrog|hmc_trajectory|force/force/' \
    2>&1 | grep -E "^(local_sweep|local_sweep_checkerboard|hmc_trajectory|hmc_leapfrog|force)/|thrpt"
python3 - "$c_rates" <<'EOF'
import json, pathlib, sys

c = {}
for line in open(sys.argv[1]):
    for name, rate in json.loads(line).items():
        if "/" in name:
            c[name] = max(c.get(name, 0.0), rate)
root = pathlib.Path("target/criterion")
# The checkerboard sweep does the work of the C program's (sequential) local sweep.
same_work = {"local_sweep_checkerboard": "local_sweep"}
print(f"{'bench':<30}{'C elem/s':>12}{'latflow elem/s':>16}{'C/latflow':>11}")
for group in ["local_sweep", "local_sweep_checkerboard", "hmc_leapfrog", "force/force",
              "hmc_trajectory"]:
    for l in [8, 16, 64]:
        name = f"{group}/{l}"
        c_name = f"{same_work.get(group, group)}/{l}"
        run = root / name / "new"
        if not run.exists():
            continue
        est = json.loads((run / "estimates.json").read_text())
        elements = json.loads((run / "benchmark.json").read_text())["throughput"]["Elements"]
        ns = (est.get("slope") or est["mean"])["point_estimate"]
        rate = elements / (ns * 1e-9)
        if c_name in c:
            print(f"{name:<30}{c[c_name]:>12.4g}{rate:>16.4g}{c[c_name] / rate:>11.2f}")
        else:
            print(f"{name:<30}{'-':>12}{rate:>16.4g}{'-':>11}")
EOF
