//! Pruning at initialization: θ₀ pruned once, before any training, to a given count per group
//! (Frankle et al. 2021, "Pruning Neural Networks at Initialization: Why are We Missing the
//! Mark?"). SNIP and GraSP score from gradients on training batches ([`Snip`], [`Grasp`]);
//! SynFlow needs no data and prunes in many small steps ([`synflow_masks`]); magnitude and
//! random are the baselines. Every ranking goes through the one counting and tie rule.

use rand_chacha::ChaCha20Rng;
use tch::{Kind, Tensor};

use super::criterion::{Criterion, ScoreContext};
use super::gradient::ScoreData;
use super::{per_tensor_groups, prune_to_keep, remaining_counts, Magnitude, PruneGroup, Random};
use crate::config::InitCriterion;
use crate::model::{forward_population, Input, Layout, Network, Pass, State};
use crate::rng::permutation;

/// What an at-init criterion may need besides θ₀.
pub struct InitScoring<'a> {
    /// Examples (SNIP, GraSP) and the network.
    pub data: ScoreData<'a>,
    /// Training batches SNIP and GraSP score on.
    pub batches: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// SynFlow's pruning steps.
    pub synflow_iterations: u32,
    /// `rngs[r]`: replica r's stream for the random criterion.
    pub rngs: Vec<ChaCha20Rng>,
}

/// Masks `[R, P]` of the dense networks `state` (θ₀) pruned by `criterion` until group `g` of
/// every replica keeps `keep[g]` weights.
pub fn prune_at_init(
    criterion: InitCriterion,
    scoring: InitScoring<'_>,
    state: &State,
    layout: &Layout,
    groups: &[PruneGroup],
    keep: &[u64],
) -> Tensor {
    let dense = state.params.ones_like();
    let counts = |r: &[Vec<u64>]| vec![keep.to_vec(); r.len()];
    let InitScoring {
        data,
        batches,
        batch_size,
        synflow_iterations,
        rngs,
    } = scoring;
    match criterion {
        InitCriterion::Magnitude => {
            prune_to_keep(&mut Magnitude, state, &dense, layout, groups, counts)
        }
        InitCriterion::Random => {
            let mut random = GroupRandom { rngs, groups };
            prune_to_keep(&mut random, state, &dense, layout, groups, counts)
        }
        InitCriterion::Snip => {
            let mut snip = Snip {
                data,
                batches,
                batch_size,
            };
            prune_to_keep(&mut snip, state, &dense, layout, groups, counts)
        }
        InitCriterion::Grasp => {
            let mut grasp = Grasp {
                data,
                batches,
                batch_size,
            };
            prune_to_keep(&mut grasp, state, &dense, layout, groups, counts)
        }
        InitCriterion::Synflow => {
            let mut input = data.train.images.size();
            input[0] = 1;
            let net = data.net;
            synflow_masks(
                (net, &input),
                state,
                layout,
                (groups, keep),
                synflow_iterations,
            )
        }
    }
}

/// `masks` with each tensor's kept entries moved to random positions of the same tensor
/// (the count of every tensor unchanged), drawn from `rngs[r]` for replica r.
pub fn shuffle_within_tensors(masks: &Tensor, layout: &Layout, rngs: Vec<ChaCha20Rng>) -> Tensor {
    let groups = per_tensor_groups(layout);
    let counts: Vec<Vec<u64>> = remaining_counts(masks, layout)
        .into_iter()
        .map(|row| groups.iter().map(|g| g.remaining(&row)).collect())
        .collect();
    let dense = State {
        params: masks.ones_like(),
        buffers: Vec::new(),
    };
    let mut random = Random::new(rngs);
    prune_to_keep(&mut random, &dense, &dense.params, layout, &groups, |_| {
        counts
    })
}

/// SNIP (Lee et al. 2019): the score of a weight is |w · ḡ|, ḡ the gradient of the mean loss
/// over `batches` training batches.
pub struct Snip<'a> {
    /// Examples and network.
    pub data: ScoreData<'a>,
    /// Batches.
    pub batches: usize,
    /// Examples per batch.
    pub batch_size: usize,
}

impl Criterion for Snip<'_> {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        let w = (&ctx.state.params * ctx.masks).detach();
        let g = mean_gradient(
            &self.data,
            &w,
            &ctx.state.buffers,
            self.batches,
            self.batch_size,
        );
        (&w * g).abs()
    }
}

/// GraSP (Wang et al. 2020): with g the gradient of the mean loss over `batches` training
/// batches and H the Hessian, GraSP removes the weights of largest -w · (Hg) (whose removal
/// reduces the gradient flow least); lowest first here, the score is w · (Hg). The logits are
/// divided by [`GRASP_TEMPERATURE`] in both passes, as in the authors' code.
pub struct Grasp<'a> {
    /// Examples and network.
    pub data: ScoreData<'a>,
    /// Batches.
    pub batches: usize,
    /// Examples per batch.
    pub batch_size: usize,
}

/// The softmax temperature GraSP's authors divide the logits by in both passes (their code's
/// `T = 200`), which keeps the Hessian-gradient product away from a saturated softmax.
pub const GRASP_TEMPERATURE: f64 = 200.0;

