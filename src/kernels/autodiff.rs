//! The hooks under burn's autodiff: each is one tracked operation whose backward step calls the
//! inner backend's own backward hook, so training uses the same kernels as inference.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;

use super::{Activation, EngineBackend};

/// Runs `forward` on the inner backend as one tracked operation of `N` inputs. When the graph
/// tracks it, every input is checkpointed and `state` builds the operation's state from their
/// ids and the output.
fn tracked<B, C, Op, const N: usize>(
    op: Op,
    inputs: [FloatTensor<Autodiff<B, C>>; N],
    state: impl FnOnce([NodeId; N], &FloatTensor<B>) -> Op::State,
    forward: impl FnOnce([FloatTensor<B>; N]) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: EngineBackend,
    C: CheckpointStrategy,
    Op: Backward<B, N>,
{
    let nodes = inputs.each_ref().map(|input| input.node.clone());
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let ids = inputs.each_ref().map(|input| prep.checkpoint(input));
            let output = forward(inputs.map(|input| input.primitive));
            prep.finish(state(ids, &output), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(inputs.map(|input| input.primitive))),
    }
}

/// The checkpointed inputs, in the order `tracked` took them.
fn retrieve<B: EngineBackend, const N: usize>(
    checkpointer: &mut Checkpointer,
    ids: [NodeId; N],
) -> [FloatTensor<B>; N] {
    ids.map(|id| checkpointer.retrieve_node_output(id))
}

/// Registers each parent's gradient, for the parents that take part in the graph. (`P` is
/// burn-autodiff's node reference, which the crate does not export by name.)
fn register<B: EngineBackend, P, const N: usize>(
    grads: &mut Gradients,
    parents: [Option<P>; N],
    gradients: [FloatTensor<B>; N],
    id: impl Fn(&P) -> NodeId,
) {
    for (parent, gradient) in parents.into_iter().zip(gradients) {
        if let Some(parent) = parent {
            grads.register::<B>(id(&parent), gradient);
        }
    }
}

/// The 3x3 convolution as one tracked operation.
#[derive(Debug)]
struct ConvBackward;

impl<B: EngineBackend> Backward<B, 2> for ConvBackward {
    type State = ([NodeId; 2], B::Conv3x3Kept);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (ids, kept) = ops.state;
        let [x, weight] = retrieve::<B, 2>(checkpointer, ids);
        let (grad_x, grad_weight) = B::conv3x3_backward(x, weight, grad, kept);
        register::<B, _, 2>(grads, ops.parents, [grad_x, grad_weight], |node| node.id);
    }
}

/// The 2x2 transposed convolution with its bias as one tracked operation.
#[derive(Debug)]
struct UpConvBackward;

impl<B: EngineBackend> Backward<B, 3> for UpConvBackward {
    type State = [NodeId; 3];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [x, weight, bias] = retrieve::<B, 3>(checkpointer, ops.state);
        let (grad_x, grad_weight, grad_bias) = B::conv_transpose2x2_backward(x, weight, bias, grad);
        register::<B, _, 3>(grads, ops.parents, [grad_x, grad_weight, grad_bias], |node| node.id);
    }
}

/// 2x2 max pooling as one tracked operation whose backward step finds each window's maximum
/// again from the input (instead of keeping an index tensor).
#[derive(Debug)]
struct MaxPoolBackward;

impl<B: EngineBackend> Backward<B, 1> for MaxPoolBackward {
    type State = [NodeId; 1];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [x] = retrieve::<B, 1>(checkpointer, ops.state);
        register::<B, _, 1>(grads, ops.parents, [B::max_pool2x2_backward(x, grad)], |node| node.id);
    }
}

/// GroupNorm + ELU as one tracked operation (the composed form records a dozen).
#[derive(Debug)]
struct GroupNormEluBackward {
    groups: usize,
}

impl<B: EngineBackend> Backward<B, 3> for GroupNormEluBackward {
    type State = [NodeId; 3];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [x, weight, bias] = retrieve::<B, 3>(checkpointer, ops.state);
        let (grad_x, grad_weight, grad_bias) = B::group_norm_elu_backward(x, weight, bias, self.groups, grad);
        register::<B, _, 3>(grads, ops.parents, [grad_x, grad_weight, grad_bias], |node| node.id);
    }
}

/// A pointwise layer (1x1 convolution, bias, activation) as one tracked operation. Its
/// backward step needs the layer's output (the ELU's slope), kept in the state; the bias is
/// not needed.
#[derive(Debug)]
struct PointwiseBackward {
    activation: Activation,
}

impl<B: EngineBackend> Backward<B, 3> for PointwiseBackward {
    type State = ([NodeId; 2], FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (ids, output) = ops.state;
        let [x, weight] = retrieve::<B, 2>(checkpointer, ids);
        let (grad_x, grad_weight, grad_bias) =
            B::pointwise_backward(x, weight, output, self.activation, grad);
        register::<B, _, 3>(grads, ops.parents, [grad_x, grad_weight, grad_bias], |node| node.id);
    }
}

impl<B: EngineBackend, C: CheckpointStrategy> EngineBackend for Autodiff<B, C> {
    type Conv3x3Kept = ();

    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node.clone(), weight.node.clone()];
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let ids = [prep.checkpoint(&x), prep.checkpoint(&weight)];
                let (output, kept) = B::conv3x3_keeping(x.primitive, weight.primitive);
                prep.finish((ids, kept), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3(x.primitive, weight.primitive)),
        }
    }

    fn conv_transpose2x2(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tracked::<B, C, _, _>(
            UpConvBackward,
            [x, weight, bias],
            |ids, _| ids,
            |[x, weight, bias]| B::conv_transpose2x2(x, weight, bias),
        )
    }

    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C, _, _>(MaxPoolBackward, [x], |ids, _| ids, |[x]| B::max_pool2x2(x))
    }

    fn group_norm_elu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
    ) -> FloatTensor<Self> {
        tracked::<B, C, _, _>(
            GroupNormEluBackward { groups },
            [x, weight, bias],
            |ids, _| ids,
            |[x, weight, bias]| B::group_norm_elu(x, weight, bias, groups),
        )
    }

    fn pointwise(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        tracked::<B, C, _, _>(
            PointwiseBackward { activation },
            [x, weight, bias],
            |[x, weight, _bias], output| ([x, weight], output.clone()),
            |[x, weight, bias]| B::pointwise(x, weight, bias, activation),
        )
    }

    fn engine_name() -> &'static str {
        B::engine_name()
    }

    fn tensors_on_host() -> bool {
        B::tensors_on_host()
    }
}
