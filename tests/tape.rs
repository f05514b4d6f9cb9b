//! Every tape operation's backward pass against central finite differences in f64, plus the
//! buffer reuse of a reset tape.

use std::sync::Arc;

use latflow::Lattice;
use latflow::flow::PointwiseTransform;
use latflow::rng_from_seed;
use latflow::tape::{ConvTaps, FourierPlan, ParamSlice, Tape, Var};
use latflow::testing::{assert_gradients_close, finite_difference_gradient};
use ndarray::Array2;
use rand::RngExt;

/// y = v·e^{θ0} + θ1, log-derivative θ0: a minimal transform to exercise the fused op.
struct ShiftScale;

impl PointwiseTransform<f64> for ShiftScale {
    fn params_per_site(&self) -> usize {
        2
    }
    fn forward(&self, v: &[f64], theta: &[f64], y: &mut [f64], ld: &mut [f64]) {
        for i in 0..v.len() {
            y[i] = v[i] * theta[2 * i].exp() + theta[2 * i + 1];
            ld[i] = theta[2 * i];
        }
    }
    fn inverse(&self, y: &[f64], theta: &[f64], v: &mut [f64], ld: &mut [f64]) {
        for i in 0..y.len() {
            v[i] = (y[i] - theta[2 * i + 1]) * (-theta[2 * i]).exp();
            ld[i] = -theta[2 * i];
        }
    }
    fn backward(
        &self,
        v: &[f64],
        theta: &[f64],
        gy: &[f64],
        gld: &[f64],
        gv: &mut [f64],
        gtheta: &mut [f64],
    ) {
        for i in 0..v.len() {
            let e = theta[2 * i].exp();
            gv[i] += gy[i] * e;
            gtheta[2 * i] += gy[i] * v[i] * e + gld[i];
            gtheta[2 * i + 1] += gy[i];
        }
    }
}

fn random_array(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = rng_from_seed(seed);
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.5..1.5))
}

