//! The [`Registry`]: what a run may name besides the built-in pieces — a user's actions
//! (`form = "custom"` in a runcard's `[action]`), a user's kernels (names in kernel
//! expressions) and a user's flow layers ([`LayerRegistry`]) — so that a user's own pieces
//! run through [`crate::run`] and [`crate::study`] from their own `main`, with the same
//! samplers, reports and comparisons as the built-in ones.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::{FlowModel, LayerRegistry};
use crate::kernel::{LocalMetropolis, MoveLabel, Proposal, SweepOrder};
use crate::lattice::Lattice;

/// The kernel names every run knows: one local Metropolis sweep, one HMC trajectory, one
/// proposal of the run's trained flow, one HMC trajectory in the flow's latent space, one
/// non-equilibrium evolution from a Gaussian as an independence proposal.
pub const KERNEL_NAMES: [&str; 5] = ["local", "hmc", "flow", "flowhmc", "noneq"];

/// An action as a run holds it: the action itself, and the local Metropolis kernel built on
/// its concrete type (so that an action's specialised sweep is used).
///
/// Made by the [`Registry`] from an [`ActionSpec`](super::ActionSpec); it cannot be
/// implemented outside the crate.
pub trait TargetAction: Send + Sync + crate::sealed::TargetAction {
    /// The action.
    fn action(&self) -> Arc<dyn Action>;

    /// Local Metropolis with proposal half-width `step_size` and sweep order `order`,
    /// recording under `label`.
    fn local_metropolis(
        &self,
        step_size: f64,
        order: SweepOrder,
        label: MoveLabel,
    ) -> Result<Box<dyn Proposal>>;

    /// The action as `Arc<A>` of its concrete type, for [`KernelContext::action_as`].
    fn as_any(&self) -> &dyn Any;
}

/// A [`TargetAction`] of the concrete action type `A`.
pub struct Typed<A: Action>(pub Arc<A>);

impl<A: Action + 'static> crate::sealed::TargetAction for Typed<A> {}

impl<A: Action + 'static> TargetAction for Typed<A> {
    fn action(&self) -> Arc<dyn Action> {
        self.0.clone()
    }

    fn local_metropolis(
        &self,
        step_size: f64,
        order: SweepOrder,
        label: MoveLabel,
    ) -> Result<Box<dyn Proposal>> {
        Ok(Box::new(
            LocalMetropolis::new(self.0.clone(), step_size)?
                .with_order(order)?
                .with_label(label),
        ))
    }

    fn as_any(&self) -> &dyn Any {
        &self.0
    }
}

/// What a user's kernel constructor gets: the kernel's name and move label, the run's
/// action, the kernel's settings from the runcard (`[kernel.settings.NAME]`, JSON `null`
/// when none were given) and the run's trained flow, if any.
pub struct KernelContext<'a> {
    /// The name in the kernel expression.
    pub name: &'a str,
    /// The move label of this occurrence (see [`crate::kernel::KernelExpr::labels`]).
    pub label: MoveLabel,
    /// The run's trained flow, when the run has one.
    pub model: Option<&'a Arc<FlowModel>>,
    target: &'a dyn TargetAction,
}

impl<'a> KernelContext<'a> {
    /// The context of occurrence `label` of kernel `name` for `target`.
    pub fn new(
        name: &'a str,
        label: MoveLabel,
        target: &'a dyn TargetAction,
        model: Option<&'a Arc<FlowModel>>,
    ) -> Self {
        KernelContext {
            name,
            label,
            model,
            target,
        }
    }

    /// The run's action.
    pub fn action(&self) -> Arc<dyn Action> {
        self.target.action()
    }

    /// Local Metropolis with proposal half-width `step_size` and sweep order `order` on the
    /// run's action, built on its concrete type (so that an action's specialised sweep is
    /// used), recording under `label`.
    pub fn local_metropolis(
        &self,
        step_size: f64,
        order: SweepOrder,
        label: MoveLabel,
    ) -> Result<Box<dyn Proposal>> {
        self.target.local_metropolis(step_size, order, label)
    }

