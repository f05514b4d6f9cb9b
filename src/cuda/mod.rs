//! A device kernel behind the `cuda` feature (cudarc, driver loaded at run time, kernel
//! compiled with NVRTC): [`CudaDevice::poly_action_force`], the action and the force
//! ∂S/∂φ of a batch of configurations for the local polynomial actions
//! S = Σ_x [−κ Σ_μ φ_x φ_{x+e_μ} + μ φ_x² + g φ_x⁴ + c] (every φ⁴ convention and the free
//! field), in f64.
//!
//! That is all that runs on a device. Nothing else in the library calls it: flows, training
//! and the samplers run on the CPU whether or not the feature is on, and the CPU
//! [`Action`](crate::Action) implementations give the same numbers. [`available`] tells
//! whether a CUDA driver and device are present before any driver call is made (cudarc
//! panics on a missing driver library otherwise).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use crate::action::Phi4;
use crate::error::{Error, Result};
use crate::lattice::Lattice;

const KERNELS: &str = r#"
extern "C" __global__ void poly_action_force(
    const double* phi, const unsigned long long* fwd, const unsigned long long* bwd,
    unsigned long long volume, unsigned long long dim, unsigned long long batch,
    double kappa, double mu, double g, double c,
    double* site_action, double* force)
{
    unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    if (i >= volume * batch) return;
    unsigned long long b = i / volume, x = i % volume;
    const double* f = phi + b * volume;
    double p = f[x], up = 0.0, around = 0.0;
    for (unsigned long long m = 0; m < dim; ++m) {
        up += f[fwd[x * dim + m]];
        around += f[fwd[x * dim + m]] + f[bwd[x * dim + m]];
    }
    double p2 = p * p;
    site_action[i] = -kappa * p * up + mu * p2 + g * p2 * p2 + c;
    force[i] = -kappa * around + 2.0 * mu * p + 4.0 * g * p2 * p;
}
"#;

/// The coefficients of a local polynomial action, as the device kernel takes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolyCoefficients {
    /// Hopping coefficient κ.
    pub kappa: f64,
    /// Mass-like coefficient μ of φ².
    pub mu: f64,
    /// Quartic coefficient g of φ⁴.
    pub g: f64,
    /// Constant per site.
    pub constant: f64,
}

impl PolyCoefficients {
    /// The coefficients of a φ⁴ action in its general form (any convention).
    pub fn from_phi4(action: &Phi4) -> Self {
        PolyCoefficients {
            kappa: action.kappa(),
            mu: action.mass_term(),
            g: action.quartic_term(),
            constant: action.constant_per_site(),
        }
    }
}

/// True when a CUDA driver library is loadable and device 0 can be opened.
pub fn available() -> bool {
    // SAFETY: only checks whether the dynamic library can be loaded.
    let present = unsafe { cudarc::driver::sys::is_culib_present() };
    present && CudaContext::new(0).is_ok()
}

fn device_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("CUDA {what}: {e:?}"))
}

/// An opened device with the kernels compiled for it.
pub struct CudaDevice {
    stream: Arc<CudaStream>,
    poly_action_force: CudaFunction,
}

