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

/// Which convolution a [`ConvBackward`] differentiates.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Conv3x3,
    UpConv2x2,
}

#[derive(Debug)]
struct ConvBackward {
    kind: Kind,
}

impl<B: EngineBackend> Backward<B, 2> for ConvBackward {
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        let (grad_x, grad_weight) = match self.kind {
            Kind::Conv3x3 => B::conv3x3_backward(x, weight, grad),
            Kind::UpConv2x2 => B::conv_transpose2x2_backward(x, weight, grad),
        };
        if let Some(node) = node_x {
            grads.register::<B>(node.id, grad_x);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, grad_weight);
        }
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
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, bias_state) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        let bias: FloatTensor<B> = checkpointer.retrieve_node_output(bias_state);
        let (grad_x, grad_weight, grad_bias) = B::group_norm_elu_backward(x, weight, bias, self.groups, grad);
        for (node, gradient) in [(node_x, grad_x), (node_weight, grad_weight), (node_bias, grad_bias)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, gradient);
            }
        }
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
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, output) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        let (grad_x, grad_weight, grad_bias) =
            B::pointwise_backward(x, weight, output, self.activation, grad);
        for (node, gradient) in [(node_x, grad_x), (node_weight, grad_weight), (node_bias, grad_bias)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, gradient);
            }
        }
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
    kind: Kind,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let forward = |x: FloatTensor<B>, weight: FloatTensor<B>| match kind {
        Kind::Conv3x3 => B::conv3x3(x, weight),
        Kind::UpConv2x2 => B::conv_transpose2x2(x, weight),
    };
    let prepared =
        ConvBackward { kind }.prepare::<C>([x.node.clone(), weight.node.clone()]).compute_bound().stateful();
    match prepared {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            let output = forward(x.primitive, weight.primitive);
            prep.finish((x_state, weight_state), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive, weight.primitive)),
    }
}

impl<B: EngineBackend, C: CheckpointStrategy> EngineBackend for Autodiff<B, C> {
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_conv::<B, C>(Kind::Conv3x3, x, weight)
    }

    fn conv_transpose2x2(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_conv::<B, C>(Kind::UpConv2x2, x, weight)
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
