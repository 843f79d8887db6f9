//! The units a network can lose whole (structured pruning): neurons of its hidden fully
//! connected layers and filters of its convolutions, each with the parameters that hold one
//! entry per unit (bias, BatchNorm scale and shift) and the input columns or channels of the
//! layers it feeds. A unit removed from all of them computes nothing and reaches nothing.

use tch::Tensor;

use super::layout::{LayerKind, Layout};

/// A layer of removable units: unit u is row u (dim 0) of `weight`.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitLayer {
    /// The layer's weight (its index in the layout); `Fc` for neurons, `Conv` for filters.
    pub weight: usize,
    /// Parameters with one entry per unit (bias, BatchNorm scale and shift).
    pub owned: Vec<usize>,
    /// Buffers with one entry per unit (BatchNorm's running mean and variance), by buffer
    /// index: never masked (a removed unit's scale and shift are), but left out of the
    /// compact network.
    pub owned_buffers: Vec<usize>,
    /// The weights the layer's output feeds.
    pub consumers: Vec<Consumer>,
}

/// A weight fed by a unit layer: unit u reaches its input entries `u * span .. (u + 1) * span`
/// along dim 1 (`span` 1 for a channel or neuron; a channel's `H * W` columns where a
/// flattened feature map feeds a fully connected layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumer {
    /// The consuming weight's index in the layout.
    pub weight: usize,
    /// Input entries per unit.
    pub span: i64,
}

impl UnitLayer {
    /// Number of units.
    pub fn units(&self, layout: &Layout) -> i64 {
        layout.specs()[self.weight].shape[0]
    }

    /// Its kind (`Fc`: neurons, `Conv`: filters).
    pub fn kind(&self, layout: &Layout) -> LayerKind {
        layout.specs()[self.weight].kind
    }

    /// The unit's incoming weights, `[R, units, fan_in]`, of the flat `params` `[R, P]`.
    pub fn rows(&self, layout: &Layout, params: &Tensor) -> Tensor {
        let r = params.size()[0];
        layout
            .segment(params, self.weight)
            .view([r, self.units(layout), -1])
    }

    /// Which units remain under `masks` (`[R, P]`), `[R, units]` booleans: some entry of
    /// their row or of their own parameters (bias) is kept. (A unit whose bias alone remains
    /// still computes relu(bias).)
    pub fn alive(&self, layout: &Layout, masks: &Tensor) -> Tensor {
        let (r, units) = (masks.size()[0], self.units(layout));
        let mut alive = self.rows(layout, masks).gt(0.5).any_dim(-1, false);
        for &p in &self.owned {
            alive = alive.logical_or(&layout.segment(masks, p).view([r, units]).gt(0.5));
        }
        alive
    }

    /// Multiplies `masks` (`[R, P]`, in place) by `keep` (`[R, units]`, 1 kept, 0 removed) at
    /// every entry the units reach: their rows, their own entries and their consumers' inputs.
    pub fn apply(&self, layout: &Layout, masks: &mut Tensor, keep: &Tensor) {
        let r = masks.size()[0];
        let units = self.units(layout);
        let _ = self.rows(layout, masks).g_mul_(&keep.unsqueeze(-1));
        for &p in &self.owned {
            let _ = layout.segment(masks, p).view([r, units]).g_mul_(keep);
        }
        for c in &self.consumers {
            let out = layout.specs()[c.weight].shape[0];
            let spec = &layout.specs()[c.weight];
            let rest: i64 = spec.shape[1..].iter().product::<i64>() / (units * c.span);
            let _ = layout
                .segment(masks, c.weight)
                .view([r, out, units, c.span * rest])
                .g_mul_(&keep.view([r, 1, units, 1]));
        }
    }
}
