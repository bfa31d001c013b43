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


ARCHS = {
    "unet": dict(norm="group", convlstm=False, unitary=False),
    "unet-unitary": dict(norm="group", convlstm=False, unitary=True),
    "unet-unitary-rmsnorm": dict(norm="rms", convlstm=False, unitary=True),
    "unet-convlstm": dict(norm="group", convlstm=True, unitary=False),
    "mlp": dict(unitary=False),
}


def build(arch, d_state, hidden):
    if arch == "mlp":
        return MLP(d_state, hidden)
    spec = ARCHS[arch]
    return UNet(d_state, hidden, norm=spec["norm"], convlstm=spec["convlstm"])


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
