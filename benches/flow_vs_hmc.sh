#!/usr/bin/env bash
# A trained flow used as an independence proposal against HMC, cost included: for each
# lattice L and its model file, one chain of each sampler through the CLI, then a table of
# seconds per step, acceptance, τ_int and the cost of one effectively independent
# configuration, 2·τ_int × seconds per step (τ_int = ½ + Σ ρ, so N_eff = N / 2τ_int), with
# the largest τ_int of |m|, m², φ² and the energy; break-even: the number of independent
# configurations after which the flow's training time has paid for itself.
# Run on an otherwise idle machine.
#
#   benches/flow_vs_hmc.sh L:MODEL [L:MODEL ...]
#   e.g. benches/flow_vs_hmc.sh 8:target/model_L8_s1.json 12:target/model_L12.json
#   environment: N (steps per chain, default 100000), HMC_N (default N / 10),
#   MD_STEPS and TAU (HMC trajectory, default 10 and 1), SEED (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
HMC_N=${HMC_N:-$((N / 10))}
MD_STEPS=${MD_STEPS:-10}
TAU=${TAU:-1}
SEED=${SEED:-1}
cargo build --release --quiet
out=$(mktemp -d)
for arg in "$@"; do
  l=${arg%%:*}
  model=${arg#*:}
  target/release/latflow sample --model "$model" --kernel flow --n "$N" --therm 1000 \
    --seed "$SEED" --json >"$out/flow_$l.json"
  # The couplings come from the model file, so HMC samples exactly the same theory.
  python3 - "$model" >"$out/couplings_$l" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
a = m["metadata"]["action"]
print(" ".join(f"--{k} {v}" for k, v in a.items() if k != "form"), "--action", a["form"])
EOF
  # shellcheck disable=SC2046
  target/release/latflow sample --lattice "${l}x${l}" $(cat "$out/couplings_$l") \
    --kernel hmc --md-steps "$MD_STEPS" --tau "$TAU" --n "$HMC_N" --therm 1000 \
    --seed "$SEED" --json >"$out/hmc_$l.json"
done
python3 - "$out" "$@" <<'EOF'
import json, sys
out, args = sys.argv[1], sys.argv[2:]
keys = ["abs_m", "m2", "phi2", "energy"]
print("| L | sampler | steps/s | acceptance | τ_int(|m|) | max τ_int | s per independent config | HMC / flow | training s | break-even configs |")
print("|---|---|---|---|---|---|---|---|---|---|")
for arg in args:
    l, model = arg.split(":", 1)
    train_s = json.load(open(model))["metadata"]["train"]["summary"]["seconds"]
    rows = {}
    for kind in ["flow", "hmc"]:
        r = json.load(open(f"{out}/{kind}_{l}.json"))
        per_step = r["seconds"] / (r["n"] + r["therm"])
        obs = r["observables"]
        tau_m = obs["abs_m"]["tau_int"]
        tau_max = max(obs[k]["tau_int"] for k in keys)
        rows[kind] = (r, per_step, tau_m, tau_max, 2 * tau_max * per_step)
    for kind in ["flow", "hmc"]:
        r, per_step, tau_m, tau_max, cost = rows[kind]
        gain = rows["hmc"][4] - rows["flow"][4]
        ratio = f"{rows['hmc'][4] / rows['flow'][4]:.2f}" if kind == "hmc" else ""
        train = f"{train_s:.1f}" if kind == "flow" else ""
        even = (f"{train_s / gain:.3g}" if gain > 0 else "never") if kind == "flow" else ""
        print(f"| {l} | {r['kernel']} | {1 / per_step:.4g} | {r['acceptance']:.3f} | "
              f"{tau_m:.2f} | {tau_max:.2f} | {cost:.3g} | {ratio} | {train} | {even} |")
EOF
rm -r "$out"