    /// The run's action as its concrete type `A`, when it is one (e.g. a kernel written for
    /// the user's own action).
    pub fn action_as<A: Action + 'static>(&self) -> Option<Arc<A>> {
        self.target.as_any().downcast_ref::<Arc<A>>().cloned()
    }
}

type ActionConstructor =
    dyn Fn(&serde_json::Value, &Lattice) -> Result<Arc<dyn TargetAction>> + Send + Sync;
type KernelConstructor =
    dyn Fn(&serde_json::Value, &KernelContext<'_>) -> Result<Box<dyn Proposal>> + Send + Sync;

/// Constructors of a user's actions, kernels and flow layers by name.
///
/// ```
/// use latflow::action::Phi4;
/// use latflow::kernel::Hmc;
/// use latflow::run::{ActionSpec, Registry};
///
/// #[derive(serde::Deserialize)]
/// struct Couplings {
///     beta: f64,
///     lambda: f64,
/// }
/// // φ⁴ registered again as if it were a user's action, and a kernel of its own.
/// let registry = Registry::new()
///     .with_action("my_phi4", |c: Couplings, lattice| {
///         Phi4::hopping(lattice.clone(), c.beta, c.lambda)
///     })?
///     .with_kernel("long_hmc", |_: (), context| {
///         Ok(Hmc::new(context.action(), 4.0, 40)?.with_label(context.label.clone()))
///     })?;
/// let spec = ActionSpec::Custom {
///     name: "my_phi4".into(),
///     config: serde_json::json!({ "beta": 0.5, "lambda": 0.5 }),
/// };
/// let lattice = latflow::Lattice::new(&[4, 4])?;
/// let target = registry.action(&spec, &lattice)?;
/// assert!(target.action().action(&[0.0; 16]).is_finite());
/// assert!(registry.has_kernel("long_hmc"));
/// # Ok::<(), latflow::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    actions: BTreeMap<String, Arc<ActionConstructor>>,
    kernels: BTreeMap<String, Arc<KernelConstructor>>,
    layers: LayerRegistry,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("actions", &self.actions.keys().collect::<Vec<_>>())
            .field("kernels", &self.kernels.keys().collect::<Vec<_>>())
            .field("layers", &self.layers)
            .finish()
    }
}

/// Deserialises a custom entry's configuration (JSON `null` also as an empty table),
/// naming the entry in the error.
fn parse_config<C: DeserializeOwned>(what: &str, config: &serde_json::Value) -> Result<C> {
    C::deserialize(config)
        .or_else(|e| {
            if config.is_null() {
                C::deserialize(serde_json::json!({})).map_err(|_| e)
            } else {
                Err(e)
            }
        })
        .map_err(|e| Error::format(format!("configuration of {what}"), e.to_string()))
}

/// Refuses a name that a kernel expression or runcard cannot use for a user's piece.
fn check_name(kind: &str, name: &str, reserved: &[&str]) -> Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Error::param(
            kind,
            format!("`{name}`: a name is a letter followed by letters, digits and `_`"),
        ));
    }
    if reserved.contains(&name) {
        return Err(Error::param(
            kind,
            format!("`{name}` is built in and cannot be registered again"),
        ));
    }
    Ok(())
}