fn random_vec(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = rng_from_seed(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

type Build<'a> = dyn Fn(&mut Tape<f64>, &[f64], &[Var]) -> Var + 'a;

/// L = Σ out ⊙ R for fixed random R; checks ∂L/∂inputs and ∂L/∂params against central
/// differences with step 1e-6, tolerance 1e-8 + 1e-6 · |∂L|.
fn gradcheck(inputs: &[Array2<f64>], params: &[f64], build: &Build<'_>) {
    let loss = |inputs: &[Array2<f64>], params: &[f64], r: Option<&Array2<f64>>| {
        let mut tape = Tape::new();
        let vars: Vec<Var> = inputs.iter().map(|x| tape.input(x.view())).collect();
        let out = build(&mut tape, params, &vars);
        let value = tape.value(out).to_owned();
        let l = r.map(|r| (&value * r).sum()).unwrap_or(0.0);
        (value, l)
    };
    let (out0, _) = loss(inputs, params, None);
    let weights = random_array(out0.nrows(), out0.ncols(), 99);

    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs
        .iter()
        .map(|x| tape.input_with_grad(x.view()))
        .collect();
    let out = build(&mut tape, params, &vars);
    tape.zero_grads();
    tape.grad_mut(out).assign(&weights);
    let mut pgrad = vec![0.0; params.len()];
    tape.backward(params, &mut pgrad);

    let (step, rtol, atol) = (1e-6, 1e-6, 1e-8);
    for (k, x) in inputs.iter().enumerate() {
        let analytic = tape.grad(vars[k]).to_owned();
        let numeric = finite_difference_gradient(
            |probe| {
                let mut moved = inputs.to_vec();
                moved[k].as_slice_mut().unwrap().copy_from_slice(probe);
                loss(&moved, params, Some(&weights)).1
            },
            x.as_slice().unwrap(),
            step,
        );
        let checked = assert_gradients_close(analytic.as_slice().unwrap(), &numeric, rtol, atol);
        assert!(checked.is_ok(), "input {k}: {}", checked.unwrap_err());
    }
    let numeric =
        finite_difference_gradient(|probe| loss(inputs, probe, Some(&weights)).1, params, step);
    let checked = assert_gradients_close(&pgrad, &numeric, rtol, atol);
    assert!(checked.is_ok(), "parameters: {}", checked.unwrap_err());
}

#[test]
fn linear_with_and_without_bias() {
    let w = ParamSlice {
        offset: 0,
        rows: 4,
        cols: 3,
    };
    let b = ParamSlice {
        offset: 12,
        rows: 1,
        cols: 3,
    };
    let params = random_vec(15, 1);
    gradcheck(&[random_array(5, 4, 2)], &params, &|t, p, v| {
        t.linear(p, v[0], w, Some(b))
    });
    gradcheck(&[random_array(5, 4, 3)], &params[..12], &|t, p, v| {
        t.linear(p, v[0], w, None)
    });
}

#[test]
fn matmul_and_bias_add() {
    gradcheck(
        &[random_array(3, 4, 4), random_array(4, 2, 5)],
        &[],
        &|t, _, v| t.matmul(v[0], v[1]),
    );
    let b = ParamSlice {
        offset: 0,
        rows: 1,
        cols: 4,
    };
    gradcheck(&[random_array(3, 4, 6)], &random_vec(4, 7), &|t, p, v| {
        t.bias_add(p, v[0], b)
    });
}

#[test]
fn elementwise_maps() {
    let x = random_array(3, 5, 8);
    gradcheck(std::slice::from_ref(&x), &[], &|t, _, v| t.tanh(v[0]));
    gradcheck(std::slice::from_ref(&x), &[], &|t, _, v| t.exp(v[0]));
    gradcheck(std::slice::from_ref(&x), &[], &|t, _, v| t.softplus(v[0]));
    gradcheck(std::slice::from_ref(&x), &[], &|t, _, v| {
        t.scale(v[0], -2.5)
    });
    // |x| away from its kink.
    let away = x.mapv(|a| if a.abs() < 0.1 { a + 0.3 } else { a });
    gradcheck(&[away], &[], &|t, _, v| t.abs(v[0]));
}

#[test]
fn softplus_is_stable_for_large_arguments() {
    let x = Array2::from_shape_vec((1, 4), vec![-800.0, -30.0, 30.0, 800.0]).unwrap();
    let mut tape = Tape::<f64>::new();
    let v = tape.input(x.view());
    let y = tape.softplus(v);
    let y = tape.value(y);
    assert!(y[[0, 0]] >= 0.0 && y[[0, 0]] < 1e-300);
    assert!((y[[0, 1]] - (-30.0f64).exp().ln_1p()).abs() < 1e-20);
    assert!((y[[0, 2]] - 30.0).abs() < 1e-12);
    assert_eq!(y[[0, 3]], 800.0);
}

#[test]
fn softmax_and_cumsum_per_group() {
    let x = random_array(2, 12, 9);
    gradcheck(std::slice::from_ref(&x), &[], &|t, _, v| t.softmax(v[0], 4));
    gradcheck(std::slice::from_ref(&x), &[], &|t, _, v| t.cumsum(v[0], 3));
    let mut tape = Tape::<f64>::new();
    let v = tape.input(x.view());
    let y = tape.softmax(v, 4);
    for row in tape.value(y).outer_iter() {
        for g in row.as_slice().unwrap().chunks(4) {
            assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        }
    }
}

#[test]
fn gather_scatter_interleave() {
    let cols: Arc<[usize]> = vec![3, 0, 2].into();
    gradcheck(&[random_array(2, 10, 10)], &[], &|t, _, v| {
        t.gather(v[0], &cols, 2)
    });
    gradcheck(
        &[random_array(2, 8, 11), random_array(2, 3, 12)],
        &[],
        &|t, _, v| t.scatter(v[0], v[1], &cols, 1),
    );
    gradcheck(
        &[random_array(2, 6, 13), random_array(2, 3, 14)],
        &[],
        &|t, _, v| t.interleave(&[v[0], v[1]], 3),
    );
    // Gathering the scattered columns gives back the source exactly.
    let base = random_array(2, 8, 15);
    let src = random_array(2, 3, 16);
    let mut tape = Tape::<f64>::new();
    let b = tape.input(base.view());
    let s = tape.input(src.view());
    let y = tape.scatter(b, s, &cols, 1);
    let back = tape.gather(y, &cols, 1);
    assert_eq!(tape.value(back), src.view());
    assert_eq!(tape.value(y)[[1, 1]], base[[1, 1]]);
}

#[test]
fn reductions_and_binary_ops() {
    let a = random_array(3, 4, 17);
    let b = random_array(3, 4, 18);
    gradcheck(std::slice::from_ref(&a), &[], &|t, _, v| t.sum_rows(v[0]));
    gradcheck(std::slice::from_ref(&a), &[], &|t, _, v| t.sum_all(v[0]));
    let ab = [a.clone(), b];
    gradcheck(&ab, &[], &|t, _, v| t.add(v[0], v[1]));
    gradcheck(&ab, &[], &|t, _, v| t.sub(v[0], v[1]));
    gradcheck(&ab, &[], &|t, _, v| t.mul(v[0], v[1]));
    gradcheck(&[a], &[], &|t, _, v| t.mul(v[0], v[0]));
}

#[test]
fn scalar_parameter_ops() {
    let x = random_array(3, 4, 19);
    let params = vec![0.3, -0.7];
    gradcheck(std::slice::from_ref(&x), &params, &|t, p, v| {
        t.scale_by_exp_param(p, v[0], 1)
    });
    gradcheck(&[x], &params, &|t, p, v| t.add_param(p, v[0], 0, 16.0));
}

#[test]
fn periodic_convolution() {
    let lattice = Lattice::new(&[3, 4]).unwrap();
    let taps = conv_taps_3x3(&lattice);
    let (c_in, c_out) = (2, 3);
    let w = ParamSlice {
        offset: 0,
        rows: 9 * c_in,
        cols: c_out,
    };
    let b = ParamSlice {
        offset: w.end(),
        rows: 1,
        cols: c_out,
    };
    let params = random_vec(b.end(), 20);
    gradcheck(&[random_array(2, 12 * c_in, 21)], &params, &|t, p, v| {
        t.conv(p, v[0], &taps, c_in, w, Some(b))
    });
    // A kernel that only reads the (+1, 0) neighbour shifts the field.
    let mut shift = vec![0.0; 9];
    shift[7] = 1.0; // tap (dx=+1, dy=0) in the order below
    let w1 = ParamSlice {
        offset: 0,
        rows: 9,
        cols: 1,
    };
    let x = random_array(1, 12, 22);
    let mut tape = Tape::<f64>::new();
    let v = tape.input(x.view());
    let y = tape.conv(&shift, v, &taps, 1, w1, None);
    for s in 0..12 {
        assert_eq!(tape.value(y)[[0, s]], x[[0, lattice.fwd(s, 0)]]);
    }
}

/// Convolutions of every table kind the flows build (periodic 3 × 3 and 5 × 5, strided
/// onto the coarse lattice, upsampling back from it), channel counts on both sides of the
/// few-output kernels, with and without bias, alone and fused with tanh: gradients of
/// input and kernel against central differences (f64, the portable kernels).
#[test]
fn periodic_strided_and_upsampling_convolutions() {
    let lattice = Lattice::new(&[4, 6]).unwrap();
    let coarse = latflow::flow::coarse_lattice(&lattice, 2).unwrap();
    assert_eq!(coarse.extents(), &[2, 3]);
    let tables = [
        ("periodic 3", latflow::flow::conv_taps(&lattice, 3).unwrap()),
        ("periodic 5", latflow::flow::conv_taps(&lattice, 5).unwrap()),
        (
            "strided",
            latflow::flow::strided_conv_taps(&lattice, 3, 2).unwrap(),
        ),
        (
            "upsampling",
            latflow::flow::upsampling_conv_taps(&lattice, 3, 2).unwrap(),
        ),
    ];
    let mut seed = 40;
    for (name, taps) in &tables {
        for &(c_in, c_out, bias) in &[(1, 3, true), (9, 1, false), (2, 2, true)] {
            let w = ParamSlice {
                offset: 0,
                rows: taps.n_taps() * c_in,
                cols: c_out,
            };
            let b = ParamSlice {
                offset: w.end(),
                rows: 1,
                cols: c_out,
            };
            let params = random_vec(b.end(), seed);
            let x = random_array(2, taps.in_sites() * c_in, seed + 1);
            seed += 2;
            let b = bias.then_some(b);
            gradcheck(std::slice::from_ref(&x), &params, &|t, p, v| {
                t.conv(p, v[0], taps, c_in, w, b)
            });
            gradcheck(std::slice::from_ref(&x), &params, &|t, p, v| {
                t.conv_tanh(p, v[0], taps, c_in, w, b)
            });
            let mut tape = Tape::<f64>::new();
            let v = tape.input(x.view());
            let y = tape.conv(&params, v, taps, c_in, w, b);
            assert_eq!(tape.shape(y), (2, taps.out_sites() * c_out), "{name}");
        }
    }
    // The strided table reads the neighbourhoods of the even sites; the upsampling table
    // is its transpose: ⟨y, S x⟩ = ⟨Sᵀ y, x⟩ with the same one-channel kernel, where
    // the transpose of a table's convolution is the upsampling one with the tap order
    // kept (its tap t of x reads the coarse site whose tap t reads x).
    let strided = &tables[2].1;
    let up = &tables[3].1;
    assert_eq!((strided.in_sites(), strided.out_sites()), (24, 6));
    assert_eq!((up.in_sites(), up.out_sites()), (6, 24));
    let w = ParamSlice {
        offset: 0,
        rows: 9,
        cols: 1,
    };
    let kernel = random_vec(9, 60);
    let x = random_array(1, 24, 61);
    let y = random_array(1, 6, 62);
    let mut tape = Tape::<f64>::new();
    let (xv, yv) = (tape.input(x.view()), tape.input(y.view()));
    let sx = tape.conv(&kernel, xv, strided, 1, w, None);
    let sty = tape.conv(&kernel, yv, up, 1, w, None);
    let lhs: f64 = (&tape.value(sx) * &y).sum();
    let rhs: f64 = (&tape.value(sty) * &x).sum();
    assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
    // Tables that are not convolutions are refused with a reason.
    assert!(
        ConvTaps::new(4, 2, vec![0, 1, 0, 2]).is_err(),
        "tap 0 reads site 0 twice"
    );
    assert!(
        ConvTaps::new(4, 2, vec![0, 1, 2]).is_err(),
        "not whole sites"
    );
    assert!(ConvTaps::new(4, 1, vec![4]).is_err(), "out of range");
    assert!(ConvTaps::new(4, 1, vec![ConvTaps::NO_SITE, 3]).is_ok());
}

/// The f32 convolution (the 512-bit kernels where the processor has them) against the f64
/// one on the same values, forward and both gradients, at the shapes of a convolutional
/// net's three layers (1 → 16, 16 → 16, 16 → 1 channels, 3 × 3 on 10 × 10, 7 rows):
/// agreement to 1e-5 relative to the sum of the terms' sizes.
#[test]
fn f32_convolutions_agree_with_f64() {
    let lattice = Lattice::new(&[10, 10]).unwrap();
    let taps = latflow::flow::conv_taps(&lattice, 3).unwrap();
    for (k, &(c_in, c_out)) in [(1usize, 16usize), (16, 16), (16, 1), (16, 23)]
        .iter()
        .enumerate()
    {
        let w = ParamSlice {
            offset: 0,
            rows: 9 * c_in,
            cols: c_out,
        };
        let b = ParamSlice {
            offset: w.end(),
            rows: 1,
            cols: c_out,
        };
        let params = random_vec(b.end(), 70 + k as u64);
        let x = random_array(7, 100 * c_in, 80 + k as u64);
        let seed = random_array(7, 100 * c_out, 90 + k as u64);
        // The f64 pass runs on the f32-rounded values, so only the arithmetic differs.
        let params: Vec<f64> = params.iter().map(|&v| v as f32 as f64).collect();
        let (x, seed) = (x.mapv(|v| v as f32 as f64), seed.mapv(|v| v as f32 as f64));
        let pass = Pass {
            taps: &taps,
            c_in,
            w,
            b,
        };
        let as_f32 = pass.run::<f32>(&params, &x, &seed);
        let want = pass.run::<f64>(&params, &x, &seed);
        // Terms per output: 9 c_in (+ bias); per input gradient 9 c_out; per kernel entry
        // 7 × 100; values of order one.
        for (what, got, want, terms) in [
            ("output", &as_f32.0, &want.0, 9 * c_in + 1),
            ("input gradient", &as_f32.1, &want.1, 9 * c_out),
            ("kernel gradient", &as_f32.2, &want.2, 700),
        ] {
            for (i, (&a, &e)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-5 * terms as f64,
                    "{c_in} → {c_out}, {what} [{i}]: {a} vs {e}"
                );
            }
        }
    }
}

/// The Fourier scaling y = F⁻¹ diag(e^s) F x on a 3 × 4 lattice (even and odd extents)
/// and a 2 × 2 × 3 one, with factors that need not be even (the map stays real and
/// symmetric), its log-det output, the parameter row it is fed from, and ln: gradients
/// against central differences.
#[test]
fn fourier_scaling_parameter_rows_and_ln() {
    for (k, extents) in [vec![3usize, 4], vec![2, 2, 3]].into_iter().enumerate() {
        let plan = Arc::new(FourierPlan::new(&extents).unwrap());
        let v = plan.volume();
        let inputs = [
            random_array(2, v, 100 + k as u64),
            random_array(1, v, 110 + k as u64),
        ];
        gradcheck(&inputs, &[], &|t, _, x| {
            t.fourier_scale(x[0], x[1], &plan).0
        });
        gradcheck(&inputs, &[], &|t, _, x| {
            t.fourier_scale(x[0], x[1], &plan).1
        });
        // Parameters picked into the factor row: one per class of momenta.
        let index: Arc<[u32]> = (0..v as u32).map(|p| p % 3).collect();
        let params = random_vec(3, 120 + k as u64);
        gradcheck(&inputs[..1], &params, &|t, p, x| {
            let s = t.param_gather(p, 0, &index);
            let (y, ld) = t.fourier_scale(x[0], s, &plan);
            let ys = t.sum_rows(y);
            t.add(ys, ld)
        });
        // With all factors zero the map is the identity.
        let mut tape = Tape::<f64>::new();
        let x = tape.input(inputs[0].view());
        let s = tape.zeros(1, v);
        let (y, ld) = tape.fourier_scale(x, s, &plan);
        for (a, b) in tape.value(y).iter().zip(inputs[0].iter()) {
            assert!((a - b).abs() < 1e-12);
        }
        assert_eq!(tape.value(ld)[[1, 0]], 0.0);
        // The f32 path (rustfft in f32) agrees with f64 to f32 rounding.
        let mut t32 = Tape::<f32>::new();
        let x32 = t32.input(inputs[0].mapv(|v| v as f32).view());
        let s32 = t32.input(inputs[1].mapv(|v| v as f32).view());
        let y32 = t32.fourier_scale(x32, s32, &plan).0;
        let mut t64 = Tape::<f64>::new();
        let x64 = t64.input(inputs[0].mapv(|v| v as f32 as f64).view());
        let s64 = t64.input(inputs[1].mapv(|v| v as f32 as f64).view());
        let y64 = t64.fourier_scale(x64, s64, &plan).0;
        for (a, b) in t32.value(y32).iter().zip(t64.value(y64).iter()) {
            assert!(
                (f64::from(*a) - b).abs() < 1e-5 * (1.0 + b.abs()),
                "{a} vs {b}"
            );
        }
    }
    let x = random_array(2, 3, 130).mapv(|v| v.abs() + 0.1);
    gradcheck(&[x], &[], &|t, _, v| t.ln(v[0]));
}

/// One convolution with its backward pass, in a float type.
struct Pass<'a> {
    taps: &'a ConvTaps,
    c_in: usize,
    w: ParamSlice,
    b: ParamSlice,
}

