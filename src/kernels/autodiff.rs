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
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        let (grad_x, grad_weight) = B::conv3x3_backward(x, weight, grad);
        register::<B, _, 2>(grads, ops.parents, [grad_x, grad_weight], |node| node.id);
    }
}

/// The 2x2 transposed convolution with its bias as one tracked operation.
#[derive(Debug)]
struct UpConvBackward;

impl<B: EngineBackend> Backward<B, 3> for UpConvBackward {
    type State = (NodeId, NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, bias_state) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        let bias: FloatTensor<B> = checkpointer.retrieve_node_output(bias_state);
        let (grad_x, grad_weight, grad_bias) = B::conv_transpose2x2_backward(x, weight, bias, grad);
        register::<B, _, 3>(grads, ops.parents, [grad_x, grad_weight, grad_bias], |node| node.id);
    }
}

fn tracked_up_conv<B: EngineBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = UpConvBackward
        .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful();
    match prepared {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            let bias_state = prep.checkpoint(&bias);
            let output = B::conv_transpose2x2(x.primitive, weight.primitive, bias.primitive);
            prep.finish((x_state, weight_state, bias_state), output)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::conv_transpose2x2(x.primitive, weight.primitive, bias.primitive))
        }
    }
}

/// 2x2 max pooling as one tracked operation whose backward step finds each window's maximum
/// again from the input (instead of keeping an index tensor).
#[derive(Debug)]
struct MaxPoolBackward;

impl<B: EngineBackend> Backward<B, 1> for MaxPoolBackward {
    type State = NodeId;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state);
        register::<B, _, 1>(grads, ops.parents, [B::max_pool2x2_backward(x, grad)], |node| node.id);
    }
}

fn tracked_max_pool<B: EngineBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    match MaxPoolBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            prep.finish(x_state, B::max_pool2x2(x.primitive))
        }
        OpsKind::UnTracked(prep) => prep.finish(B::max_pool2x2(x.primitive)),
    }
}

/// GroupNorm + ELU as one tracked operation (the composed form records a dozen).
#[derive(Debug)]
struct GroupNormEluBackward {
    groups: usize,
}

impl<B: EngineBackend> Backward<B, 3> for GroupNormEluBackward {
    type State = (NodeId, NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, bias_state) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        let bias: FloatTensor<B> = checkpointer.retrieve_node_output(bias_state);
        let (grad_x, grad_weight, grad_bias) = B::group_norm_elu_backward(x, weight, bias, self.groups, grad);
        register::<B, _, 3>(grads, ops.parents, [grad_x, grad_weight, grad_bias], |node| node.id);
    }
}

fn tracked_group_norm_elu<B: EngineBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    groups: usize,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = GroupNormEluBackward { groups }
        .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful();
    match prepared {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            let bias_state = prep.checkpoint(&bias);
            let output = B::group_norm_elu(x.primitive, weight.primitive, bias.primitive, groups);
            prep.finish((x_state, weight_state, bias_state), output)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::group_norm_elu(x.primitive, weight.primitive, bias.primitive, groups))
        }
    }
}

/// A pointwise layer (1x1 convolution, bias, activation) as one tracked operation. Its
/// backward step needs the layer's output (the ELU's slope), kept in the state.
#[derive(Debug)]
struct PointwiseBackward {
    activation: Activation,
}

impl<B: EngineBackend> Backward<B, 3> for PointwiseBackward {
    type State = (NodeId, NodeId, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, output) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        let (grad_x, grad_weight, grad_bias) =
            B::pointwise_backward(x, weight, output, self.activation, grad);
        register::<B, _, 3>(grads, ops.parents, [grad_x, grad_weight, grad_bias], |node| node.id);
    }
}

fn tracked_pointwise<B: EngineBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    activation: Activation,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = PointwiseBackward { activation }
        .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful();
    match prepared {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            let output = B::pointwise(x.primitive, weight.primitive, bias.primitive, activation);
            prep.finish((x_state, weight_state, output.clone()), output)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::pointwise(x.primitive, weight.primitive, bias.primitive, activation))
        }
    }
}

fn tracked_conv<B: EngineBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared =
        ConvBackward.prepare::<C>([x.node.clone(), weight.node.clone()]).compute_bound().stateful();
    match prepared {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            let output = B::conv3x3(x.primitive, weight.primitive);
            prep.finish((x_state, weight_state), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::conv3x3(x.primitive, weight.primitive)),
    }
}

impl<B: EngineBackend, C: CheckpointStrategy> EngineBackend for Autodiff<B, C> {
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_conv::<B, C>(x, weight)
    }

    fn conv_transpose2x2(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tracked_up_conv::<B, C>(x, weight, bias)
    }

    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_max_pool::<B, C>(x)
    }

    fn group_norm_elu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
    ) -> FloatTensor<Self> {
        tracked_group_norm_elu::<B, C>(x, weight, bias, groups)
    }

    fn pointwise(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        tracked_pointwise::<B, C>(x, weight, bias, activation)
    }

    fn engine_name() -> &'static str {
        B::engine_name()
    }

    fn tensors_on_host() -> bool {
        B::tensors_on_host()
    }
}