impl Registry {
    /// An empty registry: only the built-in actions, kernels and layers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry with nothing registered, shared.
    pub fn builtin() -> &'static Registry {
        static BUILTIN: OnceLock<Registry> = OnceLock::new();
        BUILTIN.get_or_init(Registry::new)
    }

    /// Registers the action constructor `make` under `name`, for runcards' `[action] form =
    /// "custom", name = NAME, config = {...}`: `make` receives the configuration
    /// deserialised into `C` (use `()` for none) and the lattice. A name that is not a
    /// plain identifier is refused.
    pub fn with_action<C, A, F>(mut self, name: impl Into<String>, make: F) -> Result<Self>
    where
        C: DeserializeOwned,
        A: Action + 'static,
        F: Fn(C, &Lattice) -> Result<A> + Send + Sync + 'static,
    {
        let name = name.into();
        check_name("action", &name, &[])?;
        let entry = format!("the custom action `{name}`");
        let constructor = move |config: &serde_json::Value, lattice: &Lattice| {
            let action = make(parse_config(&entry, config)?, lattice)?;
            if action.lattice() != lattice {
                return Err(Error::Incompatible(format!(
                    "{entry} was built on a {} lattice, the run is on {lattice}",
                    action.lattice()
                )));
            }
            Ok(Arc::new(Typed(Arc::new(action))) as Arc<dyn TargetAction>)
        };
        self.actions.insert(name, Arc::new(constructor));
        Ok(self)
    }

    /// Registers the kernel constructor `make` under `name`, for kernel expressions: `make`
    /// receives the kernel's settings (`[kernel.settings.NAME]` in a runcard) deserialised
    /// into `C` and the [`KernelContext`]; the kernel it returns should record its moves
    /// under the context's label. The built-in names (`local`, `hmc`, `flow`, `mix`) and
    /// names that are not plain identifiers are refused.
    pub fn with_kernel<C, P, F>(mut self, name: impl Into<String>, make: F) -> Result<Self>
    where
        C: DeserializeOwned,
        P: Proposal + 'static,
        F: Fn(C, &KernelContext<'_>) -> Result<P> + Send + Sync + 'static,
    {
        let name = name.into();
        let mut reserved = KERNEL_NAMES.to_vec();
        reserved.push("mix");
        check_name("kernel", &name, &reserved)?;
        let entry = format!("the kernel `{name}`");
        let constructor = move |settings: &serde_json::Value, context: &KernelContext<'_>| {
            let kernel = make(parse_config(&entry, settings)?, context)?;
            Ok(Box::new(kernel) as Box<dyn Proposal>)
        };
        self.kernels.insert(name, Arc::new(constructor));
        Ok(self)
    }

    /// Uses `layers` for the users' transforms and nets of flows built or loaded in runs.
    pub fn with_layers(mut self, layers: LayerRegistry) -> Self {
        self.layers = layers;
        self
    }

    /// The users' flow layers.
    pub fn layers(&self) -> &LayerRegistry {
        &self.layers
    }

    /// Names of the registered actions.
    pub fn action_names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    /// Names of the registered kernels.
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.kernels.keys().map(String::as_str)
    }

    /// Whether `name` is a kernel a run knows (built in or registered).
    pub fn has_kernel(&self, name: &str) -> bool {
        KERNEL_NAMES.contains(&name) || self.kernels.contains_key(name)
    }

    /// Builds the action `spec` describes on `lattice`: a built-in form, or a registered
    /// custom action (an unregistered name is an error naming the registered ones).
    pub fn action(
        &self,
        spec: &super::ActionSpec,
        lattice: &Lattice,
    ) -> Result<Arc<dyn TargetAction>> {
        match spec {
            super::ActionSpec::Custom { name, config } => {
                let make = self.actions.get(name).ok_or_else(|| {
                    let known: Vec<&str> = self.action_names().collect();
                    Error::param(
                        "action",
                        format!(
                            "no action `{name}` is registered ({})",
                            if known.is_empty() {
                                "none are: register one with Registry::with_action".to_string()
                            } else {
                                format!("registered: {}", known.join(", "))
                            }
                        ),
                    )
                })?;
                make(config, lattice)
            }
            builtin => Ok(Arc::new(Typed(Arc::new(builtin.build(lattice)?)))),
        }
    }

    /// Builds the registered kernel `name` from its `settings` in `context`; `None` when no
    /// kernel of that name is registered.
    pub fn kernel(
        &self,
        name: &str,
        settings: &serde_json::Value,
        context: &KernelContext<'_>,
    ) -> Option<Result<Box<dyn Proposal>>> {
        self.kernels.get(name).map(|make| make(settings, context))
    }
}