impl Pass<'_> {
    /// Output, input gradient and kernel gradient for the output gradient `seed`, in f64.
    fn run<T: latflow::tape::Real>(
        &self,
        params: &[f64],
        x: &Array2<f64>,
        seed: &Array2<f64>,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let to = |v: f64| T::from_f64(v).unwrap();
        let back = |v: &T| v.to_f64().unwrap();
        let p: Vec<T> = params.iter().map(|&v| to(v)).collect();
        let mut tape = Tape::<T>::new();
        let v = tape.input_with_grad(x.mapv(to).view());
        let y = tape.conv(&p, v, self.taps, self.c_in, self.w, Some(self.b));
        tape.zero_grads();
        tape.grad_mut(y).assign(&seed.mapv(to));
        let mut g = vec![T::zero(); p.len()];
        tape.backward(&p, &mut g);
        (
            tape.value(y).iter().map(back).collect(),
            tape.grad(v).iter().map(back).collect(),
            g.iter().map(back).collect(),
        )
    }
}

/// Taps in the order (dx, dy) for dx, dy in −1..=1, dx slowest.
fn conv_taps_3x3(lattice: &Lattice) -> ConvTaps {
    let ext = lattice.extents();
    let mut taps = Vec::new();
    let mut x = [0usize; 2];
    for s in 0..lattice.volume() {
        lattice.coords(s, &mut x);
        for dx in 0..3 {
            for dy in 0..3 {
                let c = [
                    (x[0] + ext[0] + dx - 1) % ext[0],
                    (x[1] + ext[1] + dy - 1) % ext[1],
                ];
                taps.push(lattice.site(&c) as u32);
            }
        }
    }
    ConvTaps::new(lattice.volume(), 9, taps).unwrap()
}