impl Criterion for Grasp<'_> {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        let w = (&ctx.state.params * ctx.masks).detach();
        let buffers = &ctx.state.buffers;
        let data = &self.data;
        let all = batches(data, w.size()[0], self.batches, self.batch_size);
        let t = GRASP_TEMPERATURE;
        tch::with_grad(|| {
            // g: the mean gradient (no graph).
            let mut g = w.zeros_like();
            for (x, y) in &all {
                let v = w.detach().set_requires_grad(true);
                let loss = data.loss(&v, buffers, (x, y), t);
                g += Tensor::run_backward(&[loss], &[&v], false, false)
                    .pop()
                    .expect("one gradient");
            }
            let g = g / self.batches as f64;
            // Hg: the gradient of (gradient . g), batch by batch.
            let mut hg = w.zeros_like();
            for (x, y) in &all {
                let v = w.detach().set_requires_grad(true);
                let loss = data.loss(&v, buffers, (x, y), t);
                let grad = Tensor::run_backward(&[loss], &[&v], true, true)
                    .pop()
                    .expect("one gradient");
                let z = (grad * &g).sum(Kind::Float);
                hg += Tensor::run_backward(&[z], &[&v], false, false)
                    .pop()
                    .expect("one Hessian-gradient product");
            }
            &w * (hg / self.batches as f64)
        })
    }
}

/// The gradient `[R, P]` of each replica's mean loss, averaged over `batches` batches of its
/// own examples.
fn mean_gradient(
    data: &ScoreData<'_>,
    w: &Tensor,
    buffers: &[Tensor],
    batches: usize,
    batch_size: usize,
) -> Tensor {
    let mut sum = w.zeros_like();
    for (x, y) in self::batches(data, w.size()[0], batches, batch_size) {
        sum += data.gradient(w, buffers, &x, &y);
    }
    sum / batches as f64
}

/// The `batches` batches of every replica's own examples: images `[R, B, ...]`, labels `[R, B]`.
fn batches(
    data: &ScoreData<'_>,
    replicas: i64,
    batches: usize,
    batch_size: usize,
) -> Vec<(Tensor, Tensor)> {
    let examples: Vec<Vec<i64>> = (0..replicas as usize)
        .map(|r| data.examples(r, batches * batch_size))
        .collect();
    (0..batches)
        .map(|b| {
            let index: Vec<i64> = examples
                .iter()
                .flat_map(|e| e[b * batch_size..(b + 1) * batch_size].to_vec())
                .collect();
            data.batch(&index, replicas)
        })
        .collect()
}

/// Uniformly random ranks over each whole group (one permutation of a group's weights per
/// replica, drawn from its own stream), so a group of several tensors loses weights of every
/// tensor in proportion, as a random global mask does.
struct GroupRandom<'g> {
    rngs: Vec<ChaCha20Rng>,
    groups: &'g [PruneGroup],
}

impl Criterion for GroupRandom<'_> {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        let layout = ctx.layout;
        let mut rows = Vec::with_capacity(self.rngs.len());
        for rng in &mut self.rngs {
            let mut scores = vec![0f64; layout.total()];
            for group in self.groups {
                let positions: Vec<usize> = group
                    .params
                    .iter()
                    .flat_map(|&i| layout.offset(i)..layout.offset(i) + layout.specs()[i].numel())
                    .collect();
                for (rank, &k) in permutation(rng, positions.len()).iter().enumerate() {
                    scores[positions[k as usize]] = rank as f64;
                }
            }
            rows.push(Tensor::from_slice(&scores));
        }
        Tensor::stack(&rows, 0).to_device(ctx.masks.device())
    }
}

/// SynFlow (Tanaka et al. 2020): every parameter made positive (|θ|), R = the summed output
/// of the network on an all-ones input (evaluation mode), the score of a weight |w · dR/dw|;
/// pruned in `steps` steps, step k to `size · (keep / size)^(k / steps)` weights of each group
/// (the exponential schedule), rescoring the pruned network each step.
pub fn synflow_masks(
    (net, input): (&dyn Network, &[i64]),
    state: &State,
    layout: &Layout,
    (groups, keep): (&[PruneGroup], &[u64]),
    steps: u32,
) -> Tensor {
    let positive = state.with_params(state.params.abs());
    let mut masks = state.params.ones_like();
    let mut score = SynflowScore { net, input };
    for k in 1..=steps {
        let share = f64::from(k) / f64::from(steps);
        let at_step: Vec<u64> = groups
            .iter()
            .zip(keep)
            .map(|(g, &kept)| {
                let size = g.size(layout) as f64;
                (size * (kept as f64 / size).powf(share)).round() as u64
            })
            .collect();
        masks = prune_to_keep(&mut score, &positive, &masks, layout, groups, |r| {
            vec![at_step.clone(); r.len()]
        });
    }
    masks
}

/// One SynFlow scoring of positive weights under their masks.
struct SynflowScore<'a> {
    net: &'a dyn Network,
    /// `[1, C, H, W]` of the all-ones input.
    input: &'a [i64],
}

impl Criterion for SynflowScore<'_> {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        tch::with_grad(|| {
            let w = (&ctx.state.params * ctx.masks)
                .detach()
                .set_requires_grad(true);
            let pass = Pass {
                params: &w,
                buffers: &ctx.state.buffers,
                train: false,
                dropout: None,
            };
            let ones = Tensor::ones(self.input, (Kind::Float, w.device()));
            let out = forward_population(self.net, &pass, Input::Shared(&ones));
            let total = out.sum(Kind::Float);
            let g = Tensor::run_backward(&[total], &[&w], false, false)
                .pop()
                .expect("one gradient");
            (g * w.detach()).abs()
        })
    }
}
