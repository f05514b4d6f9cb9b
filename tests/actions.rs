//! Actions: the three φ⁴ conventions agree up to a constant under the stated field
//! rescaling, forces and local changes match the action, and the free field's exact
//! sampler, density and propagator are what docs/actions.md#free-field says.

use latflow::action::{Action, FreeField, Phi4, Phi4Couplings, Phi4Form};
use latflow::{Lattice, rng_from_seed};
use rand::RngExt;

fn random_field(volume: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut rng = rng_from_seed(seed);
    (0..volume)
        .map(|_| scale * (2.0 * rng.random::<f64>() - 1.0))
        .collect()
}

fn sample_actions() -> Vec<Phi4> {
    let mut out = Vec::new();
    for extents in [vec![7], vec![6, 4], vec![4, 3, 5], vec![3, 2, 2, 2, 2]] {
        let lat = Lattice::new(&extents).unwrap();
        out.push(Phi4::hopping(lat.clone(), 0.576, 0.5).unwrap());
        out.push(Phi4::hopping(lat.clone(), 0.3, 1.7).unwrap());
        out.push(Phi4::standard(lat.clone(), -1.2, 3.0).unwrap());
        out.push(Phi4::standard(lat.clone(), 0.4, 0.0).unwrap());
        out.push(Phi4::quartic(lat.clone(), -4.0, 6.008).unwrap());
        out.push(Phi4::quartic(lat, 0.7, 0.25).unwrap());
    }
    out
}

#[test]
fn conventions_agree_up_to_a_constant_under_field_rescaling() {
    for action in sample_actions() {
        let v = action.lattice().volume();
        for form in [Phi4Form::Hopping, Phi4Form::Standard, Phi4Form::Quartic] {
            let (other, a) = action.converted(form).unwrap();
            assert_eq!(other.couplings().form(), form);
            // S_self(a·φ) − S_other(φ) must not depend on φ.
            let mut offsets = Vec::new();
            for seed in 0..6 {
                let phi = random_field(v, seed, 2.0);
                let scaled: Vec<f64> = phi.iter().map(|x| a * x).collect();
                offsets.push(action.action(&scaled) - other.action(&phi));
            }
            let scale = 1.0 + offsets[0].abs();
            for o in &offsets {
                assert!(
                    (o - offsets[0]).abs() < 1e-11 * scale * v as f64,
                    "{:?} → {form:?}: offsets {offsets:?}",
                    action.couplings()
                );
            }
        }
    }
}

#[test]
fn conversions_round_trip() {
    for action in sample_actions() {
        for form in [Phi4Form::Hopping, Phi4Form::Standard, Phi4Form::Quartic] {
            let (other, a) = action.converted(form).unwrap();
            let back = other.conversion(action.couplings().form()).unwrap();
            assert!((a * back.field_scale - 1.0).abs() < 1e-12);
            let (x, y) = (
                couplings_vec(back.couplings),
                couplings_vec(action.couplings()),
            );
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() < 1e-11 * (1.0 + q.abs()), "{x:?} vs {y:?}");
            }
        }
    }
}

fn couplings_vec(c: Phi4Couplings) -> [f64; 2] {
    match c {
        Phi4Couplings::Hopping { beta, lambda } => [beta, lambda],
        Phi4Couplings::Standard { m0sq, g0 } => [m0sq, g0],
        Phi4Couplings::Quartic { m2, lambda } => [m2, lambda],
    }
}

#[test]
fn standard_form_matches_the_documented_mapping_in_2d() {
    // docs/actions.md#standard-form: ϕ = √β φ, 2 + m0²/2 = (1 − 2λ)/β, g0/4! = λ/β².
    let lat = Lattice::hypercubic(2, 4).unwrap();
    let (beta, lambda) = (0.576, 0.5);
    let hop = Phi4::hopping(lat, beta, lambda).unwrap();
    let conv = hop.conversion(Phi4Form::Standard).unwrap();
    // φ_hop = a ϕ, so a = 1/√β.
    assert!((conv.field_scale - 1.0 / beta.sqrt()).abs() < 1e-14);
    match conv.couplings {
        Phi4Couplings::Standard { m0sq, g0 } => {
            assert!((2.0 + m0sq / 2.0 - (1.0 - 2.0 * lambda) / beta).abs() < 1e-13);
            assert!((g0 / 24.0 - lambda / (beta * beta)).abs() < 1e-13);
        }
        other => panic!("expected standard couplings, got {other:?}"),
    }
}

