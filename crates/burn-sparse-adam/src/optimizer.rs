//! [`SparseAdamOptimizer`]: SparseAdam for a whole model, as a Burn `Optimizer`.
//!
//! It walks the model like Burn's `OptimizerAdaptor` and gives each parameter that has a
//! gradient one [`SparseAdam`] step: the row path for a
//! [`SparseEmbedding`](crate::SparseEmbedding) whose row gradients were collected by
//! [`collect_grads`](crate::collect_grads), the dense path for every other gradient.
//!
//! A step is checked in full before anything changes: the learning rate, every gradient's
//! shape, every row gradient's rows and width, every saved state's shape. A rejected step
//! leaves the model, the optimizer state and the collected row gradients as they were.

use std::marker::PhantomData;

use hashbrown::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::GradAdaptor;
use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Shape, Tensor};

use crate::error::{Error, Result};
use crate::row_grads::{marker_shape, scope, RowGrad};
use crate::sparse_adam::{validate_lr, SparseAdam};
use crate::state::SparseAdamState;

/// The saved state of a [`SparseAdamOptimizer`]: one [`SparseAdamState`] per parameter that
/// has taken a step, keyed by parameter id. It is the record type of Burn's own
/// `OptimizerAdaptor`, so a record saved by `OptimizerAdaptor<SparseAdam, _, _>` loads here.
pub type SparseAdamRecord<B> = HashMap<ParamId, AdaptorRecord<SparseAdam, B>>;

/// SparseAdam over a whole model: built by
/// [`SparseAdamConfig::init`](crate::SparseAdamConfig::init), used like any Burn
/// `Optimizer` (a manual loop or burn-train's `Learner`).
///
/// # Example
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::{GradientsParams, Optimizer};
/// use burn::tensor::Tensor;
/// use burn_sparse_adam::SparseAdamConfig;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let model: Linear<B> = LinearConfig::new(4, 2).init(&device);
/// let mut optim = SparseAdamConfig::new().init();
///
/// let loss = model.forward(Tensor::<B, 2>::ones([3, 4], &device)).sum();
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// let model = optim.try_step(1e-3, model, grads).expect("a valid step");
///
/// // A learning rate PyTorch rejects is an error here, and nothing changes.
/// let loss = model.forward(Tensor::<B, 2>::ones([3, 4], &device)).sum();
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// let err = optim.try_step(-1.0, model, grads).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid learning rate: -1 (the step's learning rate must be finite and > 0)"
/// );
/// ```
pub struct SparseAdamOptimizer<M, B: AutodiffBackend> {
    rule: SparseAdam,
    states: SparseAdamRecord<B>,
    module: PhantomData<fn() -> M>,
}

