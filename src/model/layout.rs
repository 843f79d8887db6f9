//! Flat parameter layout. A population's parameters live in one `[R, P]` tensor (R replicas,
//! P parameters per replica); each named parameter is a view of a column range, reshaped to
//! its PyTorch shape with the replica axis in front. One flat tensor means the optimizer and
//! the mask touch every parameter in a handful of kernels. Buffers (BatchNorm running
//! statistics) are not trained and live beside it, one `[R, ...]` tensor each.

use tch::Tensor;

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with standard deviation sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio 2010;
    /// PyTorch's `xavier_normal_`, not truncated).
    GlorotNormal {
        /// Inputs per unit (times the kernel area for convolutions).
        fan_in: usize,
        /// Outputs per unit (times the kernel area for convolutions).
        fan_out: usize,
    },
    /// Normal with standard deviation sqrt(2 / fan_in) (He et al. 2015; PyTorch's
    /// `kaiming_normal_`, as OpenLTH initialises VGG and ResNet).
    KaimingNormal {
        /// Inputs per unit (times the kernel area for convolutions).
        fan_in: usize,
    },
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
}

/// What a parameter belongs to, for per-kind pruning rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A convolution's weight.
    Conv,
    /// A hidden fully connected layer's weight.
    Fc,
    /// The output layer's weight.
    Output,
    /// Anything else (biases, BatchNorm affine parameters).
    Other,
}

/// One named parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// PyTorch-style name, e.g. `fc1.weight`.
    pub name: String,
    /// PyTorch shape (no replica axis), e.g. `[300, 784]`.
    pub shape: Vec<i64>,
    /// Whether magnitude pruning may remove its entries.
    pub prunable: bool,
    /// Initialisation.
    pub init: Init,
    /// Layer kind.
    pub kind: LayerKind,
}

impl ParamSpec {
    /// Number of entries.
    pub fn numel(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }

    /// A prunable weight.
    pub fn weight(name: String, shape: Vec<i64>, init: Init, kind: LayerKind) -> Self {
        Self {
            name,
            shape,
            prunable: true,
            init,
            kind,
        }
    }

    /// A parameter that is never pruned (bias, BatchNorm scale or shift).
    pub fn dense(name: String, shape: Vec<i64>, init: Init) -> Self {
        Self {
            name,
            shape,
            prunable: false,
            init,
            kind: LayerKind::Other,
        }
    }
}

/// A buffer: state that is saved but not trained (BatchNorm running statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct BufferSpec {
    /// PyTorch-style name, e.g. `bn1.running_mean`.
    pub name: String,
    /// Shape without the replica axis.
    pub shape: Vec<i64>,
    /// Initial value of every entry.
    pub fill: f64,
}

/// The parameters and buffers of one network and where each parameter sits in the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    specs: Vec<ParamSpec>,
    offsets: Vec<usize>,
    total: usize,
    buffers: Vec<BufferSpec>,
}

impl Layout {
    /// Lays the parameters out back to back in the given order.
    pub fn new(specs: Vec<ParamSpec>, buffers: Vec<BufferSpec>) -> Self {
        let mut offsets = Vec::with_capacity(specs.len());
        let mut total = 0;
        for s in &specs {
            offsets.push(total);
            total += s.numel();
        }
        Self {
            specs,
            offsets,
            total,
            buffers,
        }
    }

    /// All parameters in order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// All buffers in order.
    pub fn buffers(&self) -> &[BufferSpec] {
        &self.buffers
    }

    /// Parameters per replica.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Column offset of parameter `i`.
    pub fn offset(&self, i: usize) -> usize {
        self.offsets[i]
    }

    /// Position of the parameter called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// Indices of the prunable parameters.
    pub fn prunable(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.specs.len()).filter(|&i| self.specs[i].prunable)
    }

    /// Total number of prunable entries.
    pub fn prunable_total(&self) -> usize {
        self.prunable().map(|i| self.specs[i].numel()).sum()
    }

    /// Columns of parameter `i` in a `[R, P]` tensor: a `[R, numel]` view.
    pub fn segment(&self, flat: &Tensor, i: usize) -> Tensor {
        flat.narrow(1, self.offsets[i] as i64, self.specs[i].numel() as i64)
    }

    /// Parameter `i` of every replica, shaped `[R, ...shape]` (a view of `flat`).
    pub fn view(&self, flat: &Tensor, i: usize) -> Tensor {
        let mut shape = vec![flat.size()[0]];
        shape.extend_from_slice(&self.specs[i].shape);
        self.segment(flat, i).view(shape.as_slice())
    }

    /// Every parameter of every replica, shaped `[R, ...shape]`, from one `split_with_sizes`
    /// of `flat` (its backward is one concatenation, where per-parameter `narrow`s would each
    /// add a full-size zero tensor to the gradient).
    pub fn views(&self, flat: &Tensor) -> Views {
        let r = flat.size()[0];
        let sizes: Vec<i64> = self.specs.iter().map(|s| s.numel() as i64).collect();
        let tensors = flat
            .split_with_sizes(sizes.as_slice(), 1)
            .into_iter()
            .zip(&self.specs)
            .map(|(t, spec)| {
                let mut shape = vec![r];
                shape.extend_from_slice(&spec.shape);
                t.view(shape.as_slice())
            })
            .collect();
        Views { tensors }
    }
}

/// Builds a layout one parameter and buffer at a time and hands back each one's position, so
/// that a network resolves its parameters once, when it is built, never by name in a forward
/// pass.
#[derive(Debug, Default)]
pub struct LayoutBuilder {
    specs: Vec<ParamSpec>,
    buffers: Vec<BufferSpec>,
}

impl LayoutBuilder {
    /// Appends a parameter; returns its position.
    pub fn param(&mut self, spec: ParamSpec) -> usize {
        self.specs.push(spec);
        self.specs.len() - 1
    }

    /// Appends a buffer; returns its position.
    pub fn buffer(&mut self, spec: BufferSpec) -> usize {
        self.buffers.push(spec);
        self.buffers.len() - 1
    }

    /// The layout, parameters back to back in the order appended.
    pub fn build(self) -> Layout {
        Layout::new(self.specs, self.buffers)
    }
}

/// Where a fully connected layer's weight and bias sit in a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearParams {
    /// Position of the weight.
    pub weight: usize,
    /// Position of the bias.
    pub bias: usize,
}

/// Where a convolution's weight and (optional) bias sit in a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    /// Position of the weight.
    pub weight: usize,
    /// Position of the bias, if the convolution has one.
    pub bias: Option<usize>,
}

/// Where a BatchNorm's scale and shift (parameters) and running statistics (buffers) sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchNormParams {
    /// Position of the scale (`weight`).
    pub weight: usize,
    /// Position of the shift (`bias`).
    pub bias: usize,
    /// Buffer position of `running_mean`.
    pub mean: usize,
    /// Buffer position of `running_var`.
    pub var: usize,
}

/// The parameters of a population as `[R, ...shape]` views (see [`Layout::views`]).
pub struct Views {
    tensors: Vec<Tensor>,
}

impl Views {
    /// Parameter `i` in layout order.
    pub fn at(&self, i: usize) -> &Tensor {
        &self.tensors[i]
    }

    /// A fully connected layer's weight and bias.
    pub fn linear(&self, p: LinearParams) -> (&Tensor, &Tensor) {
        (self.at(p.weight), self.at(p.bias))
    }

    /// A convolution's weight and bias.
    pub fn conv(&self, p: ConvParams) -> (&Tensor, Option<&Tensor>) {
        (self.at(p.weight), p.bias.map(|b| self.at(b)))
    }
}
