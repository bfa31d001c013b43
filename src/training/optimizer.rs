//! The training optimizer: burn's AdamW, with its update fused into one pass on the CPU backend.
//!
//! Its state is burn's `AdamWState`, so its record (a checkpoint's `optimizer.mpk`) is the one
//! burn's AdamW writes and reads: checkpoints move between the two either way. Other backends,
//! and moments that burn's AMSGrad variant left, take burn's AdamW itself.

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use crate::kernels::cpu::adamw::{adamw_on_host, are_host_f32, AdamWStep};
use crate::models::Law;

/// AdamW's first-moment decay (burn's and PyTorch's default).
const BETA_1: f32 = 0.9;
/// AdamW's second-moment decay (burn's and PyTorch's default).
const BETA_2: f32 = 0.999;

/// AdamW (decoupled weight decay, bias-corrected moments), as burn's [`AdamW`] computes it.
#[derive(Clone)]
pub struct FusedAdamW {
    weight_decay: f32,
    epsilon: f32,
    burn: AdamW,
}

/// The optimizer of a law being trained on autodiff backend `B`.
pub type LawOptimizer<B> = OptimizerAdaptor<FusedAdamW, Law<B>, B>;

impl FusedAdamW {
    /// AdamW with `weight_decay` and `epsilon` (added to the second moment's root).
    pub fn new(weight_decay: f32, epsilon: f32) -> Self {
        let burn = AdamWConfig::new()
            .with_beta_1(BETA_1)
            .with_beta_2(BETA_2)
            .with_weight_decay(weight_decay)
            .with_epsilon(epsilon)
            .build();
        Self { weight_decay, epsilon, burn }
    }

