"""The original lab's laws M and QCA step, in PyTorch: the independent reference that the Rust
engine is checked against. Parameter names are the lab's state_dict names.

Used by make_fixtures.py and bench_pytorch.py.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def group_count(channels):
    groups = channels // 8 if channels > 8 else 1
    return groups if channels % groups == 0 else 1


class RMSNorm2d(nn.Module):
    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x):
        rms = torch.sqrt(torch.mean(x * x, dim=(2, 3), keepdim=True) + self.eps)
        return x / rms * self.weight.view(1, -1, 1, 1)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, norm="group"):
        super().__init__()

        def make_norm():
            if norm == "rms":
                return RMSNorm2d(cout)
            return nn.GroupNorm(group_count(cout), cout)

        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            make_norm(),
            nn.ELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            make_norm(),
            nn.ELU(),
        )

    def forward(self, x):
        return self.conv_block(x)


class UNet(nn.Module):
    """inc, down1, down2, bot, up1, conv_up1, up2, conv_up2, outc (+ conv_gates for ConvLSTM)."""

    def __init__(self, d_state, hidden, norm="group", convlstm=False):
        super().__init__()
        h = hidden
        self.inc = ConvBlock(2 * d_state, h, norm)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), ConvBlock(h, 2 * h, norm))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), ConvBlock(2 * h, 4 * h, norm))
        self.convlstm = convlstm
        if convlstm:
            self.conv_gates = nn.Conv2d(8 * h, 16 * h, 3, padding=1)
        self.bot = ConvBlock(4 * h, 8 * h, norm)
        self.up1 = nn.ConvTranspose2d(8 * h, 4 * h, 2, stride=2)
        self.conv_up1 = ConvBlock(6 * h, 4 * h, norm)
        self.up2 = nn.ConvTranspose2d(4 * h, 2 * h, 2, stride=2)
        self.conv_up2 = ConvBlock(3 * h, h, norm)
        self.outc = nn.Conv2d(h, 2 * d_state, 1)
        nn.init.normal_(self.outc.weight, 0.0, 1e-5)
        nn.init.zeros_(self.outc.bias)

    def forward(self, x, memory=None):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        if self.convlstm:
            if memory is None:
                memory = (torch.zeros_like(x3), torch.zeros_like(x3))
            h, c = memory
            f, i, o, g = torch.chunk(self.conv_gates(torch.cat([x3, h], dim=1)), 4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            memory = (h, c)
            x3 = h
        x4 = self.bot(x3)
        u1 = self.conv_up1(torch.cat([self.up1(x4), x2], dim=1))
        u2 = self.conv_up2(torch.cat([self.up2(u1), x1], dim=1))
        return self.outc(u2), memory


def neighbour_pattern(d_state):
    """The lab's fixed `conv_neighbors` weight: ones with a zero centre, [16d, 1, 3, 3]."""
    weights = torch.ones(2 * d_state * 8, 1, 3, 3)
    weights[:, 0, 1, 1] = 0.0
    return weights


class DeepQCA(nn.Module):
    """The lab's DeepQCA (src/models/deep_qca.py today)."""

    def __init__(self, d_state, hidden):
        super().__init__()
        self.d_state = d_state
        self.conv_neighbors = nn.Conv2d(2 * d_state, 2 * d_state * 8, kernel_size=3, padding=1,
                                        groups=2 * d_state, bias=False)
        self.conv_neighbors.weight.data = neighbour_pattern(d_state)
        self.conv_neighbors.weight.requires_grad = False
        self.processing_net = nn.Sequential(
            nn.Conv2d(2 * d_state * 8, hidden, kernel_size=1),
            nn.ELU(),
            nn.Conv2d(hidden, hidden, kernel_size=1),
            nn.ELU(),
            nn.Conv2d(hidden, 2 * d_state, kernel_size=1),
        )
        nn.init.normal_(self.processing_net[-1].weight, mean=0.0, std=1e-5)

    def forward(self, x, memory=None):
        return self.processing_net(self.conv_neighbors(x)), None