impl<M, B: AutodiffBackend> Clone for SparseAdamOptimizer<M, B> {
    fn clone(&self) -> Self {
        Self {
            rule: self.rule.clone(),
            states: self.states.clone(),
            module: PhantomData,
        }
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> SparseAdamOptimizer<M, B> {
    pub(crate) fn new(rule: SparseAdam) -> Self {
        Self {
            rule,
            states: HashMap::new(),
            module: PhantomData,
        }
    }

    /// The update rule, with its hyperparameters.
    pub fn rule(&self) -> &SparseAdam {
        &self.rule
    }

    /// The state of parameter `id`, if it has taken a step.
    ///
    /// # Panics
    ///
    /// When `D` is not the parameter's rank.
    pub fn state<const D: usize>(
        &self,
        id: ParamId,
    ) -> Option<SparseAdamState<B::InnerBackend, D>> {
        self.states
            .get(&id)
            .map(|record| record.clone().into_state())
    }

    /// One optimizer step, or an error that leaves everything unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLearningRate`], [`Error::GradientShape`], [`Error::IndexOutOfRange`]
    /// (a row gradient beyond its table), [`Error::StateShape`] (a loaded record that does
    /// not fit the model), [`Error::RowGradientsNotCollected`].
    pub fn try_step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> Result<M> {
        self.step_checked(lr, module, grads.into())
    }

    /// [`SparseAdamOptimizer::try_step`] for gradients from several devices: each
    /// parameter's gradients, row gradients included, are summed on the device Burn picks
    /// for that parameter.
    ///
    /// # Errors
    ///
    /// As [`SparseAdamOptimizer::try_step`].
    pub fn try_step_multi(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: MultiGradientsParams,
    ) -> Result<M> {
        self.step_checked(lr, module, grads.into())
    }

    fn step_checked(&mut self, lr: LearningRate, module: M, mut grads: GradAdaptor) -> Result<M> {
        validate_lr(lr)?;
        let mut checker = Checker::<B> {
            grads: &grads,
            states: &self.states,
            error: None,
        };
        module.visit(&mut checker);
        if let Some(err) = checker.error {
            return Err(err);
        }
        Ok(module.map(&mut Stepper::<B> {
            rule: &self.rule,
            states: &mut self.states,
            grads: &mut grads,
            lr,
        }))
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> Optimizer<M, B> for SparseAdamOptimizer<M, B> {
    type Record = SparseAdamRecord<B>;

    /// # Panics
    ///
    /// Where [`SparseAdamOptimizer::try_step`] returns an error, with its message, before
    /// changing anything.
    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        self.try_step(lr, module, grads)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// # Panics
    ///
    /// As [`Optimizer::step`].
    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        self.try_step_multi(lr, module, grads)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    fn to_record(&self) -> Self::Record {
        self.states.clone()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.states = record;
        self
    }
}

/// How a parameter's gradient arrived.
enum GradKind {
    /// A gradient shaped like the parameter.
    Dense,
    /// A marker: the rows wait on the table's tape.
    Rows,
}

/// Classifies the gradient of shape `grad` for a parameter of shape `param`.
fn grad_kind(param: &Shape, grad: &Shape, has_tape: bool) -> Option<GradKind> {
    if grad == param {
        Some(GradKind::Dense)
    } else if has_tape && *grad == marker_shape(param) {
        Some(GradKind::Rows)
    } else {
        None
    }
}

/// `[n, d]`: a parameter seen as rows (dim 0) of flattened entries.
fn as_rows(shape: &Shape) -> [usize; 2] {
    let n = shape.as_slice().first().copied().unwrap_or(1);
    [n, shape.num_elements() / n.max(1)]
}

/// The shape of the gradient of `id` in `grads`, without taking it.
fn peek_grad_shape<B: Backend, const D: usize>(grads: &GradAdaptor, id: ParamId) -> Option<Shape> {
    match grads {
        GradAdaptor::Single(grads) => grads.get::<B, D>(id).map(|g| g.shape()),
        GradAdaptor::Multi(multi) => multi
            .grads
            .iter()
            .find_map(|(grads, _)| grads.get::<B, D>(id).map(|g| g.shape())),
    }
}

fn record_rank<B: AutodiffBackend>(record: &AdaptorRecord<SparseAdam, B>) -> usize {
    let AdaptorRecord::V1(record) = record;
    match record {
        AdaptorRecordV1::Rank0(_) => 0,
        AdaptorRecordV1::Rank1(_) => 1,
        AdaptorRecordV1::Rank2(_) => 2,
        AdaptorRecordV1::Rank3(_) => 3,
        AdaptorRecordV1::Rank4(_) => 4,
        AdaptorRecordV1::Rank5(_) => 5,
        AdaptorRecordV1::Rank6(_) => 6,
        AdaptorRecordV1::Rank7(_) => 7,
        AdaptorRecordV1::Rank8(_) => 8,
    }
}

/// The first pass of a step: finds every reason to reject it, changing nothing.
struct Checker<'a, B: AutodiffBackend> {
    grads: &'a GradAdaptor,
    states: &'a SparseAdamRecord<B>,
    error: Option<Error>,
}

impl<B: AutodiffBackend> Checker<'_, B> {
    fn check<const D: usize>(&self, id: ParamId, param: &Tensor<B, D>) -> Result<()> {
        let shape = param.shape();
        let tape = scope::tape::<B>(id);
        let Some(grad_shape) = peek_grad_shape::<B::InnerBackend, D>(self.grads, id) else {
            return match tape {
                Some(tape) if tape.has_pending() && tape.peek_collected().is_empty() => {
                    Err(Error::RowGradientsNotCollected { param: id })
                }
                _ => Ok(()),
            };
        };
        let kind =
            grad_kind(&shape, &grad_shape, tape.is_some()).ok_or_else(|| Error::GradientShape {
                param: id,
                expected: shape.to_vec(),
                found: grad_shape.to_vec(),
            })?;
        if let (GradKind::Rows, Some(tape)) = (kind, tape) {
            let [n, d] = as_rows(&shape);
            for rows in tape.peek_collected() {
                if let Some(width) = rows.width().filter(|&w| w != d) {
                    return Err(Error::GradientShape {
                        param: id,
                        expected: shape.to_vec(),
                        found: vec![rows.rows().len(), width],
                    });
                }
                if let Some(&row) = rows.rows().last().filter(|&&r| r as usize >= n) {
                    return Err(Error::IndexOutOfRange {
                        index: row,
                        n_embedding: n,
                    });
                }
            }
        }
        if let Some(record) = self.states.get(&id) {
            let found = if record_rank(record) == D {
                record.clone().into_state::<D>().shape()
            } else {
                vec![0; record_rank(record)]
            };
            if found != shape.to_vec() {
                return Err(Error::StateShape {
                    param: id,
                    expected: shape.to_vec(),
                    found,
                });
            }
        }
        Ok(())
    }
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Checker<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_none() {
            self.error = self.check(param.id, &param.val()).err();
        }
    }
}

/// The second pass of a step: applies it, parameter by parameter.
struct Stepper<'a, B: AutodiffBackend> {
    rule: &'a SparseAdam,
    states: &'a mut SparseAdamRecord<B>,
    grads: &'a mut GradAdaptor,
    lr: LearningRate,
}