    /// The optimizer of a law on autodiff backend `B`.
    pub fn for_law<B: AutodiffBackend>(self) -> LawOptimizer<B> {
        OptimizerAdaptor::from(self)
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    /// One step of `tensor` (any shape) along `grad` (its shape).
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let fused = state.as_ref().is_none_or(|state| {
            let momentum = &state.momentum;
            momentum.max_moment_2.is_none() && are_host_f32(&[&momentum.moment_1, &momentum.moment_2])
        }) && are_host_f32(&[&tensor, &grad]);
        if !fused {
            return self.burn.step(lr, tensor, grad, state);
        }
        let previous = state.map(|state| state.momentum);
        let time = previous.as_ref().map_or(1, |momentum| momentum.time + 1);
        let step = AdamWStep::new(BETA_1, BETA_2, self.epsilon, self.weight_decay, lr, time);
        let moments = previous.map(|momentum| (momentum.moment_1, momentum.moment_2));
        let (tensor, moment_1, moment_2) = adamw_on_host(tensor, grad, moments, &step);
        let momentum = AdaptiveMomentumState { time, moment_1, moment_2, max_moment_2: None };
        (tensor, Some(AdamWState { momentum }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{Module, Param};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::{Distribution, TensorData};

    use super::*;

    type Train = Autodiff<NdArray>;

    const WEIGHT_DECAY: f32 = 0.05;
    const EPSILON: f32 = 1e-8;

    fn bits<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> Vec<u32> {
        tensor.to_data().to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
    }

    fn burns(weight_decay: f32) -> AdamW {
        AdamWConfig::new().with_weight_decay(weight_decay).with_epsilon(EPSILON).build()
    }

    /// The same f32 operations in the same order: equal to the bit, on any ISA.
    #[test]
    fn fused_steps_are_burns_adamw_to_the_bit() {
        let device = Default::default();
        // One shape within a task, one spanning several of the update's parallel chunks.
        for (shape, weight_decay) in
            [([4, 3, 3, 3], WEIGHT_DECAY), ([7, 13, 21, 25], WEIGHT_DECAY), ([4, 3, 3, 3], 0.0)]
        {
            let fused = FusedAdamW::new(weight_decay, EPSILON);
            let mut ours = Tensor::<NdArray, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let mut theirs = ours.clone();
            let (mut our_state, mut their_state) = (None, None);
            for (step, lr) in [1e-2, 1e-2, 3e-3, 2e-2].into_iter().enumerate() {
                let grad = Tensor::<NdArray, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                (ours, our_state) = fused.step(lr, ours, grad.clone(), our_state);
                (theirs, their_state) = burns(weight_decay).step(lr, theirs, grad, their_state);
                let (our_momentum, their_momentum) =
                    (&our_state.as_ref().unwrap().momentum, &their_state.as_ref().unwrap().momentum);
                let case = format!("{shape:?}, weight decay {weight_decay}, step {step}");
                assert_eq!(our_momentum.time, their_momentum.time, "{case}");
                assert!(bits(&ours) == bits(&theirs), "{case}: the parameters differ");
                assert!(
                    bits(&our_momentum.moment_1) == bits(&their_momentum.moment_1),
                    "{case}: first moments"
                );
                assert!(
                    bits(&our_momentum.moment_2) == bits(&their_momentum.moment_2),
                    "{case}: second moments"
                );
            }
        }
    }

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        weight: Param<Tensor<B, 4>>,
        bias: Param<Tensor<B, 1>>,
    }

    impl<B: Backend> Tiny<B> {
        fn new(device: &B::Device) -> Self {
            let values = |shape: Vec<usize>, offset: f32| {
                let len = shape.iter().product::<usize>();
                let data = (0..len).map(|index| ((index as f32 + offset) * 0.37).sin()).collect::<Vec<_>>();
                TensorData::new(data, shape)
            };
            Self {
                weight: Param::from_data(values(vec![3, 2, 3, 3], 0.0), device),
                bias: Param::from_data(values(vec![3], 5.0), device),
            }
        }
    }

    /// Gradients of a loss whose gradient changes with the weights, so steps differ.
    fn gradients(model: &Tiny<Train>) -> GradientsParams {
        let weight = model.weight.val();
        let loss = (weight.clone() * weight.clone()).sum() + (weight.sin().sum() * model.bias.val().sum());
        GradientsParams::from_grads(loss.backward(), model)
    }

    fn step<O: Optimizer<Tiny<Train>, Train>>(optimizer: &mut O, model: Tiny<Train>) -> Tiny<Train> {
        let gradients = gradients(&model);
        optimizer.step(1e-2, model, gradients)
    }

    type Bytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

    /// A checkpoint's optimizer record, written by one and read by the other, continues the run
    /// exactly: the record is burn's AdamW's.
    #[test]
    fn checkpoints_move_between_burns_adamw_and_the_fused_one() {
        let device = Default::default();
        let mut burn = AdamWConfig::new()
            .with_weight_decay(WEIGHT_DECAY)
            .with_epsilon(EPSILON)
            .init::<Train, Tiny<Train>>();
        let mut fused =
            OptimizerAdaptor::<_, Tiny<Train>, Train>::from(FusedAdamW::new(WEIGHT_DECAY, EPSILON));
        let mut model = Tiny::<Train>::new(&device);
        for _ in 0..2 {
            model = step(&mut burn, model);
        }
        let written = Bytes::default().record(burn.to_record(), ()).unwrap();
        fused = fused.load_record(Bytes::default().load(written, &device).unwrap());
        let (by_burn, by_fused) = (step(&mut burn, model.clone()), step(&mut fused, model.clone()));
        assert!(bits(&by_burn.weight.val()) == bits(&by_fused.weight.val()), "burn's record, resumed fused");
        assert!(bits(&by_burn.bias.val()) == bits(&by_fused.bias.val()), "burn's record, resumed fused");
        assert!(bits(&by_fused.weight.val()) != bits(&model.weight.val()), "the step moved nothing");

        let written = Bytes::default().record(fused.to_record(), ()).unwrap();
        let mut burn = AdamWConfig::new()
            .with_weight_decay(WEIGHT_DECAY)
            .with_epsilon(EPSILON)
            .init::<Train, Tiny<Train>>();
        burn = burn.load_record(Bytes::default().load(written, &device).unwrap());
        let (by_burn, by_fused) = (step(&mut burn, by_fused.clone()), step(&mut fused, by_fused));
        assert!(
            bits(&by_burn.weight.val()) == bits(&by_fused.weight.val()),
            "the fused record, resumed by burn"
        );
        assert!(bits(&by_burn.bias.val()) == bits(&by_fused.bias.val()), "the fused record, resumed by burn");
    }
}
