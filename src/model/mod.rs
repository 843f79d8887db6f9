//! Replica-stacked networks. Every parameter has a leading replica axis and lives in one flat
//! `[R, P]` tensor described by a [`Layout`]; R = 1 goes through the same code.

pub mod convnets;
pub mod init;
pub mod layer_inputs;
pub mod layers;
pub mod layout;
pub mod lenet;
pub mod loss;
pub mod resnet;
pub mod sparse;
pub mod state;
pub mod units;

use anyhow::{bail, Result};
use tch::{Device, Tensor};

pub use convnets::{ConvNet, Vgg};
pub use init::{fresh_replica, init_replica};
pub use layer_inputs::LayerInput;
pub use layers::{DropoutKeys, Input, Pass};
pub use layout::{
    BatchNormParams, BufferSpec, ConvParams, Init, LayerKind, Layout, LayoutBuilder, LinearParams,
    ParamSpec, Views,
};
pub use lenet::Lenet;
pub use loss::batch_losses;
pub use resnet::ResNet;
pub use state::State;
pub use units::{Consumer, UnitLayer};

use crate::config::{Arch, ModelConfig};

/// A network whose replicas run batched.
pub trait Network {
    /// Named parameters and buffers and their place in the flat vector.
    fn layout(&self) -> &Layout;

    /// Logits `[R, B, classes]` (per-replica input) or `[R, M, classes]` (shared input).
    fn forward(&self, pass: &Pass<'_>, x: Input<'_>) -> Tensor;

    /// Examples per evaluation forward pass on `device` (bounds activation memory; the same
    /// whatever the population, so that evaluation sums are too).
    fn eval_chunk(&self, _device: Device) -> usize {
        2_500
    }

    /// The layers, input first, when the network is a plain fully connected ReLU stack
    /// (no dropout) that [`sparse::SparseMlp`] can run; `None` otherwise.
    fn fully_connected(&self) -> Option<&[LinearParams]> {
        None
    }

    /// Whether [`Network::layer_inputs`] serves this network.
    fn has_layer_inputs(&self) -> bool {
        false
    }

    /// Each prunable weight's layer inputs (see [`LayerInput`]) in evaluation mode for one
    /// replica's flat parameters `w` `[P]` on images `x` `[N, C, H, W]`, input layer first;
    /// `None` for networks without [`Network::has_layer_inputs`] (BatchNorm and residual
    /// networks, so far).
    fn layer_inputs(&self, _w: &Tensor, _x: &Tensor) -> Option<Vec<LayerInput>> {
        None
    }

    /// Per parameter (layout order), the output positions each of its entries is used at for
    /// one example: 1 for a fully connected weight, the output map's H x W for a
    /// convolution; `None` where the network does not say yet.
    fn weight_positions(&self) -> Option<Vec<i64>> {
        None
    }

    /// The layers whose units (neurons, filters) structured pruning may remove, in layout
    /// order; the output layer is never one. Empty for networks that do not say yet.
    fn unit_layers(&self) -> Vec<UnitLayer> {
        Vec::new()
    }
}

/// Examples per evaluation forward pass of a convolutional network: on the CPU 60, since
/// oneDNN's convolutions ran up to twice as fast per example on chunks of at most 64 examples
/// as on chunks of 250 (Conv-2, VGG- and ResNet-like stacks; BENCHMARKS.md); on GPUs, where
/// every replica's filters see the chunk at once, 250.
pub fn conv_eval_chunk(device: Device) -> usize {
    if device == Device::Cpu {
        60
    } else {
        250
    }
}

/// Runs `net` on a population. On GPUs the replicas run batched (one `baddbmm` or grouped
/// convolution for all). On the CPU they run one after another through the very code path of a
/// single replica, so that a replica's results are the same bits alone or inside any
/// population: MKL's batched GEMM rounds a batch of one (routed to a plain GEMM) differently
/// from larger batches, and grouped convolutions were slower there anyway (BENCHMARKS.md).
pub fn forward_population(net: &dyn Network, pass: &Pass<'_>, x: Input<'_>) -> Tensor {
    let replicas = pass.params.size()[0];
    if replicas == 1 || pass.params.device() != tch::Device::Cpu {
        return net.forward(pass, x);
    }
    let params = pass.params.split(1, 0);
    let buffers: Vec<Vec<Tensor>> = pass.buffers.iter().map(|b| b.split(1, 0)).collect();
    let seeds = pass.dropout.map(|k| k.seeds.split(1, 0));
    let inputs = match x {
        Input::PerReplica(x) => Some(x.split(1, 0)),
        Input::Shared(_) => None,
    };
    let outs: Vec<Tensor> = (0..replicas as usize)
        .map(|r| {
            let own: Vec<Tensor> = buffers.iter().map(|b| b[r].shallow_clone()).collect();
            let sub = Pass {
                params: &params[r],
                buffers: &own,
                train: pass.train,
                dropout: match (&seeds, pass.dropout) {
                    (Some(s), Some(k)) => Some(DropoutKeys {
                        seeds: &s[r],
                        iteration: k.iteration,
                    }),
                    _ => None,
                },
            };
            let input = match (&inputs, x) {
                (Some(xs), _) => Input::PerReplica(&xs[r]),
                (None, shared) => shared,
            };
            net.forward(&sub, input)
        })
        .collect();
    Tensor::cat(&outs, 0)
}

/// Builds the architecture named in the config for images `[C, H, W]`.
pub fn build(cfg: &ModelConfig, input: [usize; 3], classes: usize) -> Result<Box<dyn Network>> {
    let [c, h, w] = input;
    Ok(match cfg.arch {
        Arch::Lenet300100 => Box::new(Lenet::new(c * h * w, classes).with_dropout(cfg.dropout)),
        Arch::Conv2 => Box::new(ConvNet::new(&[64, 64], input, classes, cfg.dropout)?),
        Arch::Conv4 => Box::new(ConvNet::new(
            &[64, 64, 128, 128],
            input,
            classes,
            cfg.dropout,
        )?),
        Arch::Conv6 => Box::new(ConvNet::new(
            &[64, 64, 128, 128, 256, 256],
            input,
            classes,
            cfg.dropout,
        )?),
        Arch::Vgg11 => Box::new(Vgg::new(11, input, classes)?),
        Arch::Vgg16 => Box::new(Vgg::new(16, input, classes)?),
        Arch::Resnet => {
            if cfg.depth < 8 || !(cfg.depth - 2).is_multiple_of(6) {
                bail!("invalid config: `model.depth` of a CIFAR ResNet must be 6n + 2 (20, 32, 44, 56, 110; got {})", cfg.depth);
            }
            Box::new(ResNet::new(cfg.depth, input, classes))
        }
    })
}