#[test]
fn fused_pointwise_transform_with_log_det() {
    let transform: Arc<dyn PointwiseTransform<f64>> = Arc::new(ShiftScale);
    let inputs = [random_array(3, 4, 23), random_array(3, 8, 24)];
    gradcheck(&inputs, &[], &|t, _, v| {
        t.pointwise(v[0], v[1], &transform).0
    });
    gradcheck(&inputs, &[], &|t, _, v| {
        t.pointwise(v[0], v[1], &transform).1
    });
    // Both outputs at once: L = Σ R⊙y + Σ R'⊙ld through a concatenation-free sum.
    gradcheck(&inputs, &[], &|t, _, v| {
        let (y, ld) = t.pointwise(v[0], v[1], &transform);
        let ys = t.sum_rows(y);
        t.add(ys, ld)
    });
}

#[test]
fn a_reset_tape_reuses_its_buffers_and_gives_the_same_result() {
    let w = ParamSlice {
        offset: 0,
        rows: 4,
        cols: 6,
    };
    let params = random_vec(24, 25);
    let x = random_array(5, 4, 26);
    let mut tape = Tape::<f64>::new();
    let mut first = None;
    for _ in 0..3 {
        tape.reset();
        let v = tape.input(x.view());
        let h = tape.linear(&params, v, w, None);
        let h = tape.tanh(h);
        let s = tape.sum_all(h);
        tape.zero_grads();
        tape.grad_mut(s).fill(1.0);
        let mut g = vec![0.0; 24];
        tape.backward(&params, &mut g);
        let ptr = tape.value(h).as_ptr();
        match &first {
            None => first = Some((g, ptr)),
            Some((g0, p0)) => {
                assert_eq!(&g, g0);
                assert_eq!(ptr, *p0, "the value buffer was reallocated");
            }
        }
    }
}

#[test]
fn fast_f32_tanh_is_accurate_and_odd() {
    use latflow::tape::tanh_f32;
    let mut worst = 0.0f64;
    for i in -200_000..=200_000 {
        let x = i as f32 * 1e-4;
        let exact = (x as f64).tanh();
        let err = (tanh_f32(x) as f64 - exact).abs() / exact.abs().max(1e-30);
        worst = worst.max(err);
        assert_eq!(tanh_f32(-x), -tanh_f32(x));
    }
    // A few f32 ulp (ε = 1.2e-7) over [−20, 20].
    assert!(worst < 6e-7, "worst relative error {worst}");
    assert_eq!(tanh_f32(1e4), tanh_f32(9.0));
    assert!(
        (tanh_f32(9.0) - 1.0).abs() < 1e-7,
        "tanh(9) = {}",
        tanh_f32(9.0)
    );
}
