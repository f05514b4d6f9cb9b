#!/usr/bin/env bash
# A trained flow used as an independence proposal against HMC, cost included: for each
# lattice L and its model file, one chain of each sampler through the CLI, then a table of
# seconds per step, acceptance, τ_int and the cost of one effectively independent
# configuration, 2·τ_int × seconds per step (τ_int = ½ + Σ ρ, so N_eff = N / 2τ_int), with
# the largest τ_int of |m|, m², φ² and the energy; break-even: the number of independent
# configurations after which the flow's training time has paid for itself.
# Run on an otherwise idle machine.
#
#   benches/flow_vs_hmc.sh L:MODEL[:TAU:MD_STEPS] ...
#   e.g. benches/flow_vs_hmc.sh 8:target/model_L8_s1.json:2:8 12:target/model_L12.json:3:16
#   (TAU and MD_STEPS: the HMC trajectory length and leapfrog steps, default 1 and 10; tune
#   them for the lowest cost per independent configuration, e.g. with `latflow sample --json`)
#   environment: N (steps per chain, default 100000), HMC_N (default N / 10), SEED (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
HMC_N=${HMC_N:-$((N / 10))}
SEED=${SEED:-1}
cargo build --release --quiet
out=$(mktemp -d)
i=0
for arg in "$@"; do
  i=$((i + 1))
  IFS=: read -r l model tau md_steps <<<"$arg"
  target/release/latflow sample --model "$model" --kernel flow --n "$N" --therm 1000 \
    --seed "$SEED" --json >"$out/flow_$i.json"
  # The couplings come from the model file, so HMC samples exactly the same theory.
  python3 - "$model" >"$out/couplings_$i" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
a = m["metadata"]["action"]
print(" ".join(f"--{k} {v}" for k, v in a.items() if k != "form"), "--action", a["form"])
EOF
  # shellcheck disable=SC2046
  target/release/latflow sample --lattice "${l}x${l}" $(cat "$out/couplings_$i") \
    --kernel hmc --md-steps "${md_steps:-10}" --tau "${tau:-1}" --n "$HMC_N" --therm 1000 \
    --seed "$SEED" --json >"$out/hmc_$i.json"
done
python3 - "$out" "$@" <<'EOF'
import json, sys
out, args = sys.argv[1], sys.argv[2:]
keys = ["abs_m", "m2", "phi2", "energy"]
print("| L | sampler | steps/s | acceptance | τ_int(|m|) | max τ_int | s per independent config | HMC / flow | training s | break-even configs |")
print("|---|---|---|---|---|---|---|---|---|---|")
for i, arg in enumerate(args, 1):
    l, model, *hmc = arg.split(":")
    tau, md_steps = hmc if len(hmc) == 2 else ("1", "10")
    train_s = json.load(open(model))["metadata"]["train"]["summary"]["seconds"]
    rows = {}
    for kind in ["flow", "hmc"]:
        r = json.load(open(f"{out}/{kind}_{i}.json"))
        name = r["kernel"] if kind == "flow" else f"hmc (τ {tau}, {md_steps} steps)"
        per_step = r["seconds"] / (r["n"] + r["therm"])
        obs = r["observables"]
        tau_m = obs["abs_m"]["tau_int"]
        tau_max = max(obs[k]["tau_int"] for k in keys)
        rows[kind] = (name, r, per_step, tau_m, tau_max, 2 * tau_max * per_step)
    for kind in ["flow", "hmc"]:
        name, r, per_step, tau_m, tau_max, cost = rows[kind]
        gain = rows["hmc"][5] - rows["flow"][5]
        ratio = f"{rows['hmc'][5] / rows['flow'][5]:.2f}" if kind == "hmc" else ""
        train = f"{train_s:.1f}" if kind == "flow" else ""
        even = (f"{train_s / gain:.3g}" if gain > 0 else "never") if kind == "flow" else ""
        print(f"| {l} | {name} | {1 / per_step:.4g} | {r['acceptance']:.3f} | "
              f"{tau_m:.2f} | {tau_max:.2f} | {cost:.3g} | {ratio} | {train} | {even} |")
EOF
rm -r "$out"