impl<B: AutodiffBackend> Stepper<'_, B> {
    fn step<const D: usize>(
        &mut self,
        id: ParamId,
        param: Tensor<B::InnerBackend, D>,
        grad: Tensor<B::InnerBackend, D>,
        device: &Device<B::InnerBackend>,
    ) -> Tensor<B::InnerBackend, D> {
        let state = self
            .states
            .remove(&id)
            .map(|record| record.into_state::<D>().to_device(device));
        let shape = param.shape();
        let tape = scope::tape::<B>(id);
        let (param, state) = match (grad_kind(&shape, &grad.shape(), tape.is_some()), tape) {
            (Some(GradKind::Rows), Some(tape)) => {
                let rows = tape
                    .take_collected()
                    .into_iter()
                    .map(|rows| rows.map_values(Tensor::inner))
                    .collect();
                let rows = RowGrad::sum(rows, device);
                let [n, d] = as_rows(&shape);
                let state = state.map(|s| reshape_state(s, Shape::new([n, d])));
                let (param, state) =
                    self.rule
                        .step_rows(self.lr, param.reshape([n, d]), &rows, state);
                (param.reshape(shape.clone()), reshape_state(state, shape))
            }
            _ => self.rule.step_dense(self.lr, param, grad, state),
        };
        self.states.insert(id, AdaptorRecord::from_state(state));
        param
    }
}

fn reshape_state<B: Backend, const D: usize, const D2: usize>(
    state: SparseAdamState<B, D>,
    shape: Shape,
) -> SparseAdamState<B, D2> {
    SparseAdamState {
        step: state.step,
        exp_avg: state.exp_avg.reshape(shape.clone()),
        exp_avg_sq: state.exp_avg_sq.reshape(shape),
    }
}

impl<B: AutodiffBackend> ModuleMapper<B> for Stepper<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some((grad, device)) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let is_require_grad = tensor.is_require_grad();
        // As Burn's adaptor does: the parameter follows its gradient's device (multi-device
        // training picks one device per parameter).
        let tensor = if tensor.device() != device {
            tensor.to_device(&device)
        } else {
            tensor
        };
        let stepped = self.step(id, tensor.inner(), grad, &device);
        let mut tensor = Tensor::from_inner(stepped);
        if is_require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}
