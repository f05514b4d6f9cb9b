//! The names of the report's observables: the symbol a physicist writes, and the definition
//! the page's glossary gives (docs/statistics.md has the derivations).

/// (code name, symbol, definition) of every reported observable, in the order of
/// [`OBSERVABLE_ORDER`](crate::study::OBSERVABLE_ORDER).
pub(crate) const GLOSSARY: [(&str, &str, &str); 11] = [
    (
        "phi2",
        "⟨φ²⟩",
        "the mean squared field per site, ⟨(1/|Λ|) Σₓ φₓ²⟩",
    ),
    (
        "m",
        "⟨m⟩",
        "the magnetisation per site, m = M/|Λ| with M = Σₓ φₓ; 0 on a finite lattice by the \
         Z2 symmetry φ → −φ",
    ),
    ("abs_m", "⟨|m|⟩", "the mean absolute magnetisation per site"),
    ("m2", "⟨m²⟩", "the mean squared magnetisation per site"),
    (
        "chi",
        "χ",
        "the susceptibility |Λ|(⟨m²⟩ − ⟨m⟩²), the connected two-point function at zero \
         momentum",
    ),
    (
        "binder",
        "U",
        "the Binder cumulant 1 − ⟨m⁴⟩/(3⟨m²⟩²): 0 for a Gaussian m, 2/3 for m = ±const",
    ),
    (
        "energy",
        "E",
        "the Ising (hopping) energy per site, ⟨(1/|Λ|) Σₓ Σ_μ φₓ φ_{x+μ}⟩",
    ),
    ("action_density", "S/|Λ|", "the action per site, ⟨S(φ)⟩/|Λ|"),
    (
        "xi_2nd",
        "ξ_2nd",
        "the second-moment correlation length, ξ² = (1/d) Σ_μ [χ/G̃(q̂_μ) − 1] / (4 sin²(π/L_μ)) \
         with G̃(q̂_μ) the two-point function at the smallest non-zero momentum",
    ),
    (
        "xi_eff",
        "ξ_eff(L/4)",
        "the effective correlation length 1/arcosh[(Ĝ(t−1) + Ĝ(t+1))/2Ĝ(t)] of the connected \
         zero-momentum correlator at t = max(1, ⌊L/4⌋)",
    ),
    (
        "xi_fit",
        "ξ",
        "the correlation length from the correlated fit of A[e^{−t/ξ} + e^{−(L−t)/ξ}] to Ĝ(t) \
         on the fit range (covariance from the Γ-method); the one ξ of this report",
    ),
];

/// The symbol of observable `name` (the name itself when it is not a reported one).
pub(crate) fn symbol(name: &str) -> &str {
    GLOSSARY
        .iter()
        .find(|(code, _, _)| *code == name)
        .map_or(name, |(_, symbol, _)| symbol)
}
