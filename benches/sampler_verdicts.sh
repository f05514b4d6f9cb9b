#!/usr/bin/env bash
# The sampler verdict per lattice size: a study (`latflow run`) comparing flow, flow+local,
# flow+hmc, tuned HMC and local Metropolis on the ξ ≈ L/4 line at λ = 0.5, 100,000 measured
# steps each, with the report's "Does the flow pay for its training?" table (payback.csv).
# At L = 8 the study trains the seed recipe itself; for a larger L give a flow trained
# before, e.g. by `latflow train --lattice 12x12 --beta 0.616 --lambda 0.5
# --until-acceptance 0.7 --out L12.json`, as MODEL_L<L>=path. Run it on an idle machine.
#
#   MODEL_L12=L12.json MODEL_L16=L16.json benches/sampler_verdicts.sh [L ...]   (default: 8)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/latflow
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/verdicts}
mkdir -p "$OUT"
beta_of() {
  case "$1" in
    6) echo 0.537 ;; 8) echo 0.576 ;; 10) echo 0.601 ;; 12) echo 0.616 ;; 14) echo 0.626 ;;
    16) echo 0.634 ;; 18) echo 0.641 ;; 20) echo 0.645 ;;
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
n = 100000
therm = 2000
saved_configs = 200
[[sampler]]
name = "flow"
kernel = "flow"
[[sampler]]
name = "flow+local"
kernel = "flow+local"
[[sampler]]
name = "flow+hmc"
kernel = { kind = "flow+hmc", tau = 1.0, md_steps = 10 }
[[sampler]]
name = "hmc"
kernel = "hmc"
tune = true
[[sampler]]
name = "local"
kernel = "local"
CARD
  "$BIN" run "$card" --quiet
  echo "L = $L: $OUT/verdict-L$L/index.html"
  cat "$OUT/verdict-L$L/payback.csv"
done
