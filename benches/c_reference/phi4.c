/* Reference C implementation of the two classic hot loops on 2D phi^4 (hopping form,
 * SPEC 1.1): a local Metropolis sweep and the HMC force / leapfrog step, over neighbour
 * tables like latflow's. Used only to put latflow's throughput next to tight C code.
 *
 * Each rate is printed under the name of the criterion bench in benches/samplers.rs that
 * does the same work:
 *   local_sweep/L   one Metropolis sweep, site updates/s
 *   hmc_leapfrog/L  one bare leapfrog step (force, then pi -= eps f and phi += eps pi in
 *                   one pass), site*steps/s
 *   force/force/L   the force alone, sites/s
 *
 *   cc -O3 -march=native -o /tmp/phi4_ref benches/c_reference/phi4.c -lm
 *   /tmp/phi4_ref L   (prints one JSON object: bench name -> elements/s, and the acceptance)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t s[4];
static inline uint64_t rotl(const uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static inline uint64_t next(void) {
  const uint64_t result = rotl(s[0] + s[3], 23) + s[0];
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
  s[2] ^= t; s[3] = rotl(s[3], 45);
  return result;
}
static inline double uniform(void) { return (next() >> 11) * 0x1.0p-53; }
static double now(void) {
  struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv) {
  int L = argc > 1 ? atoi(argv[1]) : 8;
  const int d = 2, V = L * L;
  const double beta = 0.576, lam = 0.5, delta = 1.0;
  size_t *fwd = malloc(sizeof(size_t) * V * d), *bwd = malloc(sizeof(size_t) * V * d);
  for (int x = 0; x < L; x++)
    for (int y = 0; y < L; y++) {
      int i = x * L + y;
      fwd[i * d + 0] = ((x + 1) % L) * L + y; bwd[i * d + 0] = ((x + L - 1) % L) * L + y;
      fwd[i * d + 1] = x * L + (y + 1) % L;   bwd[i * d + 1] = x * L + (y + L - 1) % L;
    }
  double *phi = calloc(V, sizeof(double)), *pi = calloc(V, sizeof(double)), *f = calloc(V, sizeof(double));
  s[0] = 1; s[1] = 2; s[2] = 3; s[3] = 4;
  for (int i = 0; i < V; i++) phi[i] = uniform() - 0.5;

  /* local Metropolis */
  long sweeps = 0, acc = 0; double t0 = now(), t;
  do {
    for (int k = 0; k < 20; k++, sweeps++)
      for (int i = 0; i < V; i++) {
        double n = 0;
        for (int mu = 0; mu < d; mu++) n += phi[fwd[i * d + mu]] + phi[bwd[i * d + mu]];
        double a = phi[i], b = a + delta * (2 * uniform() - 1);
        double a2 = a * a, b2 = b * b;
        double dS = -beta * n * (b - a) + (b2 - a2) + lam * ((b2 - 1) * (b2 - 1) - (a2 - 1) * (a2 - 1));
        if (dS <= 0 || uniform() < exp(-dS)) { phi[i] = b; acc++; }
      }
    t = now() - t0;
  } while (t < 2.0);
  double local_rate = (double)sweeps * V / t;

  /* HMC: leapfrog steps (force + momentum + field update) */
  const double eps = 0.1; long steps = 0;
  t0 = now();
  do {
    for (int k = 0; k < 20; k++, steps++) {
      for (int i = 0; i < V; i++) {
        double n = 0;
        for (int mu = 0; mu < d; mu++) n += phi[fwd[i * d + mu]] + phi[bwd[i * d + mu]];
        double p = phi[i];
        f[i] = -beta * n + 2 * p + 4 * lam * p * (p * p - 1);
      }
      for (int i = 0; i < V; i++) { pi[i] -= eps * f[i]; phi[i] += eps * pi[i]; }
    }
    t = now() - t0;
  } while (t < 2.0);
  double hmc_rate = (double)steps * V / t;

  /* force alone */
  long forces = 0;
  t0 = now();
  do {
    for (int k = 0; k < 20; k++, forces++) {
      for (int i = 0; i < V; i++) {
        double n = 0;
        for (int mu = 0; mu < d; mu++) n += phi[fwd[i * d + mu]] + phi[bwd[i * d + mu]];
        double p = phi[i];
        f[i] = -beta * n + 2 * p + 4 * lam * p * (p * p - 1);
      }
      phi[forces % V] += 1e-9 * f[(forces + 1) % V];
    }
    t = now() - t0;
  } while (t < 2.0);
  double force_rate = (double)forces * V / t;
  double chk = 0; for (int i = 0; i < V; i++) chk += phi[i];
  printf("{\"local_sweep/%d\":%.4g,\"hmc_leapfrog/%d\":%.4g,\"force/force/%d\":%.4g,"
         "\"acceptance\":%.3f,\"check\":%g}\n",
         L, local_rate, L, hmc_rate, L, force_rate, (double)acc / ((double)sweeps * V), chk);
  return 0;
}
