//! User transforms and conditioner nets through the layer registry: a model with a custom
//! block saves and loads back bit for bit, trains next to built-in blocks, and every way of
//! getting the registry wrong is a typed error naming the entry.

mod common;

use std::sync::Arc;

use common::scratch_file;
use latflow::action::Phi4;
use latflow::flow::transform::{Affine, Z2Affine};
use latflow::flow::{
    BlockConfig, ConditionerNet, Coupling, DenseNet, Flow, FlowConfig, FlowFloat, FlowModel,
    LayerConfig, LayerRegistry, Net, NetConfig, NetContext, NetInput, ParamBuilder, Partition,
    PointwiseTransform, TransformKind, TransformPair,
};
use latflow::tape::{ParamSlice, Tape, Var};
use latflow::testing::check_flow_invertible;
use latflow::train::{TrainConfig, Trainer};
use latflow::{Error, Lattice, rng_from_seed};
use serde::Deserialize;

/// θ = x W over the passive values, or over the masked field gathered at the active sites.
struct LinearNet {
    w: ParamSlice,
    input: NetInput,
    per_site: usize,
    active: Arc<[usize]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinearConfig {
    #[serde(default)]
    masked: bool,
}

impl LinearNet {
    fn new(
        config: LinearConfig,
        context: &NetContext<'_>,
        params: &mut ParamBuilder,
    ) -> latflow::Result<Self> {
        let (input, cols) = if config.masked {
            // One output per site and parameter, gathered at the active sites.
            let volume = context.lattice().volume();
            (NetInput::MaskedField, volume * context.outputs_per_site())
        } else {
            (NetInput::Passive, context.outputs())
        };
        let rows = context.input_width(input);
        Ok(LinearNet {
            w: params.glorot_uniform(rows, cols, 0.1),
            input,
            per_site: context.outputs_per_site(),
            active: context.active().clone(),
        })
    }
}

impl ConditionerNet for LinearNet {
    fn input(&self) -> NetInput {
        self.input
    }

