#!/usr/bin/env bash
# Classic samplers against the reference C loops, one after the other on an idle machine:
# local Metropolis site updates/s, HMC site·steps/s and force sites/s at L = 8, 16, 64.
set -euo pipefail
cd "$(dirname "$0")/.."
cc -O3 -march=native -o target/phi4_ref benches/c_reference/phi4.c -lm
for l in 8 16 64; do target/phi4_ref "$l"; done
cargo bench --bench samplers -- --noplot 2>&1 | grep -E "^(local_sweep|hmc_trajectory|force)/|thrpt"