class QCA_Operator_Deep(nn.Module):
    """The lab's first engine's law (the notebook's QCA_Operator_Deep): the neighbour sum, five
    1x1 convolutions without bias, the 8d output averaged in fours and scaled by 0.1; its
    M_bias is added by the step (first_engine_step), not here."""

    def __init__(self, d_state, hidden):
        super().__init__()
        self.d_state = d_state
        self.conv_neighbors = nn.Conv2d(2 * d_state, 2 * d_state * 8, kernel_size=3, padding=1,
                                        groups=2 * d_state, bias=False)
        self.conv_neighbors.weight.data = neighbour_pattern(d_state)
        self.conv_neighbors.weight.requires_grad = False
        layers = []
        widths = [2 * d_state * 8, hidden, hidden, hidden, hidden, 8 * d_state]
        for index, (cin, cout) in enumerate(zip(widths, widths[1:])):
            if index > 0:
                layers.append(nn.ELU())
            layers.append(nn.Conv2d(cin, cout, kernel_size=1, bias=False))
        self.processing_net = nn.Sequential(*layers)
        self.M_bias_real = nn.Parameter(torch.zeros(d_state))
        self.M_bias_imag = nn.Parameter(torch.zeros(d_state))

    def forward(self, x, memory=None):
        f = self.processing_net(self.conv_neighbors(x)).permute(0, 2, 3, 1)
        b, h, w, _ = f.shape
        d4 = 4 * self.d_state
        real = f[..., :d4].reshape(b, h, w, 4, self.d_state).mean(dim=3) * 0.1
        imag = f[..., d4:].reshape(b, h, w, 4, self.d_state).mean(dim=3) * 0.1
        return torch.cat([real.permute(0, 3, 1, 2), imag.permute(0, 3, 1, 2)], dim=1), None


class MLP(nn.Module):
    def __init__(self, d_state, hidden):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * d_state, hidden, 1),
            nn.ELU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ELU(),
            nn.Conv2d(hidden, 2 * d_state, 1),
        )

    def forward(self, x, memory=None):
        return self.net(x), None


# In atheria's registry order. `unitary`: whether the step multiplies by psi. The lab's engine
# does so only for a model whose class is named exactly UNetUnitary, so its UNetUnitaryRMSNorm
# runs without the product ("unet-rmsnorm", the import default); "unet-unitary-rmsnorm" is the
# product as an explicit choice. `lab_class`: the lab's class name, what a TorchScript export
# records.
ARCHS = {
    "unet": dict(norm="group", convlstm=False, unitary=False, lab_class="UNet"),
    "unet-unitary": dict(norm="group", convlstm=False, unitary=True, lab_class="UNetUnitary"),
    "unet-rmsnorm": dict(norm="rms", convlstm=False, unitary=False, lab_class="UNetUnitaryRMSNorm"),
    "unet-unitary-rmsnorm": dict(norm="rms", convlstm=False, unitary=True, lab_class=None),
    "unet-convlstm": dict(norm="group", convlstm=True, unitary=False, lab_class="UNetConvLSTM"),
    "mlp": dict(unitary=False, lab_class="MLP"),
    "deep-qca": dict(unitary=False, lab_class="DeepQCA"),
    "qca-operator-deep": dict(unitary=False, lab_class="QCA_Operator_Deep", first_engine=True),
}


def build(arch, d_state, hidden):
    if arch == "mlp":
        return MLP(d_state, hidden)
    if arch == "deep-qca":
        return DeepQCA(d_state, hidden)
    if arch == "qca-operator-deep":
        return QCA_Operator_Deep(d_state, hidden)
    spec = ARCHS[arch]
    return UNet(d_state, hidden, norm=spec["norm"], convlstm=spec["convlstm"])


def step(arch, model, psi, gamma, memory=None):
    """The step the lab ran `arch` with."""
    if ARCHS[arch].get("first_engine"):
        return first_engine_step(model, psi), None
    return qca_step(model, psi, gamma, ARCHS[arch]["unitary"], memory)


def first_engine_step(model, psi):
    """The lab's first engine (the notebook's Aetheria_Motor.evolve_step): psi + F + M_bias, no
    decay, no unitary product, then every cell divided by sqrt(sum |psi|^2 + 1e-8)."""
    d = psi.shape[-1]
    x = torch.cat([psi.real, psi.imag], dim=-1).permute(0, 3, 1, 2)
    out, _ = model(x)
    out = out.permute(0, 2, 3, 1)
    new_real = psi.real + out[..., :d] + model.M_bias_real
    new_imag = psi.imag + out[..., d:] + model.M_bias_imag
    norm = torch.sqrt(torch.sum(new_real ** 2 + new_imag ** 2, dim=-1, keepdim=True) + 1e-8)
    return torch.complex(new_real / norm, new_imag / norm)


def qca_step(model, psi, gamma, unitary, memory=None):
    """One step on psi, complex [B, H, W, d] (the lab's layout).

    delta = M([Re psi; Im psi]); unitary: delta = delta * psi; delta -= gamma * psi;
    psi' = psi + delta; every cell divided by its L2 norm over channels plus 1e-9.
    """
    d = psi.shape[-1]
    x = torch.cat([psi.real, psi.imag], dim=-1).permute(0, 3, 1, 2)
    out, memory = model(x, memory)
    out = out.permute(0, 2, 3, 1)
    delta = torch.complex(out[..., :d], out[..., d:])
    if unitary:
        delta = delta * psi
    delta = delta - gamma * psi
    nxt = psi + delta
    norm = torch.sqrt(torch.sum(nxt.real ** 2 + nxt.imag ** 2, dim=-1, keepdim=True))
    return nxt / (norm + 1e-9), memory