#[test]
fn force_is_the_finite_difference_of_the_action() {
    let h = 1e-5;
    for action in sample_actions() {
        let v = action.lattice().volume();
        let mut phi = random_field(v, 11, 1.5);
        let mut force = vec![0.0; v];
        action.force(&phi, &mut force);
        for site in 0..v {
            let x = phi[site];
            phi[site] = x + h;
            let up = action.action(&phi);
            phi[site] = x - h;
            let down = action.action(&phi);
            phi[site] = x;
            let fd = (up - down) / (2.0 * h);
            // Central differences: error O(h²·S''') plus rounding O(|S|·1e-16/h).
            assert!(
                (fd - force[site]).abs() < 1e-6 * (1.0 + force[site].abs()),
                "site {site}: fd {fd} force {}",
                force[site]
            );
        }
    }
}

#[test]
fn action_and_force_in_one_pass_matches_separate_calls() {
    for action in sample_actions() {
        let v = action.lattice().volume();
        let phi = random_field(v, 5, 2.0);
        let (mut f1, mut f2) = (vec![0.0; v], vec![0.0; v]);
        action.force(&phi, &mut f1);
        let s = action.action_and_force(&phi, &mut f2);
        assert!((s - action.action(&phi)).abs() < 1e-12 * (1.0 + s.abs()));
        for (a, b) in f1.iter().zip(&f2) {
            assert!((a - b).abs() < 1e-12 * (1.0 + a.abs()));
        }
    }
}

#[test]
fn delta_local_is_the_difference_of_actions() {
    let mut rng = rng_from_seed(3);
    for action in sample_actions() {
        let v = action.lattice().volume();
        let mut phi = random_field(v, 9, 2.0);
        for _ in 0..50 {
            let site = rng.random_range(0..v);
            let new = 4.0 * rng.random::<f64>() - 2.0;
            let before = action.action(&phi);
            let delta = action.delta_local(&phi, site, new);
            phi[site] = new;
            let after = action.action(&phi);
            assert!(
                (delta - (after - before)).abs() < 1e-11 * (1.0 + before.abs()),
                "ΔS {delta} vs {}",
                after - before
            );
        }
    }
}

#[test]
fn free_field_log_density_is_normalised() {
    // d = 1, L = 3: integrate e^{log p} over R³ on a grid (the integrand is a smooth
    // Gaussian, so the trapezoid rule converges exponentially; tails beyond ±10 are < 1e-10).
    let lat = Lattice::new(&[3]).unwrap();
    let field = FreeField::new(lat, 0.5).unwrap();
    let (n, half) = (121usize, 10.0);
    let step = 2.0 * half / (n - 1) as f64;
    let mut total = 0.0;
    let mut phi = [0.0; 3];
    for i in 0..n {
        phi[0] = -half + step * i as f64;
        for j in 0..n {
            phi[1] = -half + step * j as f64;
            for k in 0..n {
                phi[2] = -half + step * k as f64;
                total += field.log_density(&phi).exp();
            }
        }
    }
    total *= step.powi(3);
    assert!((total - 1.0).abs() < 1e-8, "∫p = {total}");
}

#[test]
fn free_field_exact_quantities_are_consistent() {
    let lat = Lattice::new(&[8, 6]).unwrap();
    let field = FreeField::new(lat, 0.3).unwrap();
    let g = field.propagator();
    assert!((g.iter().sum::<f64>() - field.susceptibility()).abs() < 1e-10);
    assert!((field.susceptibility() - 1.0 / 0.3).abs() < 1e-15);
    assert!((field.mean_action() - 24.0).abs() < 1e-15);
    // The free field is the standard form with g0 = 0.
    let standard = Phi4::standard(field.lattice().clone(), 0.3, 0.0).unwrap();
    let phi = random_field(48, 1, 2.0);
    assert!((field.action(&phi) - standard.action(&phi)).abs() < 1e-12);
}

