//! Each prunable layer's inputs as rows against its weight's fan-in: the activations a layer
//! multiplies its weights with, which layer-wise OBS builds its Hessians from.

use tch::Tensor;

use super::layout::{Layout, LinearParams};

/// The inputs of one weight's layer for one replica: `rows` `[M, fan_in]`, such that the
/// layer's pre-activations are `rows · weight.view([out, fan_in])ᵀ` (+ bias). Fully connected
/// layers: one row per example; convolutions: one row per example and output position (the
/// unfolded patches).
#[derive(Debug)]
pub struct LayerInput {
    /// The weight's index in the layout.
    pub weight: usize,
    /// The inputs, `[M, fan_in]`.
    pub rows: Tensor,
}

/// Parameter `i` of one replica's flat parameters `w` `[P]`, in its own shape.
pub fn replica_param(layout: &Layout, w: &Tensor, i: usize) -> Tensor {
    let spec = &layout.specs()[i];
    w.narrow(0, layout.offset(i) as i64, spec.numel() as i64)
        .view(spec.shape.as_slice())
}

/// The inputs of a fully connected ReLU stack `layers` (ReLU after all but the last), from
/// its input `h` `[N, in]`, for one replica's flat parameters `w` `[P]`; appended to `out`,
/// input layer first.
pub fn linear_stack_inputs(
    layout: &Layout,
    layers: &[LinearParams],
    w: &Tensor,
    mut h: Tensor,
    out: &mut Vec<LayerInput>,
) {
    for (l, layer) in layers.iter().enumerate() {
        out.push(LayerInput {
            weight: layer.weight,
            rows: h.shallow_clone(),
        });
        let weight = replica_param(layout, w, layer.weight);
        h = h.matmul(&weight.tr()) + replica_param(layout, w, layer.bias);
        if l + 1 < layers.len() {
            h = h.relu();
        }
    }
}

/// The `k` x `k` patches (stride 1, zero padding `padding`) of `x` `[N, C, H, W]` as rows
/// `[N · H' · W', C · k · k]`, each ordered as a weight `[O, C, k, k]` flattens (channel, then
/// kernel row, then kernel column).
pub fn patches(x: &Tensor, k: i64, padding: i64) -> Tensor {
    let c = x.size()[1];
    x.im2col([k, k], [1, 1], [padding, padding], [1, 1])
        .transpose(1, 2)
        .reshape([-1, c * k * k])
}
