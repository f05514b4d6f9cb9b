#!/usr/bin/env bash
# The sampler verdict per lattice size: a study (`latflow run`) comparing flow, flow+local
# and flow+hmc (each as an ensemble of CHAINS chains in lockstep, so that every flow pass is
# batched over the chains), flow HMC, non-equilibrium sampling from a Gaussian start, tuned
# HMC and local Metropolis on the ξ ≈ L/4 line at λ = 0.5, with the report's "Does the flow
# pay for its training?" table (payback.csv); then the recycled flow chain of the same flow
# (`latflow sample --kernel flow --recycle`, 10 N proposals). At the end, per sampler:
# steps/s, seconds per independent configuration (2 τ_max × seconds per step; 2 τ_eff,max ×
# seconds per proposal for the recycled chain) and, for the flow samplers, that cost with
# the training amortised over 10⁴, 10⁵ and 10⁶ independent configurations.
# At L = 8 the study trains the seed recipe itself; for a larger L give a flow trained
# before, e.g. by `latflow train --lattice 12x12 --beta 0.616 --lambda 0.5
# --until-acceptance 0.7 --out L12.json`, as MODEL_L<L>=path. Run it on an idle machine.
#
#   MODEL_L12=L12.json MODEL_L16=L16.json benches/sampler_verdicts.sh [L ...]   (default: 8)
# Environment: N (measured steps of the fast samplers, default 100000), N_SLOW (of flowhmc
# and noneq, default 2000), CHAINS (ensemble size, default 16), ENSEMBLE_BATCH (flow proposals
# drawn at once by each chain of an ensemble, default 1000; lower it for large flows, whose
# every chain keeps a batch and its workspace), SLOW=0 leaves flowhmc and noneq out, LOCAL=0
# leaves local Metropolis out.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/latflow
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/verdicts}
N=${N:-100000}
N_SLOW=${N_SLOW:-2000}
CHAINS=${CHAINS:-16}
ENSEMBLE_BATCH=${ENSEMBLE_BATCH:-1000}
SLOW=${SLOW:-1}
LOCAL=${LOCAL:-1}
mkdir -p "$OUT"
beta_of() {
  case "$1" in
    6) echo 0.537 ;; 8) echo 0.576 ;; 10) echo 0.601 ;; 12) echo 0.616 ;; 14) echo 0.626 ;;
    16) echo 0.634 ;; 18) echo 0.641 ;; 20) echo 0.645 ;;
    24) echo 0.6524 ;; 32) echo 0.6614 ;; 48) echo 0.6704 ;; 64) echo 0.6745 ;;
    *) echo "no β on the reference line for L = $1" >&2; exit 1 ;;
  esac
}
for L in ${@:-8}; do
  model_var="MODEL_L$L"
  if [ -n "${!model_var:-}" ]; then
    flow="model = \"$(realpath "${!model_var}")\""
  elif [ "$L" = 8 ]; then
    flow=$'[flow.recipe]\nkind = "seed"\nhidden = 64\naffine_blocks = 2\nsegments = 8\n[flow.train]\nbatch = 500\niterations = 750\nlr = 0.01\nschedule = { kind = "cosine" }\neval_samples = 10000'
  else
    echo "L = $L needs a trained flow: set $model_var" >&2; exit 1
  fi
  # Fewer steps per chain for the ensembles, the same number of configurations in all.
  per_chain=$(( (N + CHAINS - 1) / CHAINS ))
  card="$OUT/verdict_L$L.toml"
  cat > "$card" <<CARD
name = "verdict-L$L"
out = "$OUT"
seed = 1
lattice = [$L, $L]
[action]
form = "phi4"
beta = $(beta_of "$L")
lambda = 0.5
[flow]
$flow
[measure]
n = $N
therm = 2000
saved_configs = 200
[[sampler]]
name = "flow"
kernel = "flow"
[[sampler]]
name = "flow+local"
kernel = { kind = "flow+local", flow_batch = $ENSEMBLE_BATCH }
chains = $CHAINS
n = $per_chain
therm = 500
[[sampler]]
name = "flow+hmc"
kernel = { kind = "flow+hmc", tau = 1.0, md_steps = 10, flow_batch = $ENSEMBLE_BATCH }
chains = $CHAINS
n = $per_chain
therm = 500
[[sampler]]
name = "hmc"
kernel = "hmc"
tune = true
CARD
  if [ "$LOCAL" = 1 ]; then
    printf '[[sampler]]\nname = "local"\nkernel = "local"\n' >> "$card"
  fi
  if [ "$SLOW" = 1 ]; then
    cat >> "$card" <<CARD
[[sampler]]
name = "flowhmc"
kernel = { kind = "flowhmc", flowhmc_tau = 1.0, flowhmc_md_steps = 10 }
n = $N_SLOW
therm = 100
[[sampler]]
name = "noneq"
kernel = { kind = "noneq", noneq_steps = 20, noneq_start_m0sq = 0.2 }
n = $N_SLOW
therm = 100
CARD
  fi
  "$BIN" run "$card" --quiet
  study="$OUT/verdict-L$L"
  echo "L = $L: $study/index.html"
  cat "$study/payback.csv"
  "$BIN" sample --model "$study/model.json" --kernel flow --recycle --n $((10 * N)) \
    --therm 5000 --seed 2 --quiet --json > "$study/recycled.json"
  python3 - "$study" <<'PY'
import csv, json, pathlib, sys
study = pathlib.Path(sys.argv[1])
training = json.loads((study / "training.json").read_text())
t = training["seconds"] + training.get("eval_seconds", 0.0)
print(f"training: {t:.1f} s (optimisation + checks)")
head = f"{'sampler':<12}{'steps/s':>12}{'s / indep. config':>22}"
head += "".join(f"{'+T/' + n:>14}" for n in ("1e4", "1e5", "1e6"))
print(head)
hmc = None
for row in csv.DictReader(open(study / "samplers.csv")):
    line = f"{row['sampler']:<12}{float(row['steps_per_second']):>12.4g}"
    if not row["cost_per_independent"]:
        print(line + f"{'undefined':>22}  {row['verdict']}")
        continue
    c, e = float(row["cost_per_independent"]), float(row["cost_per_independent_err"])
    line += f"{c:>12.3e} ± {e:<7.1e}"
    if "flow" in row["kernel"]:
        line += "".join(f"{c + t / n:>14.3e}" for n in (1e4, 1e5, 1e6))
    print(line + f"  {row['verdict']}")
    if row["sampler"] == "hmc":
        hmc = (c, e)
recycled = json.loads((study / "recycled.json").read_text())
proposals = recycled["measured_blocks"] * recycled["plan"]["block"]
per = recycled["wall_seconds"] / proposals
cost_taus = [x for x in recycled["taus"] if x["name"] in ("abs_m", "m2", "phi2", "energy")]
slowest = max(cost_taus, key=lambda x: x["tau_eff"])
c, e = 2 * slowest["tau_eff"] * per, 2 * slowest["tau_eff_err"] * per
line = f"{'recycled':<12}{1 / per:>12.4g}{c:>12.3e} ± {e:<7.1e}"
line += "".join(f"{c + t / n:>14.3e}" for n in (1e4, 1e5, 1e6))
print(line + f"  τ_eff {slowest['tau_eff']:.3f} ({slowest['name']}), moved {recycled['moved']:.3f}")
if hmc:
    h, he = hmc
    r = h / c
    print(f"tuned HMC / recycled flow per independent configuration: {r:.2f} ± {r * ((he / h) ** 2 + (e / c) ** 2) ** 0.5:.2f}")
PY
done