/// Independent exact samples: the sample covariance (1/|Λ|) Σ_x ϕ_{x+y} ϕ_x matches G(y)
/// for every y within 4σ, and ⟨S⟩ = |Λ|/2 within 4σ.
#[test]
fn fft_sampler_reproduces_the_propagator_and_mean_action() {
    let lat = Lattice::new(&[8, 8]).unwrap();
    let v = lat.volume();
    let field = FreeField::new(lat.clone(), 0.3).unwrap();
    let exact = field.propagator();
    let mut sampler = field.sampler();
    let mut rng = rng_from_seed(2024);
    let n = 4000;
    let mut phi = vec![0.0; v];
    let (mut sum, mut sum2) = (vec![0.0; v], vec![0.0; v]);
    let (mut s_sum, mut s_sum2) = (0.0, 0.0);
    let mut x = [0usize; 2];
    let mut y = [0usize; 2];
    for _ in 0..n {
        sampler.sample_into(&mut rng, &mut phi).unwrap();
        let s = field.action(&phi);
        s_sum += s;
        s_sum2 += s * s;
        for sep in 0..v {
            lat.coords(sep, &mut y);
            let mut acc = 0.0;
            for site in 0..v {
                lat.coords(site, &mut x);
                let shifted = lat.site(&[x[0] + y[0], x[1] + y[1]]);
                acc += phi[shifted] * phi[site];
            }
            let g = acc / v as f64;
            sum[sep] += g;
            sum2[sep] += g * g;
        }
    }
    let nf = n as f64;
    for sep in 0..v {
        let mean = sum[sep] / nf;
        let err = ((sum2[sep] / nf - mean * mean) / (nf - 1.0)).sqrt();
        assert!(
            (mean - exact[sep]).abs() < 4.0 * err,
            "G({sep}) = {mean} ± {err}, exact {}",
            exact[sep]
        );
    }
    let mean_s = s_sum / nf;
    let err_s = ((s_sum2 / nf - mean_s * mean_s) / (nf - 1.0)).sqrt();
    assert!((mean_s - field.mean_action()).abs() < 4.0 * err_s);
    // S is a sum of |Λ| independent χ²₁/2 terms: Var S = |Λ|/2 and excess kurtosis 12/|Λ|,
    // so the sample variance has standard error (|Λ|/2)·√((2 + 12/|Λ|)/n).
    let var_s = s_sum2 / nf - mean_s * mean_s;
    let var_err = v as f64 / 2.0 * ((2.0 + 12.0 / v as f64) / nf).sqrt();
    assert!((var_s - v as f64 / 2.0).abs() < 4.0 * var_err);
}

#[test]
fn sampler_refuses_wrong_buffer_length() {
    let field = FreeField::new(Lattice::hypercubic(2, 4).unwrap(), 1.0).unwrap();
    let mut sampler = field.sampler();
    let mut rng = rng_from_seed(0);
    assert!(sampler.sample_into(&mut rng, &mut [0.0; 15]).is_err());
}

#[test]
fn unbounded_or_non_finite_couplings_are_refused() {
    let lat = Lattice::hypercubic(2, 4).unwrap();
    assert!(Phi4::hopping(lat.clone(), f64::INFINITY, 0.5).is_err());
    // λ = 0 in hopping form: mass term 1 must exceed d·β = 2β.
    assert!(Phi4::hopping(lat.clone(), 0.6, 0.0).is_err());
    assert!(Phi4::hopping(lat.clone(), 0.4, 0.0).is_ok());
    assert!(Phi4::quartic(lat.clone(), -0.1, 0.0).is_err());
    assert!(Phi4::standard(lat, 1.0, -1.0).is_err());
}