    fn build<T: FlowFloat>(&self, tape: &mut Tape<T>, params: &[T], input: Var) -> Var {
        let out = tape.linear(params, input, self.w, None);
        match self.input {
            NetInput::Passive => out,
            NetInput::MaskedField => tape.gather(out, &self.active, self.per_site),
        }
    }
}

/// A net whose output has one column too many.
struct WrongWidth(ParamSlice);

impl ConditionerNet for WrongWidth {
    fn build<T: FlowFloat>(&self, tape: &mut Tape<T>, params: &[T], input: Var) -> Var {
        tape.linear(params, input, self.0, None)
    }
}

fn registry() -> LayerRegistry {
    LayerRegistry::new()
        .with_transform("affine_again", |_: serde_json::Value| Ok(Affine))
        .with_net("linear", LinearNet::new)
        .with_net("wrong_width", |_: (), context, params| {
            let cols = context.outputs() + 1;
            Ok(WrongWidth(params.glorot_uniform(
                context.passive().len(),
                cols,
                1.0,
            )))
        })
}

fn custom_block(transform: &str, net: &str, net_config: serde_json::Value) -> LayerConfig {
    LayerConfig::Block(BlockConfig {
        transform: TransformKind::Custom {
            name: transform.into(),
            config: serde_json::Value::Null,
        },
        net: NetConfig::Custom {
            name: net.into(),
            config: net_config,
        },
        separate_nets: false,
        partition: Partition::Checkerboard,
    })
}

/// The seed recipe with a custom block (passive-reading) and a custom masked-field block
/// between its layers.
fn mixed_config() -> FlowConfig {
    let mut config = FlowConfig::seed(16, 1, 6).unwrap();
    config.layers.insert(
        1,
        custom_block("affine_again", "linear", serde_json::json!({})),
    );
    config.layers.insert(
        2,
        custom_block(
            "affine_again",
            "linear",
            serde_json::json!({"masked": true}),
        ),
    );
    config
}

fn lattice() -> Lattice {
    Lattice::hypercubic(2, 4).unwrap()
}

#[test]
fn model_with_custom_layers_round_trips_bit_for_bit() {
    let registry = registry();
    let mut model = FlowModel::new_with(&mixed_config(), &lattice(), 4, &registry).unwrap();
    // Parameters that are not the initial ones, so that loading cannot just rebuild them.
    for (i, p) in model.params_mut().iter_mut().enumerate() {
        *p += 0.01 * ((i % 7) as f32 - 3.0);
    }
    let path = scratch_file("round-trip.json");
    model.save(&path).unwrap();
    let loaded = FlowModel::load_with(&path, &registry);
    std::fs::remove_file(&path).unwrap();
    let loaded = loaded.unwrap();
    assert_eq!(loaded.config(), model.config());
    assert_eq!(loaded.params(), model.params());
    let (phi, log_p) = model.sample(32, &mut rng_from_seed(9)).unwrap();
    assert_eq!(
        loaded.log_density(phi.view()).unwrap(),
        model.log_density(phi.view()).unwrap()
    );
    assert_eq!(
        loaded.forward(phi.view()).unwrap(),
        model.forward(phi.view()).unwrap()
    );
    // The sampled log-density is the model's own.
    let again = model.log_density(phi.view()).unwrap();
    for (a, b) in log_p.iter().zip(&again) {
        assert!((a - b).abs() < 1e-3 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

#[test]
fn custom_layers_are_invertible_and_train_next_to_built_in_blocks() {
    let registry = registry();
    let model = FlowModel::new_with(&mixed_config(), &lattice(), 4, &registry).unwrap();
    let (z, _) = model.sample(16, &mut rng_from_seed(1)).unwrap();
    check_flow_invertible(&model, z.view(), 1e-4).unwrap();
    let action = Arc::new(Phi4::hopping(lattice(), 0.5, 0.5).unwrap());
    let mut train = TrainConfig::new(64, 40, 0.01);
    train.chunks = 2;
    let mut trainer = Trainer::new(model, action, train).unwrap();
    let first = trainer.step().unwrap().loss;
    let summary = trainer
        .train(&mut (), &latflow::StopToken::never())
        .unwrap();
    // Reverse KL of a fresh near-identity flow drops clearly within 40 steps.
    assert!(
        summary.final_loss < first - 1.0,
        "loss {first} → {}",
        summary.final_loss
    );
}

#[test]
fn checkpoint_of_a_flow_with_custom_layers_resumes_through_the_registry() {
    let registry = registry();
    let model = FlowModel::new_with(&mixed_config(), &lattice(), 4, &registry).unwrap();
    let action = Arc::new(Phi4::hopping(lattice(), 0.5, 0.5).unwrap());
    let mut train = TrainConfig::new(32, 4, 0.01);
    train.chunks = 1;
    let mut trainer = Trainer::new(model, action.clone(), train).unwrap();
    trainer.step().unwrap();
    let path = scratch_file("checkpoint.json");
    trainer.save_checkpoint(&path).unwrap();
    let without = Trainer::resume(&path, action.clone());
    let resumed = Trainer::resume_with(&path, action, &registry);
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(without, Err(Error::Unregistered { .. })));
    let mut resumed = resumed.unwrap();
    trainer
        .train(&mut (), &latflow::StopToken::never())
        .unwrap();
    resumed
        .train(&mut (), &latflow::StopToken::never())
        .unwrap();
    assert_eq!(resumed.model().params(), trainer.model().params());
}

#[test]
fn loading_without_the_registry_names_the_missing_entry() {
    let model = FlowModel::new_with(&mixed_config(), &lattice(), 4, &registry()).unwrap();
    let path = scratch_file("no-registry.json");
    model.save(&path).unwrap();
    let plain = FlowModel::load(&path);
    let nets_only = FlowModel::load_with(
        &path,
        &LayerRegistry::new().with_net("linear", LinearNet::new),
    );
    std::fs::remove_file(&path).unwrap();
    match plain {
        Err(e @ Error::Unregistered { .. }) => {
            let message = e.to_string();
            assert!(message.contains("`affine_again`"), "{message}");
            assert!(message.contains("load_with"), "{message}");
        }
        other => panic!("expected an unregistered-entry error, got {other:?}"),
    }
    match nets_only {
        Err(Error::Unregistered { kind, name }) => {
            assert_eq!(
                (kind.as_str(), name.as_str()),
                ("transform", "affine_again")
            );
        }
        other => panic!("expected an unregistered-entry error, got {other:?}"),
    }
    // A registry with the transform but not the net names the net.
    let transforms_only =
        LayerRegistry::new().with_transform("affine_again", |_: serde_json::Value| Ok(Affine));
    match FlowModel::new_with(&mixed_config(), &lattice(), 0, &transforms_only) {
        Err(Error::Unregistered { kind, name }) => {
            assert_eq!((kind.as_str(), name.as_str()), ("net", "linear"));
        }
        other => panic!("expected an unregistered-entry error, got {other:?}"),
    }
}

#[test]
fn invalid_custom_configurations_are_errors() {
    let registry = registry();
    let build = |config: serde_json::Value| {
        let flow = FlowConfig {
            prior: Default::default(),
            layers: vec![custom_block("affine_again", "linear", config)],
        };
        FlowModel::new_with(&flow, &lattice(), 0, &registry)
    };
    // Unknown field, wrong type: a format error naming the entry.
    for config in [
        serde_json::json!({"widht": 3}),
        serde_json::json!({"masked": "yes"}),
        serde_json::json!([1, 2]),
    ] {
        match build(config.clone()) {
            Err(e @ Error::Format { .. }) => {
                assert!(e.to_string().contains("custom net `linear`"), "{e}");
            }
            other => panic!("config {config}: expected a format error, got {other:?}"),
        }
    }
    assert!(build(serde_json::json!({"masked": true})).is_ok());
    // A net whose output does not fit the layer.
    let flow = FlowConfig {
        prior: Default::default(),
        layers: vec![custom_block(
            "affine_again",
            "wrong_width",
            serde_json::Value::Null,
        )],
    };
    match FlowModel::new_with(&flow, &lattice(), 0, &registry) {
        Err(e @ Error::Shape(_)) => assert!(e.to_string().contains("custom net"), "{e}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    // A model file whose custom entry is not even valid JSON for the config schema.
    let text = r#"{"prior":{"kind":"standard_normal"},"layers":[{"kind":"block",
        "transform":{"kind":"custom"},"net":{"kind":"dense","hidden":[4],"bias":true},
        "separate_nets":false}]}"#;
    assert!(serde_json::from_str::<FlowConfig>(text).is_err());
}

#[test]
fn custom_entries_serialise_as_named_json() {
    let config = mixed_config();
    let text = serde_json::to_string(&config).unwrap();
    assert!(
        text.contains(r#"{"kind":"custom","name":"linear","config":{"masked":true}}"#),
        "{text}"
    );
    let back: FlowConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, config);
    // A missing config is null.
    let entry: TransformKind = serde_json::from_str(r#"{"kind":"custom","name":"x"}"#).unwrap();
    assert_eq!(
        entry,
        TransformKind::Custom {
            name: "x".into(),
            config: serde_json::Value::Null
        }
    );
}

#[test]
fn coupling_layers_from_parts() {
    let lattice = lattice();
    let mut params = ParamBuilder::new(rng_from_seed(3));
    // A Z2-affine layer with a bias-free dense net, built without a configuration.
    let layer = Coupling::new(
        &lattice,
        lattice.sites_of_parity(1),
        TransformPair::new(Z2Affine).unwrap(),
        true,
        &mut params,
        |context, params| {
            let widths = [context.passive().len(), 8, context.outputs()];
            Ok(Net::Dense(DenseNet::new(&widths, false, params)?))
        },
    )
    .unwrap();
    assert_eq!(layer.nets().len(), 2);
    assert_eq!(
        layer.active().len() + layer.passive().len(),
        lattice.volume()
    );
    // Record it in f64 and invert it.
    let values: Vec<f64> = params.values().iter().map(|&p| f64::from(p)).collect();
    let x = ndarray::Array2::from_shape_fn((2, lattice.volume()), |(r, s)| {
        (r as f64 + 1.0) * (s as f64 - 7.5) / 8.0
    });
    let mut tape = Tape::new();
    let xv = tape.input(x.view());
    let zero = tape.zeros(2, 1);
    let layer = latflow::flow::Layer::Coupling(layer);
    let (y, ld) = layer.build(&mut tape, &values, xv, zero);
    let mut back = tape.value(y).to_owned();
    let ld_forward = tape.value(ld).column(0).to_owned();
    let mut ld_back = ndarray::Array1::zeros(2);
    layer.invert(&mut tape, &values, &mut back, &mut ld_back);
    for (a, b) in back.iter().zip(&x) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    for (f, b) in ld_forward.iter().zip(&ld_back) {
        assert!(
            f.abs() > 1e-3 && (f + b).abs() < 1e-12,
            "log-dets {f} and {b}"
        );
    }

    // A dense net of the wrong width is refused with a shape error.
    let wrong = Coupling::new(
        &lattice,
        lattice.sites_of_parity(0),
        TransformPair::new(Affine).unwrap(),
        false,
        &mut params,
        |context, params| {
            let widths = [context.passive().len(), context.outputs() - 1];
            Ok(Net::Dense(DenseNet::new(&widths, true, params)?))
        },
    );
    assert!(matches!(wrong, Err(Error::Shape(_))));
}

/// A transform whose f32 and f64 versions disagree on their parameter count.
struct Inconsistent;

impl PointwiseTransform<f32> for Inconsistent {
    fn params_per_site(&self) -> usize {
        1
    }
    fn forward(&self, v: &[f32], _: &[f32], y: &mut [f32], ld: &mut [f32]) {
        y.copy_from_slice(v);
        ld.fill(0.0);
    }
    fn inverse(&self, y: &[f32], _: &[f32], v: &mut [f32], ld: &mut [f32]) {
        v.copy_from_slice(y);
        ld.fill(0.0);
    }
    fn backward(&self, _: &[f32], _: &[f32], gy: &[f32], _: &[f32], gv: &mut [f32], _: &mut [f32]) {
        gv.iter_mut().zip(gy).for_each(|(a, &b)| *a += b);
    }
}

impl PointwiseTransform<f64> for Inconsistent {
    fn params_per_site(&self) -> usize {
        2
    }
    fn forward(&self, v: &[f64], _: &[f64], y: &mut [f64], ld: &mut [f64]) {
        y.copy_from_slice(v);
        ld.fill(0.0);
    }
    fn inverse(&self, y: &[f64], _: &[f64], v: &mut [f64], ld: &mut [f64]) {
        v.copy_from_slice(y);
        ld.fill(0.0);
    }
    fn backward(&self, _: &[f64], _: &[f64], gy: &[f64], _: &[f64], gv: &mut [f64], _: &mut [f64]) {
        gv.iter_mut().zip(gy).for_each(|(a, &b)| *a += b);
    }
}

#[test]
fn transform_pair_refuses_inconsistent_parameter_counts() {
    assert!(matches!(
        TransformPair::new(Inconsistent),
        Err(Error::InvalidParameter { .. })
    ));
    assert_eq!(TransformPair::new(Affine).unwrap().params_per_site(), 2);
}