impl CudaDevice {
    /// Opens device `ordinal` and compiles the kernels; an error (never a panic) when no
    /// driver or device is present.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only checks whether the dynamic library can be loaded.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Device("no CUDA driver library found".into()));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| device_error("device", e))?;
        let ptx = cudarc::nvrtc::compile_ptx(KERNELS).map_err(|e| device_error("compile", e))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| device_error("module", e))?;
        let poly_action_force = module
            .load_function("poly_action_force")
            .map_err(|e| device_error("function", e))?;
        Ok(CudaDevice {
            stream: ctx.default_stream(),
            poly_action_force,
        })
    }

    /// Actions and forces of a batch of configurations `phis` (`batch × volume`, row-major).
    pub fn poly_action_force(
        &self,
        lattice: &Lattice,
        coefficients: PolyCoefficients,
        phis: &[f64],
        actions: &mut [f64],
        forces: &mut [f64],
    ) -> Result<()> {
        let (volume, dim) = (lattice.volume(), lattice.dim());
        let batch = actions.len();
        if phis.len() != batch * volume || forces.len() != batch * volume {
            return Err(Error::Shape(format!(
                "batch of {batch} configurations on {volume} sites needs {} values",
                batch * volume
            )));
        }
        let s = &self.stream;
        let to_u64 = |t: &[usize]| t.iter().map(|&x| x as u64).collect::<Vec<u64>>();
        let phi_d = s.clone_htod(phis).map_err(|e| device_error("copy", e))?;
        let fwd_d = s
            .clone_htod(&to_u64(lattice.fwd_table()))
            .map_err(|e| device_error("copy", e))?;
        let bwd_d = s
            .clone_htod(&to_u64(lattice.bwd_table()))
            .map_err(|e| device_error("copy", e))?;
        let mut site_d = s
            .alloc_zeros::<f64>(batch * volume)
            .map_err(|e| device_error("alloc", e))?;
        let mut force_d = s
            .alloc_zeros::<f64>(batch * volume)
            .map_err(|e| device_error("alloc", e))?;
        let (v64, d64, b64) = (volume as u64, dim as u64, batch as u64);
        let PolyCoefficients {
            kappa,
            mu,
            g,
            constant,
        } = coefficients;
        let n = u32::try_from(batch * volume)
            .map_err(|_| Error::Shape("batch too large for one launch".into()))?;
        let mut launch = s.launch_builder(&self.poly_action_force);
        launch
            .arg(&phi_d)
            .arg(&fwd_d)
            .arg(&bwd_d)
            .arg(&v64)
            .arg(&d64)
            .arg(&b64)
            .arg(&kappa)
            .arg(&mu)
            .arg(&g)
            .arg(&constant)
            .arg(&mut site_d)
            .arg(&mut force_d);
        // SAFETY: argument types and counts match the kernel signature above; buffers hold
        // batch·volume elements and the kernel guards its index.
        unsafe { launch.launch(LaunchConfig::for_num_elems(n)) }
            .map_err(|e| device_error("launch", e))?;
        let site = s.clone_dtoh(&site_d).map_err(|e| device_error("copy", e))?;
        s.memcpy_dtoh(&force_d, forces)
            .map_err(|e| device_error("copy", e))?;
        for (a, row) in actions.iter_mut().zip(site.chunks_exact(volume)) {
            *a = row.iter().sum();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;

    /// Relative tolerance of device results against the CPU action, both in f64 but summed
    /// in different orders: each force within 1e-12 · (1 + |F_x|), each action within
    /// 1e-12 · (V + |S|) for V sites (a few ulp per site term for fields of order one).
    const TOLERANCE: f64 = 1e-12;

    /// Compares a batch of actions and forces (`phis`, `forces`: batch × volume, row-major)
    /// with `action`'s CPU action and force; the error names the first configuration or site
    /// outside [`TOLERANCE`].
    fn check_against_cpu(
        action: &impl Action,
        phis: &[f64],
        actions: &[f64],
        forces: &[f64],
    ) -> std::result::Result<(), String> {
        let volume = action.lattice().volume();
        if phis.len() != actions.len() * volume || forces.len() != phis.len() {
            return Err(format!(
                "{} actions, {} field values and {} forces do not form a batch on {volume} sites",
                actions.len(),
                phis.len(),
                forces.len()
            ));
        }
        let mut cpu_force = vec![0.0; volume];
        let rows = phis.chunks_exact(volume).zip(forces.chunks_exact(volume));
        for (b, ((phi, force), &s)) in rows.zip(actions).enumerate() {
            let cpu = action.action(phi);
            if (s - cpu).abs() > TOLERANCE * (volume as f64 + cpu.abs()) {
                return Err(format!(
                    "configuration {b}: action {s} against {cpu} on the CPU"
                ));
            }
            action.force(phi, &mut cpu_force);
            for (x, (&f, &cpu)) in force.iter().zip(&cpu_force).enumerate() {
                if (f - cpu).abs() > TOLERANCE * (1.0 + cpu.abs()) {
                    return Err(format!(
                        "configuration {b}, site {x}: force {f} against {cpu} on the CPU"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A φ⁴ action on a 4 × 4 lattice and a batch of two configurations of order one.
    fn phi4_batch() -> (Phi4, Vec<f64>) {
        let lattice = Lattice::new(&[4, 4]).unwrap();
        let action = Phi4::hopping(lattice, 0.5, 0.3).unwrap();
        let phis = (0..32).map(|i| (i as f64 * 0.37).sin()).collect();
        (action, phis)
    }

    /// The comparison accepts the CPU's own results and rejects a force or an action off
    /// by more than the tolerance, naming where.
    #[test]
    fn comparison_accepts_cpu_results_and_names_deviations() {
        let (action, phis) = phi4_batch();
        let mut forces = vec![0.0; phis.len()];
        let actions: Vec<f64> = phis
            .chunks_exact(16)
            .zip(forces.chunks_exact_mut(16))
            .map(|(phi, f)| action.action_and_force(phi, f))
            .collect();
        assert_eq!(check_against_cpu(&action, &phis, &actions, &forces), Ok(()));

        let mut bad_forces = forces.clone();
        bad_forces[16 + 5] += 1e-9;
        let err = check_against_cpu(&action, &phis, &actions, &bad_forces).unwrap_err();
        assert!(err.contains("configuration 1, site 5"), "{err}");

        let mut bad_actions = actions.clone();
        bad_actions[0] += 1e-9;
        let err = check_against_cpu(&action, &phis, &bad_actions, &forces).unwrap_err();
        assert!(err.contains("configuration 0: action"), "{err}");

        assert!(check_against_cpu(&action, &phis[..20], &actions, &forces).is_err());
    }

    /// Without a device the constructor reports an error instead of panicking; with one, the
    /// device's actions and forces match the CPU `Phi4` within [`TOLERANCE`].
    #[test]
    fn device_or_clear_error() {
        let (action, phis) = phi4_batch();
        match CudaDevice::new(0) {
            Err(e) => assert!(!available(), "device present but failed: {e}"),
            Ok(dev) => {
                let c = PolyCoefficients::from_phi4(&action);
                let (mut a, mut f) = (vec![0.0; 2], vec![0.0; phis.len()]);
                dev.poly_action_force(action.lattice(), c, &phis, &mut a, &mut f)
                    .unwrap();
                check_against_cpu(&action, &phis, &a, &f).unwrap();
            }
        }
    }
}
